"""TensorBoard event files beside ``log.jsonl`` (and, opt-in, MLflow): what a run logs per step.

Rank 0 writes ``RUN/events.out.tfevents.*`` with ``torch.utils.tensorboard.SummaryWriter``:

* scalars per step, named like ``log.jsonl``'s fields: ``loss/<optimizer>``, ``lr/<optimizer>``,
  ``speed/images_per_second``, ``progress/epoch``, and the plugin's own logs as
  ``<method>/<key>`` (ours: ``ours/alpha`` = DESUM's alpha, ``ours/beta`` = DFM's beta, ...);
* the sample grid of every epoch as the image ``samples`` (rows: label, real, fake).

Resume: the event files are rewritten without the events after the checkpoint's step (as
``log.jsonl`` is truncated), and the new writer starts with ``purge_step`` = that step + 1 (a
``SessionLog.START`` marker), so the steps a killed run did after its checkpoint are never
shown twice, whichever reader opens the folder. Events are flushed before every checkpoint, so
a resumed run has no gap either.

MLflow (optional, opt-in): with ``SYNTHBENCH_MLFLOW`` set to a folder (a local file store) or a
tracking URI, and ``mlflow`` installed, the same scalars go to the MLflow run named after the
run directory (experiment ``synthbench``; its id is kept in ``RUN/mlflow_run.json`` so a resumed
run continues it). MLflow cannot delete metric points: after a resume, the steps a killed run
did after its checkpoint appear twice there (said when it happens). Without ``mlflow`` the
variable is reported and ignored.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from synthbench.errors import SynthbenchError
from synthbench.io import atomic_path, atomic_write_json

#: Event files of ``torch.utils.tensorboard`` (``events.out.tfevents.<time>.<host>.<pid>.<n>``).
EVENT_FILE_RE = re.compile(r"^events\.out\.tfevents\.(\d+)\.")
MLFLOW_ENV = "SYNTHBENCH_MLFLOW"
MLFLOW_RECORD = "mlflow_run.json"
#: ``log.jsonl`` fields that are no scalars of their own.
_NOT_SCALARS = ("step", "stage", "batch", "time")
_RENAMED = {"images_per_second": "speed/images_per_second", "epoch": "progress/epoch"}


def event_files(folder: str | Path) -> list[Path]:
    """The TensorBoard event files directly in ``folder``, oldest first (the readers' order)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_file() and EVENT_FILE_RE.match(p.name))


def scalar_tags(record: dict[str, Any], method: str) -> dict[str, float]:
    """A ``log.jsonl`` record -> ``{tag: value}`` (see the module docstring for the names)."""
    out = {}
    for key, value in record.items():
        if key in _NOT_SCALARS or isinstance(value, (str, bool)) or value is None:
            continue
        tag = _RENAMED.get(key) or (key if "/" in key else f"{method}/{key}")
        out[tag] = float(value)
    return out


def truncate_events_after(folder: str | Path, step: int) -> int:
    """Rewrite the event files in ``folder`` without events of steps after ``step``; returns how
    many events were dropped. A record cut by a kill ends the file's readable part."""
    from tensorboard.backend.event_processing.event_file_loader import RawEventFileLoader
    from tensorboard.compat.proto import event_pb2
    from tensorboard.summary.writer.record_writer import RecordWriter

    dropped = 0
    for path in event_files(folder):
        kept, n = [], 0
        for raw in RawEventFileLoader(str(path)).Load():
            n += 1
            if event_pb2.Event.FromString(raw).step <= step:
                kept.append(raw)
        if len(kept) == n and _fully_read(path, kept):
            continue
        dropped += n - len(kept)
        with atomic_path(path, durable=True) as tmp, open(tmp, "wb") as fh:
            writer = RecordWriter(fh)
            for raw in kept:
                writer.write(raw)
            writer.flush()
    return dropped


def _fully_read(path: Path, records: list[bytes]) -> bool:
    """True if ``records`` are the whole file (each record: 8 length + 4 crc + data + 4 crc bytes)."""
    return path.stat().st_size == sum(16 + len(r) for r in records)


class RunEvents:
    """The run's TensorBoard writer (rank 0 only; a no-op elsewhere) and the opt-in MLflow run.

    ``resume_step``: the checkpoint's step when the run is resumed (None for a new run).
    """

    def __init__(self, run_dir: Path, method: str, enabled: bool, resume_step: int | None = None,
                 say: Callable[[str], None] = print, params: dict[str, Any] | None = None):
        self.method = method
        self.writer = None
        self.mlflow = None
        if not enabled:
            return
        run_dir = Path(run_dir)
        self.mlflow = _MlflowRun.open(run_dir, resume_step, say, params or {})  # first: it may refuse
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as exc:  # a dependency: only a broken installation lacks it
            say(f"{run_dir}: no TensorBoard event files ({exc}); install synthbench's dependency: pip install tensorboard")
        else:
            purge_step = None
            if resume_step is not None:
                truncate_events_after(run_dir, resume_step)
                purge_step = resume_step + 1
                _wait_for_newer_name(run_dir)
            self.writer = SummaryWriter(log_dir=str(run_dir), purge_step=purge_step, flush_secs=60)

    def scalars(self, record: dict[str, Any]) -> None:
        tags = scalar_tags(record, self.method)
        step = int(record["step"])
        if self.writer is not None:
            for tag, value in tags.items():
                self.writer.add_scalar(tag, value, step)
        if self.mlflow is not None:
            self.mlflow.log(tags, step)

    def image(self, grid: np.ndarray, step: int) -> None:
        """The epoch's sample grid (``uint8 [H, W, 3]``), tag ``samples``."""
        if self.writer is not None:
            self.writer.add_image("samples", grid, step, dataformats="HWC")

    def flush(self) -> None:
        if self.writer is not None:
            self.writer.flush()

    def close(self, status: str | None = None) -> None:
        if self.writer is not None:
            writer, self.writer = self.writer, None
            writer.close()
        if self.mlflow is not None:
            mlflow_run, self.mlflow = self.mlflow, None
            mlflow_run.close(status)


def _wait_for_newer_name(run_dir: Path) -> None:
    """Readers load event files in name order, and names start with the creation second: wait
    (at most a second) until a new file sorts after the existing ones."""
    newest = max((int(EVENT_FILE_RE.match(p.name).group(1)) for p in event_files(run_dir)), default=-1)
    while int(time.time()) <= newest:
        time.sleep(0.05)


def mlflow_target() -> str | None:
    """``SYNTHBENCH_MLFLOW`` as a tracking URI (a folder becomes a local file store), or None."""
    target = os.environ.get(MLFLOW_ENV)
    if not target:
        return None
    if "://" not in target and not target.startswith("file:"):  # a folder: a local file store
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 asks for this opt-in
        target = Path(target).resolve().as_uri()
    return target


def preflight_mlflow() -> None:
    """Before a run writes anything: the MLflow store of ``SYNTHBENCH_MLFLOW`` must answer
    (a :class:`SynthbenchError` otherwise); nothing to check without the variable or mlflow."""
    target = mlflow_target()
    if target is None:
        return
    try:
        from mlflow.tracking import MlflowClient
    except ImportError:
        return  # said once the run starts (_MlflowRun.open)
    try:
        MlflowClient(tracking_uri=target).search_experiments(max_results=1)
    except Exception as exc:  # noqa: BLE001 - any store error: the user asked for MLflow, so stop
        raise _mlflow_error(target, exc) from exc


def _mlflow_error(target: str, exc: BaseException) -> SynthbenchError:
    detail = " ".join(str(exc).split())[:300]
    return SynthbenchError(f"{MLFLOW_ENV}={target}: cannot log to MLflow: {type(exc).__name__}: {detail}")


class _MlflowRun:
    """Scalars of a run in MLflow (``SYNTHBENCH_MLFLOW``), resumed by the id in ``RUN/mlflow_run.json``."""

    def __init__(self, mlflow, run_id: str):
        self.mlflow, self.run_id = mlflow, run_id
        self.client = mlflow.tracking.MlflowClient()

    @classmethod
    def open(cls, run_dir: Path, resume_step: int | None, say, params: dict[str, Any]) -> _MlflowRun | None:
        target = mlflow_target()
        if target is None:
            return None
        try:
            import mlflow
        except ImportError:
            say(f"{MLFLOW_ENV}={target} is set but mlflow is not installed: MLflow logging skipped "
                "(pip install mlflow-skinny)")
            return None
        try:
            return cls._start(mlflow, target, run_dir, resume_step, say, params)
        except Exception as exc:  # noqa: BLE001 - any store error: the user asked for MLflow, so stop
            raise _mlflow_error(target, exc) from exc

    @classmethod
    def _start(cls, mlflow, target: str, run_dir: Path, resume_step, say, params) -> _MlflowRun:
        mlflow.set_tracking_uri(target)
        record_path = run_dir / MLFLOW_RECORD
        run_id = None
        if resume_step is not None and record_path.is_file():
            with contextlib.suppress(OSError, ValueError, KeyError):
                record = json.loads(record_path.read_text())
                if record["tracking_uri"] == target:  # else: a new MLflow run in the new store
                    run_id = record["run_id"]
        client = mlflow.tracking.MlflowClient()
        if run_id is None:
            experiment = client.get_experiment_by_name("synthbench")
            experiment_id = experiment.experiment_id if experiment else client.create_experiment("synthbench")
            run = client.create_run(experiment_id, run_name=run_dir.name,
                                    tags={"synthbench.run_dir": str(run_dir.resolve())})
            run_id = run.info.run_id
            atomic_write_json(record_path, {"tracking_uri": target, "run_id": run_id})
            for key, value in params.items():
                client.log_param(run_id, key, str(value)[:500])
        else:
            client.update_run(run_id, status="RUNNING")
            say(f"MLflow run {run_id}: resumed at step {resume_step}; MLflow keeps metric points after "
                "that step if the previous invocation logged them (they cannot be deleted)")
        say(f"MLflow: logging to {target}, run {run_id}")
        return cls(mlflow, run_id)

    def log(self, tags: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(_mlflow_key(k), v, now, step) for k, v in tags.items()]
        self.client.log_batch(self.run_id, metrics=metrics)

    def close(self, status: str | None) -> None:
        mlflow_status = {"finished": "FINISHED", "failed": "FAILED"}.get(status or "", "KILLED")
        self.client.set_terminated(self.run_id, status=mlflow_status)


def _mlflow_key(tag: str) -> str:
    """MLflow metric names allow letters, digits, ``_ - . / :`` and spaces."""
    return re.sub(r"[^A-Za-z0-9_\-./: ]", "_", tag)
