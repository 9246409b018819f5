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

Steps 2-5 are jobs (:mod:`synthbench.jobs`) of one DAG (:class:`ComparisonJobs`), recorded in
``OUT/jobs/`` and run by a launcher: in this process (default), as child processes on the
visible GPUs, or as Slurm jobs. A failed job is reported and skipped with what needs it; the
others finish; the same command later runs only what is missing.

One comparison at a time may use ``OUT`` (a lock, :mod:`synthbench.locking`). The report's wall
times are the recorded cost of each piece of work, not of this invocation (which may have
reused it): training from each run's manifest, data preparation from the prepared manifest,
synthesis and downstream experiments from ``OUT/wall_times.json``, written when they ran.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import time
import warnings
from dataclasses import dataclass, field, replace
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
from synthbench.jobs import Job, Outcome, read_record, run_jobs
from synthbench.jobs.launchers import LaunchOptions, make_launcher
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
    #: The log of each failed method's job (method label, seed) -> path, where it has one.
    logs: dict[tuple[str, int], Path] = field(default_factory=dict)
    #: Downstream jobs that failed (:class:`synthbench.jobs.Outcome`); the CLI then exits with 1.
    failed_jobs: list[Any] = field(default_factory=list)


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


def run_key(cfg: CompareConfig, spec: MethodSpec, seed: int, data_hash: str) -> str:
    """The request hash of one training run (method, variant, options, protocol fields, seed,
    data): its run directory's name and its job's key."""
    protocol = get_protocol(cfg.protocol, cfg.protocol_overrides)
    options = cfg.method_options.get(spec.label) or cfg.method_options.get(spec.name) or {}
    return _hash(
        {
            "method": spec.name,
            "variant": spec.variant,
            "options": options,
            "protocol": {k: v for k, v in protocol.to_dict().items() if k not in ("device", "workers")},
            "seed": seed,
            "data": data_hash,
        }
    )[:10]


def run_directory(cfg: CompareConfig, spec: MethodSpec, seed: int, data_hash: str) -> Path:
    return cfg.out_dir / "runs" / f"{spec.slug}-seed{seed}-{run_key(cfg, spec, seed, data_hash)}"


def train_method(cfg: CompareConfig, spec: MethodSpec, seed: int, data: PreparedDataset, device: str) -> Path:
    """Train (or reuse, or resume) one method at one seed; return its run directory."""
    protocol = get_protocol(cfg.protocol, {**cfg.protocol_overrides, "device": device})
    options = cfg.method_options.get(spec.label) or cfg.method_options.get(spec.name) or {}
    run_dir = run_directory(cfg, spec, seed, data.content_hash)
    manifest = run_dir / "manifest.json"
    status = json.loads(manifest.read_text()).get("status") if manifest.is_file() else None
    if status == "finished":
        err_console.print(f"[green]reusing finished run[/green] {run_dir}")
        return run_dir
    # a recorded configuration resumes (from step 0 if no checkpoint was written yet)
    resume = (run_dir / "config.json").is_file()
    if run_dir.exists() and not resume and int(os.environ.get("RANK", "0")) == 0:
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
                   style: str = "none", test_mode: dict[str, str] | None = None, seed: int = 0) -> float | None:
    """Synthesize ``split`` of the data set with a run's final weights into ``out_dir`` (reused when
    complete and made with the same data, style, test-time settings and seed); return the seconds
    it took, or None when the folder was reused."""
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
            return None
    t0 = time.perf_counter()
    synthesize(run_dir, data.root, out_dir, split=split, device=device, show_progress=show, overwrite=True,
               synth=synth, style=style, test_mode=test_mode, seed=seed)
    return time.perf_counter() - t0


# ---------------------------------------------------------------- the units of a comparison (jobs)
# Module-level functions with plain arguments: a job runs the same in this process, in a child
# worker process (--launcher processes) and in a Slurm job (--launcher slurm). Each returns JSON.

def train_job(cfg: CompareConfig, spec: MethodSpec, seed: int, data_root: str) -> dict[str, Any]:
    run_dir = train_method(cfg, spec, seed, PreparedDataset(data_root), _device(cfg.device))
    return {"run_dir": str(run_dir)}


