"""Issue 21: the elastic transform smooths its displacement with the separable form of torchvision's
2-D Gaussian blur; the displacement and the augmented pairs equal torchvision's within float
rounding."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torchvision import tv_tensors
from torchvision.transforms import v2

from synthbench.data.augment import (
    AugmentOptions,
    SeparableElasticTransform,
    augment_one,
    build_transform,
    sample_seed,
)


def phantom_pair(size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """A smooth image with a few labelled regions (edges give nearest sampling something to move)."""
    yy, xx = np.mgrid[:size, :size] / size
    image = (np.sin(7 * xx) * np.cos(5 * yy)).astype(np.float32)
    label = np.zeros((size, size), np.uint8)
    label[10:40, 8:30] = 1
    label[20:50, 34:58] = 2
    label[28:36, 14:22] = 3
    return image, label


@pytest.mark.parametrize("sigma", [6.0, 2.5, (3.0, 5.0)])
@pytest.mark.parametrize("size", [64, 96])
def test_displacement_equals_torchvision(sigma, size):
    inputs = [tv_tensors.Image(torch.zeros(1, size, size))]
    reference, separable = v2.ElasticTransform(30.0, sigma), SeparableElasticTransform(30.0, sigma)
    for seed in range(3):
        torch.manual_seed(seed)
        expected = reference.make_params(inputs)["displacement"]
        after_reference = torch.rand(1)
        torch.manual_seed(seed)
        got = separable.make_params(inputs)["displacement"]
        assert torch.rand(1) == after_reference  # the same random numbers drawn, no more
        assert got.shape == expected.shape == (1, size, size, 2)
        torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)
        assert expected.abs().max() > 1e-3  # a real field, not zeros


def test_augmented_pairs_equal_the_torchvision_chain():
    """The whole chain with the old ``v2.ElasticTransform`` vs the separable one, same seeds:
    images within 1e-4; labels (nearest) identical except where rounding moves a sample across a
    pixel boundary, allowed on at most 0.1% of pixels in total."""
    options = AugmentOptions()
    new = build_transform(64, options)
    assert any(isinstance(t, SeparableElasticTransform) for t in new.transforms)
    old = v2.Compose([
        v2.ElasticTransform(alpha=t.alpha, sigma=t.sigma, fill=t.fill) if isinstance(t, SeparableElasticTransform)
        else t for t in new.transforms
    ])
    image, label = phantom_pair()
    differing = total = 0
    for k in range(16):
        seed = sample_seed(0, "train", 0, k)
        img_new, lab_new = augment_one(new, image, label, seed)
        img_old, lab_old = augment_one(old, image, label, seed)
        np.testing.assert_allclose(img_new, img_old, rtol=0, atol=1e-4)
        differing += int((lab_new != lab_old).sum())
        total += lab_old.size
        assert len(np.unique(lab_old)) > 1
    assert differing <= 0.001 * total, f"{differing} of {total} label pixels differ"


def test_one_displacement_for_image_and_mask():
    """Image and mask of one call share the displacement: an image that equals its label map
    warps (nearest for both) to exactly the warped label map."""
    _, label = phantom_pair()
    transform = SeparableElasticTransform(alpha=60.0, sigma=6.0, interpolation=v2.InterpolationMode.NEAREST)
    torch.manual_seed(0)
    img, msk = transform(tv_tensors.Image(torch.from_numpy(label).float()[None]),
                         tv_tensors.Mask(torch.from_numpy(label)[None]))
    assert not torch.equal(msk[0], torch.from_numpy(label))
    assert torch.equal(img[0].to(torch.uint8), msk[0])
