"""What a comparison produces: the input of the report renderer (issue 8, paper Sec. "Evaluation").

:class:`ComparisonResults` collects, for every method and seed, the run directory
(``config.json``, ``manifest.json``, ``log.jsonl``), the synthesis directory (layout in
docs/architecture.md "Synthesis output"), and two tidy tables:

* image quality (paper Table II): one row per method, seed, setting, metric;
* downstream segmentation (paper Tables III/IV): one row per experiment, method, seed, ratio,
  class, metric.

Values in both tables are mean over the test-set folds with a 95% confidence half-width
(:func:`synthbench.stats.mean_ci`) and the per-fold values, which the report uses for paired
significance tests.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from synthbench.data.spec import PAPER_CLASSES, DatasetSpec
from synthbench.errors import SynthbenchError

#: Columns of the image-quality table (paper Table II).
IMAGE_QUALITY_COLUMNS = ("method", "seed", "setting", "metric", "value", "ci95", "n", "folds", "higher_is_better")
#: Columns of the downstream table (paper Tables III and IV).
DOWNSTREAM_COLUMNS = (
    "experiment", "method", "seed", "ratio", "n_real", "n_synthetic", "class", "metric", "mean", "ci95", "folds",
)
#: "lung" or "lesion": the region-only setting is named by the data set's region (spec.region_key).
SETTINGS = ("complete", "lung", "lesion")
#: Table II column order; FRD (a radiomics feature space, beside FID), the paper's lung-only SSIM
#: definition (region setting only) and KID are measured here in addition to the paper's four.
METRICS = ("FID", "FRD", "PSNR", "SSIM", "SSIM (paper)", "RMSE", "KID")
EXPERIMENTS = ("replace", "add")
DOWNSTREAM_METRICS = ("Dice", "Dice (per image)", "sensitivity", "specificity")
#: Direction of every known metric (used when a row does not say, and to check rows that do).
HIGHER_IS_BETTER = {
    "FID": False, "KID": False, "FRD": False, "RMSE": False, "PSNR": True, "SSIM": True, "SSIM (paper)": True,
    "Dice": True, "Dice (per image)": True, "sensitivity": True, "specificity": True,
}
#: Metrics whose true value is >= 0 but whose unbiased estimate can fall below 0 (KID): a
#: negative estimate means "no measurable difference", so such a column is not ranked.
NONNEGATIVE = frozenset({"KID"})

#: Metric names as the metric and downstream modules spell them -> the report's spelling.
CANONICAL_METRIC = {name.lower(): name for name in HIGHER_IS_BETTER} | {
    "ssim_paper": "SSIM (paper)", "dice_per_image": "Dice (per image)"}


@dataclass
class MethodRun:
    """One trained method at one seed: where its run and its synthesis live, and how long they took.

    ``wall_times`` maps a stage ("train", "synthesize", "evaluate", ...) to seconds;
    ``downstream_dir`` optionally names the synthetic images the downstream experiments used.
    """

    method: str
    seed: int
    run_dir: Path | None = None
    synthesis_dir: Path | None = None
    wall_times: dict[str, float] = field(default_factory=dict)
    downstream_dir: Path | None = None
    #: Set when this method failed inside a comparison: the reason (one line) and the step
    #: ("train", "synthesize", "evaluate") it failed at; the report shows it as a failed row.
    error: str | None = None
    failed_step: str | None = None
    #: Which plugin produced the run (``Registry.provenance``); else read from the manifest.
    plugin: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        self.run_dir = Path(self.run_dir) if self.run_dir is not None else None
        self.synthesis_dir = Path(self.synthesis_dir) if self.synthesis_dir is not None else None
        self.seed = int(self.seed)

    def synthesis(self) -> dict[str, Any]:
        """The ``synthesis.json`` of the images the tables used (empty when absent)."""
        return _read_json(self.synthesis_dir / "synthesis.json") if self.synthesis_dir else {}

    def test_time(self) -> str:
        """The test-time setting the synthesis recorded, in words ("not recorded" for old ones)."""
        return str(self.synthesis().get("test_time") or "not recorded")

    def uses_real_image(self) -> bool:
        """Whether the method saw the real target slice at test time (``--style real``)."""
        record = self.synthesis()
        return bool(record.get("uses_real_image", record.get("style_mode") == "real"))

    def manifest(self) -> dict[str, Any]:
        """The run's ``manifest.json`` (empty when the run has none)."""
        return _read_json(self.run_dir / "manifest.json") if self.run_dir else {}

    def provenance(self) -> dict[str, Any]:
        """Plugin, distribution and version that produced the run (empty when unknown)."""
        if self.plugin:
            return dict(self.plugin)
        recorded = self.manifest().get("plugin")
        return recorded if isinstance(recorded, dict) else {}

    @property
    def plugin_text(self) -> str:
        """``distribution version`` of the plugin that produced the run, or ``-``."""
        prov = self.provenance()
        return f"{prov['distribution']} {prov.get('version') or ''}".strip() if prov.get("distribution") else "-"

    @property
    def status(self) -> str:
        """``finished``, or ``FAILED at STEP: reason`` for a run that failed inside the comparison."""
        return f"FAILED at {self.failed_step or 'run'}: {self.error}" if self.error is not None else "finished"

    def config(self) -> dict[str, Any]:
        """The run's ``config.json`` (empty when the run has none)."""
        return _read_json(self.run_dir / "config.json") if self.run_dir else {}

    def log(self) -> pd.DataFrame:
        """The run's ``log.jsonl`` as a DataFrame, one row per logged step (empty if absent)."""
        if self.run_dir is None:
            return pd.DataFrame()
        path = self.run_dir / "log.jsonl"
        if not path.exists():
            return pd.DataFrame()
        records = []
        for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as exc:
                raise SynthbenchError(f"line {lineno} is not JSON ({exc.msg})", path) from exc
            if not isinstance(rec, dict):
                raise SynthbenchError(f"line {lineno} is not a JSON object", path)
            records.append(_flatten(rec))
        return pd.DataFrame.from_records(records)


