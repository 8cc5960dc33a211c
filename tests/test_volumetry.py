"""Volumetry across phases: exact volumes and residuals on constructed label maps."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from lvt_core.labels import LIVER, TUMOR, VESSEL
from lvt_core.volumetry import beyond_threshold, liver_volumes_ml, residuals_pct, volumetry


def _labels(liver: int, vessel: int, tumor: int, spacing=(1.0, 1.0, 2.0)) -> sitk.Image:
    """A label map with exactly these voxel counts (plus background), clear of the scan's six
    faces so that it holds the whole liver."""
    array = np.zeros((40, 40, 40), dtype=np.uint8)
    inside = np.zeros(38 * 38 * 38, dtype=np.uint8)
    inside[:liver] = LIVER
    inside[liver : liver + vessel] = VESSEL
    inside[liver + vessel : liver + vessel + tumor] = TUMOR
    array[1:-1, 1:-1, 1:-1] = inside.reshape(38, 38, 38)
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing)
    return image


def test_total_and_functional_volumes_are_exact() -> None:
    total, functional = liver_volumes_ml(_labels(10_000, 500, 250, spacing=(0.5, 0.8, 2.5)))
    voxel_ml = 0.5 * 0.8 * 2.5 / 1000
    assert total == pytest.approx(10_750 * voxel_ml, rel=1e-12)
    assert functional == pytest.approx(10_500 * voxel_ml, rel=1e-12)


def test_residuals_are_exact_and_flag_follows_threshold() -> None:
    counts = [(20_000, 1_000, 500), (20_400, 1_000, 500), (19_700, 1_000, 300)]
    result = volumetry([_labels(*c) for c in counts], threshold_pct=1.0, names=["art", "ven", "late"])
    totals = np.array([sum(c) for c in counts], dtype=float) * 2.0 / 1000
    functional = np.array([c[0] + c[1] for c in counts], dtype=float) * 2.0 / 1000
    expected = (totals - totals.mean()) / totals.mean() * 100
    np.testing.assert_allclose(result.deviation_pct, expected, rtol=1e-12)
    np.testing.assert_allclose(
        result.functional_deviation_pct, (functional - functional.mean()) / functional.mean() * 100, rtol=1e-12
    )
    doc = result.to_document()
    assert doc["mean_ml"] == pytest.approx(totals.mean())
    assert doc["max_abs_deviation_pct"] == pytest.approx(np.abs(expected).max())
    assert doc["flags"] == [bool(abs(d) > 1.0) for d in expected]
    assert doc["flag"] is True and doc["threshold_pct"] == 1.0
    assert doc["warnings"] == []
    for key in ("volumes_ml", "functional_volumes_ml", "mean_ml", "deviation_pct",
                "max_abs_deviation_pct", "threshold_pct", "flag"):
        assert key in doc
    assert volumetry([_labels(*c) for c in counts], threshold_pct=5.0).flag is False


def test_the_flag_treats_both_sides_alike_at_exactly_the_threshold() -> None:
    """9800 / 10200 ml are −2 % and +2 % (float: −1.99999… and +2.00000…1): neither is beyond."""
    deviations = residuals_pct([9800.0, 10200.0])
    assert [beyond_threshold(d, 2.0) for d in deviations] == [False, False]
    assert [beyond_threshold(d, 2.0) for d in residuals_pct([9790.0, 10210.0])] == [True, True]


def test_different_slice_thickness_warns() -> None:
    a = _labels(10_000, 0, 0, spacing=(1.0, 1.0, 1.0))
    b = _labels(2_000, 0, 0, spacing=(1.0, 1.0, 5.0))
    result = volumetry([a, b], names=["arterial", "venous"])
    assert result.deviation_pct == pytest.approx([0.0, 0.0], abs=1e-12)
    assert len(result.warnings) == 1 and "arterial: 1 mm" in result.warnings[0]
    assert "venous: 5 mm" in result.warnings[0]


def test_needs_two_phases_with_a_liver() -> None:
    with pytest.raises(ValueError, match="two or more"):
        volumetry([_labels(100, 0, 0)])
    with pytest.raises(ValueError, match="no liver"):
        volumetry([_labels(100, 0, 0), _labels(0, 0, 0)], names=["a", "b"])
    # 40 stray voxels (0.08 ml) were compared as a liver: both good phases flagged at +50 %
    with pytest.raises(ValueError, match=r"no liver found \(under 5 ml of labels 1-3\) in: stray \(0.08 ml\)"):
        volumetry([_labels(20_000, 0, 0), _labels(40, 0, 0), _labels(20_000, 0, 0)], names=["a", "stray", "c"])


def test_slice_thickness_is_read_along_the_head_foot_axis() -> None:
    """Stored with the head-foot axis as index y, a 5 mm scan read as 1 mm thick (index z)."""
    axial = _labels(20_000, 0, 0, spacing=(1.0, 1.0, 5.0))
    permuted = sitk.PermuteAxes(axial, [0, 2, 1])  # index y runs head to foot now
    assert permuted.GetSpacing() == (1.0, 5.0, 1.0)
    result = volumetry([axial, permuted], names=["a", "b"])
    assert result.slice_thickness_mm == [5.0, 5.0] and result.warnings == []


def test_real_liver_masks_from_two_models(real_data) -> None:
    """TotalSegmentator's two liver outputs (label 5) of one real CT, as two 'phases'."""
    folder = real_data / "totalsegmentator"
    maps = []
    for name in ("example_seg.nii.gz", "example_seg_fast.nii.gz"):
        seg = sitk.ReadImage(str(folder / name))
        liver = (sitk.GetArrayFromImage(seg) == 5).astype(np.uint8) * LIVER
        image = sitk.GetImageFromArray(liver)
        image.CopyInformation(seg)
        maps.append(image)
    result = volumetry(maps, names=["full", "fast"])
    counts = [38_634, 39_350]  # liver voxels, 3 mm isotropic (data README)
    assert result.volumes_ml == pytest.approx([c * 27 / 1000 for c in counts])
    assert result.functional_volumes_ml == result.volumes_ml
    mean = np.mean(counts)
    assert result.deviation_pct == pytest.approx([(c - mean) / mean * 100 for c in counts])
    assert result.flag is False
    # TotalSegmentator's liver fills both end slices of this 90 mm upper-abdomen scan
    assert result.liver_cut_at == [["head", "foot"], ["head", "foot"]]
    assert result.warnings == [
        f"{name}: the liver runs into the scan's head and foot ends, so its volume is a lower bound"
        for name in ("full", "fast")
    ]


