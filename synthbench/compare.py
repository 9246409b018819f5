"""``synthbench compare``: the paper's whole evaluation for several methods, under one protocol.

Steps (paper Sec. "Evaluation"), each reusing finished work so an interrupted comparison resumes:

1. Prepare the data set once (``OUT/data``), or use a prepared one; every method trains on the
   same content hash.
2. Train every method (and seed) through the shared engine. A run lives in
   ``OUT/runs/<label>-seed<S>-<key>``, ``key`` being the hash of the resolved request (method,
   variant, options, protocol fields, seed, data hash): a finished run with the same key is
   reused, an unfinished one is resumed.
3. Synthesize the augmented synthesis-test label maps (``test_aug``, Table I: 73 -> 10,220),
   with the completion step, each method at its default test time (the label map only; SEAN
   with its mean style codes) unless ``style`` / ``test_modes`` ask otherwise.
4. Evaluate image quality on them (Table II: FID, KID, PSNR, SSIM, RMSE; complete and lung-only;
   10 folds).
5. Downstream U-Net experiments (replace and add, Tables III and IV; 50% replacement with each
   method's images): trained on ``test_aug`` (real, and synthetic from the same label maps),
   tested on ``seg_test_aug`` (73 -> 10,220) in 10 folds.
6. Render the report (``OUT/report``), which states how many images each table used.

:func:`evaluation_plan` says which split, how many images and folds each table uses.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from synthbench.cli.console import err_console, progress
from synthbench.data.prepared import PreparedDataset
from synthbench.engine import get_protocol, train
from synthbench.errors import SynthbenchError
from synthbench.io import atomic_write_json
from synthbench.plugins import get_registry


@dataclass(frozen=True)
class MethodSpec:
    """A method to compare: a synthesizer name and an optional variant (``ours:no_desum``)."""

    name: str
    variant: str | None = None

    @property
    def label(self) -> str:
        return f"{self.name}:{self.variant}" if self.variant else self.name

    @property
    def slug(self) -> str:
        return self.label.replace(":", "-")


def parse_methods(text: str | list[str]) -> list[MethodSpec]:
    """``"ours,sean,ours:no_dfm"`` -> method specs; every name must be a loaded synthesizer."""
    items = text.split(",") if isinstance(text, str) else list(text)
    specs = []
    registry = get_registry()
    for item in (i.strip() for i in items):
        if not item:
            continue
        name, _, variant = item.partition(":")
        cls = registry.synthesizer(name)
        if variant and variant not in cls.variants:
            known = ", ".join(sorted(cls.variants)) or "none"
            raise SynthbenchError(f"{name}: unknown variant {variant!r} (known: {known})")
        specs.append(MethodSpec(name, variant or None))
    if not specs:
        raise SynthbenchError("no methods given (e.g. --methods ours,pix2pix,spade)")
    if len({s.label for s in specs}) != len(specs):
        raise SynthbenchError(f"a method is listed twice: {', '.join(s.label for s in specs)}")
    return specs


@dataclass
class CompareConfig:
    """Everything that defines a comparison (a benchmark suite file maps onto this)."""

    methods: list[MethodSpec]
    out_dir: Path
    data: str | None = None
    protocol: str = "quick"
    protocol_overrides: dict[str, Any] = field(default_factory=dict)
    seeds: int = 1
    data_options: dict[str, Any] = field(default_factory=dict)
    method_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    experiments: tuple[str, ...] = ("replace", "add")
    ratios: tuple[float, ...] = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5)
    unet_protocol: str = "quick"
    unet_overrides: dict[str, Any] = field(default_factory=dict)
    metrics: tuple[str, ...] | None = None
    folds: int = 10
    device: str = "auto"
    show_progress: bool = True
    #: Style image at synthesis (``synthbench.synthesis.STYLES``): "none" (default: the label map
    #: only; SEAN uses its mean style codes) or "real" (reconstruction of style-based methods;
    #: their rows are marked in the report).
    style: str = "none"
    #: Test-time settings per method label or name, e.g. ``{"pix2pix": {"mode": "eval"}}``.
    test_modes: dict[str, dict[str, str]] = field(default_factory=dict)


@dataclass
class ComparisonOutcome:
    report_dir: Path
    wall_time_s: float
    results: Any


def _hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def _device(requested: str) -> str:
    if requested != "auto":
        return requested
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


#: Which split each table uses (paper Table I): Table II and the U-Net's training set on the augmented
#: synthesis-test label maps, the U-Net's test on the augmented segmentation-test set.
QUALITY_SPLIT = "test_aug"
SEG_TRAIN_SPLIT = "test_aug"
SEG_TEST_SPLIT = "seg_test_aug"


def evaluation_plan(split_counts: dict[str, int], folds: int = 10) -> dict[str, dict[str, Any]]:
    """Split, image count and folds of every table for a data set's split counts.

    Paper protocol (73 synthesis-test and 73 segmentation-test slices, factor 140): Table II on
    10,220 images, the U-Net trained on 10,220 real images (plus synthetic ones from the same
    label maps) and tested on 10,220, each in 10 folds of 1,022. A small split gets fewer folds
    (at least 2 images per image-quality fold, 1 per segmentation fold).
    """
    def table(split: str, per_fold: int) -> dict[str, Any]:
        n = int(split_counts.get(split, 0))
        k = min(folds, n // per_fold)
        sizes = [len(part) for part in np.array_split(np.arange(n), k)] if k >= 1 else []
        return {"split": split, "images": n, "folds": k, "requested_folds": folds,
                "fold_size": [min(sizes), max(sizes)] if sizes else [0, 0]}

    seg = table(SEG_TEST_SPLIT, 1)
    return {
        "image_quality": table(QUALITY_SPLIT, 2),
        "downstream": {**seg, "test_split": SEG_TEST_SPLIT, "train_split": SEG_TRAIN_SPLIT,
                       "train_real": int(split_counts.get(SEG_TRAIN_SPLIT, 0))},
    }


def prepare_options(cfg: CompareConfig, image_size: int):
    """The data source name, phantom settings and :class:`PrepareOptions` a comparison prepares with."""
    from synthbench.data.prepare import PrepareOptions

    opts = dict(cfg.data_options)
    size = int(opts.pop("size", image_size))
    phantom_kwargs = {k: opts.pop(k) for k in ("patients", "slices_per_patient") if k in opts}
    config = opts.pop("config", None)
    return phantom_kwargs, config, PrepareOptions(size=size, seed=int(opts.pop("seed", 0)), **opts)


def prepare_data(cfg: CompareConfig, image_size: int) -> PreparedDataset:
    """Use ``cfg.data`` if it is a prepared set; else prepare it (or the phantom) into OUT/data once."""
    from synthbench.data.prepare import prepare, resolve_source

    if cfg.data is not None and (Path(cfg.data) / "manifest.json").is_file():
        return PreparedDataset(cfg.data)
    target = cfg.out_dir / "data"
    source_name = cfg.data or "phantom"
    opts = dict(cfg.data_options)
    size = int(opts.pop("size", image_size))
    phantom_kwargs = {k: opts.pop(k) for k in ("patients", "slices_per_patient") if k in opts}
    request = json.loads(json.dumps({"source": str(source_name), "size": size, **opts, **phantom_kwargs}, default=str))
    request_file = cfg.out_dir / "data_request.json"
    if target.exists():
        recorded = json.loads(request_file.read_text()) if request_file.is_file() else None
        if recorded != request:
            raise SynthbenchError(f"holds a data set prepared with other settings ({recorded}); use another --out", target)
        return PreparedDataset(target)
    phantom_kwargs, config, options = prepare_options(cfg, image_size)
    source = resolve_source(str(source_name), size=options.size, seed=options.seed, config=config, **phantom_kwargs)
    atomic_write_json(request_file, request)  # first: the data folder itself appears atomically
    prepare(source, target, options, show_progress=cfg.show_progress)
    return PreparedDataset(target)


def train_method(cfg: CompareConfig, spec: MethodSpec, seed: int, data: PreparedDataset, device: str) -> Path:
    """Train (or reuse, or resume) one method at one seed; return its run directory."""
    overrides = {**cfg.protocol_overrides, "device": device}
    protocol = get_protocol(cfg.protocol, overrides)
    options = cfg.method_options.get(spec.label) or cfg.method_options.get(spec.name) or {}
    key = _hash(
        {
            "method": spec.name,
            "variant": spec.variant,
            "options": options,
            "protocol": {k: v for k, v in protocol.to_dict().items() if k not in ("device", "workers")},
            "seed": seed,
            "data": data.content_hash,
        }
    )[:10]
    run_dir = cfg.out_dir / "runs" / f"{spec.slug}-seed{seed}-{key}"
    manifest = run_dir / "manifest.json"
    status = json.loads(manifest.read_text()).get("status") if manifest.is_file() else None
    if status == "finished":
        err_console.print(f"[green]reusing finished run[/green] {run_dir}")
        return run_dir
    resume = any((run_dir / "checkpoints").glob("*.pt"))
    if run_dir.exists() and not resume:
        shutil.rmtree(run_dir)  # our own keyed run, stopped before its first checkpoint
    train(
        spec.name,
        data.root,
        run_dir,
        protocol=protocol,
        seed=seed,
        variant=spec.variant,
        options=options or None,
        resume=resume,
        show_progress=cfg.show_progress,
    )
    return run_dir


def synthesize_run(run_dir: Path, data: PreparedDataset, split: str, out_dir: Path, device: str, show: bool,
                   style: str = "none", test_mode: dict[str, str] | None = None, seed: int = 0) -> Path:
    """Synthesize ``split`` of the data set with a run's final weights (reused when complete and
    made with the same data, style, test-time settings and seed)."""
    from synthbench.engine import load_synthesizer
    from synthbench.synthesis import style_mode, synthesize

    synth = load_synthesizer(run_dir, device=device)
    style = style if getattr(synth, "uses_style", False) else "none"
    synth.set_test_mode(**(test_mode or {}))
    if (out_dir / "synthesis.json").is_file():
        recorded = json.loads((out_dir / "synthesis.json").read_text())
        wanted = {"data_hash": data.content_hash, "style_mode": style_mode(synth, style),
                  "test_mode": dict(synth.test_mode), "seed": seed}
        if all(recorded.get(k) == v for k, v in wanted.items()):
            return out_dir
    synthesize(run_dir, data.root, out_dir, split=split, device=device, show_progress=show, overwrite=True,
               synth=synth, style=style, test_mode=test_mode, seed=seed)
    return out_dir


def run_comparison(cfg: CompareConfig) -> ComparisonOutcome:
    """Run every step of the comparison; return where the report is."""
    from synthbench.downstream.experiment import run_experiment
    from synthbench.downstream.train import UNetProtocol
    from synthbench.metrics.evaluate import evaluate_folders
    from synthbench.report import ComparisonResults, MethodRun, render_report

    started = time.perf_counter()
    if cfg.seeds < 1:
        raise SynthbenchError(f"--seeds must be >= 1, got {cfg.seeds}")
    from synthbench.synthesis import STYLES

    if cfg.style not in STYLES:
        raise SynthbenchError(f"style must be one of {', '.join(STYLES)}, got {cfg.style!r}")
    cfg.out_dir.mkdir(parents=True, exist_ok=True)
    protocol = get_protocol(cfg.protocol, cfg.protocol_overrides)
    device = _device(cfg.device)
    atomic_write_json(cfg.out_dir / "compare.json", _config_record(cfg, protocol))

    seeds = [protocol.seed + i for i in range(cfg.seeds)]
    jobs = [(spec, seed) for seed in seeds for spec in cfg.methods]
    total = 1 + 3 * len(jobs) + len(cfg.experiments) * len(seeds) + 1
    wall: dict[str, float] = {}
    runs: list[MethodRun] = []
    quality: list[pd.DataFrame] = []
    downstream: list[pd.DataFrame] = []

    with progress(transient=False) as bar:
        overall = bar.add_task("comparison", total=total)

        def step(label: str):
            bar.update(overall, description=label)

        step("preparing data")
        t0 = time.perf_counter()
        data = prepare_data(cfg, protocol.image_size)
        wall["data"] = time.perf_counter() - t0
        bar.advance(overall)

        notes: list[str] = []
        for split in (QUALITY_SPLIT, SEG_TEST_SPLIT):
            if not data.has_split(split):
                raise SynthbenchError(f"the data set has no '{split}' split (prepared by an older synthbench: prepare "
                                      "it again, or use another --out)", data.root)
        plan = evaluation_plan({name: len(data.split(name)) for name in data.split_names}, cfg.folds)
        quality_folds = _fold_count(plan["image_quality"], 2, "augmented synthesis-test split", notes)
        seg_folds = _fold_count(plan["downstream"], 1, "augmented segmentation-test split", notes)

        for spec, seed in jobs:
            times: dict[str, float] = {}
            step(f"training {spec.label} (seed {seed})")
            t0 = time.perf_counter()
            run_dir = train_method(cfg, spec, seed, data, device)
            times["train"] = time.perf_counter() - t0
            bar.advance(overall)

            step(f"synthesizing {spec.label} (seed {seed})")
            t0 = time.perf_counter()
            modes = cfg.test_modes.get(spec.label) or cfg.test_modes.get(spec.name) or {}
            test_dir = synthesize_run(run_dir, data, QUALITY_SPLIT, run_dir / "synthesis" / QUALITY_SPLIT, device,
                                      cfg.show_progress, style=cfg.style, test_mode=modes, seed=seed)
            times["synthesize"] = time.perf_counter() - t0
            bar.advance(overall)

            step(f"evaluating {spec.label} (seed {seed})")
            t0 = time.perf_counter()
            with warnings.catch_warnings(record=True) as caught:  # said once, in the report's notes
                warnings.simplefilter("always")
                frame = evaluate_folders(
                    test_dir / "real", test_dir / "complete", mask_dir=test_dir / "mask",
                    metrics=list(cfg.metrics) if cfg.metrics else None, device=device, folds=quality_folds,
                    show_progress=cfg.show_progress,
                )
            notes.extend(m for m in dict.fromkeys(str(w.message) for w in caught) if m not in notes)
            quality.append(frame.assign(method=spec.label, seed=seed))
            times["evaluate"] = time.perf_counter() - t0
            bar.advance(overall)
            runs.append(MethodRun(spec.label, seed, run_dir=run_dir, synthesis_dir=test_dir,
                                  downstream_dir=test_dir, wall_times=times))

        unet = UNetProtocol.named(cfg.unet_protocol, **cfg.unet_overrides)
        for seed in seeds:
            synthetic = {r.method: r.downstream_dir for r in runs if r.seed == seed}
            for experiment in cfg.experiments:
                step(f"downstream {experiment} (seed {seed})")
                t0 = time.perf_counter()
                frame = run_experiment(
                    data.root, synthetic, experiment=experiment, ratios=cfg.ratios,
                    out_dir=cfg.out_dir / "downstream", seed=seed, protocol=unet, device=device,
                    folds=seg_folds, primary=cfg.methods[0].label,
                )
                downstream.append(frame.assign(seed=seed))
                wall[f"downstream_{experiment}"] = wall.get(f"downstream_{experiment}", 0.0) + time.perf_counter() - t0
                bar.advance(overall)

        step("rendering report")
        wall["total"] = time.perf_counter() - started
        results = ComparisonResults(
            protocol=protocol.name,
            dataset=_describe_data(data),
            data_hash=data.content_hash,
            runs=runs,
            image_quality=pd.concat(quality, ignore_index=True),
            downstream=pd.concat(downstream, ignore_index=True) if downstream else None,
            wall_times=wall,
            spec=data.spec,
            notes=notes,
            evaluation=plan,
        )
        report_dir = cfg.out_dir / "report"
        render_report(results, report_dir, overwrite=True)  # a re-run refreshes the report atomically
        bar.advance(overall)
    return ComparisonOutcome(report_dir=report_dir, wall_time_s=time.perf_counter() - started, results=results)


def _fold_count(table: dict[str, Any], per_fold: int, what: str, notes: list[str]) -> int:
    """A table's folds from the evaluation plan; fewer than requested is recorded in the notes."""
    k, n, requested = table["folds"], table["images"], table["requested_folds"]
    if k < 1:
        raise SynthbenchError(f"the {what} has {n} images; at least {per_fold} are needed (prepare more slices)")
    if k < requested:
        notes.append(f"The {what} has {n} images: results use {k} folds instead of {requested}.")
    return k


def _describe_data(data: PreparedDataset) -> str:
    source = data.manifest.get("source", {})
    name = source.get("name") or source.get("kind") or data.spec.name
    counts = ", ".join(f"{k} {v['count']}" for k, v in data.manifest["splits"].items())
    return f"{name} ({data.spec.name}, {data.size}x{data.size}; {counts})"


def _config_record(cfg: CompareConfig, protocol) -> dict[str, Any]:
    return {
        "methods": [m.label for m in cfg.methods],
        "data": cfg.data or "phantom",
        "protocol": protocol.to_dict(),
        "seeds": cfg.seeds,
        "data_options": cfg.data_options,
        "method_options": cfg.method_options,
        "experiments": list(cfg.experiments),
        "ratios": list(cfg.ratios),
        "unet_protocol": cfg.unet_protocol,
        "unet_overrides": cfg.unet_overrides,
        "metrics": list(cfg.metrics) if cfg.metrics else None,
        "folds": cfg.folds,
        "style": cfg.style,
        "test_modes": cfg.test_modes,
    }
