"""Shared fixtures. ``phantom_dir``: a small prepared phantom data set (64x64, 8 patients x 4 slices,
all slices kept, train_aug about 64 and test_aug about 32 samples), built once per session."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(scope="session")
def phantom_dir(tmp_path_factory):
    """Path of a prepared phantom data set (synthbench.data.prepared format), read-only by convention."""
    import torch

    from synthbench.data.prepare import prepare_phantom

    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("phantom") / "prepared"
    prepare_phantom(out, size=64, patients=8, slices_per_patient=4, seed=0, train_factor=3, test_factor=4,
                    keep_all_slices=True)
    return out
