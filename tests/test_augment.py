"""Intensity augmentation: relative-contrast randomisation of vessels and tumors."""

from __future__ import annotations

import numpy as np

from training.augment import CONTRAST_RANGE_HU, randomize_relative_contrast


def liver_with_dark_tumor() -> tuple[np.ndarray, np.ndarray]:
    labels = np.zeros((32, 32, 32), np.uint8)
    labels[4:28, 4:28, 4:28] = 1
    zz, yy, xx = np.mgrid[:32, :32, :32]
    labels[(zz - 16) ** 2 + (yy - 16) ** 2 + (xx - 16) ** 2 <= 25] = 3
    hu = np.where(labels == 1, 110.0, -100.0).astype(np.float32)
    hu[labels == 3] = 70.0  # 40 HU darker than the liver
    return hu, labels


def test_tumor_contrast_is_redrawn_in_both_directions_and_the_rest_is_kept() -> None:
    hu, labels = liver_with_dark_tumor()
    tumor, far = labels == 3, labels == 0
    contrasts = []
    for seed in range(40):
        out = randomize_relative_contrast(hu, labels, ("liver", "vessel", "tumor"),
                                          np.random.default_rng(seed), probability=1.0)
        contrasts.append(float(np.median(out[tumor])) - 110.0)
        assert np.array_equal(out[far], hu[far])
        assert np.median(out[labels == 1]) == 110.0
    magnitudes = np.abs(contrasts)
    assert magnitudes.min() >= CONTRAST_RANGE_HU[0] - 0.5 and magnitudes.max() <= CONTRAST_RANGE_HU[1] + 0.5
    assert sum(c > 0 for c in contrasts) >= 10 and sum(c < 0 for c in contrasts) >= 10


def test_nothing_changes_at_probability_zero_or_without_liver_labels() -> None:
    hu, labels = liver_with_dark_tumor()
    rng = np.random.default_rng(0)
    assert np.array_equal(randomize_relative_contrast(hu, labels, ("liver", "tumor"), rng, 0.0), hu)
    assert np.array_equal(randomize_relative_contrast(hu, labels, ("vessel", "tumor"), rng, 1.0), hu)
