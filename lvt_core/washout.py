"""Lesions found by their enhancement pattern across two phases of a day: arterial
hyperenhancement with washout in the portal or late phase (LI-RADS's major features of HCC),
for lesions the network missed in both phases (drawn as vessel in the arterial scan, left as
liver in the later one), which nothing can carry from one phase to the other. See
:mod:`lvt_core.cross_phase`, which applies what the rule keeps.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import cc3d
import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from lvt_core.day_scans import (
    MIN_LIVER_FRACTION,
    WINDOW_MM,
    PhaseScan,
    carry_regions,
    liver_ring,
    nearest_centre_mm,
    padded,
    touches_tumor,
    voxel_volume_ml,
)
from lvt_core.labels import LIVER, VESSEL

if TYPE_CHECKING:
    from lvt_core.cross_phase import CrossPhaseRule

WASHOUT_CORE_MM = 2.5
"""A region drawn as vessel in the arterial phase only is a lesion candidate when some voxel of it
lies deeper than this inside it (at least 5 mm across): the registration of the two phases
leaves thinner slivers along every vessel."""
WASHOUT_SMALLEST_ML = 0.1
"""Regions smaller than this are not measured at all (the rule's own floor is higher)."""


@dataclass
class WashoutLesion:
    """One scan's half of a lesion found by its enhancement pattern, which neither phase's
    labels drew as tumor: brighter than the liver where the arterial scan drew it as vessel,
    darker than the liver where a later scan left it as liver."""

    window: tuple[slice, ...]
    mask: np.ndarray  # the voxels it would paint in this scan, within ``window``
    volume_ml: float  # the region drawn as vessel in the arterial scan
    arterial_brighter_hu: float  # its arterial CT minus the liver around it
    washout_hu: float  # the liver around its later place minus the later CT there
    centre_mm: tuple[float, ...]

    def kept_by(self, rule: CrossPhaseRule) -> bool:
        return (rule.finds_washout and self.volume_ml >= rule.washout_min_volume_ml
                and self.arterial_brighter_hu >= rule.washout_min_brighter_hu
                and self.washout_hu >= rule.washout_min_darker_hu)


def arterial_only_regions(arterial: PhaseScan, later: PhaseScan, transform: sitk.Transform) -> np.ndarray:
    """Components (26-connected, on ``arterial``'s grid) of what ``arterial`` drew as vessel and
    ``later`` (registered: ``transform`` maps arterial points to later points) as liver: a vessel
    is drawn in both phases, an arterially enhancing lesion only in the arterial one."""
    later_labels = sitk.GetArrayFromImage(sitk.Resample(later.label_image(), arterial.image, transform,
                                                        sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8))
    return cc3d.connected_components((arterial.labels == VESSEL) & (later_labels == LIVER), connectivity=26)


def _opened(region: np.ndarray, spacing_zyx: np.ndarray) -> np.ndarray:
    """``region`` opened with a ball of :data:`WASHOUT_CORE_MM` (with two distance maps): the
    slivers thinner than the ball's diameter are cut off (but for one voxel at their root), a
    round lesion keeps its shape."""
    core = ndimage.distance_transform_edt(region, sampling=spacing_zyx) > WASHOUT_CORE_MM
    if not core.any():
        return core
    # one voxel more than the ball reaches, so the voxelised edge of a round lesion stays with it
    reach = WASHOUT_CORE_MM + float(spacing_zyx.max())
    return region & (ndimage.distance_transform_edt(~core, sampling=spacing_zyx) <= reach)


def washout_lesions(arterial: PhaseScan, later: PhaseScan,
                    transform: sitk.Transform) -> list[tuple[WashoutLesion, WashoutLesion]]:
    """Every region ``arterial`` drew as vessel and ``later`` as liver (:func:`arterial_only_regions`),
    opened to cut off the slivers the registration leaves along every vessel (:func:`_opened`),
    brighter than the liver around it in the arterial CT and touching no lesion in either scan:
    its arterial and its later half, each measured in its own CT."""
    spacing = np.array(arterial.image.GetSpacing()[::-1])
    regions = arterial_only_regions(arterial, later, transform)
    hu = sitk.GetArrayViewFromImage(arterial.image)
    pad = np.ceil(WINDOW_MM / spacing).astype(int)
    voxel_ml = voxel_volume_ml(arterial.image)
    statistics = cc3d.statistics(regions)
    found: dict[int, tuple[tuple[slice, ...], np.ndarray, float, float]] = {}
    for index in range(1, len(statistics["voxel_counts"])):
        box = statistics["bounding_boxes"][index]
        if statistics["voxel_counts"][index] * voxel_ml < WASHOUT_SMALLEST_ML:
            continue
        window = padded(box, pad, regions.shape)
        mask = _opened(regions[window] == index, spacing)
        labels = arterial.labels[window]
        if not mask.any() or touches_tumor(labels, mask, spacing):
            continue
        ring = liver_ring(labels, mask, spacing)
        if not ring.any():
            continue
        brighter = float(hu[window][mask].mean() - hu[window][ring].mean())
        if brighter > 0:
            found[index] = (window, mask, float(mask.sum()) * voxel_ml, brighter)
    if not found:
        return []
    kept = np.zeros(regions.shape, np.uint32)
    for index, (window, mask, *_) in found.items():
        kept[window][mask] = index
    carried = carry_regions(kept, arterial.image, later.image, transform)
    later_hu = sitk.GetArrayViewFromImage(later.image)
    later_spacing = np.array(later.image.GetSpacing()[::-1])
    later_pad = np.ceil(WINDOW_MM / later_spacing).astype(int)
    boxes = ndimage.find_objects(carried)
    out = []
    for index, (window, mask, volume, brighter) in found.items():
        box = boxes[index - 1] if index <= len(boxes) else None
        if box is None:
            continue  # carried outside the later scan
        later_window = padded(box, later_pad, carried.shape)
        footprint = carried[later_window] == index
        labels = later.labels[later_window]
        later_mask = footprint & (labels == LIVER)
        if later_mask.sum() < MIN_LIVER_FRACTION * footprint.sum() or touches_tumor(labels, footprint, later_spacing):
            continue
        ring = liver_ring(labels, later_mask, later_spacing)
        if not ring.any():
            continue
        washout = float(later_hu[later_window][ring].mean() - later_hu[later_window][later_mask].mean())
        arterial_where = np.argwhere(mask) + [s.start for s in window]
        later_where = np.argwhere(later_mask) + [s.start for s in later_window]
        out.append((WashoutLesion(window, mask, volume, brighter, washout, nearest_centre_mm(arterial.image, arterial_where)),
                    WashoutLesion(later_window, later_mask, volume, brighter, washout,
                                  nearest_centre_mm(later.image, later_where))))
    return out
