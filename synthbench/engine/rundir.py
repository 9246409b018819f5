"""Run directory: config, manifest, step log, sample grids, checkpoints (engine docs for the layout).

Checkpoints and final weights are written with :func:`synthbench.io.atomic_path` (fsynced
before the rename) and read with ``torch.load(..., weights_only=True)``; everything inside is
tensors or plain Python types. Resuming takes the newest *readable* checkpoint: a file cut by a
host crash is skipped, and said so.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import platform
import random
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from synthbench.errors import SynthbenchError
from synthbench.io import atomic_path, atomic_write_json, atomic_write_text, remove_leftovers
from synthbench.locking import LOCK_NAME

CKPT_RE = re.compile(r"^ckpt_(\d{7})\.pt$")
FINAL = "final.pt"
#: Folders the engine creates inside a run directory before anything else.
SUBDIRS = ("samples", "checkpoints")


def now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError as exc:
        raise SynthbenchError("missing file (is this a synthbench run directory?)", path) from exc
    except json.JSONDecodeError as exc:
        raise SynthbenchError(f"corrupt JSON: {exc}", path) from exc


# --------------------------------------------------------------------------- manifest facts
def git_commit() -> str | None:
    """The project's git commit (``git rev-parse HEAD`` in the package's repository), if any."""
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def hardware() -> dict[str, Any]:
    cpu = platform.processor() or None
    with contextlib.suppress(OSError):  # no /proc/cpuinfo off Linux: keep platform.processor()
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    info: dict[str, Any] = {"cpu": cpu, "cpu_cores": os.cpu_count(), "platform": platform.platform()}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
        info["gpu_count"] = torch.cuda.device_count()
        info["cuda"] = torch.version.cuda
    else:
        info["gpu"] = None
    return info


def versions() -> dict[str, str | None]:
    import importlib.metadata as md

    out: dict[str, str | None] = {"python": sys.version.split()[0], "torch": torch.__version__}
    for dist in ("synthbench", "torchvision", "numpy"):
        try:
            out[dist] = md.version(dist)
        except md.PackageNotFoundError:
            out[dist] = None
    return out


# --------------------------------------------------------------------------- RNG states
def rng_state() -> dict[str, Any]:
    """Every RNG the loop touches, as tensors and plain types (``weights_only`` loadable)."""
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(gauss)},
        "python": {"version": int(version), "internal": list(internal), "gauss_next": gauss_next},
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["internal"]), p["gauss_next"]))
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# --------------------------------------------------------------------------- checkpoints
def list_checkpoints(run_dir: Path) -> list[Path]:
    folder = Path(run_dir) / "checkpoints"
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if CKPT_RE.match(p.name))


def _save(payload: dict[str, Any], target: Path) -> None:
    """``torch.save`` through a Python file object (a full disk raises ``OSError`` naming
    ``target``, not torch's bare stream error), fsynced before the rename."""
    with atomic_path(target, suffix=".pt", durable=True) as tmp, open(tmp, "wb") as fh:
        torch.save(payload, fh)


def save_checkpoint(run_dir: Path, step: int, payload: dict[str, Any], keep_last_n: int) -> Path:
    """Write ``checkpoints/ckpt_NNNNNNN.pt`` atomically, then drop all but the newest ``keep_last_n``."""
    target = Path(run_dir) / "checkpoints" / f"ckpt_{step:07d}.pt"
    _save(payload, target)
    for old in list_checkpoints(run_dir)[:-keep_last_n]:
        old.unlink(missing_ok=True)
    return target


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """A checkpoint or weights file, tensors and plain types only (``weights_only=True``)."""
    import pickle

    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError as exc:
        raise SynthbenchError("checkpoint not found", path) from exc
    except pickle.UnpicklingError as exc:  # torch's message advises an unsafe load: not repeated here
        raise SynthbenchError("refused: the file holds Python objects other than tensors and plain types "
                              "(loading them could run code); it is not a synthbench checkpoint", path) from exc
    except Exception as exc:  # zip / stream errors: a truncated or foreign file
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise SynthbenchError(f"cannot read checkpoint (corrupt or truncated): {type(exc).__name__}: {detail}", path) from exc
    if not isinstance(state, dict) or not isinstance(state.get("nets"), dict):
        raise SynthbenchError("not a synthbench checkpoint (no 'nets' entry)", path)
    return state


def load_latest_checkpoint(run_dir: Path, say=None) -> tuple[Path | None, dict[str, Any] | None]:
    """The newest checkpoint that loads, with its path (``None, None`` when there is none).

    An unreadable newer checkpoint (cut by a host crash) is skipped and reported through
    ``say(message)``; when checkpoints exist but none loads, the error names them all.
    """
    checkpoints = list_checkpoints(run_dir)
    problems = []
    for path in reversed(checkpoints):
        try:
            state = load_checkpoint(path)
        except SynthbenchError as exc:
            problems.append(str(exc))
            continue
        for problem in problems:
            if say is not None:
                say(f"skipping an unreadable checkpoint: {problem}; resuming from {path.name}")
        return path, state
    if problems:
        raise SynthbenchError(f"no checkpoint is readable ({'; '.join(problems)})", Path(run_dir) / "checkpoints")
    return None, None


def load_nets(synth, nets: dict[str, Any], path: Path) -> None:
    """``synth.load_state_dict(nets)`` with a one-line error naming ``path`` when they do not fit."""
    try:
        synth.load_state_dict(nets)
    except (RuntimeError, KeyError, ValueError) as exc:
        lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
        detail = next((ln for ln in lines[1:] if "size mismatch" in ln or "Missing key" in ln or "Unexpected key" in ln),
                      lines[0] if lines else type(exc).__name__)
        raise SynthbenchError(f"weights do not fit the run's networks (other options, size or classes?): {detail}",
                              path) from exc


def save_final(run_dir: Path, payload: dict[str, Any]) -> Path:
    target = Path(run_dir) / FINAL
    _save(payload, target)
    return target


# --------------------------------------------------------------------------- directory states
def is_unstarted(run_dir: Path) -> bool:
    """True if ``run_dir`` holds nothing a run wrote (only its lock, empty engine folders and
    temporary leftovers): a run killed before it wrote its configuration, or an empty folder."""
    run_dir = Path(run_dir)
    if not run_dir.exists():
        return True
    if not run_dir.is_dir():
        return False
    for entry in run_dir.iterdir():
        if entry.name == LOCK_NAME or (entry.name.startswith(".") and entry.name.endswith(".tmp")):
            continue
        if entry.name in SUBDIRS and entry.is_dir() and not any(entry.iterdir()):
            continue
        return False
    return True


def remove_run_leftovers(run_dir: Path) -> list[Path]:
    """Temporary files of a killed writer (partial checkpoints, manifests, sample grids)."""
    run_dir = Path(run_dir)
    return [p for folder in (run_dir, *(run_dir / d for d in SUBDIRS)) for p in remove_leftovers(folder)]


# --------------------------------------------------------------------------- step log
class StepLog:
    """``log.jsonl``: one JSON object per step, appended and flushed each step (scalars as floats)."""

    def __init__(self, path: Path, enabled: bool = True):
        self.path = Path(path)
        self.fh = open(self.path, "a", encoding="utf-8") if enabled else None

    @staticmethod
    def truncate_after(path: Path, step: int) -> None:
        """On resume: drop records of steps after the checkpoint (they will be redone)."""
        if not Path(path).is_file():
            return
        keep = []
        for line in Path(path).read_text().splitlines():
            try:
                if json.loads(line).get("step", 0) <= step:
                    keep.append(line)
            except json.JSONDecodeError:
                continue  # a line cut by a crash
        atomic_write_text(path, "".join(f"{line}\n" for line in keep))

    def write(self, record: dict[str, Any]) -> None:
        if self.fh is None:
            return
        try:
            self.fh.write(json.dumps(record, default=_scalar) + "\n")
            self.fh.flush()
        except OSError as exc:
            raise OSError(exc.errno, exc.strerror, str(self.path)) from exc

    def close(self) -> None:
        if self.fh is not None:
            fh, self.fh = self.fh, None
            fh.close()

def _scalar(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return float(value.detach().float().mean())
    if isinstance(value, np.generic):
        return value.item()
    return str(value)


def to_float(value: Any) -> float:
    if isinstance(value, torch.Tensor):
        return float(value.detach().float().mean())
    return float(value)


def write_manifest(run_dir: Path, manifest: dict[str, Any]) -> None:
    atomic_write_json(Path(run_dir) / "manifest.json", manifest)
