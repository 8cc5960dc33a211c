"""Lesions of a label map: 26-connected components of the tumor label and their measurements.

Definitions follow ARCHITECTURE.md:

- a lesion is one 26-connected component of label 3 with at least ``min_voxels`` voxels;
  ids are 1..N in raster order of the component's first voxel (z, then y, then x);
- the longest axial diameter is a true in-plane Feret diameter: the largest distance between
  two points of the lesion's outline in one axial slice, over all slices. The axial slices are
  those across the image axis closest to the patient's head–foot axis (image index ``z`` for
  an axial series, ``y`` for a coronal one: :func:`head_foot_array_axis`); ``axial_slice``
  is the index along that axis.
  The outline is the 0.5 iso-contour of the slice mask (marching squares), so a lesion that
  spans ``n`` voxels measures about ``n`` voxel widths, as a radiologist's caliper would;
- the short axis is the longest diameter perpendicular to it in that slice (RECIST): the
  longest extent of the outline along a line at right angles to the longest diameter. A
  lesion whose outline is slanted has a short axis below its width across that diameter;
- the distance to a vessel is the gap between the lesion's and the vessel's voxels, in mm (0
  when they touch: what a surgeon plans a margin from); the distance to the liver surface is
  between voxel centres (a lesion on the liver capsule is 0 mm away). Where the liver runs
  out of the scan, the cut face is not its capsule: it is left out, and a lesion nearer a cut
  face than to the capsule found has ``None`` (unknown: the capsule may lie beyond the cut);
- ``found_by`` says who drew the lesion when the segmenter said so: ``"faint_search"`` when
  it holds a point where the rule-based second look added tumor after the network (the
  faint-lesion search, :mod:`lvt_core.faint_lesions`, or a round region drawn as vessel but
  darker than the liver, :mod:`lvt_core.dark_vessels`), ``"other_phase"`` when it holds a centre of what reading
  the day's phases together added (a candidate another phase confirmed, a lesion carried from
  it, or an arterial region that washes out later: :mod:`lvt_core.cross_phase`), ``"network"`` otherwise, ``None`` for a
  label map of unknown origin.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import cc3d
import numpy as np
import SimpleITK as sitk
from scipy import ndimage
from scipy.spatial import ConvexHull, QhullError, cKDTree
from skimage import measure

from lvt_core.labels import LIVER, TUMOR, VESSEL

FOUND_BY_NETWORK = "network"
FOUND_BY_FAINT_SEARCH = "faint_search"
FOUND_BY_OTHER_PHASE = "other_phase"


@dataclass
class Lesion:
    """One tumor component with the measurements a radiologist report needs."""

    id: int
    voxels: int
    volume_ml: float
    longest_axial_diameter_mm: float
    short_axis_mm: float
    centroid_mm: tuple[float, float, float]
    bbox_index: tuple[int, ...]
    axial_slice: int
    mean_hu: float | None = None
    distance_to_vessel_mm: float | None = None
    distance_to_liver_surface_mm: float | None = None  # None: no capsule in the scan, or a cut nearer
    found_by: str | None = None  # "network", "faint_search", or None when not known
    cut_by_scan_edge: bool = False
    """The lesion reaches a face of the scan: part of it may lie outside, so its size is a lower
    bound and it is no RECIST target (a 40 mm lesion cut by the edge measured 27.5 mm)."""

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready values (tuples become lists)."""
        out = asdict(self)
        out["centroid_mm"] = list(self.centroid_mm)
        out["bbox_index"] = list(self.bbox_index)
        return out


def index_to_physical_matrix(image: sitk.Image) -> tuple[np.ndarray, np.ndarray]:
    """``(A, origin)`` with ``physical = A @ (x, y, z) + origin`` for continuous indices."""
    direction = np.array(image.GetDirection(), dtype=float).reshape(3, 3)
    spacing = np.array(image.GetSpacing(), dtype=float)
    return direction * spacing[None, :], np.array(image.GetOrigin(), dtype=float)


def zyx_to_physical(image: sitk.Image, zyx: np.ndarray) -> np.ndarray:
    """Physical points (N, 3) of array indices given as (N, 3) ``z, y, x`` rows."""
    matrix, origin = index_to_physical_matrix(image)
    xyz = np.asarray(zyx, dtype=float)[:, ::-1]
    return xyz @ matrix.T + origin


