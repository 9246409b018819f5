"""Figures of the report: image grids like the paper's Figs. 6-7, loss curves, DESUM/DFM weights.

* Image grids (paper Figs. 6 and 7): per sample slice one row of the coloured label map (colours
  from the data-set spec: lung red, ground-glass blue, consolidation green), the real slice and
  each method's synthetic image, with a zoomed crop of the lesion region beneath each. Samples
  are the test slices with the most lesion pixels, common to every method's synthesis folder.
* Loss curves per method from ``log.jsonl``; alpha (DESUM weight, paper Eq. for F_out) and beta
  (DFM weight, paper L_DFM) over training for runs that log them.

Every figure is PNG bytes (curves: matplotlib Agg backend; an image grid's one-PNG form: composed with
PIL), embedded in report.html as a data URI.
"""

from __future__ import annotations

import io
import math
import re
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from PIL import Image, ImageDraw, ImageFont  # noqa: E402
from scipy import ndimage  # noqa: E402

from synthbench.data.spec import DatasetSpec  # noqa: E402
from synthbench.errors import SynthbenchError  # noqa: E402
from synthbench.report.results import ComparisonResults, MethodRun  # noqa: E402

#: Keys of log records that are bookkeeping, not losses (matched on the last "/" component).
NON_LOSS_KEYS = {
    "step", "global_step", "iteration", "iter", "epoch", "time", "wall_time", "elapsed", "seconds",
    "lr", "learning_rate", "alpha", "beta", "batch", "batch_size", "samples", "seed", "images",
}
STEP_KEYS = ("step", "global_step", "iteration", "iter")
#: DESUM alpha / DFM beta log keys: "alpha", "beta", and per-level variants "alpha_G1", "beta_D3".
WEIGHT_RE = re.compile(r"^(alpha|beta)(_[a-z0-9]+)?$")
#: Colour of the crop rectangle drawn on the full images.
BOX_COLOUR = (255, 214, 0)
#: The paper's grids: complete images (Fig. 6) and lung-only images (Fig. 7).
GRID_KINDS = {
    "complete": ("real", "complete", "Complete images (like the paper's Fig. 6)"),
    "lung": ("lung_real", "lung_fake", "Lung-only images (like the paper's Fig. 7)"),
    "lesion": ("lesion_real", "lesion_fake", "Lesion-only images (no lung mask: the region is the lesions)"),
}


def png_bytes(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def figure_png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def _read_png(path: Path) -> np.ndarray:
    if not path.exists():
        raise SynthbenchError("missing image of the synthesis output", path)
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("L"))
    except OSError as exc:
        raise SynthbenchError(f"cannot read PNG ({exc})", path) from exc


def colour_label(label: np.ndarray, spec: DatasetSpec) -> np.ndarray:
    """Class ids [H, W] -> RGB uint8 [H, W, 3] with the spec's class colours."""
    palette = np.zeros((256, 3), dtype=np.uint8)
    for c in spec.classes:
        palette[c.id] = c.colour
    return palette[label]


def lesion_box(label: np.ndarray, spec: DatasetSpec, min_frac: float = 0.25) -> tuple[int, int, int, int]:
    """Square crop (x0, y0, x1, y1) around the largest connected lesion (else the lung region,
    else the whole slice), at least ``min_frac`` of the slice wide."""
    h, w = label.shape
    mask = np.isin(label, spec.lesion_ids)
    if not mask.any():
        mask = np.isin(label, spec.lung_region_ids)
    if not mask.any():
        return 0, 0, w, h
    components, count = ndimage.label(mask)
    if count > 1:
        sizes = ndimage.sum(mask, components, index=np.arange(1, count + 1))
        mask = components == (int(np.argmax(sizes)) + 1)
    ys, xs = np.nonzero(mask)
    cy, cx = (ys.min() + ys.max() + 1) / 2, (xs.min() + xs.max() + 1) / 2
    side = int(math.ceil(max(ys.max() - ys.min() + 1, xs.max() - xs.min() + 1) * 1.3))
    side = min(max(side, int(round(min(h, w) * min_frac)), 4), min(h, w))
    x0 = int(min(max(round(cx - side / 2), 0), w - side))
    y0 = int(min(max(round(cy - side / 2), 0), h - side))
    return x0, y0, x0 + side, y0 + side


@dataclass
class Tile:
    caption: str
    full: bytes
    crop: bytes


@dataclass
class Grid:
    kind: str
    title: str
    samples: list[str]
    rows: list[list[Tile]]
    png: bytes


