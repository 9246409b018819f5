"""``python -m synthbench.jobs.worker JOB.pkl``: run one pickled :class:`synthbench.jobs.Job`
(the ``gpus`` launcher's child process). Exit 0 when it finished, 1 when it failed (reason in
``error.json``, traceback on stderr), 130 when a signal stopped it (a training run wrote its
checkpoint first)."""

from __future__ import annotations

import pickle
import sys
import traceback
from pathlib import Path


def main(argv: list[str]) -> int:
    from synthbench.engine.interrupts import EXIT_INTERRUPTED
    from synthbench.jobs import execute

    # The pickle was written by the comparison that started this process, into its own
    # comparison directory; it is not read from anywhere else.
    job = pickle.loads(Path(argv[0]).read_bytes())
    print(f"job {job.name} ({job.key})", file=sys.stderr, flush=True)
    try:
        execute(job)
    except KeyboardInterrupt as exc:
        print(f"{exc or 'interrupted'}: stopped; the comparison resumes it when run again", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception:  # noqa: BLE001 - reported through error.json and the exit status
        traceback.print_exc()
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
