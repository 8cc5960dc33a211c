"""Lesion extraction on analytic ellipsoids, and the analytic scan builder other tests reuse.

``render_scan`` samples an anatomy defined in patient millimetres (an asymmetric liver made of
two ellipsoids, a straight vessel, ellipsoid lesions) on any grid, after a known rigid pose, so
every expected number is computed from geometry, not copied from a previous run.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pytest
import SimpleITK as sitk

from lvt_core.labels import LIVER, TUMOR, VESSEL
from lvt_core.lesions import (
    extract_lesions,
    feret_in_plane,
    lesion_component_map,
    lesions_document,
    mean_hu_per_phase,
)


@dataclass(frozen=True)
class Ellipsoid:
    """Ellipsoid in patient mm, rotated by ``angle_deg`` about the z axis."""

    center: tuple[float, float, float]
    radii: tuple[float, float, float]
    angle_deg: float = 0.0

    def contains(self, points: np.ndarray) -> np.ndarray:
        q = points - np.array(self.center)
        a = np.deg2rad(self.angle_deg)
        rot = np.array([[np.cos(a), np.sin(a), 0], [-np.sin(a), np.cos(a), 0], [0, 0, 1]])
        q = q @ rot.T
        return ((q / np.array(self.radii)) ** 2).sum(axis=-1) <= 1.0


LIVER_PARTS = (
    Ellipsoid((0.0, 0.0, 0.0), (60.0, 45.0, 38.0)),
    Ellipsoid((38.0, -22.0, 12.0), (32.0, 26.0, 24.0)),
)


@dataclass(frozen=True)
class Anatomy:
    lesions: tuple[Ellipsoid, ...] = ()
    liver: tuple[Ellipsoid, ...] = LIVER_PARTS
    vessel: tuple[tuple[float, float, float], tuple[float, float, float], float] | None = (
        (-45.0, 10.0, -15.0),
        (30.0, 25.0, 15.0),
        4.0,
    )


@dataclass
class Pose:
    """Scanner = R_z(angle) @ patient + translation (a repositioned patient)."""

    angle_deg: float = 0.0
    translation: tuple[float, float, float] = (0.0, 0.0, 0.0)
    tilt_deg: float = 0.0
    extra: dict[str, float] = field(default_factory=dict)

    def matrix(self) -> np.ndarray:
        a, b = np.deg2rad(self.angle_deg), np.deg2rad(self.tilt_deg)
        rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
        rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
        return rz @ rx

    def to_scanner(self, points: np.ndarray) -> np.ndarray:
        return points @ self.matrix().T + np.array(self.translation)


def render_scan(
    anatomy: Anatomy,
    spacing: tuple[float, float, float] = (2.0, 2.0, 3.0),
    pose: Pose | None = None,
    extent_mm: tuple[float, float, float] = (200.0, 180.0, 130.0),
    center_mm: tuple[float, float, float] = (10.0, -5.0, 0.0),
) -> tuple[sitk.Image, sitk.Image, np.ndarray]:
    """(labels, CT, lesion truth map) on a grid of ``spacing`` covering ``extent_mm``.

    The truth map holds 1 + the index of the lesion ellipsoid owning each tumor voxel.
    """
    pose = pose or Pose()
    size = [round(e / s) for e, s in zip(extent_mm, spacing, strict=True)]
    origin = np.array(center_mm) - (np.array(size) - 1) * np.array(spacing) / 2
    zz, yy, xx = np.meshgrid(*(np.arange(n) for n in size[::-1]), indexing="ij")
    scanner = np.stack([xx, yy, zz], axis=-1) * np.array(spacing) + origin
    patient = (scanner - np.array(pose.translation)) @ pose.matrix()  # R^T (p - t)
    labels = np.zeros(size[::-1], dtype=np.uint8)
    liver = np.zeros_like(labels, dtype=bool)
    for part in anatomy.liver:
        liver |= part.contains(patient)
    labels[liver] = LIVER
    if anatomy.vessel is not None:
        p0, p1, radius = (np.array(anatomy.vessel[0]), np.array(anatomy.vessel[1]), anatomy.vessel[2])
        d = p1 - p0
        u = np.clip(((patient - p0) @ d) / (d @ d), 0.0, 1.0)
        dist = np.linalg.norm(patient - (p0 + u[..., None] * d), axis=-1)
        labels[liver & (dist <= radius)] = VESSEL
    truth = np.zeros(labels.shape, dtype=np.int32)
    for index, lesion in enumerate(anatomy.lesions):
        inside = lesion.contains(patient)
        labels[inside] = TUMOR
        truth[inside] = index + 1
    ct = np.where(labels == 0, -100.0, 100.0)
    ct[labels == VESSEL] = 200.0
    ct[labels == TUMOR] = 40.0
    images = []
    for array in (labels, ct.astype(np.int16)):
        image = sitk.GetImageFromArray(array)
        image.SetSpacing(spacing)
        image.SetOrigin(tuple(origin))
        images.append(image)
    return images[0], images[1], truth


def _single(ellipsoid: Ellipsoid, spacing: tuple[float, float, float]) -> sitk.Image:
    labels, _, _ = render_scan(
        Anatomy(lesions=(ellipsoid,), liver=(), vessel=None),
        spacing=spacing,
        extent_mm=(80.0, 80.0, 60.0),
        center_mm=ellipsoid.center,
    )
    return labels


@pytest.mark.parametrize(
    ("radii", "angle", "spacing"),
    [
        ((15.0, 8.0, 6.0), 0.0, (1.0, 1.0, 2.0)),
        ((15.0, 8.0, 6.0), 35.0, (1.0, 1.0, 2.0)),
        ((12.0, 5.0, 9.0), 60.0, (0.8, 0.8, 1.5)),
        ((20.0, 14.0, 10.0), 110.0, (1.5, 1.5, 3.0)),
    ],
)
def test_diameters_match_analytic_ellipsoid_within_one_voxel(radii, angle, spacing) -> None:
    labels = _single(Ellipsoid((0.0, 0.0, 0.0), radii, angle), spacing)
    (lesion,) = extract_lesions(labels)
    assert abs(lesion.longest_axial_diameter_mm - 2 * radii[0]) <= spacing[0]
    assert abs(lesion.short_axis_mm - 2 * radii[1]) <= spacing[0]
    expected_ml = 4 / 3 * np.pi * np.prod(radii) / 1000
    assert lesion.volume_ml == pytest.approx(expected_ml, rel=0.08)
    np.testing.assert_allclose(lesion.centroid_mm, (0.0, 0.0, 0.0), atol=spacing[0])
    # The longest diameter sits on the central axial slice (z = 0 mm) give or take a slice.
    z_mm = labels.TransformIndexToPhysicalPoint((0, 0, lesion.axial_slice))[2]
    assert abs(z_mm) <= spacing[2] * 1.01


def test_feret_is_not_a_bounding_box() -> None:
    # A one-pixel-wide diagonal line of 20 pixels: bounding box 20x20, Feret ≈ 20·√2.
    mask = np.eye(20, dtype=bool)
    longest, short = feret_in_plane(mask, (1.0, 1.0))
    assert longest == pytest.approx(19 * np.sqrt(2) + 1.0, abs=0.5)
    assert short < 1.5


def test_short_axis_is_the_longest_perpendicular_chord_not_the_width() -> None:
    """A slanted parallelogram (sides 40 mm along x, 10 mm high, sheared 60 mm): its longest
    diameter is the 100.5 mm diagonal; across it the outline is 7.96 mm wide, but no line at
    right angles to the diagonal holds more than 6.59 mm of lesion (ARCHITECTURE.md, RECIST)."""
    from skimage.draw import polygon

    pixel = 0.25
    corners_mm = np.array([(0.0, 0.0), (40.0, 0.0), (100.0, 10.0), (60.0, 10.0)])  # x, y
    mask = np.zeros((60, 420), dtype=bool)
    rows, cols = polygon(corners_mm[:, 1] / pixel + 10, corners_mm[:, 0] / pixel + 10, mask.shape)
    mask[rows, cols] = True
    longest, short = feret_in_plane(mask, (pixel, pixel))
    assert longest == pytest.approx(100.5, abs=0.6)
    assert short == pytest.approx(6.59, abs=0.4)


def test_components_distances_and_hu_on_a_liver() -> None:
    anatomy = Anatomy(
        lesions=(
            Ellipsoid((-20.0, -15.0, -5.0), (8.0, 6.0, 6.0)),  # deep, away from the vessel
            Ellipsoid((10.0, 30.0, 0.0), (6.0, 6.0, 6.0)),  # near the vessel
            Ellipsoid((-58.0, 0.0, 0.0), (5.0, 5.0, 5.0)),  # on the liver surface
        )
    )
    labels, ct, truth = render_scan(anatomy, spacing=(2.0, 2.0, 2.0))
    lesions = extract_lesions(labels, ct, min_voxels=5)
    assert len(lesions) == 3
    cmap = sitk.GetArrayFromImage(lesion_component_map(labels, min_voxels=5))
    by_truth = {int(np.bincount(truth[cmap == les.id]).argmax()): les for les in lesions}
    assert sorted(by_truth) == [1, 2, 3]
    deep, near, surface = by_truth[1], by_truth[2], by_truth[3]
    assert surface.distance_to_liver_surface_mm == 0.0
    assert deep.distance_to_liver_surface_mm > 10.0
    assert near.distance_to_vessel_mm < deep.distance_to_vessel_mm
    for lesion in lesions:
        assert lesion.mean_hu == pytest.approx(40.0)
        assert np.array_equal(np.unique(cmap[labels_array(labels) == TUMOR]), [1, 2, 3])
        x0, y0, z0, x1, y1, z1 = lesion.bbox_index
        assert x0 <= x1 and y0 <= y1 and z0 <= lesion.axial_slice <= z1
    hu = mean_hu_per_phase(lesion_component_map(labels, 5), {"venous": ct, "arterial": ct + 10})
    assert hu[1] == {"venous": pytest.approx(40.0), "arterial": pytest.approx(50.0)}
    document = lesions_document("x.nii.gz", labels, lesions)
    assert document["spacing_mm"] == [2.0, 2.0, 2.0]
    first = document["lesions"][0]
    for key in ("id", "volume_ml", "longest_axial_diameter_mm", "short_axis_mm", "centroid_mm", "voxels"):
        assert key in first


def labels_array(labels: sitk.Image) -> np.ndarray:
    return sitk.GetArrayFromImage(labels)


def test_min_voxels_drops_specks_and_ids_are_consecutive() -> None:
    array = np.zeros((10, 20, 20), dtype=np.uint8)
    array[2:5, 2:5, 2:5] = TUMOR  # 27 voxels
    array[7, 15, 15] = TUMOR  # 1 voxel
    array[6:9, 10:12, 2:4] = TUMOR  # 12 voxels
    labels = sitk.GetImageFromArray(array)
    assert [les.voxels for les in extract_lesions(labels, min_voxels=10)] == [27, 12]
    assert [les.id for les in extract_lesions(labels, min_voxels=10)] == [1, 2]
    assert len(extract_lesions(labels, min_voxels=1)) == 3
    # 26-connectivity: diagonal neighbours are one lesion.
    diagonal = np.zeros((5, 5, 5), dtype=np.uint8)
    diagonal[1, 1, 1] = diagonal[2, 2, 2] = diagonal[3, 3, 3] = TUMOR
    assert len(extract_lesions(sitk.GetImageFromArray(diagonal), min_voxels=1)) == 1


def test_no_tumor_gives_no_lesions() -> None:
    labels = sitk.GetImageFromArray(np.ones((4, 4, 4), dtype=np.uint8))
    assert extract_lesions(labels) == []


def test_found_by_names_the_lesions_holding_a_search_point() -> None:
    """A point where the faint-lesion search drew tumor marks its lesion, in any pose."""
    anatomy = Anatomy(lesions=(Ellipsoid((-20.0, -15.0, -5.0), (8.0, 6.0, 6.0)),
                               Ellipsoid((10.0, 30.0, 0.0), (6.0, 6.0, 6.0))))
    labels, ct, truth = render_scan(anatomy, spacing=(2.0, 2.0, 2.0), pose=Pose(angle_deg=20.0))
    cmap = sitk.GetArrayFromImage(lesion_component_map(labels))
    second = int(np.bincount(cmap[truth == 2]).argmax())
    # the searched lesion's voxel nearest its ellipsoid's centre, as the segmenter reports it
    z, y, x = np.argwhere(truth == 2)[len(np.argwhere(truth == 2)) // 2]
    point = labels.TransformIndexToPhysicalPoint((int(x), int(y), int(z)))
    outside = (500.0, 500.0, 500.0)  # off the grid: ignored, not an error
    found = {les.id: les.found_by for les in extract_lesions(labels, ct, faint_points_mm=[point, outside])}
    assert found[second] == "faint_search"
    assert [v for k, v in found.items() if k != second] == ["network"]
    assert {les.found_by for les in extract_lesions(labels, ct, faint_points_mm=[])} == {"network"}
    # a label map of unknown origin does not claim either
    assert {les.found_by for les in extract_lesions(labels, ct)} == {None}


@pytest.mark.parametrize(
    ("name", "direction"),
    [
        ("axial", (1, 0, 0, 0, 1, 0, 0, 0, 1)),
        ("coronal", (1, 0, 0, 0, 0, 1, 0, -1, 0)),  # image y runs foot-ward, image z anterior-posterior
        ("sagittal", (0, 0, 1, 1, 0, 0, 0, 1, 0)),
    ],
)
def test_diameters_are_axial_whatever_plane_the_series_was_stored_in(name: str, direction: tuple) -> None:
    """A coronal series measured in its own slices reported the head–foot length as "axial"."""
    spacing = np.array([0.7, 0.9, 1.1])
    shape = (70, 70, 70)
    matrix = np.array(direction, float).reshape(3, 3)
    origin = -(matrix @ (np.array(shape[::-1]) * spacing / 2))
    k, j, i = np.indices(shape)
    physical = np.einsum("ab,bzyx->zyxa", matrix * spacing, np.stack([i, j, k]).astype(float)) + origin
    radii_lps = np.array([10.0, 5.0, 15.0])  # 20 mm left-right, 10 mm front-back, 30 mm head-foot
    mask = ((physical / radii_lps) ** 2).sum(-1) <= 1
    image = sitk.GetImageFromArray((mask * TUMOR).astype(np.uint8))
    image.SetSpacing(tuple(spacing))
    image.SetDirection(direction)
    image.SetOrigin(tuple(origin))
    (lesion,) = extract_lesions(image, min_voxels=1)
    assert lesion.longest_axial_diameter_mm == pytest.approx(20.0, abs=1.2), name
    assert lesion.short_axis_mm == pytest.approx(10.0, abs=1.2), name


def test_vessel_distance_is_the_gap_between_voxels_zero_when_touching() -> None:
    """Voxel centres read a touching tumor as one voxel step (1.5 mm) from the vessel."""
    array = np.zeros((40, 60, 60), np.uint8)
    array[5:35, 5:55, 5:55] = LIVER
    array[10:30, 28:32, 5:55] = VESSEL  # a vessel along x, rows 28–31
    array[15:25, 20:28, 20:30] = TUMOR  # rows 20–27: abuts the vessel
    array[15:25, 36:44, 20:30] = TUMOR  # rows 36–43: four rows of parenchyma (32–35) between
    image = sitk.GetImageFromArray(array)
    image.SetSpacing((0.8, 1.5, 2.5))
    for direction in ((1, 0, 0, 0, 1, 0, 0, 0, 1), (0, 1, 0, 1, 0, 0, 0, 0, 1)):  # and x, y swapped
        image.SetDirection(direction)
        touching, apart = extract_lesions(image)
        assert touching.distance_to_vessel_mm == 0.0
        assert apart.distance_to_vessel_mm == pytest.approx(4 * 1.5)


def _box_liver_with_two_lesions() -> sitk.Image:
    """A box liver (z 5–34, y and x 5–54; 1 × 1 × 2 mm voxels). Lesion 1 (z 10–13) lies
    5 slices (10 mm) below the liver's head end and 15 mm from its side; lesion 2 (z 24–27)
    lies 2 mm from its side."""
    array = np.zeros((40, 60, 60), np.uint8)
    array[5:35, 5:55, 5:55] = LIVER
    array[10:14, 25:35, 20:30] = TUMOR
    array[24:28, 25:35, 7:13] = TUMOR
    image = sitk.GetImageFromArray(array)
    image.SetSpacing((1.0, 1.0, 2.0))
    return image


def test_the_scan_cut_face_is_not_the_liver_capsule() -> None:
    """A scan that stops inside the liver (here 3 slices above lesion 1) made its first slice
    read as capsule: 4 mm instead of 10 mm. The capsule may lie beyond the cut, so a lesion
    nearer the cut than to the capsule found is unknown; lesion 2's distance is unchanged."""
    full = _box_liver_with_two_lesions()
    assert [les.distance_to_liver_surface_mm for les in extract_lesions(full)] == [10.0, 2.0]
    cut = full[:, :, 8:]  # z 8 onward: the liver runs out of the scan's first slice
    assert [les.distance_to_liver_surface_mm for les in extract_lesions(cut)] == [None, 2.0]


