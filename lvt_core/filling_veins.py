"""Places drawn as tumor that are veins filling with contrast, told by their pattern across
two phases of a day.

In the arterial phase the hepatic veins are not yet opacified: darker than the enhancing
liver and round in cross-section, they look like hypodense lesions, and the network draws some
of them as tumor. In the portal and late phases they fill with contrast and are brighter than
the liver, which none of the lesions LVT follows is there: a metastasis stays darker, an HCC
washes out, a necrotic core stays dark. So a tumor component of either scan whose place is
darker than the liver around it in the arterial CT and brighter than the liver around it in a
later CT is a vein, and the rule (``vein_min_darker_hu``, ``vein_min_brighter_hu``) makes it
vessel in the scan that drew it. A lesion with progressive fill-in (a haemangioma) shows the
same pattern; it is benign and not what LVT follows. See :mod:`lvt_core.cross_phase`, which
applies what the rule keeps.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import cc3d
import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from lvt_core.day_scans import (
    WINDOW_MM,
    PhaseScan,
    arterial_later_pairs,
    carry_regions,
    contrast_to_liver,
    nearest_centre_mm,
    padded,
)
from lvt_core.labels import TUMOR

if TYPE_CHECKING:
    from lvt_core.cross_phase import CrossPhaseRule


@dataclass
class FillingVein:
    """A tumor component of one scan measured in the arterial and in a later CT of the day."""

    window: tuple[slice, ...]
    mask: np.ndarray  # the component within ``window``, in the scan that drew it
    component: int  # its number among that scan's tumor components (:func:`tumor_components`)
    arterial_darker_hu: float  # the liver around the place minus the arterial CT there
    later_brighter_hu: float  # the later CT at the place minus the liver around it
    centre_mm: tuple[float, ...]

    def kept_by(self, rule: CrossPhaseRule) -> bool:
        return (rule.removes_filling_veins and self.arterial_darker_hu >= rule.vein_min_darker_hu
                and self.later_brighter_hu >= rule.vein_min_brighter_hu)


def tumor_components(scan: PhaseScan) -> tuple[np.ndarray, int]:
    """``scan``'s tumor components (26-connected) and their count: the numbering every
    cross-phase step shares, so a lesion carried from a scan knows which component it was."""
    return cc3d.connected_components(scan.labels == TUMOR, connectivity=26, return_N=True)


def _contrasts(own: PhaseScan, other: PhaseScan, transform: sitk.Transform) -> list[tuple[int, tuple[slice, ...], np.ndarray, float, float]]:
    """Per tumor component of ``own``: its number, window and mask, its contrast to the liver
    around it in ``own``'s CT, and that of its place carried onto ``other`` (``transform`` maps
    ``own``'s points to ``other``'s) in ``other``'s CT (nan where it has no liver around it or
    falls outside ``other``)."""
    components, count = tumor_components(own)
    if not count:
        return []
    carried = carry_regions(components, own.image, other.image,
                            transform)
    own_hu, other_hu = sitk.GetArrayViewFromImage(own.image), sitk.GetArrayViewFromImage(other.image)
    own_spacing, other_spacing = np.array(own.image.GetSpacing()[::-1]), np.array(other.image.GetSpacing()[::-1])
    own_pad, other_pad = np.ceil(WINDOW_MM / own_spacing).astype(int), np.ceil(WINDOW_MM / other_spacing).astype(int)
    other_boxes = ndimage.find_objects(carried)
    out = []
    for index, box in enumerate(ndimage.find_objects(components), start=1):
        if box is None:
            continue
        window = padded(box, own_pad, components.shape)
        mask = components[window] == index
        own_contrast = contrast_to_liver(own_hu[window], own.labels[window], mask, own_spacing)
        other_box = other_boxes[index - 1] if index <= len(other_boxes) else None
        other_contrast = float("nan")
        if other_box is not None:
            other_window = padded(other_box, other_pad, carried.shape)
            other_contrast = contrast_to_liver(other_hu[other_window], other.labels[other_window],
                                               carried[other_window] == index, other_spacing)
        out.append((index, window, mask, own_contrast, other_contrast))
    return out


def filling_veins(scans: Sequence[PhaseScan], transforms: dict[tuple[int, int], sitk.Transform]) -> list[list[FillingVein]]:
    """Per scan of the day, each of its tumor components measured against every arterial and
    later scan pair it belongs to (its own CT and the other's, ``transforms`` as
    :func:`~lvt_core.day_scans.pair_transforms` gives them); scans of neither kind get none."""
    veins: list[list[FillingVein]] = [[] for _ in scans]
    for a, later in arterial_later_pairs(scans):
        for own, other, own_is_arterial in ((a, later, True), (later, a, False)):
            for index, window, mask, own_contrast, other_contrast in _contrasts(scans[own], scans[other],
                                                                                transforms[own, other]):
                arterial, later_contrast = (own_contrast, other_contrast) if own_is_arterial else (other_contrast,
                                                                                                     own_contrast)
                if np.isnan(arterial) or np.isnan(later_contrast):
                    continue
                where = np.argwhere(mask) + [s.start for s in window]
                veins[own].append(FillingVein(window, mask, index, -arterial, later_contrast,
                                              nearest_centre_mm(scans[own].image, where)))
    return veins
