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

One comparison at a time may use ``OUT`` (a lock, :mod:`synthbench.locking`). The report's wall
times are the recorded cost of each piece of work, not of this invocation (which may have
reused it): training from each run's manifest, data preparation from the prepared manifest,
synthesis and downstream experiments from ``OUT/wall_times.json``, written when they ran.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
import traceback
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from rich.markup import escape

from synthbench.cli.console import err_console, progress
from synthbench.data.prepared import PreparedDataset
from synthbench.engine import get_protocol, train
from synthbench.errors import SynthbenchError
from synthbench.io import atomic_write_json
from synthbench.locking import lock_directory
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
    #: Runs (``MethodRun`` with ``error``) of methods that failed; the CLI then exits with 1.
    failures: list[Any] = field(default_factory=list)


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
    """Use ``cfg.data`` if it is a prepared set (its files verified by full hash, once per
    invocation); else prepare it (or the phantom) into OUT/data once."""
    from synthbench.data.prepare import prepare, resolve_source

    if cfg.data is not None and (Path(cfg.data) / "manifest.json").is_file():
        data = PreparedDataset(cfg.data)
        data.verify_files(show_progress=cfg.show_progress)
        return data
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
        data = PreparedDataset(target)
        data.verify_files(show_progress=cfg.show_progress)
        return data
    phantom_kwargs, config, options = prepare_options(cfg, image_size)
    source = resolve_source(str(source_name), size=options.size, seed=options.seed, config=config, **phantom_kwargs)
    atomic_write_json(request_file, request)  # first: the data folder itself appears atomically
    prepare(source, target, options, show_progress=cfg.show_progress,
            say=lambda text: err_console.print(text, markup=False, highlight=False, soft_wrap=True))
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
    # a recorded configuration resumes (from step 0 if no checkpoint was written yet)
    resume = (run_dir / "config.json").is_file()
    if run_dir.exists() and not resume:
        shutil.rmtree(run_dir)  # our own keyed run, stopped before it wrote its configuration
    train(
        spec.name,
        data.root,
        run_dir,
        protocol=protocol,
        seed=seed,
        variant=spec.variant,
        options=options or None,
        overrides={"device": device} if resume else None,  # a runtime field: this invocation's device
        resume=resume,
        show_progress=cfg.show_progress,
    )
    return run_dir


def synthesize_run(run_dir: Path, data: PreparedDataset, split: str, out_dir: Path, device: str, show: bool,
                   style: str = "none", test_mode: dict[str, str] | None = None, seed: int = 0,
                   ledger: _WallTimes | None = None) -> Path:
    """Synthesize ``split`` of the data set with a run's final weights (reused when complete and
    made with the same data, style, test-time settings and seed); the time it took goes to
    ``ledger`` when it ran."""
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
    t0 = time.perf_counter()
    synthesize(run_dir, data.root, out_dir, split=split, device=device, show_progress=show, overwrite=True,
               synth=synth, style=style, test_mode=test_mode, seed=seed)
    if ledger is not None:
        ledger.record(f"synthesize {run_dir.name} {split}", time.perf_counter() - t0)
    return out_dir


def run_comparison(cfg: CompareConfig) -> ComparisonOutcome:
    """Run every step of the comparison; return where the report is."""
    from synthbench.downstream.mix import EXPERIMENTS
    from synthbench.downstream.train import UNetProtocol

    started = time.perf_counter()
    if cfg.seeds < 1:
        raise SynthbenchError(f"--seeds must be >= 1, got {cfg.seeds}")
    unknown = [e for e in cfg.experiments if e not in EXPERIMENTS]
    if unknown:  # checked before hours of training, not after
        raise SynthbenchError(f"unknown downstream experiment(s) {', '.join(map(repr, unknown))} "
                              f"(known: {', '.join(EXPERIMENTS)}; empty for none)")
    from synthbench.synthesis import STYLES

    if cfg.style not in STYLES:
        raise SynthbenchError(f"style must be one of {', '.join(STYLES)}, got {cfg.style!r}")
    unet = UNetProtocol.named(cfg.unet_protocol, **cfg.unet_overrides)
    protocol = get_protocol(cfg.protocol, cfg.protocol_overrides)
    device = _device(cfg.device)
    with lock_directory(cfg.out_dir, "comparison directory"):
        return _run_locked(cfg, protocol, device, unet, started)


