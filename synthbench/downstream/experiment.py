"""The downstream experiments of the paper (Sec. "Evaluation", Tables III and IV).

Data roles as in the paper's Table I: the U-Net trains on the augmented synthesis-test set
(prepared split ``test_aug``: real slices, 73 -> 10,220 under the paper's data options) mixed
with synthetic "complete" images made from the same augmented label maps (the synthesis folder
of ``test_aug``; image ``i`` pairs with real sample ``i``), and is tested on the augmented
segmentation-test set (``seg_test_aug``, 73 -> 10,220, held-out patients) in 10 folds (of 1,022
there). The paper's text once says the U-Net is tested on "the training set of the image
synthesis task"; Table I and the fold size point to the segmentation-test set, which is
followed here (docs/departures.md).

* ``replace`` (Table III): ratios 0..50% of the real training images replaced by synthetic ones.
* ``add`` (Table IV): all real images plus 0..50% (of the real count) synthetic ones.

The ratio sweep uses the primary method (the first one given, or ``primary``); every other
method is trained once at ``compare_ratio`` (default: the largest ratio, 50%), the paper's rows
"50% from METHOD". Each trained U-Net is scored on 10 contiguous folds of ``seg_test_aug``
(:func:`synthbench.stats.folds`); per fold the pixel counts are pooled
(:mod:`synthbench.downstream.scores`); a table cell is mean and 95% CI over the folds
(:func:`synthbench.stats.mean_ci`, Student t: ``t_{0.975,k-1} * s / sqrt(k)``).

Every trained configuration is recorded in ``OUT/configs/<key>.json`` (protocol, exact real
indices and synthetic ids, loss curve, per-fold pixel counts); a configuration whose record
exists is reused, so a ratio-0 model is trained once for both experiments and an interrupted
experiment resumes.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from synthbench import stats
from synthbench.data.prepared import PreparedDataset
from synthbench.downstream.mix import EXPERIMENTS, Mix, select_mix
from synthbench.downstream.scores import (
    METRICS,
    PER_IMAGE_DICE,
    per_image_dice,
    scores_from_counts,
    segmentation_counts,
    union_class_name,
)
from synthbench.downstream.sources import SyntheticSource, open_synthesis, resolve_synthesis_dir
from synthbench.downstream.train import (
    Rows,
    Take,
    UNetProtocol,
    lesion_targets,
    predict,
    train_unet,
)
from synthbench.errors import SynthbenchError
from synthbench.io import atomic_write_json, atomic_write_text

DEFAULT_RATIOS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5)
TRAIN_SPLIT = "test_aug"
TEST_SPLIT = "seg_test_aug"
RECORD_VERSION = 1
COLUMNS = [
    "experiment", "method", "role", "ratio", "n_real", "n_synthetic",
    "class", "metric", "mean", "ci95", "n_folds", "folds",
]


def ci_caption(k: int) -> str:
    """The interval's formula, for table captions."""
    return (
        f"mean ± 95% confidence interval over {k} folds of the segmentation-test set; "
        f"half-width = t(0.975, {k - 1}) · s / √{k} (Student t, s = sample standard deviation of the fold values); "
        "Dice, sensitivity and specificity in %, pixel counts pooled within each fold"
    )


def _plan(experiment: str, methods: list[str], ratios: Sequence[float], primary: str | None, compare_ratio: float | None) -> list[tuple[str, str, float]]:
    """(method, role, ratio) for every table row: the primary's sweep, then each other method."""
    if not methods:
        if any(r > 0 for r in ratios):
            raise SynthbenchError(f"{experiment}: ratios above 0 need at least one synthesis folder")
        return [("real", "sweep", float(r)) for r in ratios]
    primary = primary or methods[0]
    if primary not in methods:
        raise SynthbenchError(f"primary method {primary!r} is not among the synthesis folders ({', '.join(methods)})")
    compare = max(ratios) if compare_ratio is None else compare_ratio
    plan = [(primary, "sweep", float(r)) for r in ratios]
    plan += [(m, "compare", float(compare)) for m in methods if m != primary]
    return plan


