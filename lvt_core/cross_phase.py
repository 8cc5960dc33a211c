"""Reading the phases of one day together: a lesion seen in one phase confirms a weaker
candidate at the same place in another.

A radiologist reads the arterial and portal phases of a follow-up side by side: a lesion
clear in one phase makes a faint smudge at the same place in the other worth reporting. The
network reads each scan alone, and its peak rule (``min_tumor_peak``) drops tumor candidates
it is unsure of, true faint lesions among them. Here, after each scan is decoded:

1. every tumor component of every scan (network or faint-lesion search) gives its centre;
2. each other scan of the day is registered to it (rigid, on the liver masks:
   :func:`lvt_core.registration.register_followup`; visceral organs move with breathing
   between phases), and the centre is carried over;
3. in that scan, the network's dropped candidates (tumor probability at least the decision
   threshold, labelled liver, not touching a lesion already drawn) whose peak reaches ``min_peak`` and which come within
   ``max_distance_mm`` of a carried centre are added as tumor.

Only the centres of the decoded labels are carried, never those this step adds, so nothing
chains from phase to phase. ``min_peak`` 0 switches the step off; both numbers are decisions,
chosen on validation phantoms and stored in the checkpoint (``inference.cross_phase``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cc3d
import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from lvt_core.decision_meta import decisions_from_meta, decisions_to_meta
from lvt_core.labels import LIVER, TUMOR
from lvt_core.registration import register_followup


@dataclass(frozen=True)
class CrossPhaseRule:
    """When a candidate is confirmed by another phase; ``min_peak`` 0 switches it off."""

    min_peak: float = 0.0
    max_distance_mm: float = 10.0
    min_volume_ml: float = 0.1

    @property
    def enabled(self) -> bool:
        return self.min_peak > 0

    @classmethod
    def from_meta(cls, meta: dict | None) -> CrossPhaseRule:
        """The rule a checkpoint's ``inference.cross_phase`` describes (off when absent)."""
        return decisions_from_meta(cls, meta)

    def to_meta(self) -> dict:
        return decisions_to_meta(self)


@dataclass
class PhaseScan:
    """One decoded scan of the day: its grid, labels and tumor probability (``z, y, x``)."""

    image: sitk.Image  # the scan's geometry
    labels: np.ndarray
    tumor_probability: np.ndarray  # on the whole grid (0 outside the fine pass)
    tumor_threshold: float  # the decision threshold the labels were drawn with

    def label_image(self) -> sitk.Image:
        out = sitk.GetImageFromArray(np.ascontiguousarray(self.labels, dtype=np.uint8))
        out.CopyInformation(self.image)
        return out


def lesion_centres_mm(scan: PhaseScan) -> list[tuple[float, ...]]:
    """Physical centre (mm, LPS) of every tumor component of ``scan``."""
    components, count = cc3d.connected_components(scan.labels == TUMOR, connectivity=26, return_N=True)
    if not count:
        return []
    centres = cc3d.statistics(components)["centroids"][1:]  # z, y, x voxel index; row 0 is background
    return [scan.image.TransformContinuousIndexToPhysicalPoint([float(c) for c in reversed(centre)])
            for centre in centres]


@dataclass
class DroppedCandidate:
    """A tumor candidate the network drew and the decisions dropped, measured against the
    lesion centres the other phases carried over."""

    window: tuple[slice, ...]
    mask: np.ndarray  # within ``window``
    peak: float  # highest tumor probability
    volume_ml: float
    distance_mm: float  # from its nearest voxel to the nearest carried centre (inf: none)
    centre_mm: tuple[float, ...]

    def kept_by(self, rule: CrossPhaseRule) -> bool:
        return (rule.enabled and self.peak >= rule.min_peak and self.volume_ml >= rule.min_volume_ml
                and self.distance_mm <= rule.max_distance_mm)


def carried_centres(scans: Sequence[PhaseScan]) -> list[list[tuple[float, ...]]]:
    """Per scan, the lesion centres of the day's other scans carried onto it (each pair
    registered once, on the liver masks)."""
    centres = [lesion_centres_mm(scan) for scan in scans]
    carried: list[list[tuple[float, ...]]] = []
    for target_index, target in enumerate(scans):
        points: list[tuple[float, ...]] = []
        for source_index, source in enumerate(scans):
            if source_index == target_index or not centres[source_index]:
                continue
            transform = register_followup(source.label_image(), target.label_image())
            points += [transform.TransformPoint(point) for point in centres[source_index]]
        carried.append(points)
    return carried


def dropped_candidates(scan: PhaseScan, points_mm: Sequence[Sequence[float]]) -> list[DroppedCandidate]:
    """Every dropped candidate of ``scan``: tumor probability at least the decision threshold,
    labelled liver, and not touching a lesion already drawn (the rims the lesion-edge rule
    trims off a lesion are part of it, not new lesions)."""
    if not len(points_mm):
        return []
    dropped = (scan.labels == LIVER) & (scan.tumor_probability >= scan.tumor_threshold)
    components = cc3d.connected_components(dropped, connectivity=26)
    if not components.any():
        return []
    touching = set(np.unique(components[ndimage.binary_dilation(scan.labels == TUMOR)]).tolist())
    spacing = np.array(scan.image.GetSpacing()[::-1])
    voxel_ml = float(np.prod(spacing)) / 1000.0
    points = np.array([scan.image.TransformPhysicalPointToContinuousIndex([float(v) for v in p])[::-1]
                       for p in points_mm])
    out = []
    for index, box in enumerate(ndimage.find_objects(components), start=1):
        if box is None or index in touching:
            continue
        mask = components[box] == index
        where = np.argwhere(mask) + [s.start for s in box]
        distance = float(np.min(np.linalg.norm((where[None] - points[:, None]) * spacing, axis=-1)))
        centre = scan.image.TransformContinuousIndexToPhysicalPoint(where.mean(axis=0)[::-1].tolist())
        out.append(DroppedCandidate(box, mask, float(scan.tumor_probability[box][mask].max()),
                                    float(mask.sum()) * voxel_ml, distance, tuple(centre)))
    return out


def paint_confirmed(labels: np.ndarray, candidates: Sequence[DroppedCandidate]) -> np.ndarray:
    """``labels`` with ``candidates`` as tumor (a copy; ``labels`` itself when there are none)."""
    if not candidates:
        return labels
    out = labels.copy()
    for candidate in candidates:
        out[candidate.window][candidate.mask] = TUMOR
    return out


def confirm_across_phases(
    scans: Sequence[PhaseScan], rule: CrossPhaseRule
) -> list[tuple[np.ndarray, list[DroppedCandidate]]]:
    """Per scan of one day (any order, two or more phases), its labels with the candidates the
    other scans confirm, and those candidates; every scan's labels unchanged when the rule is
    off or the day has one scan."""
    if not rule.enabled or len(scans) < 2:
        return [(scan.labels, []) for scan in scans]
    out = []
    for scan, points in zip(scans, carried_centres(scans), strict=True):
        kept = [c for c in dropped_candidates(scan, points) if c.kept_by(rule)]
        out.append((paint_confirmed(scan.labels, kept), kept))
    return out
