"""Developer sessions: `nox -s demo` (the main job on the embedded phantom), `nox -s tests`, `nox -s lint`.

Every session installs synthbench into a fresh virtual environment, so the commands work on a
new machine with empty caches (only the package registry is needed).
"""

from __future__ import annotations

import os

import nox

nox.options.sessions = ["tests"]
nox.options.reuse_existing_virtualenvs = True

# Two cores on CI: one pytest worker per core, one BLAS/OpenMP thread per worker.
TEST_ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


@nox.session
def tests(session: nox.Session) -> None:
    """Install synthbench with its test extras and run the whole test suite."""
    session.install("-e", ".[test,frd]")
    # The optional FRD metric's backends (docs/metrics.md): pyradiomics builds only without isolation.
    session.install("versioneer", "numpy", "wheel")
    session.install("--no-build-isolation", "pyradiomics==3.0.1")
    session.install("--no-deps", "frd-score==1.0.1")
    workers = os.environ.get("SYNTHBENCH_TEST_WORKERS", "2")
    session.run("pytest", "-n", workers, "--durations=15", *session.posargs, env=TEST_ENV)


@nox.session
def lint(session: nox.Session) -> None:
    """Static checks (ruff)."""
    session.install("ruff")
    session.run("ruff", "check", "synthbench", "plugins", "tests", "benchmarks")


@nox.session
def demo(session: nox.Session) -> None:
    """The main job: a quick comparison on the embedded phantom, ending with the report's path."""
    session.install("-e", ".")
    out = session.posargs[0] if session.posargs else "demo"
    session.run("synthbench", "bench", "run", "benchmarks/quick.toml", "--out", out)
