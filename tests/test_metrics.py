"""Metrics on analytic cases: shifted cubes, concentric spheres, counted lesions, empty masks."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from lvt_core.metrics import (
    dice,
    evaluate_pair,
    lesion_detection,
    normalized_surface_dice,
    precision_recall,
)


def cube(shift_x: int = 0, shape: tuple[int, int, int] = (30, 30, 30)) -> np.ndarray:
    m = np.zeros(shape, bool)
    m[10:20, 10:20, 10 + shift_x : 20 + shift_x] = True
    return m


def sphere(radius: float, shape: tuple[int, int, int] = (40, 40, 40)) -> np.ndarray:
    z, y, x = np.indices(shape) - np.array(shape)[:, None, None, None] / 2 + 0.5
    return (x**2 + y**2 + z**2) <= radius**2


def test_shifted_cubes_overlap_metrics() -> None:
    a, b = cube(), cube(shift_x=2)  # overlap 8/10 of each cube
    assert dice(a, b) == pytest.approx(0.8)
    assert precision_recall(b, a) == pytest.approx((0.8, 0.8))
    bigger = np.zeros_like(a)
    bigger[8:22, 8:22, 8:22] = True  # contains a: recall 1, precision 1000/2744
    assert precision_recall(bigger, a) == pytest.approx((1000 / 2744, 1.0))


def test_nsd_shifted_cubes_respects_spacing_order() -> None:
    a, b = cube(), cube(shift_x=2)  # x faces 2 voxels apart
    assert normalized_surface_dice(a, b, (1.0, 1.0, 1.0), 2.5) == pytest.approx(1.0)
    # only the coinciding 8/10 of the four side faces are within 0.5 mm: 2*320 / 1200;
    # surface elements along the cube edges add an O(1/side) excess, so use a 40-voxel cube
    big_a = np.zeros((60, 60, 70), bool)
    big_b = big_a.copy()
    big_a[10:50, 10:50, 10:50] = True
    big_b[10:50, 10:50, 18:58] = True
    assert normalized_surface_dice(big_a, big_b, (1, 1, 1), 0.5) == pytest.approx(
        640 / 1200, abs=0.02
    )
    # spacing is (x, y, z): a 2 mm x spacing puts the x faces 4 mm apart
    assert normalized_surface_dice(a, b, (2.0, 1.0, 1.0), 3.0) < 0.9
    assert normalized_surface_dice(a, b, (1.0, 1.0, 2.0), 3.0) == pytest.approx(1.0)


def test_concentric_spheres() -> None:
    inner, outer = sphere(10), sphere(12)
    assert dice(inner, outer) == pytest.approx(2 * 10**3 / (10**3 + 12**3), rel=0.03)
    assert normalized_surface_dice(inner, outer, (1, 1, 1), 3.0) == pytest.approx(1.0)
    # surfaces 4 mm apart: nothing within 2 mm, everything within 5 mm
    small, large = sphere(10, (44, 44, 44)), sphere(14, (44, 44, 44))
    assert normalized_surface_dice(small, large, (1, 1, 1), 2.0) == 0.0
    assert normalized_surface_dice(small, large, (1, 1, 1), 5.0) == pytest.approx(1.0)
    # the same voxels at 0.5 mm spacing are 2 mm apart
    assert normalized_surface_dice(small, large, (0.5, 0.5, 0.5), 2.5) == pytest.approx(1.0)
    assert normalized_surface_dice(inner, inner, (1, 1, 1), 0.1) == pytest.approx(1.0)


def test_empty_mask_conventions() -> None:
    empty, full = np.zeros((5, 5, 5), bool), cube(shape=(30, 30, 30))
    e30 = np.zeros_like(full)
    assert dice(empty, empty) == 1.0 and dice(full, e30) == 0.0
    assert precision_recall(empty, empty) == (1.0, 1.0)
    assert precision_recall(e30, full) == (0.0, 0.0)  # nothing predicted, something missed
    assert normalized_surface_dice(e30, e30, (1, 1, 1), 3) == 1.0
    assert normalized_surface_dice(full, e30, (1, 1, 1), 3) == 0.0
    none = lesion_detection(np.zeros((4, 4, 4)), np.zeros((4, 4, 4)))
    assert none["sensitivity"] == 1.0 and none["precision"] == 1.0


def test_lesion_detection_counts_ten_percent_rule() -> None:
    ref = np.zeros((20, 20, 60), np.uint8)
    pred = np.zeros_like(ref)
    ref[5:15, 5:15, 0:10] = 3  # lesion A, 1000 voxels
    ref[5:15, 5:15, 20:30] = 3  # lesion B
    ref[5:15, 5:15, 40:50] = 3  # lesion C, missed
    pred[5:15, 5:15, 0:5] = 3  # covers 50 % of A
    pred[5:15, 5:15, 20:21] = 3  # covers exactly 10 % of B: not more than 10 %
    pred[0:2, 0:2, 55:58] = 3  # false positive
    result = lesion_detection(pred, ref)
    assert result["n_reference"] == 3 and result["n_predicted"] == 3
    assert result["sensitivity"] == pytest.approx(1 / 3)
    assert result["precision"] == pytest.approx(1 / 3)
    pred[5:15, 5:15, 20:22] = 3  # now 20 % of B
    assert lesion_detection(pred, ref)["sensitivity"] == pytest.approx(2 / 3)


def test_lesions_are_26_connected() -> None:
    ref = np.zeros((5, 5, 5), np.uint8)
    ref[1, 1, 1] = ref[2, 2, 2] = 3  # diagonal neighbours: one lesion
    assert lesion_detection(ref, ref)["n_reference"] == 1


def test_evaluate_pair_uses_liver_hierarchy() -> None:
    ref = np.zeros((30, 30, 30), np.uint8)
    ref[cube()] = 1
    ref[12:18, 12:18, 12:18] = 3
    pred = ref.copy()
    pred[pred == 3] = 2  # tumor called vessel: liver (1,2,3) still perfect
    to_img = sitk.GetImageFromArray
    result = evaluate_pair(to_img(pred), to_img(ref))
    assert result["liver"]["dsc"] == 1.0 and result["liver"]["nsd"] == 1.0
    assert result["tumor"]["dsc"] == 0.0 and result["vessel"]["precision"] == 0.0
    assert result["lesion_sensitivity"] == 0.0 and result["lesion_precision"] == 1.0
    with pytest.raises(ValueError, match="size"):
        evaluate_pair(to_img(pred[:-1]), to_img(ref))


def test_evaluate_pair_refuses_files_that_do_not_share_a_grid() -> None:
    """A moved origin scored DSC 1.0 and a flipped axis 0.08 before: both are now refused."""
    ref_array = np.zeros((30, 30, 30), np.uint8)
    ref_array[cube()] = 1
    ref = sitk.GetImageFromArray(ref_array)
    moved = sitk.GetImageFromArray(ref_array)
    moved.SetOrigin((500.0, 0.0, 0.0))
    with pytest.raises(ValueError, match=r"origin .* by 500\.00 mm"):
        evaluate_pair(moved, ref)
    flipped = sitk.GetImageFromArray(ref_array[:, :, ::-1].copy())
    flipped.SetDirection((-1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0))
    with pytest.raises(ValueError, match="flipped or rotated"):
        evaluate_pair(flipped, ref)
    rounded = sitk.GetImageFromArray(ref_array)
    rounded.SetOrigin((1e-4, -1e-4, 0.0))  # one grid written by two tools
    assert evaluate_pair(rounded, ref)["liver"]["dsc"] == 1.0


def test_specks_under_min_voxels_are_not_lesions_in_either_map() -> None:
    ref = np.zeros((20, 20, 40), np.uint8)
    ref[5:15, 5:15, 0:10] = 3
    ref[0:2, 0:2, 30:32] = 3  # an 8-voxel speck in the reference
    pred = ref.copy()
    pred[0:2, 0:2, 30:32] = 0
    pred[18:20, 18:20, 35:37] = 3  # and another in the prediction
    every = lesion_detection(pred, ref)
    assert (every["n_reference"], every["n_predicted"], every["sensitivity"]) == (2, 2, 0.5)
    lesions = lesion_detection(pred, ref, min_voxels=10)
    assert (lesions["n_reference"], lesions["n_predicted"]) == (1, 1)
    assert lesions["sensitivity"] == lesions["precision"] == 1.0 and lesions["min_voxels"] == 10