def synthesize_job(cfg: CompareConfig, spec: MethodSpec, seed: int, data_root: str, run_dir: str) -> dict[str, Any]:
    modes = cfg.test_modes.get(spec.label) or cfg.test_modes.get(spec.name) or {}
    out_dir = Path(run_dir) / "synthesis" / QUALITY_SPLIT
    seconds = synthesize_run(Path(run_dir), PreparedDataset(data_root), QUALITY_SPLIT, out_dir, _device(cfg.device),
                             cfg.show_progress, style=cfg.style, test_mode=modes, seed=seed)
    return {"out_dir": str(out_dir), "seconds": seconds}


def evaluate_job(cfg: CompareConfig, test_dir: str, region: str | None, folds: int) -> dict[str, Any]:
    """Table II on one synthesis folder; the rows and the warnings (said once in the report's notes)."""
    from synthbench.metrics.evaluate import evaluate_folders

    test_dir, t0 = Path(test_dir), time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        frame = evaluate_folders(
            test_dir / "real", test_dir / "complete", mask_dir=test_dir / "mask" if region else None,
            metrics=list(cfg.metrics) if cfg.metrics else None, device=_device(cfg.device), folds=folds,
            show_progress=cfg.show_progress, region=region or "lung",
            feature_cache=Path(cfg.out_dir) / "jobs" / "inception-cache",
        )
    return {**_frame_record(frame), "warnings": list(dict.fromkeys(str(w.message) for w in caught)),
            "seconds": time.perf_counter() - t0}


def unet_job(cfg: CompareConfig, data_root: str, experiment: str, seed: int, unet: Any, folds: int,
             methods: list[str], method: str | None, synthesis: str | None, key: str) -> dict[str, Any]:
    """One U-Net training of a downstream experiment (a table row), planned by the comparison as
    configuration ``key``; ``seconds`` is 0 when its record existed already."""
    from synthbench.downstream.experiment import (
        checked_data,
        plan_configurations,
        train_configuration,
    )

    data = checked_data(data_root, folds)
    synthetic = {method: synthesis} if method and synthesis else {}
    plan = plan_configurations(data, experiment, synthetic, cfg.ratios, seed, unet, folds, methods=methods)
    config = next((c for c in plan if c.key == key), None)
    if config is None:
        raise SynthbenchError(f"U-Net configuration {key} of {experiment} (seed {seed}) is no longer planned: its "
                              "training images changed since the comparison started (run the comparison again)")
    folder = Path(cfg.out_dir) / "downstream"
    existed, t0 = (folder / "configs" / f"{key}.json").is_file(), time.perf_counter()
    train_configuration(data, config, unet, folder, seed, folds, _device(cfg.device),
                        description=f"{experiment} {config.ratio:.0%} {config.method} (seed {seed})")
    return {"key": key, "seconds": 0.0 if existed else time.perf_counter() - t0}


def downstream_job(cfg: CompareConfig, data_root: str, synthetic: dict[str, str], experiment: str, seed: int,
                   unet: Any, folds: int, primary: str) -> dict[str, Any]:
    """One downstream experiment (Table III or IV) at one seed, from the configurations its
    ``unet`` jobs recorded (any still missing is trained here); ``seconds`` is the time spent
    training U-Net configurations here (0 when every one was recorded before)."""
    from synthbench.downstream.experiment import checked_data, plan_configurations, run_experiment

    folder = Path(cfg.out_dir) / "downstream"
    plan = plan_configurations(checked_data(data_root, folds), experiment, synthetic, cfg.ratios, seed, unet, folds,
                               primary)
    missing = [c.key for c in plan if not (folder / "configs" / f"{c.key}.json").is_file()]
    t0 = time.perf_counter()
    frame = run_experiment(data_root, synthetic, experiment=experiment, ratios=cfg.ratios, out_dir=folder, seed=seed,
                           protocol=unet, device=_device(cfg.device), folds=folds, primary=primary)
    return {**_frame_record(frame), "seconds": time.perf_counter() - t0 if missing else 0.0}