@dataclass
class ComparisonResults:
    """Everything ``synthbench compare`` measured, ready for :func:`synthbench.report.render_report`.

    ``dataset`` is a free-text description of the data set (name, source, size), ``data_hash``
    its prepared content hash; ``spec`` gives the label classes and overlay colours (taken from
    the first synthesis directory's ``synthesis.json`` when not given, else the paper's classes).
    ``wall_times`` holds comparison-level stages in seconds (per-run times live in ``runs``).
    """

    protocol: str
    dataset: str
    data_hash: str
    runs: list[MethodRun]
    image_quality: pd.DataFrame
    downstream: pd.DataFrame | None = None
    wall_times: dict[str, float] = field(default_factory=dict)
    spec: DatasetSpec | None = None
    notes: list[str] = field(default_factory=list)
    #: Split, image count and folds of every table (:func:`synthbench.compare.evaluation_plan`).
    evaluation: dict[str, Any] = field(default_factory=dict)
    #: What the comparison ran with, for the settings table (:func:`synthbench.report.settings.comparison_settings`).
    settings: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.image_quality = _check_frame(self.image_quality, IMAGE_QUALITY_COLUMNS, "image-quality results")
        if self.downstream is None:
            self.downstream = pd.DataFrame(columns=list(DOWNSTREAM_COLUMNS))
        self.downstream = _check_frame(self.downstream, DOWNSTREAM_COLUMNS, "downstream results")
        self._validate()

    @property
    def methods(self) -> list[str]:
        """Methods in order of first appearance (runs first, then tables)."""
        seen: dict[str, None] = {}
        for name in [r.method for r in self.runs] + list(self.image_quality["method"]) + list(self.downstream["method"]):
            seen.setdefault(str(name), None)
        return list(seen)

    def plugin_label(self, method: str) -> str | None:
        """``distribution version`` of the plugin behind ``method`` (first run that records one)."""
        for run in self.runs:
            if run.method == method and run.plugin_text != "-":
                return run.plugin_text
        return None

    @property
    def failures(self) -> dict[str, str]:
        """Method -> why it failed (seed, step, reason), for every method with a failed run."""
        out: dict[str, str] = {}
        for run in self.runs:
            if run.error is not None and run.method not in out:
                out[run.method] = f"seed {run.seed}, {run.failed_step or 'run'}: {run.error}"
        return out

    def real_image_methods(self) -> set[str]:
        """Methods whose synthesis saw the real target slice (their rows are marked)."""
        return {r.method for r in self.runs if r.uses_real_image()}

    def image_counts(self) -> dict[str, str]:
        """How many images each table used, in words (from :attr:`evaluation`)."""
        out = {}
        iq, ds = self.evaluation.get("image_quality"), self.evaluation.get("downstream")
        if iq:
            out["image_quality"] = (f"{iq['images']:,} images per method ({iq['split']}), {iq['folds']} folds of "
                                    f"{_fold_sizes(iq['fold_size'])}")
        if ds:
            out["downstream"] = (f"U-Net trained on the {ds['train_real']:,} real images of {ds['train_split']} (synthetic "
                                 f"ones from the same label maps replace or join them), tested on {ds['images']:,} "
                                 f"images of {ds['test_split']} in {ds['folds']} folds of {_fold_sizes(ds['fold_size'])}")
        return out

    def departures(self) -> list[tuple[str, list[Any]]]:
        """The evaluation's departures from the paper, then each compared method's (from its run's
        recorded options); see docs/departures.md."""
        from synthbench.departures import EVALUATION, method_departures
        from synthbench.plugins import get_registry

        out: list[tuple[str, list[Any]]] = [("evaluation protocol", list(EVALUATION))]
        seen = set()
        for run in self.runs:
            config = run.config()
            name = config.get("method")
            if run.method in seen or not name:
                continue
            seen.add(run.method)
            try:
                cls = get_registry().synthesizer(name)
            except SynthbenchError:
                continue  # the plugin is not installed here; its run records stay in the manifest
            out.append((run.method, method_departures(cls, config.get("options"))))
        return out

    def resolved_spec(self) -> DatasetSpec:
        """The data-set description used for label colours (see class docstring)."""
        if self.spec is not None:
            return self.spec
        for run in self.runs:
            if run.synthesis_dir is not None and (run.synthesis_dir / "synthesis.json").exists():
                meta = _read_json(run.synthesis_dir / "synthesis.json")
                if isinstance(meta.get("spec"), dict):
                    return DatasetSpec.from_dict(meta["spec"])
        return DatasetSpec(name="paper", classes=PAPER_CLASSES)

    def _validate(self) -> None:
        iq = self.image_quality
        bad = sorted(set(iq["setting"]) - set(SETTINGS))
        if bad:
            raise SynthbenchError(f"image-quality results: unknown setting(s) {bad}; expected {list(SETTINGS)}")
        for metric, hib in zip(iq["metric"], iq["higher_is_better"], strict=True):
            known = HIGHER_IS_BETTER.get(str(metric))
            if known is not None and bool(hib) != known:
                raise SynthbenchError(
                    f"image-quality results: metric {metric} has higher_is_better={bool(hib)}, but it is "
                    f"{'higher' if known else 'lower'}-is-better"
                )
        dup = iq.duplicated(["method", "seed", "setting", "metric"])
        if dup.any():
            row = iq[dup].iloc[0]
            raise SynthbenchError(
                f"image-quality results: duplicate row for {row['method']} seed {row['seed']} {row['setting']} {row['metric']}"
            )
        ds = self.downstream
        bad = sorted(set(ds["experiment"]) - set(EXPERIMENTS))
        if bad:
            raise SynthbenchError(f"downstream results: unknown experiment(s) {bad}; expected {list(EXPERIMENTS)}")
        if len(ds) and ((ds["ratio"].astype(float) < 0) | (ds["ratio"].astype(float) > 1)).any():
            raise SynthbenchError("downstream results: ratio must be a fraction in [0, 1] (0.5 = 50%)")
        dup = ds.duplicated(["experiment", "method", "seed", "ratio", "class", "metric"])
        if dup.any():
            row = ds[dup].iloc[0]
            raise SynthbenchError(
                f"downstream results: duplicate row for {row['experiment']} {row['method']} seed {row['seed']} "
                f"ratio {row['ratio']} {row['class']} {row['metric']}"
            )


