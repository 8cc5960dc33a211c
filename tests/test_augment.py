"""Intensity augmentation: relative-contrast randomisation of vessels and tumors, synthetic
lesions, and the relabelling of lesions too faint to see."""

from __future__ import annotations

import numpy as np

from lvt_core.labels import CLASS_VALUES
from training.augment import (
    CONTRAST_RANGE_HU,
    randomize_relative_contrast,
    relabel_invisible_lesions,
)


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


def test_synthetic_lesions_are_small_labelled_and_inside_plain_liver() -> None:
    from scipy import ndimage

    from training.augment import insert_synthetic_lesions

    hu, labels = liver_with_dark_tumor()
    labels[20, 4:28, 20] = 2  # a vessel the lesions must not cover
    signs, inserted = set(), 0
    for seed in range(30):
        out_hu, out_labels = insert_synthetic_lesions(
            hu, labels, ("liver", "vessel", "tumor"), np.random.default_rng(seed), 1.0, (2.0, 2.0, 2.0))
        new = (out_labels == 3) & (labels != 3)
        assert (labels[new] == 1).all()  # only plain liver becomes tumor
        assert np.array_equal(out_labels[labels != 1], labels[labels != 1])
        changed = out_hu != hu
        assert not (changed & ~ndimage.binary_dilation(new, iterations=3)).any()  # a ramp, no more
        components, n = ndimage.label(new)
        for index in range(1, n + 1):
            extent = np.ptp(np.argwhere(components == index), axis=0).max() + 1
            assert extent * 2.0 <= 16.0 * 1.12 + 2.0  # diameter ≤ 16 mm (+ lobulation, 1 voxel)
            signs.add(bool(np.median(out_hu[components == index]) > 110.0))
        inserted += n
    assert inserted >= 20 and signs == {True, False}
    assert hu.dtype == np.float32 and (labels == 3).sum() == (liver_with_dark_tumor()[1] == 3).sum()


def test_no_synthetic_lesions_without_tumor_labels_or_at_probability_zero() -> None:
    from training.augment import insert_synthetic_lesions

    hu, labels = liver_with_dark_tumor()
    rng = np.random.default_rng(0)
    for annotated, probability in ((("liver", "vessel"), 1.0), (("liver", "vessel", "tumor"), 0.0)):
        out_hu, out_labels = insert_synthetic_lesions(hu, labels, annotated, rng, probability, (2.0, 2.0, 2.0))
        assert np.array_equal(out_hu, hu) and np.array_equal(out_labels, labels)


def test_synthetic_lesions_can_be_placed_against_a_vessel() -> None:
    from scipy import ndimage

    from training.augment import insert_synthetic_lesions

    hu, labels = liver_with_dark_tumor()
    labels[labels == 3] = 1  # no phantom tumor: every tumor voxel below is inserted
    labels[4:28, 14:16, 6:8] = 2  # one straight vessel
    vessel = labels == 2
    near = far = 0
    for seed in range(20):
        for share in (0.0, 1.0):
            _, out = insert_synthetic_lesions(hu, labels, ("liver", "vessel", "tumor"),
                                              np.random.default_rng(seed), 1.0, (2.0, 2.0, 2.0), near_vessel=share)
            assert np.array_equal(out == 2, vessel)  # the vessel keeps its voxels
            touching = ((out == 3) & ndimage.binary_dilation(vessel, iterations=2)).any()
            if share:
                near += touching
            else:
                far += touching
    assert near >= 15 and near > far + 5


