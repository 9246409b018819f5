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
SETTINGS = ("complete", "lung")
#: Table II column order; KID is measured here in addition to the paper's four.
METRICS = ("FID", "PSNR", "SSIM", "RMSE", "KID")
EXPERIMENTS = ("replace", "add")
DOWNSTREAM_METRICS = ("Dice", "sensitivity", "specificity")
#: Direction of every known metric (used when a row does not say, and to check rows that do).
HIGHER_IS_BETTER = {
    "FID": False, "KID": False, "RMSE": False, "PSNR": True, "SSIM": True,
    "Dice": True, "sensitivity": True, "specificity": True,
}

#: Metric names as the metric and downstream modules spell them -> the report's spelling.
CANONICAL_METRIC = {name.lower(): name for name in HIGHER_IS_BETTER}


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

    def __post_init__(self) -> None:
        self.run_dir = Path(self.run_dir) if self.run_dir is not None else None
        self.synthesis_dir = Path(self.synthesis_dir) if self.synthesis_dir is not None else None
        self.seed = int(self.seed)

    def manifest(self) -> dict[str, Any]:
        """The run's ``manifest.json`` (empty when the run has none)."""
        return _read_json(self.run_dir / "manifest.json") if self.run_dir else {}

    def config(self) -> dict[str, Any]:
        """The run's ``config.json`` (empty when the run has none)."""
        return _read_json(self.run_dir / "config.json") if self.run_dir else {}

    def synthesis(self) -> dict[str, Any]:
        """The synthesis directory's ``synthesis.json`` (empty when there is none)."""
        return _read_json(self.synthesis_dir / "synthesis.json") if self.synthesis_dir else {}

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
