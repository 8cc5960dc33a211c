"""Where a liver meets the scan's head or foot end, in any orientation."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from lvt_core.coverage import (
    MIN_CUT_AREA_MM2,
    MIN_LIVER_ML,
    ends_phrase,
    head_foot_axis,
    liver_coverage,
)
from lvt_core.labels import LIVER, TUMOR, VESSEL

LPS = (1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0)
FEET_FIRST = (1.0, 0, 0, 0, -1.0, 0, 0, 0, -1.0)  # index z grows toward the feet


def _map(array_zyx: np.ndarray, spacing=(1.0, 1.0, 2.0), direction=LPS) -> sitk.Image:
    image = sitk.GetImageFromArray(array_zyx.astype(np.uint8))
    image.SetSpacing(spacing)
    image.SetDirection(direction)
    return image


def _organ(z_from: int, z_to: int, shape=(20, 30, 30)) -> np.ndarray:
    """Parenchyma with a vessel and a tumor over slices ``z_from:z_to`` of a 20-slice map."""
    array = np.zeros(shape, np.uint8)
    array[z_from:z_to, 5:25, 5:25] = LIVER
    array[z_from:z_to, 8:10, 8:10] = VESSEL
    array[z_from:z_to, 15:20, 15:20] = TUMOR
    return array


def test_a_whole_liver_is_complete() -> None:
    cover = liver_coverage(_map(_organ(3, 17)))
    assert cover.complete and cover.cut_at == () and cover.warnings() == []
    assert cover.head_foot_mm == pytest.approx(40.0)


@pytest.mark.parametrize(("direction", "end"), [(LPS, "head"), (FEET_FIRST, "foot")])
def test_the_cut_end_follows_the_direction(direction: tuple[float, ...], end: str) -> None:
    cover = liver_coverage(_map(_organ(5, 20), direction=direction))  # runs into the last slice
    assert cover.cut_at == (end,) and not cover.complete
    assert f"{end} end" in cover.warnings()[0] and "lower bound" in cover.warnings()[0]


def test_a_slab_inside_the_liver_is_cut_at_both_ends() -> None:
    cover = liver_coverage(_map(_organ(0, 20)))
    assert cover.cut_at == ("head", "foot")
    assert "the scan's head and foot ends (the scan covers 40 mm" in cover.warnings()[0]


def test_a_speck_on_the_end_slice_is_not_a_cut() -> None:
    array = _organ(3, 17)
    array[19, 0:9, 0:11] = LIVER  # 99 mm² of partial volume on the head slice
    assert MIN_CUT_AREA_MM2 == 100.0
    assert liver_coverage(_map(array)).cut_at == ()
    array[19, 9, 0] = LIVER  # the 100th mm² reaches the limit
    assert liver_coverage(_map(array)).cut_at == ("head",)


def test_no_liver_warns_so() -> None:
    cover = liver_coverage(_map(np.zeros((3, 30, 30))))
    assert not cover.liver_found and cover.cut_at == ()
    assert cover.warnings()[0].startswith(
        "no liver was found in this scan (0.0 ml of liver labels, 6 mm head to foot)")


def test_stray_voxels_are_no_liver_and_cut_nothing() -> None:
    """4.8 ml on a three-slice slab, all through it (a strip of CT table labelled liver): under
    MIN_LIVER_ML, so no liver is found and no end counts as cut."""
    array = np.zeros((3, 40, 40), np.uint8)
    array[:, 0:40, 0:20] = LIVER  # 2,400 voxels of 2 mm³
    cover = liver_coverage(_map(array))
    assert cover.liver_ml == pytest.approx(4.8) and MIN_LIVER_ML == 5.0
    assert not cover.liver_found and cover.cut_at == () and "no liver" in cover.warnings()[0]
    array[:, 0:40, 20:21] = LIVER  # 5.04 ml: a liver, cut at both ends and by the side y = 0
    assert liver_coverage(_map(array)).cut_at == ("head", "foot", "side")


def test_ends_phrase_names_the_field_of_view_side() -> None:
    assert ends_phrase("head,side") == "head end and field-of-view side"
    assert ends_phrase(("side",)) == "field-of-view side"
    assert ends_phrase("head,foot") == "head and foot ends"


def test_head_foot_axis_of_a_sagittal_acquisition() -> None:
    """Index x runs head to foot here (a sagittal reconstruction), y anterior, z left."""
    sagittal = (0.0, 0.0, 1.0, 0.0, 1.0, 0.0, -1.0, 0.0, 0.0)
    image = _map(np.zeros((4, 5, 6)), direction=sagittal)
    assert head_foot_axis(image) == (0, False)


def test_real_totalsegmentator_liver_of_a_20_slice_series(real_data) -> None:
    """TotalSegmentator's liver on the 40 mm contrast series runs through both of its ends."""
    seg = sitk.ReadImage(str(real_data / "totalsegmentator" / "example_seg_dicom.nii.gz"))
    liver = sitk.GetImageFromArray((sitk.GetArrayFromImage(seg) == 5).astype(np.uint8))
    liver.CopyInformation(seg)
    cover = liver_coverage(liver)
    assert cover.cut_at == ("head", "foot") and cover.head_foot_mm == pytest.approx(40.0)


def test_every_message_names_the_ends_alike() -> None:
    assert ends_phrase(("head",)) == ends_phrase("head") == "head end"
    assert ends_phrase(("head", "foot")) == ends_phrase("head,foot") == "head and foot ends"
