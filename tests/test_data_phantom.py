"""Embedded phantom: determinism, classes, Hounsfield ranges, smooth z (synthbench.data.phantom)."""

import numpy as np
import pytest

from synthbench.data.phantom import CONS_ID, GGO_ID, LUNG_ID, generate_patient, phantom_spec
from synthbench.errors import SynthbenchError


@pytest.fixture(scope="module")
def patients():
    return [generate_patient(0, i, 6, 96) for i in range(3)]


def test_deterministic_by_seed():
    a = generate_patient(3, 1, 3, 48)
    b = generate_patient(3, 1, 3, 48)
    c = generate_patient(4, 1, 3, 48)
    assert np.array_equal(a.image, b.image) and np.array_equal(a.label, b.label)
    assert not np.array_equal(a.image, c.image)


def test_classes_and_hu_ranges(patients):
    image = np.concatenate([p.image for p in patients])
    label = np.concatenate([p.label for p in patients])
    assert set(np.unique(label)) <= {0, 1, 2, 3}
    assert {LUNG_ID, GGO_ID, CONS_ID} <= set(np.unique(label))
    assert phantom_spec().num_classes == 4
    lung = np.median(image[label == LUNG_ID])
    ggo = np.median(image[label == GGO_ID])
    cons = np.median(image[label == CONS_ID])
    assert -950 < lung < -750
    assert -750 < ggo < -250, ggo
    assert -150 < cons < 100, cons
    # air outside the body, bone (ribs, spine, sternum) present
    assert np.median(image[:, 0, :]) < -900
    assert (image > 300).mean() > 0.002
    # lungs are inside the body: no lung label on the image border
    assert not label[:, 0, :].any() and not label[:, :, 0].any()


def test_slices_vary_smoothly_along_z():
    p = generate_patient(0, 0, 12, 64)
    lung = (p.label > 0).astype(float)
    near = np.mean(np.abs(lung[1:] - lung[:-1]))
    far = np.mean(np.abs(lung[6:] - lung[:-6]))
    assert near < far
    assert np.mean(np.abs(lung[1] - lung[0])) < 0.05


def test_patients_differ_and_bad_arguments(patients):
    assert not np.array_equal(patients[0].label, patients[1].label)
    with pytest.raises(SynthbenchError):
        generate_patient(0, 0, 0, 64)