def _key(data_hash: str, protocol: UNetProtocol, mix: Mix, source: SyntheticSource | None, k_folds: int) -> str:
    payload = {
        "version": RECORD_VERSION,
        "data": data_hash,
        "protocol": protocol.to_dict(),
        "real": list(mix.real_indices),
        "synthetic": list(mix.synthetic_ids),
        "source": str(source.path.resolve()) if source is not None and mix.n_synthetic else None,
        # the synthesis itself, not only its folder: images remade in the same folder (a run trained
        # again into its keyed directory) must not reuse U-Nets trained on the old ones
        "synthesis": (hashlib.sha256(json.dumps(source.record, sort_keys=True, default=str).encode()).hexdigest()
                      if source is not None and mix.n_synthetic else None),
        "folds": k_folds,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def _fold_scores(model, images, labels, lesion_ids: tuple[int, ...], num_classes: int, names: list[str], k: int,
                 batch_size: int, device: str, memory_format: str = "contiguous",
                 ) -> tuple[list[dict[str, list[int]]], dict[str, list[float]]]:
    """Pixel counts of every fold (contiguous, :func:`synthbench.stats.folds`) and the fold means of the
    per-image Dice (:func:`per_image_dice`), predicted batch by batch (never the whole test set's
    predictions in memory)."""
    counts_out: list[dict[str, list[int]]] = []
    dice_out: dict[str, list[float]] = {}
    for fold in stats.folds(len(images), k):
        total: dict[str, np.ndarray] = {}
        per_image: dict[str, list[np.ndarray]] = {}
        for start in range(int(fold[0]), int(fold[-1]) + 1, batch_size):
            stop = min(start + batch_size, int(fold[-1]) + 1)
            pred = predict(model, images[start:stop], batch_size, device, memory_format)
            target = torch.from_numpy(lesion_targets(np.asarray(labels[start:stop]), lesion_ids, num_classes))
            for cls, counts in segmentation_counts(pred, target, names).items():
                total[cls] = total.get(cls, 0) + np.asarray(counts, dtype=np.int64)
            for cls, values in per_image_dice(pred, target, names).items():
                per_image.setdefault(cls, []).append(values)
        counts_out.append({c: [int(v) for v in counts] for c, counts in total.items()})
        for cls, chunks in per_image.items():
            v = np.concatenate(chunks)
            v = v[~np.isnan(v)]
            dice_out.setdefault(cls, []).append(float(v.mean()) if v.size else math.nan)
    return counts_out, dice_out


def _train_and_score(
    data: PreparedDataset, mix: Mix, source: SyntheticSource | None, protocol: UNetProtocol,
    names: list[str], k_folds: int, device: str, description: str,
) -> dict[str, Any]:
    spec = data.spec
    real = data.split(TRAIN_SPLIT)
    idx = np.asarray(mix.real_indices, dtype=np.int64)
    images, labels = [Take(real.image, idx)], [Take(real.label, idx)]
    if mix.n_synthetic:
        s_img, s_lab = source.load(list(mix.synthetic_ids), data.size, spec.num_classes)
        images.append(s_img)
        labels.append(s_lab)
    targets = Rows(labels, lambda block: lesion_targets(block, spec.lesion_ids, spec.num_classes))
    model, log = train_unet(Rows(images), targets, len(names) + 1, protocol, device=device, description=description)
    test = data.split(TEST_SPLIT)
    counts, dice = _fold_scores(model, test.image, test.label, spec.lesion_ids, spec.num_classes, names, k_folds,
                                protocol.eval_batch_size, device, log["memory_format"])
    return {"log": log, "fold_counts": counts, "fold_dice_per_image": dice}


def paired_ids(source: SyntheticSource, data: PreparedDataset) -> list[str]:
    """The synthetic image of every training sample (``ids[i]`` made from ``test_aug`` sample
    ``i``'s label map); a synthesis folder of other label maps is refused with the reason."""
    record, train = source.record, data.split(TRAIN_SPLIT)
    where = source.path / "synthesis.json"
    if record.get("split", TRAIN_SPLIT) != TRAIN_SPLIT or int(record.get("augment") or 0):
        raise SynthbenchError(
            f"{source.method}: synthesized from split {record.get('split')!r} (augment {record.get('augment') or 0}); the "
            f"downstream experiment pairs each real '{TRAIN_SPLIT}' slice with the synthetic image of its label map: "
            f"synthesize --split {TRAIN_SPLIT}", where)
    ids = [f"{i:05d}" for i in range(len(train))]
    missing = sorted(set(ids) - set(source.ids))
    if missing:
        raise SynthbenchError(
            f"{source.method}: {len(missing)} of the {len(ids)} '{TRAIN_SPLIT}' samples have no synthetic image "
            f"(first missing: {missing[0]})", source.path)
    samples = record.get("samples")
    if samples is not None:
        same = len(samples) == len(ids) and all(
            int(s["source_index"]) == int(train.source_index[i]) and int(s["augmentation"]) == int(train.augmentation[i])
            for i, s in enumerate(samples))
        if not same:
            raise SynthbenchError(f"{source.method}: its samples are not the '{TRAIN_SPLIT}' label maps in order", where)
    return ids


@dataclass(frozen=True)
class Configuration:
    """One U-Net training of an experiment: a table row's method, role and ratio, the images it
    trains on (``mix``), their synthesis folder (None: real images only) and its record ``key``."""

    experiment: str
    method: str
    role: str
    ratio: float
    mix: Mix
    source: SyntheticSource | None
    key: str


def checked_data(data_dir: str | Path, folds: int) -> PreparedDataset:
    """The prepared data set, refused in one line when it lacks what the experiments need."""
    data = PreparedDataset(data_dir)
    for split in (TRAIN_SPLIT, TEST_SPLIT):
        if not data.has_split(split):
            raise SynthbenchError(
                f"the downstream experiment needs the '{split}' split, which this data set was prepared without "
                "(prepared by an older synthbench: run 'synthbench data prepare' again)", data.root)
        if len(data.split(split)) == 0:
            raise SynthbenchError(f"the downstream experiment needs a non-empty '{split}' split (augmentation factor 0?)",
                                  data.root)
    n_test = len(data.split(TEST_SPLIT))
    if n_test < folds:
        raise SynthbenchError(f"'{TEST_SPLIT}' has {n_test} slices, fewer than the {folds} folds requested", data.root)
    return data


def plan_configurations(
    data: PreparedDataset,
    experiment: str,
    synthetic: Mapping[str, str | Path],
    ratios: Sequence[float],
    seed: int,
    protocol: UNetProtocol,
    folds: int,
    primary: str | None = None,
    compare_ratio: float | None = None,
    methods: Sequence[str] | None = None,
) -> list[Configuration]:
    """The configurations of ``experiment`` in table order (see :func:`_plan`).

    ``methods`` (default: the keys of ``synthetic``) are the methods the table compares; a row of a
    method without a folder in ``synthetic`` is left out unless it uses no synthetic image (the
    primary's 0%), so a caller can plan each method's trainings as soon as its synthesis exists.
    """
    if experiment not in EXPERIMENTS:
        raise SynthbenchError(f"unknown experiment {experiment!r} (use {' or '.join(EXPERIMENTS)})")
    ratios = tuple(float(r) for r in ratios)
    if not ratios:
        raise SynthbenchError("no ratios given")
    methods = list(synthetic) if methods is None else list(methods)
    sources = {m: open_synthesis(p, method=m, data_hash=data.content_hash) for m, p in synthetic.items()}
    pairs = {m: paired_ids(s, data) for m, s in sources.items()}
    n_real = len(data.split(TRAIN_SPLIT))
    real_only = [f"{i:05d}" for i in range(n_real)]
    configs = []
    for method, role, ratio in _plan(experiment, methods, ratios, primary, compare_ratio):
        mix = select_mix(experiment, ratio, n_real, pairs.get(method, real_only), seed=seed)
        if mix.n_synthetic and method not in sources:
            continue
        source = sources.get(method) if mix.n_synthetic else None
        configs.append(Configuration(experiment, method, role, ratio, mix, source,
                                     _key(data.content_hash, protocol, mix, source, folds)))
    return configs


def train_configuration(
    data: PreparedDataset,
    config: Configuration,
    protocol: UNetProtocol,
    out_dir: str | Path,
    seed: int,
    folds: int,
    device: str = "cpu",
    description: str | None = None,
    reuse: bool = True,
) -> dict[str, Any]:
    """Train and score one configuration and record it in ``OUT/configs/<key>.json`` (atomic);
    a recorded configuration is reused. Returns the record."""
    record_path = Path(out_dir) / "configs" / f"{config.key}.json"
    record = _load_record(record_path) if reuse else None
    if record is not None:
        return record
    spec = data.spec
    names = [spec.classes[i].name for i in spec.lesion_ids]
    desc = description or f"{config.experiment} {config.ratio:.0%} {config.method}"
    result = _train_and_score(data, config.mix, config.source, protocol, names, folds, device, desc)
    record = {
        "key": config.key, "experiment": config.experiment, "method": config.method, "ratio": config.ratio,
        "data_dir": str(data.root), "data_hash": data.content_hash, "seed": seed,
        "synthesis": str(config.source.path) if config.source is not None else None,
        "real_indices": list(config.mix.real_indices), "synthetic_ids": list(config.mix.synthetic_ids),
        "protocol": protocol.to_dict(), "device": device, "folds": folds,
        "classes": names, **result,
    }
    atomic_write_json(record_path, record)
    return record


def run_experiment(
    data_dir: str | Path,
    synthetic: Mapping[str, str | Path],
    experiment: str = "replace",
    ratios: Sequence[float] = DEFAULT_RATIOS,
    out_dir: str | Path = "downstream",
    seed: int = 0,
    protocol: UNetProtocol | None = None,
    device: str = "cpu",
    folds: int = 10,
    primary: str | None = None,
    compare_ratio: float | None = None,
    reuse: bool = True,
) -> pd.DataFrame:
    """Run the ``replace`` or ``add`` experiment; return tidy rows (see :data:`COLUMNS`).

    ``synthetic``: method name -> synthesis folder (or run folder holding one). Ratios are
    fractions of the real training count (see :mod:`synthbench.downstream.mix`). ``seed`` picks
    the real/synthetic images (method-independent); ``protocol.seed`` the U-Net's weights and
    batch order. ``mean`` and
    ``ci95`` are fractions in [0, 1]; ``folds`` lists the per-fold values. Writes the per-config
    records (:func:`train_configuration`) and ``OUT/<experiment>/`` tables (see :func:`write_tables`).
    """
    protocol = protocol or UNetProtocol()
    out_dir = Path(out_dir)
    started = time.perf_counter()
    data = checked_data(data_dir, folds)
    plan = plan_configurations(data, experiment, synthetic, ratios, seed, protocol, folds, primary, compare_ratio)
    names = [data.spec.classes[i].name for i in data.spec.lesion_ids]

    rows: list[dict[str, Any]] = []
    configs: list[dict[str, Any]] = []
    for i, config in enumerate(plan, start=1):
        record = train_configuration(data, config, protocol, out_dir, seed, folds, device, reuse=reuse,
                                     description=f"[{i}/{len(plan)}] {experiment} {config.ratio:.0%} {config.method}")
        configs.append({"method": config.method, "role": config.role, "ratio": config.ratio, "key": config.key})
        rows.extend(_rows(experiment, config.method, config.role, config.mix, record["fold_counts"], names,
                          record.get("fold_dice_per_image")))
    df = pd.DataFrame(rows, columns=COLUMNS)
    meta = {
        "experiment": experiment, "data_dir": str(data.root), "data_hash": data.content_hash,
        "train_split": TRAIN_SPLIT, "test_split": TEST_SPLIT, "n_real_train": len(data.split(TRAIN_SPLIT)),
        "n_test": len(data.split(TEST_SPLIT)), "ratios": [float(r) for r in ratios], "seed": seed, "folds": folds,
        "protocol": protocol.to_dict(), "device": device,
        "synthetic": {m: str(resolve_synthesis_dir(p)) for m, p in synthetic.items()},
        "pairing": "synthetic image of the same label map", "configs": configs,
        "seconds": time.perf_counter() - started,
    }
    write_tables(df, out_dir / experiment, meta)
    return df


def _load_record(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None  # unreadable record: train again and overwrite it atomically
    return record if isinstance(record, dict) and "fold_counts" in record else None


def _rows(experiment: str, method: str, role: str, mix: Mix, fold_counts: list[dict[str, list[int]]],
          names: list[str] | None = None, dice_per_image: dict[str, list[float]] | None = None) -> list[dict[str, Any]]:
    """Table rows of one configuration: lesion classes in the data set's order, then the union."""
    order = list(names or []) + [union_class_name(list(names or fold_counts[0]))]
    classes = [c for c in dict.fromkeys(order) if c in fold_counts[0]] + [c for c in fold_counts[0] if c not in order]
    rows = []
    for cls in classes:
        per_fold = [scores_from_counts(*fold[cls]) for fold in fold_counts]
        metrics = list(METRICS)
        if dice_per_image and cls in dice_per_image:  # MONAI-convention per-image Dice (scores.py)
            metrics.append(PER_IMAGE_DICE)
            for f, v in zip(per_fold, dice_per_image[cls], strict=True):
                f[PER_IMAGE_DICE] = v
        for metric in metrics:
            values = [f[metric] for f in per_fold]
            finite = [v for v in values if math.isfinite(v)]
            mean, half = stats.mean_ci(finite) if finite else (math.nan, math.nan)
            rows.append({
                "experiment": experiment, "method": method, "role": role, "ratio": mix.ratio,
                "n_real": mix.n_real, "n_synthetic": mix.n_synthetic, "class": cls, "metric": metric,
                "mean": mean, "ci95": half, "n_folds": len(finite), "folds": values,
            })
    return rows


def row_label(role: str, ratio: float, method: str) -> str:
    """Paper-style row label: ``"30%"`` for the sweep, ``"50% from pix2pix"`` for a compared method."""
    pct = f"{ratio * 100:.0f}%"
    return pct if role == "sweep" else f"{pct} from {method}"


def paper_table(df: pd.DataFrame, experiment: str, numeric: bool = False) -> pd.DataFrame:
    """The paper's Table III (``replace``) or IV (``add``): rows ratio / "50% from METHOD",
    columns (class, metric). Cells ``"89.57 ± 1.20"`` in percent, or the mean in percent if
    ``numeric``."""
    sub = df[df["experiment"] == experiment]
    if sub.empty:
        raise SynthbenchError(f"no results for experiment {experiment!r}")
    sub = sub[sub["metric"].isin(METRICS)]  # the paper's columns; per-image Dice: results and report
    sub = sub.assign(row=[row_label(r, q, m) for r, q, m in zip(sub["role"], sub["ratio"], sub["method"], strict=True)])
    row_order = list(dict.fromkeys(sub.sort_values(["role", "ratio"], key=_role_order)["row"]))
    col_order = list(dict.fromkeys(zip(sub["class"], sub["metric"], strict=True)))
    if numeric:
        cell = sub["mean"] * 100
    else:
        cell = [_fmt(m, c) for m, c in zip(sub["mean"], sub["ci95"], strict=True)]
    table = sub.assign(cell=cell).pivot(index="row", columns=["class", "metric"], values="cell")
    table = table.reindex(index=row_order, columns=pd.MultiIndex.from_tuples(col_order, names=["class", "metric"]))
    table.index.name = "training data"
    return table


def _role_order(col: pd.Series) -> pd.Series:
    return col.map({"sweep": 0, "compare": 1}) if col.name == "role" else col


def _fmt(mean: float, ci: float) -> str:
    if not math.isfinite(mean):
        return "n/a"
    return f"{mean * 100:.2f} ± {ci * 100:.2f}" if math.isfinite(ci) else f"{mean * 100:.2f}"


def table_markdown(table: pd.DataFrame, caption: str) -> str:
    """GitHub Markdown of a :func:`paper_table` (two-level header flattened to "class metric")."""
    head = [table.index.name or ""] + [f"{c} {m}" for c, m in table.columns]
    lines = [f"**{caption}**", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for label, row in table.iterrows():
        cells = [v if isinstance(v, str) else f"{v:.2f}" for v in row]
        lines.append("| " + " | ".join([str(label), *cells]) + " |")
    return "\n".join(lines) + "\n"


def table_title(experiment: str) -> str:
    return {"replace": "Table III: real training images replaced by synthetic ones",
            "add": "Table IV: synthetic images added to all real training images"}[experiment]


def write_tables(df: pd.DataFrame, folder: str | Path, meta: dict[str, Any]) -> dict[str, Path]:
    """Write ``results.csv`` / ``results.json`` (tidy rows), ``table.csv`` and ``table.md``
    (paper layout with caption) and ``experiment.json`` atomically into ``folder``."""
    folder = Path(folder)
    experiment = meta["experiment"]
    tidy = df.assign(folds=[json.dumps(v) for v in df["folds"]])
    table = paper_table(df, experiment)
    caption = f"{table_title(experiment)}. {ci_caption(meta['folds'])}."
    paths = {
        "results_csv": folder / "results.csv", "results_json": folder / "results.json",
        "table_csv": folder / "table.csv", "table_md": folder / "table.md", "meta": folder / "experiment.json",
    }
    atomic_write_text(paths["results_csv"], tidy.to_csv(index=False))
    atomic_write_json(paths["results_json"], {"caption": caption, "rows": _json_safe(df.to_dict("records"))})
    atomic_write_text(paths["table_csv"], table.to_csv())
    atomic_write_text(paths["table_md"], table_markdown(table, caption))
    atomic_write_json(paths["meta"], {**meta, "caption": caption})
    return paths


def _json_safe(obj: Any) -> Any:
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, np.generic):
        return _json_safe(obj.item())
    return obj