def _label_array(labels: sitk.Image) -> np.ndarray:
    if labels.GetDimension() != 3:
        raise ValueError(f"expected a 3D label map, got {labels.GetDimension()}D")
    array = sitk.GetArrayViewFromImage(labels)
    if np.issubdtype(array.dtype, np.floating):
        rounded = np.rint(array)
        if not np.array_equal(rounded, array):
            raise ValueError("label map holds non-integer values")
        array = rounded.astype(np.int16)
    return np.asarray(array)


def _bbox(mask: np.ndarray) -> tuple[slice, slice, slice] | None:
    """Bounding box of a ``z, y, x`` mask as slices, or ``None`` when it is empty."""
    zs = np.flatnonzero(mask.any(axis=(1, 2)))
    if zs.size == 0:
        return None
    slab = mask[zs[0] : zs[-1] + 1]
    ys = np.flatnonzero(slab.any(axis=(0, 2)))
    xs = np.flatnonzero(slab.any(axis=(0, 1)))
    return slice(zs[0], zs[-1] + 1), slice(ys[0], ys[-1] + 1), slice(xs[0], xs[-1] + 1)


def component_array(labels: sitk.Image, min_voxels: int = 10) -> np.ndarray:
    """``z, y, x`` uint32 array of lesion ids 1..N (0 elsewhere), 26-connected, small ones dropped.

    Ids follow raster order of each component's first voxel; the work is done inside the tumor
    bounding box, which keeps clinical-size volumes fast.
    """
    tumor = _label_array(labels) == TUMOR
    out = np.zeros(tumor.shape, dtype=np.uint32)
    box = _bbox(tumor)
    if box is None:
        return out
    components, n = cc3d.connected_components(tumor[box], connectivity=26, return_N=True)
    counts = np.bincount(components.ravel(), minlength=n + 1)
    keep = counts >= max(min_voxels, 1)
    keep[0] = False
    lut = np.zeros(n + 1, dtype=np.uint32)
    lut[keep] = np.arange(1, int(keep.sum()) + 1, dtype=np.uint32)  # raster order is kept
    out[box] = lut[components]
    return out


def lesion_component_map(labels: sitk.Image, min_voxels: int = 10) -> sitk.Image:
    """Image of lesion ids matching :attr:`Lesion.id` from :func:`extract_lesions`."""
    image = sitk.GetImageFromArray(component_array(labels, min_voxels))
    image.CopyInformation(labels)
    return image


SHORT_AXIS_SAMPLES_PER_PIXEL = 4
"""Perpendicular lines tried per pixel along the longest diameter."""
MAX_SHORT_AXIS_SAMPLES = 1024


def feret_in_plane(mask2d: np.ndarray, spacing_xy: tuple[float, float]) -> tuple[float, float]:
    """Longest in-plane diameter and the short axis perpendicular to it of a 2D ``y, x`` mask, in mm.

    Uses the 0.5 iso-contour (so one isolated pixel measures about one pixel) and the convex
    hull of its points for the diameter; the short axis is measured on the outline itself
    (:func:`_longest_perpendicular_chord`).
    """
    padded = np.pad(mask2d.astype(np.float32), 1)
    contours = measure.find_contours(padded, 0.5)
    if not contours:
        return 0.0, 0.0
    contours_mm = [(c - 1.0)[:, ::-1] * np.array(spacing_xy, dtype=float) for c in contours]  # x, y
    points_mm = np.concatenate(contours_mm)
    try:
        hull = points_mm[ConvexHull(points_mm).vertices]
    except (QhullError, ValueError):
        hull = points_mm
    diff = hull[:, None, :] - hull[None, :, :]
    dist2 = np.einsum("ijk,ijk->ij", diff, diff)
    i, j = np.unravel_index(int(np.argmax(dist2)), dist2.shape)
    longest = float(np.sqrt(dist2[i, j]))
    if longest == 0.0:
        return 0.0, 0.0
    axis = (hull[j] - hull[i]) / longest
    step = min(spacing_xy) / SHORT_AXIS_SAMPLES_PER_PIXEL
    return longest, _longest_perpendicular_chord(contours_mm, hull[i], axis, longest, step)


