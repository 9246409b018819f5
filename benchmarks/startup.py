"""CLI start-up time: ``synthbench --help`` (issue 21: under 2 s on a quiet 2-core machine).

Each repetition runs ``python -m synthbench --help`` in a fresh process and measures its wall
time and CPU time (user + sys of the child). A second probe lists which heavy modules
(torch, pandas, scipy, numpy) the CLI imports to build its command tree: with plugins
registered by class path (docs/plugins.md) it imports none of them.

Usage::

    python benchmarks/startup.py [--repeat 7]                   # this checkout
    python benchmarks/startup.py --source /tmp/old-checkout     # another checkout, same venv

``--source DIR`` puts ``DIR`` and ``DIR/plugins`` first on ``PYTHONPATH`` so an older export of
the repository (``git archive REV | tar -x -C DIR``) runs with this environment's packages and
entry points: a before/after comparison on one machine. Timings on a loaded machine are
noisy; CPU time is the steadier number. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

HEAVY = ("torch", "pandas", "scipy", "numpy")
#: ``python -m`` / ``-c`` put the working directory first on sys.path: run where no checkout is.
NEUTRAL_CWD = tempfile.gettempdir()

PROBE = (
    "import sys, json\n"
    "from synthbench.cli.main import build_app\n"
    "build_app()\n"
    f"print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))\n"
)


def _env(source: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("SYNTHBENCH_PLUGINS", "SYNTHBENCH_DEBUG")}
    if source:
        env["PYTHONPATH"] = os.pathsep.join([source, os.path.join(source, "plugins"), env.get("PYTHONPATH", "")])
    return env


def time_help(env: dict[str, str]) -> tuple[float, float]:
    """Wall and CPU seconds of one ``python -m synthbench --help`` in a fresh process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "synthbench", "--help"], env=env, capture_output=True, text=True,
                          cwd=NEUTRAL_CWD)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"synthbench --help failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def heavy_imports(env: dict[str, str]) -> list[str]:
    proc = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True,
                          cwd=NEUTRAL_CWD)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7, help="fresh processes to time (after one warm-up)")
    parser.add_argument("--source", help="another checkout of synthbench to time instead of this one")
    args = parser.parse_args(argv)
    env = _env(args.source)
    time_help(env)  # warm the file-system cache
    runs = [time_help(env) for _ in range(args.repeat)]
    walls, cpus = [w for w, _ in runs], [c for _, c in runs]
    load = os.getloadavg()[0]
    print(f"`synthbench --help`, {args.repeat} fresh processes, source {args.source or 'this checkout'}, "
          f"load average {load:.2f} on {os.cpu_count()} CPUs")
    print()
    print("| measure | median | min | max |")
    print("|---|---:|---:|---:|")
    print(f"| wall s | {statistics.median(walls):.2f} | {min(walls):.2f} | {max(walls):.2f} |")
    print(f"| CPU s (user+sys) | {statistics.median(cpus):.2f} | {min(cpus):.2f} | {max(cpus):.2f} |")
    print()
    print(f"heavy modules imported to build the CLI: {', '.join(heavy_imports(env)) or 'none'}")


if __name__ == "__main__":
    main()
