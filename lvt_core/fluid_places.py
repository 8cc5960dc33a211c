"""Places drawn as tumor that hold fluid, told by their density in every phase of a day.

Bile and the water of a simple cyst take up no contrast: they read near water density
(0–20 HU) in every contrast phase. The gallbladder lies in a fossa on the liver's underside,
mostly wrapped by it, and the network draws it as a lesion in some scans; a 5 mm shell
around it is then mostly liver, so the rule for tumors outside the organ
(``max_tumor_outside``) cannot tell it from a lesion at the capsule. The lesions LVT follows
take up contrast and read denser than water in at least one phase: a metastasis is darker
than the enhancing liver but not water, an HCC brightens in the arterial phase, a necrotic
tumor's rim enhances. So a tumor component whose place reads at most ``fluid_max_hu``
(median HU, robust to a rim of liver at its edge) in its own CT and in every other CT of the
day (registered) is fluid: the rule makes it background (it is neither a lesion nor
parenchyma), and nothing is carried from it into another phase. A single scan cannot tell
fluid from a very dark metastasis, so the rule reads two phases or more; nor can it tell a
small one, so only components of :data:`MIN_FLUID_ML` or more are measured. See
:mod:`lvt_core.cross_phase`, which applies what the rule keeps.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from lvt_core.day_scans import PhaseScan, carry_regions, nearest_centre_mm, voxel_volume_ml
from lvt_core.filling_veins import tumor_components

if TYPE_CHECKING:
    from lvt_core.cross_phase import CrossPhaseRule

MIN_FLUID_ML = 0.5
"""The smallest tumor component the rule measures, a 10 mm ball. A smaller hypodensity is "too
small to characterize" on CT, and a sliver of a lesion at the capsule reads low from the fat
beside it (on validation, a 0.3 ml piece of a subcapsular lesion read 16 and 11 HU)."""


@dataclass
class FluidPlace:
    """A tumor component of one scan, measured in every CT of its day."""

    window: tuple[slice, ...]  # the component's bounding box
    mask: np.ndarray  # the component within ``window``, in the scan that drew it
    component: int  # its number among that scan's tumor components (:func:`tumor_components`)
    densest_hu: float  # the highest of its median HU over the day's CTs, its own included
    centre_mm: tuple[float, ...]
    volume_ml: float

    def kept_by(self, rule: CrossPhaseRule) -> bool:
        return rule.removes_fluid and self.densest_hu <= rule.fluid_max_hu

    def summary(self) -> dict[str, Any]:
        """Where it was and what it read, for the record of what a segmentation left out (a
        lesion turned cystic under treatment reads as fluid too)."""
        return {"centre_mm": [round(v, 1) for v in self.centre_mm], "volume_ml": round(self.volume_ml, 2),
                "densest_hu": round(self.densest_hu, 1)}


def _median_hu(image: sitk.Image, mask: np.ndarray, window: tuple[slice, ...]) -> float:
    """Median CT of ``mask`` within ``window`` of ``image``."""
    return float(np.median(sitk.GetArrayViewFromImage(image)[window][mask]))


def fluid_places(scans: Sequence[PhaseScan], transforms: dict[tuple[int, int], sitk.Transform]) -> list[list[FluidPlace]]:
    """Per scan of the day, each of its tumor components with the densest of its median HU in
    its own CT and at its place in every other CT (``transforms`` as
    :func:`~lvt_core.day_scans.pair_transforms` gives them); a component under
    :data:`MIN_FLUID_ML`, or whose place falls outside another scan, is not measured."""
    places: list[list[FluidPlace]] = [[] for _ in scans]
    for own, scan in enumerate(scans):
        components, count = tumor_components(scan)
        if not count:
            continue
        others = []  # per other scan: its CT, the components carried onto it, and their boxes
        for other in (i for i in range(len(scans)) if i != own):
            carried = carry_regions(components, scan.image, scans[other].image, transforms[own, other])
            others.append((scans[other].image, carried, ndimage.find_objects(carried)))
        voxel_ml = voxel_volume_ml(scan.image)
        smallest = MIN_FLUID_ML / voxel_ml
        for index, box in enumerate(ndimage.find_objects(components), start=1):
            if box is None:
                continue
            mask = components[box] == index
            voxels = np.count_nonzero(mask)
            if voxels < smallest:
                continue
            medians = [_median_hu(scan.image, mask, box)]
            for image, carried, boxes in others:
                other_box = boxes[index - 1] if index <= len(boxes) else None
                medians.append(float("nan") if other_box is None
                               else _median_hu(image, carried[other_box] == index, other_box))
            if np.isnan(medians).any():
                continue
            where = np.argwhere(mask) + [s.start for s in box]
            places[own].append(FluidPlace(box, mask, index, float(max(medians)),
                                          nearest_centre_mm(scan.image, where), voxels * voxel_ml))
    return places