def _frame_record(frame: pd.DataFrame) -> dict[str, Any]:
    """A results frame as exact JSON (Python floats round-trip exactly; NaN as NaN)."""
    def plain(value: Any) -> Any:
        if isinstance(value, np.generic):
            return value.item()
        if isinstance(value, list | tuple | np.ndarray):
            return [plain(v) for v in value]
        return value

    return {"columns": list(frame.columns), "rows": [[plain(v) for v in row] for row in frame.itertuples(index=False)],
            "attrs": json.loads(json.dumps(frame.attrs, default=str))}


def _frame(record: dict[str, Any]) -> pd.DataFrame:
    """The frame of :func:`_frame_record`, with its ``attrs`` (the metrics' conventions and weights)."""
    frame = pd.DataFrame(record["rows"], columns=record["columns"])
    frame.attrs.update(record.get("attrs") or {})
    return frame


class ComparisonJobs:
    """The comparison's DAG: per method and seed ``train -> synthesize -> evaluate``; per seed and
    experiment one ``unet`` job per U-Net training of its table (planned when its synthesis exists;
    the real-only ones at once); per seed, once every method of that seed is evaluated (or failed),
    one ``downstream`` job per experiment that assembles its table over the methods that succeeded.
    Keys: the run key, the U-Net configuration key, else a hash over the keys consumed."""

    def __init__(self, cfg: CompareConfig, data: PreparedDataset, unet, seeds: list[int], region: str | None,
                 quality_folds: int, seg_folds: int):
        self.cfg, self.data, self.unet, self.seeds = cfg, data, unet, seeds
        self.region, self.quality_folds, self.seg_folds = region, quality_folds, seg_folds
        # jobs run with absolute paths: a child process or a Slurm job may start in another folder
        self.job_cfg = replace(cfg, out_dir=Path(cfg.out_dir).resolve())
        self.data_root = str(Path(data.root).resolve())
        self.folder = cfg.out_dir / "jobs"
        self.labels = [spec.label for spec in cfg.methods]
        self.slugs = {spec.label: spec.slug for spec in cfg.methods}
        self.chains: dict[tuple[str, int], tuple[Job, Job, Job]] = {}
        self.run_dirs: dict[tuple[str, int], Path] = {}
        self.downstream: dict[tuple[int, str], Job] = {}
        #: U-Net trainings: configuration key -> job; per (seed, experiment) its (method, key) rows
        #: (method None: real images only).
        self.unets: dict[str, Job] = {}
        self.unet_rows: dict[tuple[int, str], list[tuple[str | None, str]]] = {}
        self.expanded: set[int] = set()

    def _job(self, kind: str, name: str, slug: str, request: Any, func, kwargs, deps=(), outputs=(), tasks=1) -> Job:
        key = request if isinstance(request, str) else _hash(request)[:10]
        return Job(key=key, kind=kind, name=name, folder=self.folder / f"{kind}-{slug}-{key}", func=func,
                   kwargs=kwargs, deps=tuple(deps), outputs=tuple(outputs), tasks=tasks)

    def method_jobs(self, gpus_per_run: int = 1) -> list[Job]:
        """Every training first (the longest jobs start while the others wait for their inputs), then
        each chain's synthesis and evaluation, then the U-Net trainings on real images only."""
        trains, rest = [], []
        for seed in self.seeds:
            for spec in self.cfg.methods:
                what, slug = f"{spec.label} (seed {seed})", f"{spec.slug}-seed{seed}"
                run_dir = run_directory(self.job_cfg, spec, seed, self.data.content_hash)
                self.run_dirs[(spec.label, seed)] = run_dir
                train_ = self._job("train", f"train {what}", slug, run_key(self.cfg, spec, seed, self.data.content_hash),
                                   train_job, {"cfg": self.job_cfg, "spec": spec, "seed": seed, "data_root": self.data_root},
                                   outputs=[run_dir / "final.pt"], tasks=gpus_per_run)
                modes = self.cfg.test_modes.get(spec.label) or self.cfg.test_modes.get(spec.name) or {}
                synth = self._job("synthesize", f"synthesize {what}", slug,
                                  {"run": train_.key, "split": QUALITY_SPLIT, "style": self.cfg.style, "test_mode": modes,
                                   "seed": seed, "data": self.data.content_hash},
                                  synthesize_job, {"cfg": self.job_cfg, "spec": spec, "seed": seed,
                                                   "data_root": self.data_root, "run_dir": str(run_dir)},
                                  deps=[train_.key], outputs=[run_dir / "synthesis" / QUALITY_SPLIT / "synthesis.json"])
                test_dir = run_dir / "synthesis" / QUALITY_SPLIT
                evaluate = self._job("evaluate", f"evaluate {what}", slug,
                                     {"synthesis": synth.key, "metrics": self.cfg.metrics, "folds": self.quality_folds,
                                      "region": self.region},
                                     evaluate_job, {"cfg": self.job_cfg, "test_dir": str(test_dir), "region": self.region,
                                                    "folds": self.quality_folds}, deps=[synth.key])
                self.chains[(spec.label, seed)] = (train_, synth, evaluate)
                trains.append(train_)
                rest += [synth, evaluate]
        unets = [job for seed in self.seeds for job in self.unet_jobs(seed)]
        return trains + rest + unets

    def unet_jobs(self, seed: int, label: str | None = None, synth: Job | None = None) -> list[Job]:
        """The new U-Net trainings of ``seed`` that use ``label``'s synthesis (None: those on real
        images only). A planning error is left to the experiment's own job, which reports it."""
        from synthbench.downstream.experiment import plan_configurations

        synthetic = {label: str(self.run_dirs[(label, seed)] / "synthesis" / QUALITY_SPLIT)} if label else {}
        jobs = []
        for experiment in self.cfg.experiments:
            try:
                plan = plan_configurations(self.data, experiment, synthetic, self.cfg.ratios, seed, self.unet,
                                           self.seg_folds, methods=self.labels)
            except SynthbenchError:
                return jobs
            for config in plan:
                if (config.source is None) != (label is None):
                    continue
                self.unet_rows.setdefault((seed, experiment), []).append((label, config.key))
                if config.key in self.unets:  # the same training in both experiments (0%: real images only)
                    continue
                who = config.method if label else "real only"
                job = self._job("unet", f"U-Net {experiment} {config.ratio:.0%} {who} (seed {seed})",
                                f"{experiment}-{config.ratio:g}-{self.slugs[label] if label else 'real-only'}-seed{seed}",
                                config.key, unet_job,
                                {"cfg": self.job_cfg, "data_root": self.data_root, "experiment": experiment,
                                 "seed": seed, "unet": self.unet, "folds": self.seg_folds, "methods": self.labels,
                                 "method": label, "synthesis": synthetic.get(label) if label else None,
                                 "key": config.key},
                                deps=[synth.key] if synth is not None else [],
                                outputs=[Path(self.job_cfg.out_dir) / "downstream" / "configs" / f"{config.key}.json"])
                self.unets[config.key] = job
                jobs.append(job)
        return jobs

    def expand(self, outcome: Outcome, outcomes: dict[str, Outcome]) -> list[Job]:
        """A method's U-Net trainings once its synthesis exists; a seed's downstream jobs once all
        its method chains have ended."""
        where = next(((label, s) for (label, s), chain in self.chains.items() if outcome.job in chain), None)
        if where is None:
            return []
        label, seed = where
        jobs = []
        if outcome.job.kind == "synthesize" and outcome.ok:
            jobs += self.unet_jobs(seed, label, outcome.job)
        if seed in self.expanded:
            return jobs
        chains = [(label, chain) for (label, s), chain in self.chains.items() if s == seed]
        if any(chain[2].key not in outcomes for _, chain in chains):
            return jobs
        self.expanded.add(seed)
        done = [(label, chain) for label, chain in chains if all(outcomes[j.key].ok for j in chain)]
        if not done:  # every method failed: nothing to segment with
            return jobs
        synthetic = {label: str(self.run_dirs[(label, seed)] / "synthesis" / QUALITY_SPLIT) for label, _ in done}
        primary = done[0][0]
        for experiment in self.cfg.experiments:
            request = {"experiment": experiment, "seed": seed, "synthesis": {label: chain[1].key for label, chain in done},
                       "ratios": list(self.cfg.ratios), "unet": self.unet.to_dict(), "folds": self.seg_folds,
                       "primary": primary, "data": self.data.content_hash}
            unets = [key for method, key in self.unet_rows.get((seed, experiment), []) if method is None or method in synthetic]
            job = self._job("downstream", f"downstream {experiment} (seed {seed})", f"{experiment}-seed{seed}", request,
                            downstream_job, {"cfg": self.job_cfg, "data_root": self.data_root, "synthetic": synthetic,
                                             "experiment": experiment, "seed": seed, "unet": self.unet,
                                             "folds": self.seg_folds, "primary": primary},
                            deps=[chain[1].key for _, chain in done] + list(dict.fromkeys(unets)))
            self.downstream[(seed, experiment)] = job
            jobs.append(job)
        return jobs