def _tiles(rgb: np.ndarray, box: tuple[int, int, int, int], zoom_to: int) -> tuple[Image.Image, Image.Image]:
    full = Image.fromarray(rgb)
    crop = full.crop(box).resize((zoom_to, zoom_to), Image.NEAREST)
    boxed = full.copy()
    ImageDraw.Draw(boxed).rectangle([box[0], box[1], box[2] - 1, box[3] - 1], outline=BOX_COLOUR, width=max(1, rgb.shape[0] // 64))
    return boxed, crop


def _first_runs(results: ComparisonResults) -> list[MethodRun]:
    """One run per method with a synthesis folder (the lowest seed)."""
    chosen: dict[str, MethodRun] = {}
    for run in sorted(results.runs, key=lambda r: r.seed):
        if run.synthesis_dir is not None and run.method not in chosen:
            if not run.synthesis_dir.is_dir():
                raise SynthbenchError("synthesis directory does not exist", run.synthesis_dir)
            chosen[run.method] = run
    return [chosen[m] for m in results.methods if m in chosen]


def pick_samples(runs: list[MethodRun], spec: DatasetSpec, fake_sub: str, n: int) -> list[str]:
    """File names present for every method, with the most lesion pixels first."""
    ref = runs[0].synthesis_dir
    names = {p.name for p in (ref / "label").glob("*.png")}
    for run in runs:
        names &= {p.name for p in (run.synthesis_dir / fake_sub).glob("*.png")}
    scored = []
    for name in sorted(names):
        label = _read_png(ref / "label" / name)
        scored.append((-int(np.isin(label, spec.lesion_ids).sum()), name))
    return [name for _, name in sorted(scored)[:n]]


def image_grid(results: ComparisonResults, kind: str = "complete", n_samples: int = 3) -> Grid | None:
    """Paper Fig. 6 ("complete") or Fig. 7 ("lung") grid; ``None`` without synthesis output."""
    real_sub, fake_sub, title = GRID_KINDS[kind]
    runs = _first_runs(results)
    if not runs or not (runs[0].synthesis_dir / real_sub).is_dir():
        return None
    spec = results.resolved_spec()
    samples = pick_samples(runs, spec, fake_sub, n_samples)
    if not samples:
        return None
    ref = runs[0].synthesis_dir
    rows: list[list[Tile]] = []
    for name in samples:
        label = _read_png(ref / "label" / name)
        box = lesion_box(label, spec)
        zoom_to = max(label.shape[0], 128)
        images = [("label", colour_label(label, spec)), ("real", _grey_rgb(_read_png(ref / real_sub / name)))]
        images += [(run.method, _grey_rgb(_read_png(run.synthesis_dir / fake_sub / name))) for run in runs]
        row = []
        for caption, rgb in images:
            full, crop = _tiles(rgb, box, zoom_to)
            row.append(Tile(caption, png_bytes(full), png_bytes(crop)))
        rows.append(row)
    return Grid(kind, title, samples, rows, _grid_figure(rows, title))


def _grey_rgb(grey: np.ndarray) -> np.ndarray:
    return np.repeat(grey[..., None], 3, axis=2)


#: Side of one tile of the grid PNG (pixels; the matplotlib figure it replaced drew ~176 px tiles).
GRID_CELL = 176


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)  # scalable with FreeType (Pillow >= 10.1)
    except (TypeError, ImportError, OSError):
        return ImageFont.load_default()


def _grid_figure(rows: list[list[Tile]], title: str, cell: int = GRID_CELL) -> bytes:
    """The same grid as one PNG (for leaderboard.md): two rows (full, crop) per sample, a caption
    over each column, the title on top. Composed with PIL (tiles scaled to ``cell`` pixels,
    nearest-neighbour when enlarged): a matplotlib figure of 2 x samples x columns axes took
    most of the report's time (issue 21)."""
    ncol, gap = len(rows[0]), 4
    title_font, caption_font = _font(15), _font(12)
    top = 28 + 20  # title line, caption line
    width = ncol * cell + (ncol + 1) * gap
    height = top + 2 * len(rows) * (cell + gap) + gap
    canvas = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(canvas)

    def centred(x: int, y: int, text: str, font) -> None:
        draw.text((x - draw.textlength(text, font=font) / 2, y), text, fill="black", font=font)

    centred(width // 2, 6, title, title_font)
    for j, tile in enumerate(rows[0]):
        centred(gap + j * (cell + gap) + cell // 2, 30, tile.caption, caption_font)
    for i, row in enumerate(rows):
        for k in range(2):
            y = top + (2 * i + k) * (cell + gap)
            for j, tile in enumerate(row):
                with Image.open(io.BytesIO(tile.crop if k else tile.full)) as im:
                    picture = im.convert("RGB")
                resample = Image.NEAREST if picture.width <= cell else Image.LANCZOS
                canvas.paste(picture.resize((cell, cell), resample), (gap + j * (cell + gap), y))
    return png_bytes(canvas)


def _last(key: str) -> str:
    return key.rsplit("/", 1)[-1].lower()


def _x_axis(log: pd.DataFrame) -> tuple[np.ndarray, str]:
    for key in STEP_KEYS:
        if key in log.columns:
            return pd.to_numeric(log[key], errors="coerce").to_numpy(), key
    return np.arange(len(log)), "logged record"


def _is_weight(key: str) -> str | None:
    """"alpha" / "beta" for DESUM / DFM weight keys (``alpha``, ``alpha_G1``, ``beta_D3`` ...)."""
    m = WEIGHT_RE.match(_last(key))
    return m.group(1) if m else None


def _numeric(log: pd.DataFrame, key: str) -> bool:
    return pd.api.types.is_numeric_dtype(log[key]) and not pd.api.types.is_bool_dtype(log[key])


def loss_keys(log: pd.DataFrame) -> list[str]:
    """Loss columns: the engine's ``loss/<name>`` keys when present; otherwise every numeric
    column that is not bookkeeping (step, time, lr, throughput) or an alpha/beta weight."""
    tagged = [k for k in log.columns if k.lower().startswith(("loss/", "losses/")) and _numeric(log, k)]
    if tagged:
        return tagged
    keys = []
    for key in log.columns:
        last, first = _last(key), key.split("/", 1)[0].lower()
        if last in NON_LOSS_KEYS or first in NON_LOSS_KEYS or _is_weight(key):
            continue
        if last.endswith(("_lr", "_time", "per_second")) or not _numeric(log, key):
            continue
        keys.append(key)
    return keys


def weight_keys(log: pd.DataFrame) -> list[str]:
    """Columns holding the DESUM alpha / DFM beta weights."""
    return [k for k in log.columns if _is_weight(k) and _numeric(log, k)]


def _smooth(y: np.ndarray) -> np.ndarray:
    window = max(1, len(y) // 50)
    return pd.Series(y).rolling(window, min_periods=1).mean().to_numpy() if window > 1 else y


def _stage_lines(ax, log: pd.DataFrame, x: np.ndarray) -> None:
    if "stage" not in log.columns:
        return
    stages = log["stage"].astype(str).to_numpy()
    for i in range(1, len(stages)):
        if stages[i] != stages[i - 1]:
            ax.axvline(x[i], color="0.6", lw=0.8, ls=":")
            ax.text(x[i], 1.0, f" {stages[i]}", transform=ax.get_xaxis_transform(), fontsize=7, color="0.4", va="top")


def loss_curves(results: ComparisonResults) -> bytes | None:
    """Training losses, one panel per method (every seed; later seeds fainter)."""
    logs: dict[str, list[tuple[int, pd.DataFrame]]] = {}
    for run in sorted(results.runs, key=lambda r: r.seed):
        log = run.log()
        if len(log) and loss_keys(log):
            logs.setdefault(run.method, []).append((run.seed, log))
    if not logs:
        return None
    methods = [m for m in results.methods if m in logs]
    ncol = min(3, len(methods))
    nrow = math.ceil(len(methods) / ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(4.6 * ncol, 3.2 * nrow), squeeze=False)
    for ax in axes.ravel()[len(methods):]:
        ax.set_visible(False)
    for ax, method in zip(axes.ravel(), methods, strict=False):
        colours: dict[str, str] = {}
        for i, (_seed, log) in enumerate(logs[method]):
            x, xlabel = _x_axis(log)
            for key in loss_keys(log):
                y = pd.to_numeric(log[key], errors="coerce").to_numpy(dtype=float)
                ok = np.isfinite(y) & np.isfinite(x.astype(float))
                if not ok.any():
                    continue
                colour = colours.setdefault(key, f"C{len(colours) % 10}")
                ax.plot(x[ok], _smooth(y[ok]), color=colour, lw=1.2, alpha=1.0 if i == 0 else 0.4,
                        label=key if i == 0 else None)
            if i == 0:
                _stage_lines(ax, log, x)
        seeds = ", ".join(str(s) for s, _ in logs[method])
        ax.set_title(f"{method} (seed {seeds})", fontsize=10)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("loss")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    return figure_png(fig)


def weight_curves(results: ComparisonResults) -> bytes | None:
    """alpha (DESUM) and beta (DFM) over training for every run that logs them."""
    series = []
    for run in sorted(results.runs, key=lambda r: (r.method, r.seed)):
        log = run.log()
        if len(log) and weight_keys(log):
            series.append((run, log))
    if not series:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(9.5, 3.2), squeeze=False)
    for col, name in enumerate(("alpha", "beta")):
        ax = axes[0][col]
        plotted = False
        for run, log in series:
            x, xlabel = _x_axis(log)
            for key in [k for k in weight_keys(log) if _is_weight(k) == name]:
                y = pd.to_numeric(log[key], errors="coerce").to_numpy(dtype=float)
                ok = np.isfinite(y) & np.isfinite(x.astype(float))
                if ok.any():
                    suffix = "" if _last(key) == name else f" {key.rsplit('/', 1)[-1]}"
                    ax.plot(x[ok], y[ok], lw=1.2, label=f"{run.method} seed {run.seed}{suffix}")
                    plotted = True
            ax.set_xlabel(xlabel)
        what = "DESUM weight \u03b1 (F_local share)" if name == "alpha" else "DFM weight \u03b2 (D2 share)"
        ax.set_title(what, fontsize=10)
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
        if plotted:
            ax.legend(fontsize=7)
            _stage_lines(ax, series[0][1], _x_axis(series[0][1])[0])
        else:
            ax.text(0.5, 0.5, f"no {name} logged", ha="center", va="center", transform=ax.transAxes, color="0.5")
    fig.tight_layout()
    return figure_png(fig)