def noisy_liver_with_lesions(contrast_hu: float, ring: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Liver (100 HU, noise sd 20) with a 3-voxel-radius lesion and a 7-voxel one."""
    rng = np.random.default_rng(4)
    labels = np.full((64, 64, 64), CLASS_VALUES["liver"], np.uint8)
    hu = rng.normal(100.0, 20.0, labels.shape).astype(np.float32)
    zz, yy, xx = np.mgrid[:64, :64, :64]
    for radius, center in ((3, (16, 16, 16)), (7, (42, 42, 42))):
        distance = np.sqrt((zz - center[0]) ** 2 + (yy - center[1]) ** 2 + (xx - center[2]) ** 2)
        labels[distance <= radius] = CLASS_VALUES["tumor"]
        hu[distance <= radius] -= contrast_hu
        if ring:  # bright rim, dark core: the lesion's mean is the liver's
            hu[(distance <= radius) & (distance > radius - 1.5)] += 2 * contrast_hu
    return hu, labels


def lesion_kept(labels: np.ndarray, center: tuple[int, int, int]) -> bool:
    return bool(labels[center] == CLASS_VALUES["tumor"])


def test_lesions_fainter_than_the_noise_become_liver() -> None:
    annotated = ["liver", "vessel", "tumor"]
    faint = relabel_invisible_lesions(*noisy_liver_with_lesions(4.0), annotated, 4.0)
    # 4 HU: the noise moves a 113-voxel liver mean by ~2 HU (sd), a 1,400-voxel one by ~0.5 HU
    assert not lesion_kept(faint, (16, 16, 16)) and lesion_kept(faint, (42, 42, 42))
    assert faint[16, 16, 16] == CLASS_VALUES["liver"]
    clear = relabel_invisible_lesions(*noisy_liver_with_lesions(40.0), annotated, 4.0)
    assert lesion_kept(clear, (16, 16, 16)) and lesion_kept(clear, (42, 42, 42))
    ring = relabel_invisible_lesions(*noisy_liver_with_lesions(40.0, ring=True), annotated, 4.0)
    assert lesion_kept(ring, (16, 16, 16)) and lesion_kept(ring, (42, 42, 42))  # seen by its core


def test_relabelling_is_off_at_zero_and_leaves_the_input_alone() -> None:
    hu, labels = noisy_liver_with_lesions(4.0)
    before = labels.copy()
    assert relabel_invisible_lesions(hu, labels, ["liver", "vessel", "tumor"], 0.0) is labels
    assert relabel_invisible_lesions(hu, labels, ["liver"], 4.0) is labels  # no tumor labels
    relabel_invisible_lesions(hu, labels, ["liver", "vessel", "tumor"], 4.0)
    assert np.array_equal(labels, before)


def test_log_uniform_contrast_draws_faint_lesions_as_often_as_strong_ones() -> None:
    from training.augment import draw_contrast

    def magnitudes(sampling: str) -> np.ndarray:
        rng = np.random.default_rng(16)
        return np.abs([draw_contrast(rng, (3.0, 80.0), sampling) for _ in range(4000)])

    uniform, log_uniform = magnitudes("uniform"), magnitudes("log_uniform")
    for drawn in (uniform, log_uniform):
        assert drawn.min() >= 3.0 and drawn.max() <= 80.0
    # 3-12 HU: 9/77 = 0.12 of uniform draws; ln 4 / ln(80/3) = 0.42 of log-uniform ones,
    # the same share as 20-80 HU (also a factor of 4)
    assert abs(((uniform >= 3) & (uniform < 12)).mean() - 9 / 77) < 0.03
    assert abs(((log_uniform >= 3) & (log_uniform < 12)).mean() - 0.422) < 0.03
    assert abs(((log_uniform >= 3) & (log_uniform < 12)).mean() - (log_uniform >= 20).mean()) < 0.04
    signs = np.sign([draw_contrast(np.random.default_rng(s), (3.0, 80.0), "log_uniform") for s in range(200)])
    assert 60 < (signs > 0).sum() < 140  # darker and brighter alike
    assert abs(draw_contrast(np.random.default_rng(0), (0.0, 0.0), "log_uniform")) == 1.0  # log(0): 1 HU


def test_synthetic_lesions_take_a_diameter_range_and_the_contrast_sampling() -> None:
    from scipy import ndimage

    from training.augment import insert_synthetic_lesions

    hu, labels = liver_with_dark_tumor()
    labels[labels == 3] = 1
    big = 0
    for seed in range(30):
        out_hu, out_labels = insert_synthetic_lesions(
            hu, labels, ("liver", "vessel", "tumor"), np.random.default_rng(seed), 1.0, (1.0, 1.0, 1.0),
            max_lesions=1, diameter_mm=(14.0, 16.0), contrast_range_hu=(5.0, 5.0), contrast_sampling="log_uniform")
        components, n = ndimage.label(out_labels == 3)
        for index in range(1, n + 1):
            lesion = components == index
            extent = np.ptp(np.argwhere(lesion), axis=0).max() + 1
            assert 0.7 * 14.0 - 1 <= extent <= 16.0 * 1.12 + 1
            assert abs(abs(float(np.median(out_hu[lesion] - hu[lesion]))) - 5.0) < 0.01
            big += 1
    assert big >= 12