def _fold_sizes(sizes: list[int]) -> str:
    low, high = sizes
    return f"{low:,}" if low == high else f"{low:,}-{high:,}"


def _check_frame(frame: pd.DataFrame, columns: tuple[str, ...], what: str) -> pd.DataFrame:
    if not isinstance(frame, pd.DataFrame):
        raise SynthbenchError(f"{what}: expected a pandas DataFrame, got {type(frame).__name__}")
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise SynthbenchError(f"{what}: missing column(s) {missing}")
    frame = frame.reset_index(drop=True).copy()
    if "fold_values" in frame.columns:  # synthbench.metrics.evaluate: folds = count, fold_values = list
        frame["n_folds"] = [len(_as_list(v)) for v in frame["fold_values"]]
        frame["folds"] = frame["fold_values"]
        frame = frame.drop(columns=["fold_values"])
    frame["folds"] = [_as_list(v) for v in frame["folds"]]
    frame["metric"] = [CANONICAL_METRIC.get(str(m).lower(), str(m)) for m in frame["metric"]]
    if "seed" in frame:
        frame["seed"] = frame["seed"].astype(int)
    return frame


def _as_list(value: Any) -> list[float]:
    if isinstance(value, int | np.integer) and not isinstance(value, bool):
        raise SynthbenchError(f"folds must list the per-fold values, got the number {value}")
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return []
    if isinstance(value, str):
        value = json.loads(value) if value.strip() else []
    return [float(v) for v in value]