def test_a_liver_filling_the_scan_has_no_known_surface_distance() -> None:
    """Every face of the array cuts the liver: no capsule is in the scan."""
    array = np.full((20, 30, 30), LIVER, np.uint8)
    array[8:12, 12:18, 12:18] = TUMOR
    (lesion,) = extract_lesions(sitk.GetImageFromArray(array))
    assert lesion.distance_to_liver_surface_mm is None


def test_a_lesion_the_scan_cuts_is_flagged_and_is_no_recist_target() -> None:
    """A 40 mm lesion cut by the scan's first slice measured 27.5 mm with no flag and could be
    chosen as a target, so its growth beyond the scan read as response."""
    from lvt_core.response import recist_from_tracks
    from lvt_core.tracking import Track, TrackingResult

    labels = np.zeros((30, 60, 60), np.uint8)
    labels[:, 5:55, 5:55] = LIVER
    z, y, x = np.ogrid[:30, :60, :60]
    labels[(z - 2) ** 2 * 4 + (y - 30) ** 2 + (x - 20) ** 2 <= 100] = TUMOR  # reaches slice 0
    labels[(z - 15) ** 2 * 4 + (y - 30) ** 2 + (x - 42) ** 2 <= 36] = TUMOR  # whole, 12 mm
    image = sitk.GetImageFromArray(labels)
    image.SetSpacing((1.0, 1.0, 2.0))
    cut, whole = sorted(extract_lesions(image), key=lambda les: les.centroid_mm[0])
    assert cut.cut_by_scan_edge and not whole.cut_by_scan_edge
    assert cut.longest_axial_diameter_mm > whole.longest_axial_diameter_mm
    result = TrackingResult([Track(cut.id, [(0, cut.id), (1, cut.id)], "persisting", []),
                             Track(whole.id, [(0, whole.id), (1, whole.id)], "persisting", [])],
                            [], [], [[cut, whole], [cut, whole]], set(), [None, None])
    assert recist_from_tracks(result)["targets"] == [whole.id]


def test_the_measured_slice_is_the_widest_not_the_centre() -> None:
    """A pear-shaped lesion: a 12 mm disc on one slice and a long 4 mm tail below. Its centre
    lies in the tail; the slice a reader measures (and the viewer jumps to) is the disc's."""
    from lvt_core.lesions import longest_axial_diameter_mm, measured_axial_slice

    mask = np.zeros((12, 20, 20), bool)
    yy, xx = np.mgrid[:20, :20]
    mask[2] = (yy - 10) ** 2 + (xx - 10) ** 2 <= 6**2  # 12 voxels across
    mask[3:11] = ((yy - 10) ** 2 + (xx - 10) ** 2 <= 2**2)[None]
    spacing = (1.0, 1.0, 2.0)
    centre_slice = round(float(np.nonzero(mask)[0].mean()))
    assert measured_axial_slice(mask, spacing) == 2 != centre_slice
    assert longest_axial_diameter_mm(mask[2:3], spacing) == pytest.approx(
        longest_axial_diameter_mm(mask, spacing))  # the whole lesion's diameter is that slice's
    assert measured_axial_slice(np.zeros_like(mask), spacing) is None