def _longest_perpendicular_chord(
    contours_mm: Sequence[np.ndarray], origin: np.ndarray, axis: np.ndarray, length: float, step: float
) -> float:
    """Longest extent of closed outlines along the lines at right angles to ``axis``.

    Lines cross the diameter every ``step`` mm (half a step in from each end, so none runs
    through its end points); on each, the outline's first and last crossings bound the chord.
    """
    perpendicular = np.array([-axis[1], axis[0]])
    starts = np.concatenate([c[:-1] for c in contours_mm]) - origin
    ends = np.concatenate([c[1:] for c in contours_mm]) - origin
    u0, u1 = starts @ axis, ends @ axis
    v0, v1 = starts @ perpendicular, ends @ perpendicular
    count = int(min(max(length / step, 1.0), MAX_SHORT_AXIS_SAMPLES))
    t = (np.arange(count) + 0.5) * (length / count)
    low, high = np.minimum(u0, u1)[:, None], np.maximum(u0, u1)[:, None]
    crosses = (t[None, :] >= low) & (t[None, :] < high)
    du = np.where(u1 == u0, 1.0, u1 - u0)[:, None]
    v = v0[:, None] + (t[None, :] - u0[:, None]) * ((v1 - v0)[:, None] / du)
    top = np.where(crosses, v, -np.inf).max(axis=0)
    bottom = np.where(crosses, v, np.inf).min(axis=0)
    chords = np.where(np.isfinite(top) & np.isfinite(bottom), top - bottom, 0.0)
    return float(chords.max(initial=0.0))


def head_foot_array_axis(image: sitk.Image) -> int:
    """The ``z, y, x`` array axis that runs closest to the patient's head–foot (S) axis.

    Axial series have it at 0; a coronal series stores it along ``y`` (1) and a sagittal
    one along ``x`` (2), so "axial" must come from the direction matrix, not the array.
    """
    direction = np.asarray(image.GetDirection(), dtype=float).reshape(3, 3)
    index_axis = int(np.argmax(np.abs(direction[2])))  # columns are the index axes i, j, k
    return 2 - index_axis


def longest_axial_diameter_mm(mask: np.ndarray, spacing: Sequence[float]) -> float:
    """Longest axial diameter (mm) of a ``z, y, x`` lesion mask on an axial grid of ``x, y, z``
    ``spacing``, edge to edge as a caliper: the size ``lvt lesions`` and the app report, so an
    evaluation scores the lesions a user would measure."""
    return _longest_axial(np.asarray(mask, dtype=bool), (float(spacing[0]), float(spacing[1]), float(spacing[2])))[0]


def measured_axial_slice(mask: np.ndarray, spacing: Sequence[float]) -> int | None:
    """The axial slice (``z`` index of a ``z, y, x`` mask on an axial grid of ``x, y, z``
    ``spacing``) where the longest axial diameter is measured, or None for an empty mask: the
    slice a key image shows, so the picture and the reported size agree."""
    crop, (z0, _, _) = _cropped(np.asarray(mask, dtype=bool))
    if crop.size == 0:
        return None
    return z0 + _longest_axial(crop, (float(spacing[0]), float(spacing[1]), float(spacing[2])))[2]


def _longest_axial(
    component: np.ndarray, spacing: tuple[float, float, float], slice_axis: int = 0
) -> tuple[float, float, int]:
    """Best (diameter, short axis, slice offset) over the axial slices of a cropped component.

    ``slice_axis`` is the array axis across the axial planes (:func:`head_foot_array_axis`).
    """
    if slice_axis != 0:
        rows, cols = (a for a in range(3) if a != slice_axis)
        component = np.moveaxis(component, slice_axis, 0)
        spacing = (spacing[2 - cols], spacing[2 - rows], spacing[2 - slice_axis])
    spacing_xy = (spacing[0], spacing[1])
    order: list[tuple[float, int]] = []
    for z in range(component.shape[0]):
        ys, xs = np.nonzero(component[z])
        if ys.size == 0:
            continue
        # Upper bound of the slice's Feret diameter: the diagonal of its bounding box (+1 voxel).
        bound = np.hypot((np.ptp(xs) + 1) * spacing[0], (np.ptp(ys) + 1) * spacing[1])
        order.append((bound, z))
    best = (0.0, 0.0, 0)
    for bound, z in sorted(order, reverse=True):
        if bound <= best[0]:
            break
        longest, short = feret_in_plane(component[z], spacing_xy)
        if longest > best[0]:
            best = (longest, short, z)
    return best