def _read_json(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise SynthbenchError(f"not valid JSON ({exc.msg}, line {exc.lineno})", path) from exc
    if not isinstance(data, dict):
        raise SynthbenchError("expected a JSON object", path)
    return data


def _flatten(rec: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested log records ({"losses": {"G": 1}}) become flat keys ("losses/G")."""
    out: dict[str, Any] = {}
    for key, value in rec.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flatten(value, f"{name}/"))
        else:
            out[name] = value
    return out


#: Where a run manifest keeps each summarised fact (first key path found wins).
MANIFEST_FIELDS: dict[str, tuple[str, ...]] = {
    "seed": ("seed", "config/seed"),
    "git commit": ("git_commit", "git/commit", "commit", "git"),
    "versions": ("versions", "version", "environment/versions"),
    "hardware": ("hardware", "device", "environment/hardware"),
    "data hash": ("data_hash", "data/content_hash", "data/hash", "dataset/content_hash", "content_hash"),
    "weights": ("pretrained_weights", "weights", "pretrained"),
}


def manifest_summary(manifest: dict[str, Any]) -> dict[str, str]:
    """The facts a reader checks first (seed, versions, git commit, hardware, data hash, weights)."""
    flat = _flatten(manifest)
    out: dict[str, str] = {}
    for label, keys in MANIFEST_FIELDS.items():
        for key in keys:
            if key in manifest and not isinstance(manifest[key], dict | list):
                out[label] = str(manifest[key])
                break
            nested = {k[len(key) + 1:]: v for k, v in flat.items() if k.startswith(key + "/")}
            if key in manifest and isinstance(manifest[key], list):
                out[label] = ", ".join(_short(v) for v in manifest[key])
                break
            if nested:
                out[label] = ", ".join(f"{k}={_short(v)}" for k, v in nested.items())
                break
            if key in flat:
                out[label] = _short(flat[key])
                break
    return out


def _short(value: Any) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k}={_short(v)}" for k, v in value.items())
    return str(value)
