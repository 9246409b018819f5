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

from synthbench.downstream.experiment import (
    COLUMNS,
    DEFAULT_RATIOS,
    ci_caption,
    paper_table,
    run_experiment,
    table_markdown,
    write_tables,
)
from synthbench.downstream.mix import Mix, mix_counts, round_half_up, select_mix
from synthbench.downstream.scores import (
    scores_from_counts,
    segmentation_counts,
    segmentation_scores,
)
from synthbench.downstream.sources import open_synthesis, resolve_synthesis_dir
from synthbench.downstream.train import UNetProtocol, predict, train_unet
from synthbench.downstream.unet import UNet

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