def test_a_phase_that_stops_inside_the_liver_warns() -> None:
    whole = _labels(20_000, 0, 0)
    cut = sitk.GetImageFromArray(np.roll(sitk.GetArrayFromImage(whole), -1, axis=0))  # to slice 0
    cut.CopyInformation(whole)
    result = volumetry([whole, cut], names=["venous", "arterial"])
    assert result.liver_cut_at == [[], ["foot"]]  # identity direction: slice 0 is the foot end
    assert result.warnings == [
        "arterial: the liver runs into the scan's foot end, so its volume is a lower bound"]
    assert result.to_document()["liver_cut_at"] == [[], ["foot"]]


def test_a_liver_cut_by_the_side_of_the_field_of_view_warns() -> None:
    """A narrow field of view cut 15 % off a right lobe: both phases flagged, no warning."""
    whole = _labels(20_000, 0, 0)
    array = sitk.GetArrayFromImage(whole)
    array[:, :, :12] = 0  # the field of view ends at x = 12 ...
    array[1:-1, 1:-1, 12] = np.where(array[1:-1, 1:-1, 13] > 0, LIVER, 0)  # ... through the liver
    cut = sitk.GetImageFromArray(array[:, :, 12:].copy())
    cut.SetSpacing(whole.GetSpacing())
    result = volumetry([whole, cut], names=["portal", "arterial"])
    assert result.liver_cut_at == [[], ["side"]]
    assert result.warnings == [
        "arterial: the liver runs into the scan's field-of-view side, so its volume is a lower bound"]
