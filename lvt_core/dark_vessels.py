"""Round regions drawn as vessel but darker than the liver: lesions, not contrast-filled vessels.

On validation phantoms some missed lesions of 10–12 mm are not left as liver but drawn as
vessel: they lie against a vessel and the network merges them into it. A contrast-filled
vessel is brighter than the liver around it (portal phase) or a thin dark tube (unenhanced
hepatic veins in the arterial phase); a lesion is a round region darker than the liver. So
within the vessel label:

1. an opening with a ball of ``radius_mm`` removes the tubes thinner than the ball;
2. each remaining component at least ``min_volume_ml`` large, round (``min_roundness``, the
   smallest over the largest principal axis, as the faint-lesion search measures it) and at
   least ``min_darker_hu`` darker on average than the scan's liver parenchyma (its median) is
   relabelled tumor.

Nothing here is learned; the thresholds are decisions chosen on validation phantoms and stored
in the checkpoint (``min_darker_hu`` 0 turns the rule off, the default).
"""

from __future__ import annotations

from dataclasses import dataclass

import cc3d
import numpy as np
from scipy import ndimage

from lvt_core.decision_meta import decisions_from_meta, decisions_to_meta
from lvt_core.labels import LIVER, TUMOR, VESSEL
from lvt_core.lesion_filter import roundness
from lvt_core.postprocess import bounding_box


@dataclass(frozen=True)
class DarkVesselRule:
    """When a vessel-labelled region becomes tumor; ``min_darker_hu`` 0 switches it off."""

    min_darker_hu: float = 0.0
    min_roundness: float = 0.65
    min_volume_ml: float = 0.2
    radius_mm: float = 3.0

    @property
    def enabled(self) -> bool:
        return self.min_darker_hu > 0

    @classmethod
    def from_meta(cls, meta: dict | None) -> DarkVesselRule:
        return decisions_from_meta(cls, meta)

    def to_meta(self) -> dict:
        return decisions_to_meta(self)


def ball(radius_mm: float, spacing_zyx: np.ndarray) -> np.ndarray:
    """A ball of ``radius_mm`` on an anisotropic grid (at least one voxel each way)."""
    reach = [max(1, round(float(radius_mm / s))) for s in spacing_zyx]
    z, y, x = np.ogrid[tuple(slice(-r, r + 1) for r in reach)]
    return (z * spacing_zyx[0]) ** 2 + (y * spacing_zyx[1]) ** 2 + (x * spacing_zyx[2]) ** 2 <= radius_mm**2


def dark_vessel_regions(
    labels: np.ndarray, hu: np.ndarray, spacing_xyz: tuple[float, ...], rule: DarkVesselRule
) -> list[tuple[tuple[slice, ...], np.ndarray]]:
    """The regions the rule turns into tumor, each as (box, mask within the box)."""
    box = bounding_box(labels == VESSEL)
    parenchyma = labels == LIVER
    if not rule.enabled or box is None or not parenchyma.any():
        return []
    liver_hu = float(np.median(hu[parenchyma]))
    spacing_zyx = np.asarray(spacing_xyz, float)[::-1]
    region = tuple(slice(lo, hi) for lo, hi in box)
    opened = ndimage.binary_opening(labels[region] == VESSEL, ball(rule.radius_mm, spacing_zyx))
    components = cc3d.connected_components(opened, connectivity=26)
    voxel_ml = float(np.prod(spacing_zyx)) / 1000.0
    found = []
    for index, sub in enumerate(ndimage.find_objects(components), start=1):
        if sub is None:
            continue
        mask = components[sub] == index
        if mask.sum() * voxel_ml < rule.min_volume_ml:
            continue
        if liver_hu - float(hu[region][sub][mask].mean()) < rule.min_darker_hu:
            continue
        if roundness(mask, spacing_zyx) < rule.min_roundness:
            continue
        found.append((tuple(slice(r.start + s.start, r.start + s.stop) for r, s in zip(region, sub, strict=True)), mask))
    return found


def relabel_dark_vessels(
    labels: np.ndarray, hu: np.ndarray, spacing_xyz: tuple[float, ...], rule: DarkVesselRule
) -> tuple[np.ndarray, list[tuple[int, ...]]]:
    """``labels`` with the rule's regions drawn as tumor, and each region's centre voxel
    (``z, y, x``), so its lesion can say the rule found it."""
    regions = dark_vessel_regions(labels, hu, spacing_xyz, rule)
    if not regions:
        return labels, []
    out = labels.copy()
    centres = []
    for box, mask in regions:
        out[box][mask] = TUMOR
        centre = np.argwhere(mask).mean(axis=0).round().astype(int)
        centres.append(tuple(int(b.start + c) for b, c in zip(box, centre, strict=True)))
    return out, centres