def _surface_voxels(mask: np.ndarray) -> np.ndarray:
    """``z, y, x`` indices of mask voxels with a 6-neighbour outside the mask (or at the edge)."""
    crop, offset = _cropped(mask)
    if crop.size == 0:
        return np.empty((0, 3), dtype=np.int64)
    eroded = ndimage.binary_erosion(crop, structure=ndimage.generate_binary_structure(3, 1))
    return np.argwhere(crop & ~eroded) + np.array(offset)


def _capsule_voxels(mask: np.ndarray) -> np.ndarray:
    """``z, y, x`` surface voxels of ``mask`` that are not on a face of the array.

    The scan's cut faces are not the liver capsule (real scans mostly stop inside the liver):
    along each face the mask touches, the erosion reads the outside as more mask.
    """
    crop, offset = _cropped(mask)
    if crop.size == 0:
        return np.empty((0, 3), dtype=np.int64)
    ends = [(int(o == 0), int(o + n == size))
            for o, n, size in zip(offset, crop.shape, mask.shape, strict=True)]
    grown = np.pad(crop, ends, mode="edge")
    inner = tuple(slice(lo, lo + n) for (lo, _), n in zip(ends, crop.shape, strict=True))
    eroded = ndimage.binary_erosion(grown, structure=ndimage.generate_binary_structure(3, 1))[inner]
    return np.argwhere(crop & ~eroded) + np.array(offset)


def _cut_faces(mask: np.ndarray) -> list[tuple[int, int]]:
    """``(axis, side)`` of the array faces ``mask`` touches (side 0: index 0, 1: the last)."""
    faces = []
    for axis in range(3):
        ends = np.moveaxis(mask, axis, 0)
        faces += [(axis, side) for side, face in ((0, ends[0]), (1, ends[-1])) if face.any()]
    return faces


def _beyond_cut_mm(
    zyx: np.ndarray, faces: list[tuple[int, int]], shape: tuple[int, ...],
    spacing_zyx: tuple[float, float, float],
) -> float:
    """Least distance (between voxel centres) from the voxels ``zyx`` to any voxel past a cut
    face: the nearest the capsule can be where it lies outside the scan (inf: no cut face)."""
    bound = np.inf
    for axis, side in faces:
        steps = zyx[:, axis] + 1 if side == 0 else shape[axis] - zyx[:, axis]
        bound = min(bound, float(steps.min()) * spacing_zyx[axis])
    return bound


def _surface_distance(
    tree: cKDTree | None, points_mm: np.ndarray, bound_mm: float
) -> float | None:
    """Distance to the capsule found, or None when a cut face is nearer (unknown)."""
    if tree is None:
        return None
    found = _min_distance(tree, points_mm)
    return found if found <= bound_mm else None


def _min_gap(tree: cKDTree, tree_points: np.ndarray, points: np.ndarray, image: sitk.Image) -> float:
    """Smallest gap between the voxels at ``points`` and those of the tree, in mm (0 when touching).

    Voxel centres of two touching structures lie one voxel step apart, which read as a margin
    ("1.5 mm from the vessel") for a tumor that abuts it. Two voxels are boxes: along each
    index axis their gap is the centres' offset less one spacing, and the distance is the norm
    of those gaps. The closest boxes have centres at most one voxel diagonal further apart than
    the closest centres, so only those pairs are compared.
    """
    nearest = _min_distance(tree, points)
    spacing = np.asarray(image.GetSpacing(), dtype=float)
    reach = nearest + float(np.linalg.norm(spacing))
    to_index = np.asarray(image.GetDirection(), dtype=float).reshape(3, 3).T  # physical → index axes
    closest = tree.query(points, k=1, distance_upper_bound=reach * (1 + 1e-9))[0]
    candidates = points[closest <= reach]  # no other surface point can hold the closest boxes
    best = np.inf
    for i, neighbours in enumerate(tree.query_ball_point(candidates, reach)):
        if not neighbours:
            continue
        along_axes = np.abs((tree_points[neighbours] - candidates[i]) @ to_index.T)
        gaps = np.linalg.norm(np.maximum(along_axes - spacing, 0.0), axis=1)  # box to box
        best = min(best, float(gaps.min()))
    return best if np.isfinite(best) else nearest


