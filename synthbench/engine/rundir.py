"""Run directory: config, manifest, step log, sample grids, checkpoints (engine docs for the layout).

Checkpoints are written with :func:`synthbench.io.atomic_path` and read with
``torch.load(..., weights_only=True)``; everything inside is tensors or plain Python types.
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
from synthbench.io import atomic_path, atomic_write_json, atomic_write_text

CKPT_RE = re.compile(r"^ckpt_(\d{7})\.pt$")
FINAL = "final.pt"


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


def save_checkpoint(run_dir: Path, step: int, payload: dict[str, Any], keep_last_n: int) -> Path:
    """Write ``checkpoints/ckpt_NNNNNNN.pt`` atomically, then drop all but the newest ``keep_last_n``."""
    target = Path(run_dir) / "checkpoints" / f"ckpt_{step:07d}.pt"
    with atomic_path(target, suffix=".pt") as tmp:
        torch.save(payload, tmp)
    for old in list_checkpoints(run_dir)[:-keep_last_n]:
        old.unlink(missing_ok=True)
    return target


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError as exc:
        raise SynthbenchError("checkpoint not found", path) from exc
    except Exception as exc:  # unpickling / zip errors: a corrupt or foreign file
        raise SynthbenchError(f"cannot read checkpoint: {type(exc).__name__}: {exc}", path) from exc


def save_final(run_dir: Path, payload: dict[str, Any]) -> Path:
    target = Path(run_dir) / FINAL
    with atomic_path(target, suffix=".pt") as tmp:
        torch.save(payload, tmp)
    return target


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
        self.fh.write(json.dumps(record, default=_scalar) + "\n")
        self.fh.flush()

    def close(self) -> None:
        if self.fh is not None:
            self.fh.close()
            self.fh = None


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
