"""One decoded scan of a day with several contrast phases, and where its places lie in the
day's other scans: the shared ground of :mod:`lvt_core.cross_phase` (a lesion of one phase
confirms or brings a lesion to another) and :mod:`lvt_core.washout` (a lesion found by its
enhancement pattern across two phases).

Each place is read in a window around it, against the liver in a ring around it: the ring is
where "brighter" and "darker than the liver" are measured, so a lesion is judged by the
parenchyma next to it rather than by the whole liver, whose enhancement varies.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from lvt_core.labels import LIVER, TUMOR
from lvt_core.registration import register_followup

ENHANCING_PHASES: frozenset[str] = frozenset({"arterial"})
"""The phases where an enhancing lesion (HCC-like) is as bright as the vessels and the network
may draw it as one: only these are searched for lesions drawn as vessel, carried onto them or
found by their washout in a later phase. In the portal and late phases the lesion washes out,
and a bright closed region drawn as vessel there is a vessel cut across. Carried onto vessel in
every phase, 88 validation scans gained false lesions at eight places, all in portal scans
(docs/model_history.md)."""

WASHOUT_PHASES: frozenset[str] = frozenset({"portal", "late"})
"""The later phases a lesion washes out in (darker than the liver there) and a vein fills in:
each is read against every scan of :data:`ENHANCING_PHASES` of the day."""
MIN_LIVER_FRACTION = 0.5
"""A carried lesion lands on liver: at least this share of its carried mask is liver there."""
RING_MM = (1.5, 5.0)
"""The liver a carried lesion's contrast is measured against: this far around its mask."""
VESSEL_MATCH_MM = 3.0
"""The vessel-drawn voxels this close to a carried mask are the lesion (registration leaves a
few millimetres)."""
VESSEL_SHELL_MM = 3.0
"""Thickness of the shell around them where vessels leaving the place are counted."""
WINDOW_MM = VESSEL_MATCH_MM + max(RING_MM[1], VESSEL_SHELL_MM)
"""How far past a carried mask its place is read: the liver ring and the vessel shell around
it, around vessel voxels up to :data:`VESSEL_MATCH_MM` beyond it."""


@dataclass
class PhaseScan:
    """One decoded scan of the day: its grid, labels and tumor probability (``z, y, x``), and
    its contrast phase (``unknown`` when not said)."""

    image: sitk.Image  # the scan's geometry
    labels: np.ndarray
    tumor_probability: np.ndarray  # on the whole grid (0 outside the fine pass)
    tumor_threshold: float  # the decision threshold the labels were drawn with
    phase: str = "unknown"

    def label_image(self) -> sitk.Image:
        out = sitk.GetImageFromArray(np.ascontiguousarray(self.labels, dtype=np.uint8))
        out.CopyInformation(self.image)
        return out


def pair_transforms(scans: Sequence[PhaseScan]) -> dict[tuple[int, int], sitk.Transform]:
    """Each ordered pair ``(source, target)`` of the day's scans registered once, on the liver
    masks: the transform maps the source's points to the target's."""
    images = [scan.label_image() for scan in scans]
    return {(source, target): register_followup(images[source], images[target])
            for source in range(len(scans)) for target in range(len(scans)) if source != target}


def arterial_later_pairs(scans: Sequence[PhaseScan]) -> list[tuple[int, int]]:
    """Every ``(arterial, later)`` pair of the day's scans by their index: an enhancing phase
    (:data:`ENHANCING_PHASES`) read with a washout phase (:data:`WASHOUT_PHASES`)."""
    return [(arterial, later) for arterial, scan in enumerate(scans) if scan.phase in ENHANCING_PHASES
            for later, other in enumerate(scans) if other.phase in WASHOUT_PHASES]


def nearest_centre_mm(image: sitk.Image, where: np.ndarray) -> tuple[float, ...]:
    """Physical point of the voxel of ``where`` (``z, y, x`` rows) nearest their mean: on the
    added lesion even when it is not convex, so the lesion table finds it there."""
    nearest = where[np.argmin(np.square(where - where.mean(axis=0)).sum(axis=1))]
    return tuple(image.TransformIndexToPhysicalPoint([int(v) for v in nearest[::-1]]))


def voxel_volume_ml(image: sitk.Image) -> float:
    """One voxel of ``image`` in millilitres, to measure lesions in the unit the rule says."""
    return float(np.prod(image.GetSpacing())) / 1000.0


def padded(box: tuple[slice, ...], pad: np.ndarray, shape: tuple[int, ...]) -> tuple[slice, ...]:
    """``box`` grown by ``pad`` voxels each way, within ``shape``."""
    return tuple(slice(max(s.start - p, 0), min(s.stop + p, n)) for s, p, n in zip(box, pad, shape, strict=True))


def liver_ring(labels: np.ndarray, mask: np.ndarray, spacing_zyx: np.ndarray) -> np.ndarray:
    """The liver :data:`RING_MM` around ``mask``, both within one window."""
    distance = ndimage.distance_transform_edt(~mask, sampling=spacing_zyx)
    return (labels == LIVER) & (distance > RING_MM[0]) & (distance <= RING_MM[1])


def contrast_to_liver(hu: np.ndarray, labels: np.ndarray, mask: np.ndarray, spacing_zyx: np.ndarray) -> float:
    """Mean CT of ``mask`` minus that of the liver ring around it (:func:`liver_ring`), all
    within one window; nan when no liver lies around it."""
    ring = liver_ring(labels, mask, spacing_zyx)
    if not ring.any() or not mask.any():
        return float("nan")
    return float(hu[mask].mean() - hu[ring].mean())


def touches_tumor(labels: np.ndarray, footprint: np.ndarray, spacing_zyx: np.ndarray) -> bool:
    """Whether ``footprint`` comes within :data:`RING_MM`'s inner edge (a voxel at least) of a
    lesion already drawn, both within one window."""
    if not (labels == TUMOR).any():
        return False
    distance = ndimage.distance_transform_edt(~footprint, sampling=spacing_zyx)
    return bool(((labels == TUMOR) & (distance <= max(RING_MM[0], spacing_zyx.max()))).any())


def carry_regions(regions: np.ndarray, source: sitk.Image, target: sitk.Image,
                  transform: sitk.Transform) -> np.ndarray:
    """A label map of numbered ``regions`` on ``source``'s grid, carried onto ``target``'s grid
    (``transform`` maps source points to target points; nearest neighbour keeps the numbers).
    The numbers travel in the narrowest unsigned type that holds them, to keep the resample small."""
    narrow = np.uint16 if regions.size == 0 or int(regions.max()) < 2**16 else np.uint32
    moving = sitk.GetImageFromArray(regions.astype(narrow, copy=False))
    moving.CopyInformation(source)
    return sitk.GetArrayFromImage(sitk.Resample(moving, target, transform.GetInverse(), sitk.sitkNearestNeighbor,
                                                0, moving.GetPixelID()))