def _run_locked(cfg: CompareConfig, protocol, device: str, unet, started: float) -> ComparisonOutcome:
    from synthbench.downstream.experiment import run_experiment
    from synthbench.metrics.evaluate import evaluate_folders
    from synthbench.report import ComparisonResults, MethodRun, render_report
    from synthbench.report.results import IMAGE_QUALITY_COLUMNS
    from synthbench.report.settings import comparison_settings

    atomic_write_json(cfg.out_dir / "compare.json", _config_record(cfg, protocol))
    ledger = _WallTimes(cfg.out_dir / "wall_times.json")

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
        data = prepare_data(cfg, protocol.image_size)
        if "prepare_seconds" in data.manifest:  # recorded by the preparation itself (older sets: unknown)
            wall["data"] = float(data.manifest["prepare_seconds"])
        bar.advance(overall)

        notes: list[str] = list(data.manifest.get("source", {}).get("warnings", []))
        region = data.spec.region_key
        if data.spec.region != "lung":
            notes.append(f"Completion region: {data.spec.region_label}.")
        for split in (QUALITY_SPLIT, SEG_TEST_SPLIT):
            if not data.has_split(split):
                raise SynthbenchError(f"the data set has no '{split}' split (prepared by an older synthbench: prepare "
                                      "it again, or use another --out)", data.root)
        plan = evaluation_plan({name: len(data.split(name)) for name in data.split_names}, cfg.folds)
        quality_folds = _fold_count(plan["image_quality"], 2, "augmented synthesis-test split", notes)
        seg_folds = _fold_count(plan["downstream"], 1, "augmented segmentation-test split", notes)

        for spec, seed in jobs:
            times: dict[str, float] = {}
            provenance = get_registry().provenance("synthesizers", spec.name)
            run_dir, current, done = None, "train", 0
            try:  # one failing method is reported and skipped; the others finish (exit 1 at the end)
                step(f"training {spec.label} (seed {seed})")
                run_dir = train_method(cfg, spec, seed, data, device)
                times["train"] = float(json.loads((run_dir / "manifest.json").read_text())["wall_time_s"])
                bar.advance(overall)
                done += 1

                current = "synthesize"
                step(f"synthesizing {spec.label} (seed {seed})")
                modes = cfg.test_modes.get(spec.label) or cfg.test_modes.get(spec.name) or {}
                test_dir = synthesize_run(run_dir, data, QUALITY_SPLIT, run_dir / "synthesis" / QUALITY_SPLIT, device,
                                          cfg.show_progress, style=cfg.style, test_mode=modes, seed=seed, ledger=ledger)
                times["synthesize"] = ledger.seconds(f"synthesize {run_dir.name} {QUALITY_SPLIT}")
                bar.advance(overall)
                done += 1

                current = "evaluate"
                step(f"evaluating {spec.label} (seed {seed})")
                t0 = time.perf_counter()
                with warnings.catch_warnings(record=True) as caught:  # said once, in the report's notes
                    warnings.simplefilter("always")
                    frame = evaluate_folders(
                        test_dir / "real", test_dir / "complete", mask_dir=test_dir / "mask" if region else None,
                        metrics=list(cfg.metrics) if cfg.metrics else None, device=device, folds=quality_folds,
                        show_progress=cfg.show_progress, region=region or "lung",
                    )
            except Exception as exc:  # noqa: BLE001 - a plugin may raise anything; KeyboardInterrupt still stops
                reason = _one_line(exc)
                err_console.print(f"[red]{escape(spec.label)} (seed {seed}) FAILED at {current}:[/red] {escape(reason)}",
                                  soft_wrap=True, highlight=False)
                _debug_trace()
                runs.append(MethodRun(spec.label, seed, run_dir=run_dir, wall_times=times, error=reason,
                                      failed_step=current, plugin=provenance))
                bar.advance(overall, 3 - done)
                continue
            notes.extend(m for m in dict.fromkeys(str(w.message) for w in caught) if m not in notes)
            quality.append(frame.assign(method=spec.label, seed=seed))
            times["evaluate"] = time.perf_counter() - t0
            bar.advance(overall)
            runs.append(MethodRun(spec.label, seed, run_dir=run_dir, synthesis_dir=test_dir,
                                  downstream_dir=test_dir, wall_times=times, plugin=provenance))

        failed = {r.method for r in runs if r.error is not None}
        for seed in seeds:
            synthetic = {r.method: r.downstream_dir for r in runs if r.seed == seed and r.method not in failed}
            primary = next((m.label for m in cfg.methods if m.label in synthetic), None)
            for experiment in cfg.experiments:
                if primary is None:  # every method failed: nothing to segment with
                    bar.advance(overall)
                    continue
                step(f"downstream {experiment} (seed {seed})")
                key = f"downstream {experiment} seed {seed}"
                records_before, t0 = _records(cfg.out_dir / "downstream"), time.perf_counter()
                frame = run_experiment(
                    data.root, synthetic, experiment=experiment, ratios=cfg.ratios,
                    out_dir=cfg.out_dir / "downstream", seed=seed, protocol=unet, device=device,
                    folds=seg_folds, primary=primary,
                )
                if _records(cfg.out_dir / "downstream") != records_before:  # some configurations trained now
                    ledger.record(key, time.perf_counter() - t0, add=True)
                downstream.append(frame.assign(seed=seed))
                wall[f"downstream_{experiment}"] = wall.get(f"downstream_{experiment}", 0.0) + ledger.seconds(key)
                bar.advance(overall)

        step("rendering report")
        # the recorded cost of everything the report shows (this invocation may have reused most of it)
        wall["total"] = sum(v for k, v in wall.items() if k != "total") + sum(sum(r.wall_times.values()) for r in runs)
        wall["this invocation"] = time.perf_counter() - started
        results = ComparisonResults(
            protocol=protocol.name,
            dataset=_describe_data(data),
            data_hash=data.content_hash,
            runs=runs,
            image_quality=(pd.concat(quality, ignore_index=True) if quality
                           else pd.DataFrame(columns=list(IMAGE_QUALITY_COLUMNS))),
            downstream=pd.concat(downstream, ignore_index=True) if downstream else None,
            wall_times=wall,
            spec=data.spec,
            notes=notes,
            evaluation=plan,
            settings=comparison_settings(protocol, unet, seeds, data, quality, device),
        )
        report_dir = cfg.out_dir / "report"
        render_report(results, report_dir, overwrite=True)  # a re-run refreshes the report atomically
        bar.advance(overall)
    return ComparisonOutcome(report_dir=report_dir, wall_time_s=time.perf_counter() - started, results=results,
                             failures=[r for r in runs if r.error is not None])


