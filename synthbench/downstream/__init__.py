"""Downstream U-Net segmentation experiment (paper Sec. "Evaluation", Tables III and IV).

Python API::

    from synthbench.downstream import run_experiment, paper_table, UNetProtocol
    df = run_experiment(data_dir, {"ours": synth_dir, "pix2pix": other}, "replace",
                        out_dir="out", protocol=UNetProtocol.quick())
    paper_table(df, "replace")

Modules: :mod:`.unet` (the network), :mod:`.train` (the fixed protocol), :mod:`.mix` (counts
and seeded selection), :mod:`.sources` (synthesis folders), :mod:`.scores` (Dice, sensitivity,
specificity), :mod:`.experiment` (the experiments and tables), :mod:`.builtin` (the plugin).
"""

import importlib

#: Public name -> submodule (imported on first access, PEP 562: the segmentation plugin is loaded
#: at every CLI start and must not import torch, pandas and scipy with this package).
_LAZY = {
    **dict.fromkeys(("COLUMNS", "DEFAULT_RATIOS", "ci_caption", "paper_table", "run_experiment",
                     "table_markdown", "write_tables"), "experiment"),
    **dict.fromkeys(("Mix", "mix_counts", "round_half_up", "select_mix"), "mix"),
    **dict.fromkeys(("scores_from_counts", "segmentation_counts", "segmentation_scores"), "scores"),
    **dict.fromkeys(("open_synthesis", "resolve_synthesis_dir"), "sources"),
    **dict.fromkeys(("UNetProtocol", "predict", "train_unet"), "train"),
    "UNet": "unet",
}

__all__ = [
    "COLUMNS",
    "DEFAULT_RATIOS",
    "Mix",
    "UNet",
    "UNetProtocol",
    "ci_caption",
    "mix_counts",
    "open_synthesis",
    "paper_table",
    "predict",
    "resolve_synthesis_dir",
    "round_half_up",
    "run_experiment",
    "scores_from_counts",
    "segmentation_counts",
    "segmentation_scores",
    "select_mix",
    "table_markdown",
    "train_unet",
    "write_tables",
]


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
