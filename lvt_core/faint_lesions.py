"""A second look for faint lesions: spheres whose mean HU stands out of the liver's own noise.

The network misses most lesions only 5–10 noise units above the liver (``bench/
lesion_detectability.py``), while a radiologist, or the ideal observer of the Rose model, sees
them: averaged over its volume, such a lesion differs from the liver far more than the noise
moves a region of that size. This is that observer, as a matched filter over the decoded liver:

1. the *parenchyma* is the liver label away from the organ's edge and from vessels and tumors
   already segmented (their partial volumes would look like lesions);
2. at each radius, the parenchyma's local mean (normalised Gaussian convolution, so vessels
   and the edge do not leak in) minus a wider local mean (slow HU gradients are not lesions);
3. that contrast in units of its own robust spread over the liver (median and MAD), measured
   on the scan itself, so noise level and correlation are what they are in this scan;
4. regions darker than ``min_z`` at any radius become candidates, drawn as the liver voxels
   connected to the peak, not in the organ's outer rim, past half way from the surrounding
   liver to the peak on the scan smoothed at a third of the radius;
5. a candidate is kept when it is round at its peak (``min_blobness``: unsegmented veins are
   dark tubes in the arterial phase), round as drawn (``min_roundness``: the smallest over the
   largest principal axis of the drawn region, so a tube that only bulges at its peak is not
   reported as a 26 mm lesion 7 mm across) and large enough (``min_volume_ml``).

Lesions brighter than the liver are searched only from ``min_z_bright`` (0, off, by default):
brighter candidates in the arterial phase are mostly unsegmented vessels, which the roundness
limit removes only in part. The network's labels stay; candidates are only added as tumor
where the network said liver. Nothing here is learned: ``min_z``, ``min_blobness``,
``min_z_bright`` and ``min_roundness`` are decisions, chosen on validation phantoms by ``lvt calibrate-faint`` and stored in the
checkpoint (``min_z`` 0 turns the search off).
"""

from __future__ import annotations

from dataclasses import dataclass

import cc3d
import numpy as np
from scipy import ndimage

from lvt_core.decision_meta import decisions_from_meta, decisions_to_meta
from lvt_core.detectability import robust_spread
from lvt_core.labels import LIVER, TUMOR, VESSEL
from lvt_core.lesion_filter import roundness
from lvt_core.postprocess import bounding_box

DEFAULT_RADII_MM = (3.0, 4.5, 6.5, 9.0)
MIN_PARENCHYMA_VOXELS = 1000
REACH = 2.0
DARKER = -1.0
BRIGHTER = 1.0


@dataclass(frozen=True)
class FaintLesionSearch:
    """How the search runs; ``min_z`` 0 switches it off, ``min_z_bright`` 0 (the default)
    leaves lesions brighter than the liver unsearched."""

    min_z: float = 0.0
    min_z_bright: float = 0.0
    radii_mm: tuple[float, ...] = DEFAULT_RADII_MM
    edge_margin_mm: float = 3.0  # partial volume with fat at the liver's edge
    draw_edge_mm: float = 1.5  # a lesion is not drawn into the organ's outermost rim, where
    # partial volume with fat would let it leak along the edge
    structure_margin_mm: float = 1.5  # partial volume with segmented vessels and tumors
    background_factor: float = 3.0  # the wider mean's sigma, in units of the candidate's
    min_coverage: float = 0.6  # the share of a kernel that must be parenchyma
    min_volume_ml: float = 0.2
    min_blobness: float = 0.0  # smallest over largest Hessian eigenvalue at the peak: 1 for a
    # sphere, 0 for a tube (unsegmented veins are dark tubes in the arterial phase)
    lesion_side_vessels: bool = False  # blobness keeps the HU of segmented vessel voxels on
    # the lesion's side of the liver (a lesion the network partly drew as vessel stays whole)
    min_roundness: float = 0.0  # sqrt of the smallest over the largest principal variance of
    # the drawn region: 1 for a ball, near 0 for a tube (0 keeps every shape)

    @property
    def enabled(self) -> bool:
        return self.min_z > 0

    def threshold(self, sign: float) -> float:
        """The ``min_z`` of lesions of polarity ``sign`` (0: that polarity is not searched)."""
        if not self.enabled:
            return 0.0
        return self.min_z if sign == DARKER else self.min_z_bright

    @classmethod
    def from_meta(cls, meta: dict | None) -> FaintLesionSearch:
        """The search a checkpoint's ``inference.faint_lesions`` describes (off when absent)."""
        return decisions_from_meta(cls, meta, ("radii_mm",))

    def to_meta(self) -> dict:
        """Plain numbers for a checkpoint's metadata."""
        return decisions_to_meta(self)