class _WallTimes:
    """``OUT/wall_times.json``: the seconds each piece of work took when it actually ran (a
    reuse in a later invocation keeps the recorded time instead of publishing ~0 s)."""

    def __init__(self, path: Path):
        self.path = path
        self.times: dict[str, float] = json.loads(path.read_text()) if path.is_file() else {}

    def seconds(self, key: str) -> float:
        return float(self.times.get(key, 0.0))

    def record(self, key: str, seconds: float, add: bool = False) -> None:
        """``add``: work done in parts over several invocations (resumed downstream experiments)."""
        self.times[key] = (self.seconds(key) if add else 0.0) + seconds
        atomic_write_json(self.path, self.times)


def _records(downstream_dir: Path) -> dict[str, int]:
    """Downstream configuration records and their modification times (a change: work was done)."""
    folder = downstream_dir / "configs"
    return {p.name: p.stat().st_mtime_ns for p in folder.glob("*.json")} if folder.is_dir() else {}


def _one_line(exc: BaseException) -> str:
    """An exception as one line: a SynthbenchError's own message, else ``Type: message``."""
    text = str(exc) if isinstance(exc, SynthbenchError) else f"{type(exc).__name__}: {exc}"
    return " ".join(text.split())


def _debug_trace() -> None:
    if os.environ.get("SYNTHBENCH_DEBUG"):
        traceback.print_exc()


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