def run_comparison(cfg: CompareConfig, launch: LaunchOptions | None = None) -> ComparisonOutcome:
    """Run every step of the comparison with ``launch`` (default: in this process); return where
    the report is."""
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
    launch = (launch or LaunchOptions()).validate()
    unet = UNetProtocol.named(cfg.unet_protocol, **cfg.unet_overrides)
    protocol = get_protocol(cfg.protocol, cfg.protocol_overrides)
    with lock_directory(cfg.out_dir, "comparison directory"):
        return _run_locked(cfg, protocol, unet, started, launch)


def _run_locked(cfg: CompareConfig, protocol, unet, started: float, launch: LaunchOptions) -> ComparisonOutcome:
    launcher = make_launcher(launch, cfg.out_dir / "jobs")
    if hasattr(launcher, "prestart"):  # worker processes import torch while this one imports the rest and prepares the data
        launcher.prestart()
    with contextlib.closing(launcher):
        return _run_jobs(cfg, protocol, unet, started, launch, launcher)


def _run_jobs(cfg: CompareConfig, protocol, unet, started: float, launch: LaunchOptions, launcher) -> ComparisonOutcome:
    from synthbench.report import ComparisonResults, MethodRun, render_report
    from synthbench.report.results import IMAGE_QUALITY_COLUMNS
    from synthbench.report.settings import comparison_settings

    atomic_write_json(cfg.out_dir / "compare.json", _config_record(cfg, protocol))
    ledger = _WallTimes(cfg.out_dir / "wall_times.json")

    seeds = [protocol.seed + i for i in range(cfg.seeds)]
    pairs = [(spec, seed) for seed in seeds for spec in cfg.methods]
    total = 1 + 3 * len(pairs) + len(cfg.experiments) * len(seeds) + 1
    wall: dict[str, float] = {}
    runs: list[MethodRun] = []
    quality: list[pd.DataFrame] = []
    downstream: list[pd.DataFrame] = []

    with progress(transient=False) as bar:
        overall = bar.add_task("comparison", total=total)
        bar.update(overall, description="preparing data")
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

        graph = ComparisonJobs(cfg, data, unet, seeds, region, quality_folds, seg_folds)
        jobs = graph.method_jobs(gpus_per_run=launch.nodes * max(1, launch.gpus_per_node) if launch.kind == "slurm" else 1)
        running: list[str] = []

        def on_event(event: str, job: Job, outcome: Outcome | None) -> None:
            if event == "start":
                running.append(job.name)
            else:
                if job.name in running:
                    running.remove(job.name)
                bar.advance(overall)
                if outcome.status in ("failed", "blocked"):
                    log = f" (log: {outcome.log})" if outcome.log else ""
                    err_console.print(f"[red]{escape(job.name)} {outcome.status.upper()}:[/red] "
                                      f"{escape(outcome.error or '')}{escape(log)}", soft_wrap=True, highlight=False)
            bar.update(overall, description=", ".join(running) or "waiting")

        total += sum(job.kind == "unet" for job in jobs)
        bar.update(overall, total=total)

        def expand(outcome: Outcome, outcomes: dict[str, Outcome]) -> list[Job]:
            nonlocal total
            before = len(graph.expanded)
            new = graph.expand(outcome, outcomes)
            unets = sum(job.kind == "unet" for job in new)
            if unets:
                total += unets
                bar.update(overall, total=total)
            if len(graph.expanded) > before:  # a seed's downstream jobs; none when every method failed
                bar.advance(overall, len(cfg.experiments) - (len(new) - unets))
            return new

        outcomes = run_jobs(jobs, launcher, expand=expand, on_event=on_event)

        logs: dict[tuple[str, int], Path] = {}
        for spec, seed in pairs:
            chain = graph.chains[(spec.label, seed)]
            provenance = get_registry().provenance("synthesizers", spec.name)
            run_dir = run_directory(cfg, spec, seed, data.content_hash)
            times: dict[str, float] = {}
            train_, synth, evaluate = (outcomes[j.key] for j in chain)
            if train_.ok:
                times["train"] = float(json.loads((run_dir / "manifest.json").read_text())["wall_time_s"])
            if synth.ok:
                key = f"synthesize {run_dir.name} {QUALITY_SPLIT}"
                seconds = synth.job.result()["seconds"]
                if synth.status == "finished" and seconds is not None:
                    ledger.record(key, seconds)
                times["synthesize"] = ledger.seconds(key)
            failed = next((o for o in (train_, synth, evaluate) if o.status == "failed"), None)
            if failed is not None:
                _debug_log(failed)
                if failed.log:
                    logs[(spec.label, seed)] = failed.log
                runs.append(MethodRun(spec.label, seed, run_dir=run_dir, wall_times=times, error=failed.error,
                                      failed_step=failed.job.kind, plugin=provenance))
                continue
            result = evaluate.job.result()
            notes.extend(m for m in result["warnings"] if m not in notes)
            quality.append(_frame(result).assign(method=spec.label, seed=seed))
            times["evaluate"] = float(result["seconds"])
            test_dir = run_dir / "synthesis" / QUALITY_SPLIT
            runs.append(MethodRun(spec.label, seed, run_dir=run_dir, synthesis_dir=test_dir,
                                  downstream_dir=test_dir, wall_times=times, plugin=provenance))

        failed_jobs = [o for o in outcomes.values() if o.status == "failed"]
        for config_key, job in graph.unets.items():  # U-Net trainings (their seconds go to their experiments below)
            outcome = outcomes.get(job.key)
            if outcome is not None and outcome.status == "finished" and job.result()["seconds"] > 0:
                ledger.record(f"unet {config_key}", float(job.result()["seconds"]))
        counted: set[str] = set()  # a training shared by both experiments counts under the first
        for seed in seeds:
            for experiment in cfg.experiments:
                job = graph.downstream.get((seed, experiment))
                if job is None:
                    continue
                outcome, key = outcomes[job.key], f"downstream {experiment} seed {seed}"
                if not outcome.ok:
                    notes.append(f"Downstream {experiment} (seed {seed}) {outcome.status}: {outcome.error}")
                    continue
                result = job.result()
                if outcome.status == "finished" and result["seconds"] > 0:  # configurations trained in the job itself
                    ledger.record(key, float(result["seconds"]), add=True)
                downstream.append(_frame(result).assign(seed=seed))
                owned = {k for _, k in graph.unet_rows.get((seed, experiment), [])} - counted
                counted |= owned
                seconds = ledger.seconds(key) + sum(ledger.seconds(f"unet {k}") for k in owned)
                wall[f"downstream_{experiment}"] = wall.get(f"downstream_{experiment}", 0.0) + seconds

        bar.update(overall, description="rendering report")
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
            settings=comparison_settings(protocol, unet, seeds, data, quality, _device(cfg.device)),
        )
        report_dir = cfg.out_dir / "report"
        render_report(results, report_dir, overwrite=True)  # a re-run refreshes the report atomically
        bar.advance(overall)
    return ComparisonOutcome(report_dir=report_dir, wall_time_s=time.perf_counter() - started, results=results,
                             failures=[r for r in runs if r.error is not None], logs=logs,
                             failed_jobs=[o for o in failed_jobs if o.job.kind in ("unet", "downstream")])


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


def _debug_log(outcome: Outcome) -> None:
    """With ``SYNTHBENCH_DEBUG`` set: the traceback a failed job recorded."""
    record = read_record(outcome.job.error_path) if os.environ.get("SYNTHBENCH_DEBUG") else None
    if record and record.get("traceback"):
        err_console.print(record["traceback"], markup=False, highlight=False, soft_wrap=True)


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
