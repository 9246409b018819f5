"""Augmentation (paper: resize+crop, rotation, Gaussian noise, elastic): alignment and seeding."""

import numpy as np

from synthbench.data.augment import AugmentOptions, augment_one, build_transform, sample_seed


def _square(size=64):
    image = np.full((size, size), -1.0, np.float32)
    label = np.zeros((size, size), np.uint8)
    image[14:34, 30:52] = 1.0
    label[14:34, 30:52] = 2
    return image, label


def test_mask_follows_image_under_rotation_crop_elastic():
    image, label = _square()
    transform = build_transform(64, AugmentOptions(rotation_degrees=40, elastic_alpha=60.0, noise_sigma=0.02))
    moved = 0
    for k in range(12):
        img, lab = augment_one(transform, image, label, sample_seed(0, "t", 0, k))
        assert img.shape == (64, 64) and lab.dtype == np.uint8
        assert set(np.unique(lab)) <= {0, 2}  # nearest interpolation: no blended label values
        bright = img > 0
        square = lab == 2
        iou = (bright & square).sum() / max((bright | square).sum(), 1)
        assert iou > 0.8, (k, iou)
        moved += not np.array_equal(square, label == 2)
    assert moved >= 10


def test_misaligned_pair_would_be_caught():
    # The IoU check above fails if the mask does not move with the image.
    image, label = _square()
    transform = build_transform(64, AugmentOptions(rotation_degrees=40))
    img, _ = augment_one(transform, image, label, sample_seed(0, "t", 0, 3))
    iou = ((img > 0) & (label == 2)).sum() / ((img > 0) | (label == 2)).sum()
    assert iou < 0.8


def test_noise_on_image_only_and_seeded():
    image, label = _square()
    t = build_transform(64)
    a = augment_one(t, image, label, 123)
    b = augment_one(t, image, label, 123)
    c = augment_one(t, image, label, 124)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])
    assert np.abs(a[0]).max() <= 1.0
    background = a[0][a[1] == 0]
    assert background.std() > 0.005  # Gaussian noise reached the image
    assert sample_seed(0, "train_aug", 5, 1) != sample_seed(0, "train_aug", 5, 2)


def test_seeding_touches_the_cpu_generator_only(monkeypatch):
    """Each sample seeds the CPU generator alone (the one fork_rng restores): the samples are those
    of torch.manual_seed, and no accelerator generator is seeded behind the caller's back (issue 21:
    torch.manual_seed queued a seeding of every lazily initialised device, ~1 ms per sample)."""
    import torch
    from torchvision import tv_tensors

    image, label = _square()
    transform = build_transform(64)
    for k in range(3):
        seed = sample_seed(0, "t", 0, k)
        img, lab = augment_one(transform, image, label, seed)
        torch.manual_seed(seed)  # the former seeding, for reference
        ref_img, ref_lab = transform(tv_tensors.Image(torch.from_numpy(image.copy())[None]),
                                     tv_tensors.Mask(torch.from_numpy(label.copy())[None]))
        assert np.array_equal(img, ref_img[0].clamp(-1, 1).numpy()) and np.array_equal(lab, ref_lab[0].numpy())
    seeded = []
    monkeypatch.setattr(torch.cuda, "manual_seed_all", lambda s: seeded.append(s))
    augment_one(transform, image, label, 5)
    assert seeded == []