@dataclass
class FaintLesionMaps:
    """Per voxel of the cropped region: the best z over radii, that radius' index, and where
    the noise was measured."""

    z: np.ndarray
    best_radius: np.ndarray
    parenchyma: np.ndarray
    depth_mm: np.ndarray  # distance to the organ's edge


def _local_mean(values: np.ndarray, weight: np.ndarray, sigma: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian mean of ``values`` over ``weight`` (normalised convolution) and the weight."""
    numerator = ndimage.gaussian_filter(values * weight, sigma, truncate=3.0)
    coverage = ndimage.gaussian_filter(weight, sigma, truncate=3.0)
    return numerator / np.maximum(coverage, 1e-6), coverage


def _robust_z(values: np.ndarray, where: np.ndarray) -> np.ndarray:
    """``values`` in units of their robust spread over ``where``, centred on their median there."""
    centre, spread = robust_spread(values[where])
    return (values - centre) / max(spread, 1e-6)


def contrast_maps(
    hu: np.ndarray, labels: np.ndarray, spacing_xyz: tuple[float, ...], search: FaintLesionSearch,
    sign: float = DARKER,
) -> FaintLesionMaps | None:
    """The matched filter's z-map over ``labels``' liver (``z, y, x`` arrays of one region),
    each voxel at the radius where it stands out most in the direction of ``sign`` (-1: darker
    than the liver), or None when there is too little parenchyma to measure the noise in."""
    spacing = np.array(spacing_xyz[::-1], dtype=np.float64)
    organ = labels > 0
    inside = ndimage.distance_transform_edt(organ, sampling=spacing)
    structures = (labels == VESSEL) | (labels == TUMOR)
    clear = (ndimage.distance_transform_edt(~structures, sampling=spacing) if structures.any()
             else np.full(labels.shape, np.inf))
    parenchyma = (labels == LIVER) & (inside > search.edge_margin_mm) & (clear > search.structure_margin_mm)
    if parenchyma.sum() < MIN_PARENCHYMA_VOXELS:
        return None
    weight = parenchyma.astype(np.float32)
    values = np.asarray(hu, dtype=np.float32)
    best_z = np.zeros(hu.shape, np.float32)
    best_radius = np.zeros(hu.shape, np.uint8)
    for index, radius in enumerate(search.radii_mm):
        sigma_mm = radius / 2.0
        mean, coverage = _local_mean(values, weight, sigma_mm / spacing)
        background, _ = _local_mean(values, weight, sigma_mm * search.background_factor / spacing)
        contrast = mean - background
        valid = parenchyma & (coverage >= search.min_coverage)
        if valid.sum() < MIN_PARENCHYMA_VOXELS:
            continue
        z = np.where(valid, _robust_z(contrast, valid), 0.0).astype(np.float32)
        better = sign * z > sign * best_z
        best_z[better] = z[better]
        best_radius[better] = index
    return FaintLesionMaps(best_z, best_radius, parenchyma, inside.astype(np.float32))


@dataclass
class FaintCandidate:
    """One region beyond ``min_z``, drawn as a lesion, with what the decisions look at."""

    window: tuple[slice, ...]  # in the full array
    mask: np.ndarray  # within ``window``
    peak: tuple[int, ...]  # in the full array; always inside ``mask``, so it names the lesion
    sign: float  # DARKER or BRIGHTER than the liver
    z: float  # how far the peak stands out, in robust spreads
    blobness: float
    volume_ml: float
    roundness: float  # of the drawn region (:func:`lvt_core.lesion_filter.roundness`)

    def kept_by(self, search: FaintLesionSearch) -> bool:
        threshold = search.threshold(self.sign)
        return (0 < threshold <= self.z and self.blobness >= search.min_blobness
                and self.roundness >= search.min_roundness and self.volume_ml >= search.min_volume_ml)


def faint_candidates(
    hu: np.ndarray, labels: np.ndarray, spacing_xyz: tuple[float, ...], search: FaintLesionSearch
) -> list[FaintCandidate]:
    """Every region beyond ``search.min_z`` in ``labels``' liver (``z, y, x``), drawn and
    measured; the other rules are left to :meth:`FaintCandidate.kept_by`, so a calibration
    measures each scan once."""
    box = bounding_box(labels == LIVER) if search.enabled else None
    if box is None:
        return []
    region = tuple(slice(a, b) for a, b in box)
    sub_labels, sub_hu = labels[region], np.asarray(hu[region])
    candidates = []
    for sign in (DARKER, BRIGHTER):
        threshold = search.threshold(sign)
        maps = contrast_maps(sub_hu, sub_labels, spacing_xyz, search, sign) if threshold > 0 else None
        if maps is not None:
            candidates += _draw_candidates(sub_hu, sub_labels, maps, sign, threshold, spacing_xyz, search)
    for candidate in candidates:  # back to the full array's coordinates
        candidate.window = tuple(slice(w.start + r.start, w.stop + r.start)
                                 for w, r in zip(candidate.window, region, strict=True))
        candidate.peak = tuple(p + r.start for p, r in zip(candidate.peak, region, strict=True))
    return candidates


def _draw_candidates(
    hu: np.ndarray, sub_labels: np.ndarray, maps: FaintLesionMaps, sign: float, min_z: float,
    spacing_xyz: tuple[float, ...], search: FaintLesionSearch,
) -> list[FaintCandidate]:
    """Each region beyond ``min_z`` drawn as a lesion (:func:`_draw_lesion`) and measured."""
    spacing = np.array(spacing_xyz[::-1], dtype=np.float64)
    components, count = cc3d.connected_components(sign * maps.z >= min_z, connectivity=26, return_N=True)
    if not count:
        return []
    voxel_ml = float(np.prod(spacing)) / 1000.0
    liver = sub_labels == LIVER
    drawable = liver & (maps.depth_mm > search.draw_edge_mm)
    # curvature is measured on the liver alone: fat at the edge and segmented vessels would
    # otherwise bend it more than the lesion does. A voxel drawn as vessel whose HU lies on the
    # lesion's side of the liver (darker, for the darker search) is not a bright vessel's partial
    # volume, though: with ``lesion_side_vessels`` it keeps its HU, so a lesion the network drew
    # partly as vessel is not measured with a dent in it
    level = np.float32(np.median(hu[maps.parenchyma]))
    measured = liver
    if search.lesion_side_vessels:
        measured = liver | ((sub_labels == VESSEL) & (sign * (hu - level) > 0))
    liver_only = np.where(measured, hu, level).astype(np.float32)
    out = []
    for index, box_c in enumerate(ndimage.find_objects(components), start=1):
        if box_c is None:
            continue
        local = components[box_c] == index
        peak = np.unravel_index(np.argmax(np.where(local, sign * maps.z[box_c], -np.inf)), local.shape)
        peak = tuple(int(p + s.start) for p, s in zip(peak, box_c, strict=True))
        radius = search.radii_mm[int(maps.best_radius[peak])]
        lesion = _draw_lesion(hu, liver, drawable, peak, radius, spacing, sign)
        if lesion is not None:
            window, mask = lesion
            out.append(FaintCandidate(window, mask, peak, sign, float(sign * maps.z[peak]),
                                      blobness(liver_only, peak, radius / 2.0, spacing, sign),
                                      float(mask.sum()) * voxel_ml, roundness(mask, spacing)))
    return out


def blobness(hu: np.ndarray, peak: tuple[int, ...], sigma_mm: float, spacing: np.ndarray, sign: float) -> float:
    """How sphere-like the structure at ``peak`` is at ``sigma_mm``: the Hessian's weakest
    over its strongest curvature along the lesion's polarity (1 sphere, 0 tube or plate,
    below 0 a saddle)."""
    sigma = sigma_mm / spacing
    window = tuple(slice(max(0, int(p - 4 * g) - 1), min(n, int(p + 4 * g) + 2))
                   for p, g, n in zip(peak, sigma, hu.shape, strict=True))
    local = -sign * hu[window].astype(np.float32)  # a lesion of either polarity as a valley
    centre = tuple(p - w.start for p, w in zip(peak, window, strict=True))
    hessian = np.zeros((3, 3))
    for a in range(3):
        for b in range(a, 3):
            order = [0, 0, 0]
            order[a] += 1
            order[b] += 1
            value = ndimage.gaussian_filter(local, sigma, order=order, truncate=3.0)[centre]
            hessian[a, b] = hessian[b, a] = value / (spacing[a] * spacing[b])
    curvatures = np.linalg.eigvalsh(hessian)  # ascending; a valley curves up: all positive
    return float(curvatures[0] / curvatures[2]) if curvatures[2] > 0 else -1.0


def _draw_lesion(
    hu: np.ndarray, liver: np.ndarray, drawable: np.ndarray, peak: tuple[int, ...], radius_mm: float,
    spacing: np.ndarray, sign: float,
) -> tuple[tuple[slice, ...], np.ndarray] | None:
    """The ``drawable`` liver voxels within ``REACH`` radii of ``peak`` whose smoothed HU (a
    third of the radius, at least 1 mm: enough to quiet the noise, not the lesion's edge) lies
    past half way from the surrounding liver to the peak, connected to the peak, holes filled."""
    reach = np.ceil(REACH * radius_mm / spacing).astype(int) + 1
    window = tuple(slice(max(0, p - r), min(n, p + r + 1)) for p, r, n in zip(peak, reach, hu.shape, strict=True))
    local_liver = liver[window]
    smooth, _ = _local_mean(hu[window].astype(np.float32), local_liver.astype(np.float32),
                            max(1.0, radius_mm / 3.0) / spacing)
    grid = np.meshgrid(*[(np.arange(w.start, w.stop) - p) * s for w, p, s in zip(window, peak, spacing, strict=True)],
                       indexing="ij")
    distance2 = sum(g**2 for g in grid)
    ring = local_liver & (distance2 > (1.5 * radius_mm) ** 2)
    if not ring.any():
        return None
    centre = tuple(p - w.start for p, w in zip(peak, window, strict=True))
    level = float(np.median(smooth[ring]))
    contrast = float(smooth[centre]) - level
    if contrast * sign <= 0:
        return None
    near = distance2 <= (REACH * radius_mm) ** 2
    passed = near & drawable[window] & ((smooth - level) * np.sign(contrast) >= abs(contrast) / 2.0)
    parts = cc3d.connected_components(passed, connectivity=6)
    keep = parts[centre]
    if keep == 0:
        return None
    return window, ndimage.binary_fill_holes(parts == keep) & drawable[window]


def paint_candidates(labels: np.ndarray, candidates: list[FaintCandidate]) -> np.ndarray:
    """``labels`` with ``candidates`` as tumor where the network said liver (a copy; ``labels``
    itself when there are none)."""
    if not candidates:
        return labels
    out = labels.copy()
    for candidate in candidates:
        view = out[candidate.window]
        view[candidate.mask & (view == LIVER)] = TUMOR
    return out


def kept_faint_lesions(
    hu: np.ndarray, labels: np.ndarray, spacing_xyz: tuple[float, ...], search: FaintLesionSearch
) -> list[FaintCandidate]:
    """The lesions the search adds to ``labels`` (none when it is off)."""
    if not search.enabled:
        return []
    return [c for c in faint_candidates(hu, labels, spacing_xyz, search) if c.kept_by(search)]


def add_faint_lesions(
    labels: np.ndarray, hu: np.ndarray, spacing_xyz: tuple[float, ...], search: FaintLesionSearch
) -> np.ndarray:
    """``labels`` with the lesions the search keeps as tumor (unchanged when it is off)."""
    return paint_candidates(labels, kept_faint_lesions(hu, labels, spacing_xyz, search))
