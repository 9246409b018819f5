"""Fetch the official pix2pixHD, SPADE and SEAN code for ``benchmarks/perf.py official``.

Clones each official repository at a pinned commit into a scratch folder OUTSIDE this repository
(it is never committed; the licences of the official code are theirs: pix2pixHD BSD, SPADE and
SEAN CC BY-NC-SA 4.0), and completes SPADE as its README says (``cd models/networks; git clone
Synchronized-BatchNorm-PyTorch; cp -rf .../sync_batchnorm .``). Writes ``OUT/official.json``
(repository, commit and folder per method), which ``perf.py official --official-dir OUT`` reads.

Usage::

    python benchmarks/fetch_official.py --out /tmp/synthbench-official
    # a local mirror instead of GitHub ({repo} is owner/name, {owner} and {name} its parts):
    python benchmarks/fetch_official.py --out /tmp/synthbench-official --url "/mirrors/{owner}+{name}/repo"

Needs ``git``. Only the Python sources, licences and readmes are checked out. A folder that
already holds the pinned commit is kept as it is.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent

#: method -> (GitHub repository, pinned commit). The commits the side-by-side results were measured at.
OFFICIAL = {
    "pix2pixhd": ("NVIDIA/pix2pixHD", "14b3b3c7fff413086e3b58df52096f16b6891172"),
    "spade": ("NVlabs/SPADE", "fecacc920c1367a038995c45a39c15f6521ca64f"),
    "sean": ("ZPdesu/SEAN", "04c7536ff3fecd2d1a09c9ae046a1144636033a5"),
}
#: SPADE's README: ``models/networks/sync_batchnorm`` comes from this repository.
SYNC_BATCHNORM = ("vacancy/Synchronized-BatchNorm-PyTorch", "7553990fb9a917cddd9342e89b6dc12a70573f5b")


def _git(*args: str, cwd: Path | None = None) -> str:
    proc = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"error: git {' '.join(args)} failed: {proc.stderr.strip().splitlines()[-1:]}")
    return proc.stdout.strip()


def _wanted(path: str) -> bool:
    """The files the benchmark needs: Python sources, and the licence and readme to keep with them."""
    base = path.rsplit("/", 1)[-1].upper()
    return path.endswith(".py") or base.startswith(("LICENSE", "README"))


def checkout(repo: str, commit: str, target: Path, url_template: str) -> None:
    """``target`` holds ``repo``'s sources at ``commit`` (cloned unless it already does). Only the
    Python sources, licence and readme are checked out (pix2pixHD's repository also ships data)."""
    if (target / ".git").exists() and _git("rev-parse", "HEAD", cwd=target) == commit:
        return
    if target.exists():
        shutil.rmtree(target)
    owner, name = repo.split("/")
    _git("clone", "--quiet", "--no-checkout", url_template.format(repo=repo, owner=owner, name=name), str(target))
    _git("reset", "--quiet", "--soft", commit, cwd=target)
    files = [f for f in _git("ls-tree", "-r", "--name-only", commit, cwd=target).splitlines() if _wanted(f)]
    _git("checkout", commit, "--", *files, cwd=target)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="scratch folder outside the repository")
    parser.add_argument("--url", default="https://github.com/{repo}.git",
                        help="clone URL template: {repo} (owner/name), {owner}, {name}")
    args = parser.parse_args(argv)
    out = args.out.resolve()
    if out == REPO_ROOT or REPO_ROOT in out.parents:
        print(f"error: {out}: inside the synthbench repository; the official code is never committed here",
              file=sys.stderr)
        return 2
    out.mkdir(parents=True, exist_ok=True)
    record = {}
    for method, (repo, commit) in OFFICIAL.items():
        target = out / method
        checkout(repo, commit, target, args.url)
        record[method] = {"repository": f"https://github.com/{repo}", "commit": commit, "dir": str(target)}
        print(f"{method}: {repo} @ {commit[:10]} in {target}")
    sync_repo, sync_commit = SYNC_BATCHNORM
    sync_clone = out / "Synchronized-BatchNorm-PyTorch"
    checkout(sync_repo, sync_commit, sync_clone, args.url)
    spade_sync = out / "spade" / "models" / "networks" / "sync_batchnorm"
    if not spade_sync.exists():
        shutil.copytree(sync_clone / "sync_batchnorm", spade_sync)
    record["spade"]["sync_batchnorm"] = {"repository": f"https://github.com/{sync_repo}", "commit": sync_commit}
    (out / "official.json").write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {out / 'official.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
