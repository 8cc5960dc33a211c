"""Anatomical clean-up: the liver's largest component, and tumor specks below a volume."""

from __future__ import annotations

import numpy as np

from lvt_core.labels import BACKGROUND, LIVER, TUMOR, VESSEL
from lvt_core.postprocess import (
    keep_liver_component,
    remove_small_tumors,
    remove_tubular_tumors,
    remove_unconfident_tumors,
)


def _liver_with_two_tumors() -> np.ndarray:
    labels = np.zeros((20, 20, 20), np.uint8)
    labels[2:18, 2:18, 2:18] = LIVER
    labels[4:10, 4:10, 4:10] = TUMOR  # 216 voxels
    labels[14:16, 14:15, 14:15] = TUMOR  # a 2-voxel speck
    labels[12, 3:17, 8] = VESSEL
    return labels


def test_small_tumor_components_become_liver() -> None:
    labels = _liver_with_two_tumors()
    # 2 mm voxels: 8 µl each; 0.1 ml keeps components of 13 voxels or more
    cleaned = remove_small_tumors(labels, (2.0, 2.0, 2.0), min_volume_ml=0.1)
    assert (cleaned[4:10, 4:10, 4:10] == TUMOR).all()
    assert (cleaned[14:16, 14, 14] == LIVER).all()
    assert (cleaned == VESSEL).sum() == (labels == VESSEL).sum()
    assert (cleaned == BACKGROUND).sum() == (labels == BACKGROUND).sum()


def test_volume_threshold_follows_voxel_size() -> None:
    labels = _liver_with_two_tumors()
    # 1 mm voxels: the 216-voxel lesion is 0.216 ml, below 0.3 ml; with 2 mm voxels it is 1.7 ml
    assert not (remove_small_tumors(labels, (1.0, 1.0, 1.0), 0.3) == TUMOR).any()
    assert (remove_small_tumors(labels, (2.0, 2.0, 2.0), 0.3) == TUMOR).sum() == 216


def test_zero_volume_keeps_every_tumor_voxel() -> None:
    labels = _liver_with_two_tumors()
    assert np.array_equal(remove_small_tumors(labels, (2.0, 2.0, 2.0), 0.0), labels)


def test_keep_liver_component_drops_detached_organ() -> None:
    labels = _liver_with_two_tumors()
    labels[0, 0, 0:2] = LIVER  # a detached speck of "liver"
    kept = keep_liver_component(labels)
    assert kept[0, 0, 0] == BACKGROUND and (kept[4:10, 4:10, 4:10] == TUMOR).all()


def test_tumors_that_never_reach_the_peak_probability_become_liver() -> None:
    labels = _liver_with_two_tumors()
    probability = np.where(labels == TUMOR, 0.55, 0.05).astype(np.float16)
    probability[6, 6, 6] = 0.97  # the big lesion is confident at its core; the speck never is
    cleaned = remove_unconfident_tumors(labels, probability, min_peak=0.7)
    assert (cleaned[4:10, 4:10, 4:10] == TUMOR).all()
    assert (cleaned[14:16, 14, 14] == LIVER).all()
    assert (cleaned == VESSEL).sum() == (labels == VESSEL).sum()
    assert np.array_equal(remove_unconfident_tumors(labels, probability, 0.0), labels)
    assert not (remove_unconfident_tumors(labels, probability, 0.98) == TUMOR).any()


def test_a_large_tumor_is_kept_whatever_its_peak() -> None:
    """The peak rule is for specks: a component of ``large_voxels`` or more stays even when the
    network is unsure at every voxel of it."""
    labels = _liver_with_two_tumors()
    probability = np.where(labels == TUMOR, 0.55, 0.05).astype(np.float16)  # no voxel reaches 0.7
    cleaned = remove_unconfident_tumors(labels, probability, min_peak=0.7, large_voxels=216)
    assert (cleaned[4:10, 4:10, 4:10] == TUMOR).all()  # 6 x 6 x 6 = 216 voxels
    assert (cleaned[14:16, 14, 14] == LIVER).all()
    too_small = remove_unconfident_tumors(labels, probability, min_peak=0.7, large_voxels=217)
    assert not (too_small == TUMOR).any()


def test_a_tube_drawn_as_tumor_becomes_liver_and_a_ball_stays() -> None:
    """A vessel drawn as tumor is a tube (roundness near 0) where a lesion is a round mass
    (near 1); the shape is measured in millimetres, so thick slices do not flatten a ball,
    and a large component stays whatever its shape."""
    labels = np.zeros((24, 60, 60), np.uint8)
    labels[1:23, 2:58, 2:58] = LIVER
    zz, yy, xx = np.mgrid[:24, :60, :60]
    ball = (((zz - 12) * 2.0) ** 2 + ((yy - 15) * 0.8) ** 2 + ((xx - 15) * 0.8) ** 2) <= 8.0**2
    labels[ball] = TUMOR  # a 16 mm ball on 0.8 x 0.8 x 2 mm voxels: 10 slices, 21 pixels across
    labels[11:13, 40:42, 5:55] = TUMOR  # a 40 mm tube 1.6 mm across
    labels[12, 45:47, 45:47] = VESSEL
    spacing_xyz = (0.8, 0.8, 2.0)
    cleaned = remove_tubular_tumors(labels, spacing_xyz, min_roundness=0.3)
    assert (cleaned[ball] == TUMOR).all()
    assert (cleaned[11:13, 40:42, 5:55] == LIVER).all()
    assert (cleaned == VESSEL).sum() == (labels == VESSEL).sum()
    assert np.array_equal(remove_tubular_tumors(labels, spacing_xyz, 0.0), labels)
    tube_voxels = 2 * 2 * 50
    kept_large = remove_tubular_tumors(labels, spacing_xyz, 0.3, large_voxels=tube_voxels)
    assert np.array_equal(kept_large, labels)
    # on isotropic voxels the same ball's array would be flat: spacing is what makes it round
    assert not (remove_tubular_tumors(labels, (1.0, 1.0, 0.2), 0.6)[ball] == TUMOR).any()


def test_a_component_without_parenchyma_is_never_the_liver() -> None:
    """A large vessel-only component (the CT table on a three-slice slab) loses to a smaller
    one holding parenchyma; with no parenchyma anywhere nothing is kept."""
    labels = np.zeros((20, 40, 40), np.uint8)
    labels[2:6, 2:6, 2:6] = LIVER
    labels[3, 3, 3] = VESSEL
    labels[10:18, 0:40, 10:30] = VESSEL  # 6,400 voxels, no parenchyma
    kept = keep_liver_component(labels)
    assert (kept[10:18] == BACKGROUND).all()
    assert (kept[2:6, 2:6, 2:6] == labels[2:6, 2:6, 2:6]).all()
    labels[2:6, 2:6, 2:6] = TUMOR
    assert not keep_liver_component(labels).any()