def _min_distance(tree: cKDTree, points: np.ndarray) -> float:
    """Exact smallest distance from ``points`` to the tree's points, fast for hollow shells.

    A few points give an upper bound first; the full query then prunes everything beyond it
    (nearest-neighbour search from inside a surface shell is otherwise very slow).
    """
    step = max(1, len(points) // 16)
    bound = float(tree.query(points[::step], k=1)[0].min())
    distances = tree.query(points, k=1, distance_upper_bound=bound * (1 + 1e-9) + 1e-9)[0]
    return float(min(bound, distances.min()))


def _cropped(mask: np.ndarray) -> tuple[np.ndarray, tuple[int, int, int]]:
    """Crop ``mask`` to its bounding box, returning the crop and its ``z, y, x`` offset."""
    nz = np.nonzero(mask.any(axis=(1, 2)))[0]
    ny = np.nonzero(mask.any(axis=(0, 2)))[0]
    nx = np.nonzero(mask.any(axis=(0, 1)))[0]
    if nz.size == 0:
        return mask[:0, :0, :0], (0, 0, 0)
    sl = (slice(nz[0], nz[-1] + 1), slice(ny[0], ny[-1] + 1), slice(nx[0], nx[-1] + 1))
    return mask[sl], (int(nz[0]), int(ny[0]), int(nx[0]))


def _resampled_like(image: sitk.Image, reference: sitk.Image) -> np.ndarray:
    """``image`` as a float32 ``z, y, x`` array on the grid of ``reference`` (linear)."""
    same = (
        image.GetSize() == reference.GetSize()
        and np.allclose(image.GetSpacing(), reference.GetSpacing())
        and np.allclose(image.GetOrigin(), reference.GetOrigin())
        and np.allclose(image.GetDirection(), reference.GetDirection())
    )
    if not same:
        image = sitk.Resample(image, reference, sitk.Transform(), sitk.sitkLinear, -1024.0)
    return sitk.GetArrayFromImage(image).astype(np.float32, copy=False)


def extract_lesions(
    labels: sitk.Image,
    image: sitk.Image | None = None,
    min_voxels: int = 10,
    *,
    component_map: sitk.Image | None = None,
    faint_points_mm: Sequence[Sequence[float]] | None = None,
    other_phase_points_mm: Sequence[Sequence[float]] = (),
) -> list[Lesion]:
    """Measure every lesion of ``labels``; ``image`` (any grid, resampled) gives the mean HU.

    Pass ``component_map`` (from :func:`lesion_component_map`) to skip recomputing components,
    and ``faint_points_mm`` (the segmenter's ``faint_lesion_points_mm``, empty when its search
    added nothing) to say which lesions the faint-lesion search drew (``found_by``);
    ``other_phase_points_mm`` (its ``cross_phase_points_mm``) says which ones another phase
    confirmed.
    """
    array = _label_array(labels)
    components = (
        np.asarray(sitk.GetArrayViewFromImage(component_map))
        if component_map is not None
        else component_array(labels, min_voxels)
    )
    region = _bbox(components > 0)
    if region is None:
        return []
    searched = (None if faint_points_mm is None
                else _components_at(labels, components, faint_points_mm))
    confirmed = _components_at(labels, components, other_phase_points_mm) if other_phase_points_mm else set()
    region_start = np.array([s.start for s in region])
    sub = components[region]
    spacing = tuple(float(s) for s in labels.GetSpacing())
    slice_axis = head_foot_array_axis(labels)
    voxel_ml = float(np.prod(spacing)) / 1000.0
    hu = _resampled_like(image, labels) if image is not None else None

    liver = (array >= LIVER) & (array <= TUMOR)
    vessel_points = zyx_to_physical(labels, _surface_voxels(array == VESSEL))
    vessel_tree = cKDTree(vessel_points) if len(vessel_points) else None
    surface_points = zyx_to_physical(labels, _capsule_voxels(liver))
    surface_tree = cKDTree(surface_points) if len(surface_points) else None
    cut_faces = _cut_faces(liver)
    spacing_zyx = (spacing[2], spacing[1], spacing[0])
    objects = ndimage.find_objects(sub)

    lesions: list[Lesion] = []
    for lesion_id, sub_box in enumerate(objects, start=1):
        if sub_box is None:
            continue
        box = tuple(
            slice(s.start + o, s.stop + o) for s, o in zip(sub_box, region_start, strict=True)
        )
        crop = sub[sub_box] == lesion_id
        zyx0 = np.array([s.start for s in box])
        inside = np.argwhere(crop)
        centroid = zyx_to_physical(labels, (inside.mean(axis=0) + zyx0)[None, :])[0]
        longest, short, slice_offset = _longest_axial(crop, spacing, slice_axis)  # type: ignore[arg-type]
        surface = _surface_voxels(crop) + zyx0
        surface_mm = zyx_to_physical(labels, surface)
        d_vessel = _min_gap(vessel_tree, vessel_points, surface_mm, labels) if vessel_tree else None
        d_surface = _surface_distance(
            surface_tree, surface_mm, _beyond_cut_mm(surface, cut_faces, array.shape, spacing_zyx))
        mean_hu = float(hu[box][crop].mean()) if hu is not None else None
        voxels = len(inside)
        lesions.append(
            Lesion(
                id=lesion_id,
                voxels=voxels,
                volume_ml=voxels * voxel_ml,
                longest_axial_diameter_mm=longest,
                short_axis_mm=short,
                centroid_mm=(float(centroid[0]), float(centroid[1]), float(centroid[2])),
                bbox_index=(
                    int(box[2].start),
                    int(box[1].start),
                    int(box[0].start),
                    int(box[2].stop - 1),
                    int(box[1].stop - 1),
                    int(box[0].stop - 1),
                ),
                axial_slice=int(zyx0[slice_axis] + slice_offset),
                mean_hu=mean_hu,
                distance_to_vessel_mm=d_vessel,
                distance_to_liver_surface_mm=d_surface,
                found_by=(None if searched is None else
                          FOUND_BY_FAINT_SEARCH if lesion_id in searched else
                          FOUND_BY_OTHER_PHASE if lesion_id in confirmed else FOUND_BY_NETWORK),
                cut_by_scan_edge=any(s.start == 0 or s.stop == n for s, n in zip(box, array.shape, strict=True)),
            )
        )
    return lesions


def _components_at(
    labels: sitk.Image, components: np.ndarray, points_mm: Sequence[Sequence[float]]
) -> set[int]:
    """The component ids (0 excluded) at the physical ``points_mm`` of ``labels``' grid."""
    found = set()
    for point in points_mm:
        x, y, z = labels.TransformPhysicalPointToIndex([float(v) for v in point])
        if all(0 <= i < n for i, n in zip((z, y, x), components.shape, strict=True)):
            found.add(int(components[z, y, x]))
    return found - {0}


def mean_hu_per_phase(
    component_map: sitk.Image, images: Mapping[str, sitk.Image]
) -> dict[int, dict[str, float]]:
    """Mean HU of each lesion in each phase image (resampled onto the component map's grid)."""
    components = sitk.GetArrayViewFromImage(component_map)
    ids = np.unique(components)
    ids = ids[ids > 0]
    out: dict[int, dict[str, float]] = {int(i): {} for i in ids}
    for phase, image in images.items():
        hu = _resampled_like(image, component_map)
        sums = ndimage.sum_labels(hu, components, ids)
        counts = ndimage.sum_labels(np.ones_like(hu), components, ids)
        for i, total, count in zip(ids, sums, counts, strict=True):
            out[int(i)][phase] = float(total / count)
    return out


def lesions_document(
    image_path: str | Path | None, labels: sitk.Image, lesions: list[Lesion]
) -> dict[str, Any]:
    """The ``lvt lesions`` JSON document (ARCHITECTURE.md), with every lesion field."""
    return {
        "image": str(image_path) if image_path is not None else None,
        "spacing_mm": [float(s) for s in labels.GetSpacing()],
        "size": [int(s) for s in labels.GetSize()],
        "n_lesions": len(lesions),
        "total_volume_ml": float(sum(lesion.volume_ml for lesion in lesions)),
        "lesions": [lesion.to_dict() for lesion in lesions],
    }
