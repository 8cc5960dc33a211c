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

Some lesions leave no candidate at all in one phase: the network drew the place as liver,
with no tumor probability to speak of. When ``carry_min_volume_ml`` is set, a second step carries each lesion of ``carry_min_volume_ml`` or more whole: its mask is
registered onto the other scan, and where that place is mostly liver there, touches no lesion
already drawn, and its CT differs from the liver around it by ``carry_min_contrast_hu`` or more,
its liver voxels become tumor. The contrast test asks the other phase's own CT to show
something there, so a lesion the network imagined in one phase does not copy itself into the
next. A place brighter than the liver by more than ``carry_max_brighter_hu`` (0: any brighter
place) is left alone: that is the edge of a vessel, which the network draws well, not a lesion
it missed.

A lesion that enhances in the arterial phase (HCC-like) is as bright there as the vessels, and
the network may draw it as one. When ``carry_vessel_min_brighter_hu`` is set, a carried lesion
that lands mostly on vessel in an arterial scan is looked at once more: its vessel voxels become
tumor if no vessel runs through the place (less than ``carry_vessel_max_shell_fraction`` of the
shell around it is vessel) and they are brighter than the liver around them by
``carry_vessel_min_brighter_hu`` or more. Only the
arterial phase is searched so (:data:`ENHANCING_PHASES`), so each scan says its phase.

Some arterially enhancing lesions are missed in both phases: drawn as vessel in the arterial
scan, left as liver in the portal one. The radiologist's pattern finds them, arterial
hyperenhancement with washout (LI-RADS's major features of HCC). A vessel is drawn as vessel in
every contrast phase; an arterially enhancing lesion only in the arterial one. When
``washout_min_brighter_hu`` is set, a region the arterial scan drew as vessel and a portal or
late scan of the day (:data:`WASHOUT_PHASES`, registered) drew as liver, thicker than slivers
(:data:`WASHOUT_CORE_MM`), becomes tumor in both scans if it is that much brighter than the
liver around it in the arterial CT and ``washout_min_darker_hu`` or more darker than the liver
around it in the later CT.

Only the decoded labels are carried (centres and masks), never what this step adds, so nothing
chains from phase to phase. ``min_peak`` 0 and ``carry_min_volume_ml`` 0 switch both parts off;
the numbers are decisions, chosen on validation phantoms and stored in the checkpoint
(``inference.cross_phase``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cc3d
import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from lvt_core.decision_meta import decisions_from_meta, decisions_to_meta
from lvt_core.labels import LIVER, TUMOR, VESSEL
from lvt_core.registration import register_followup

ENHANCING_PHASES: frozenset[str] = frozenset({"arterial"})
"""The phases where an enhancing lesion (HCC-like) is as bright as the vessels and the network
may draw it as one: only these are searched for lesions drawn as vessel, carried onto them or
found by their washout in a later phase. In the portal and late phases the lesion washes out,
and a bright closed region drawn as vessel there is a vessel cut across. Carried onto vessel in
every phase, 88 validation scans gained false lesions at eight places, all in portal scans
(docs/model_history.md)."""

NO_BRIGHTNESS_LIMIT_HU = 1000.0
"""``carry_max_brighter_hu`` that lets a carried lesion be any brighter than the liver."""


@dataclass(frozen=True)
class CrossPhaseRule:
    """When a candidate is confirmed by another phase (``min_peak`` 0: never), when a lesion
    is carried whole into a phase that shows it only in its CT (``carry_min_volume_ml`` 0: never),
    and when a place neither phase drew as tumor is one by its enhancement pattern
    (``washout_min_brighter_hu`` 0: never)."""

    min_peak: float = 0.0
    max_distance_mm: float = 10.0
    min_volume_ml: float = 0.1
    carry_min_volume_ml: float = 0.0
    carry_min_contrast_hu: float = 5.0
    carry_max_brighter_hu: float = NO_BRIGHTNESS_LIMIT_HU
    carry_vessel_min_brighter_hu: float = 0.0
    carry_vessel_max_shell_fraction: float = 0.1
    washout_min_brighter_hu: float = 0.0
    washout_min_darker_hu: float = 5.0
    washout_min_volume_ml: float = 0.3

    @property
    def confirms_candidates(self) -> bool:
        return self.min_peak > 0

    @property
    def carries_lesions(self) -> bool:
        return self.carry_min_volume_ml > 0

    @property
    def carries_onto_vessels(self) -> bool:
        return self.carries_lesions and self.carry_vessel_min_brighter_hu > 0

    @property
    def finds_washout(self) -> bool:
        return self.washout_min_brighter_hu > 0

    @property
    def enabled(self) -> bool:
        return self.confirms_candidates or self.carries_lesions or self.finds_washout

    @classmethod
    def from_meta(cls, meta: dict | None) -> CrossPhaseRule:
        """The rule a checkpoint's ``inference.cross_phase`` describes (off when absent)."""
        return decisions_from_meta(cls, meta)

    def to_meta(self) -> dict:
        return decisions_to_meta(self)


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
        return (rule.confirms_candidates and self.peak >= rule.min_peak and self.volume_ml >= rule.min_volume_ml
                and self.distance_mm <= rule.max_distance_mm)


def pair_transforms(scans: Sequence[PhaseScan]) -> dict[tuple[int, int], sitk.Transform]:
    """Each ordered pair ``(source, target)`` of the day's scans registered once, on the liver
    masks: the transform maps the source's points to the target's."""
    images = [scan.label_image() for scan in scans]
    return {(source, target): register_followup(images[source], images[target])
            for source in range(len(scans)) for target in range(len(scans)) if source != target}


def carried_centres(scans: Sequence[PhaseScan],
                    transforms: dict[tuple[int, int], sitk.Transform] | None = None) -> list[list[tuple[float, ...]]]:
    """Per scan, the lesion centres of the day's other scans carried onto it."""
    transforms = pair_transforms(scans) if transforms is None else transforms
    centres = [lesion_centres_mm(scan) for scan in scans]
    return [[transforms[source, target].TransformPoint(point)
             for source in range(len(scans)) if source != target for point in centres[source]]
            for target in range(len(scans))]


def _centre_mm(image: sitk.Image, where: np.ndarray) -> tuple[float, ...]:
    """Physical point of the voxel of ``where`` (``z, y, x`` rows) nearest their mean: on the
    added lesion even when it is not convex, so the lesion table finds it there."""
    nearest = where[np.argmin(np.square(where - where.mean(axis=0)).sum(axis=1))]
    return tuple(image.TransformIndexToPhysicalPoint([int(v) for v in nearest[::-1]]))


def _voxel_ml(image: sitk.Image) -> float:
    return float(np.prod(image.GetSpacing())) / 1000.0


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
    voxel_ml = _voxel_ml(scan.image)
    points = np.array([scan.image.TransformPhysicalPointToContinuousIndex([float(v) for v in p])[::-1]
                       for p in points_mm])
    out = []
    for index, box in enumerate(ndimage.find_objects(components), start=1):
        if box is None or index in touching:
            continue
        mask = components[box] == index
        where = np.argwhere(mask) + [s.start for s in box]
        distance = float(np.min(np.linalg.norm((where[None] - points[:, None]) * spacing, axis=-1)))
        out.append(DroppedCandidate(box, mask, float(scan.tumor_probability[box][mask].max()),
                                    float(mask.sum()) * voxel_ml, distance, _centre_mm(scan.image, where)))
    return out


MIN_LIVER_FRACTION = 0.5
"""A carried lesion lands on liver: at least this share of its carried mask is liver there."""
RING_MM = (1.5, 5.0)
"""The liver a carried lesion's contrast is measured against: this far around its mask."""
VESSEL_MATCH_MM = 3.0
"""The vessel-drawn voxels this close to a carried mask are the lesion (registration leaves a
few millimetres)."""
VESSEL_SHELL_MM = 3.0
"""Thickness of the shell around them where vessels leaving the place are counted."""
MEASURED_SHELL_VESSEL_FRACTION = 0.5
"""A place whose shell is this much vessel or more has a vessel running through it whatever the
rule: it is not measured at all (``carry_vessel_max_shell_fraction`` chooses below it)."""
WINDOW_MM = VESSEL_MATCH_MM + max(RING_MM[1], VESSEL_SHELL_MM)
"""How far past a carried mask its place is read: the liver ring and the vessel shell around
it, around vessel voxels up to :data:`VESSEL_MATCH_MM` beyond it."""


@dataclass
class CarriedLesion:
    """A lesion of another phase carried whole onto this scan, where the network left its
    place mostly as liver (or drew it as vessel), with what this scan's CT shows there."""

    window: tuple[slice, ...]
    mask: np.ndarray  # the voxels it would paint, within ``window``
    source_volume_ml: float  # the lesion as drawn in its own phase
    contrast_hu: float  # mean CT of ``mask`` minus that of the liver around it (nan: none)
    centre_mm: tuple[float, ...]
    onto_vessel: bool = False  # ``mask`` is a region the network drew as vessel, not liver
    shell_vessel_fraction: float = 0.0  # onto vessel: the share of the shell around it drawn as vessel

    def kept_by(self, rule: CrossPhaseRule) -> bool:
        if not rule.carries_lesions or self.source_volume_ml < rule.carry_min_volume_ml:
            return False
        if self.onto_vessel:
            return (rule.carries_onto_vessels and self.contrast_hu >= rule.carry_vessel_min_brighter_hu
                    and self.shell_vessel_fraction < rule.carry_vessel_max_shell_fraction)
        return abs(self.contrast_hu) >= rule.carry_min_contrast_hu and self.contrast_hu <= rule.carry_max_brighter_hu


def _padded(box: tuple[slice, ...], pad: np.ndarray, shape: tuple[int, ...]) -> tuple[slice, ...]:
    """``box`` grown by ``pad`` voxels each way, within ``shape``."""
    return tuple(slice(max(s.start - p, 0), min(s.stop + p, n)) for s, p, n in zip(box, pad, shape, strict=True))


def _liver_ring(labels: np.ndarray, mask: np.ndarray, spacing_zyx: np.ndarray) -> np.ndarray:
    """The liver :data:`RING_MM` around ``mask``, both within one window."""
    distance = ndimage.distance_transform_edt(~mask, sampling=spacing_zyx)
    return (labels == LIVER) & (distance > RING_MM[0]) & (distance <= RING_MM[1])


def _touches_tumor(labels: np.ndarray, footprint: np.ndarray, spacing_zyx: np.ndarray) -> bool:
    """Whether ``footprint`` comes within :data:`RING_MM`'s inner edge (a voxel at least) of a
    lesion already drawn, both within one window."""
    if not (labels == TUMOR).any():
        return False
    distance = ndimage.distance_transform_edt(~footprint, sampling=spacing_zyx)
    return bool(((labels == TUMOR) & (distance <= max(RING_MM[0], spacing_zyx.max()))).any())


def carry_regions(regions: np.ndarray, source: sitk.Image, target: sitk.Image,
                  transform: sitk.Transform) -> np.ndarray:
    """A label map of numbered ``regions`` on ``source``'s grid, carried onto ``target``'s grid
    (``transform`` maps source points to target points; nearest neighbour keeps the numbers)."""
    moving = sitk.GetImageFromArray(regions)
    moving.CopyInformation(source)
    return sitk.GetArrayFromImage(sitk.Resample(moving, target, transform.GetInverse(), sitk.sitkNearestNeighbor,
                                                0, moving.GetPixelID()))


def vessel_drawn_lesion(labels: np.ndarray, footprint: np.ndarray,
                        spacing_zyx: np.ndarray) -> tuple[np.ndarray, float] | None:
    """The voxels the network drew as vessel where a carried ``footprint`` marks a lesion
    (both cropped to a window reaching :data:`WINDOW_MM` past the footprint), and the share of
    the shell around the place (:data:`VESSEL_SHELL_MM` beyond :data:`VESSEL_MATCH_MM`) drawn
    as vessel; None when the place has no shell in the window or a vessel surely runs through
    it (:data:`MEASURED_SHELL_VESSEL_FRACTION`). A lesion drawn as vessel is a closed region,
    met by a vessel or two at most, so little of its shell is vessel; a vessel as thick as the
    footprint crossing it fills much of it. Where the rule draws the line is a decision
    (``carry_vessel_max_shell_fraction``): a lesion lying against a thick branch has more of
    its shell drawn as vessel."""
    vessel = labels == VESSEL
    distance = ndimage.distance_transform_edt(~footprint, sampling=spacing_zyx)
    shell = (distance > VESSEL_MATCH_MM) & (distance <= VESSEL_MATCH_MM + VESSEL_SHELL_MM)
    if not shell.any():
        return None
    fraction = np.count_nonzero(vessel & shell) / np.count_nonzero(shell)
    if fraction >= MEASURED_SHELL_VESSEL_FRACTION:
        return None
    return vessel & (distance <= VESSEL_MATCH_MM), float(fraction)


def carried_lesions(target: PhaseScan, source: PhaseScan, transform: sitk.Transform) -> list[CarriedLesion]:
    """Every lesion of ``source`` carried onto ``target`` (``transform`` maps source points to
    target points) that lands mostly on liver, or, in a phase of :data:`ENHANCING_PHASES`,
    mostly on vessel where a vessel-drawn region matches it (:func:`vessel_drawn_lesion`), and
    touches none of ``target``'s lesions, with the contrast ``target``'s CT shows there."""
    components, count = cc3d.connected_components(source.labels == TUMOR, connectivity=26, return_N=True)
    if not count:
        return []
    volumes = np.bincount(components.ravel())[1:] * _voxel_ml(source.image)
    carried = carry_regions(components.astype(np.uint16 if count < 2**16 else np.uint32), source.image,
                            target.image, transform)
    hu = sitk.GetArrayViewFromImage(target.image)
    spacing = np.array(target.image.GetSpacing()[::-1])
    pad = np.ceil(WINDOW_MM / spacing).astype(int)
    vessel_searched = target.phase in ENHANCING_PHASES
    out = []
    for index, box in enumerate(ndimage.find_objects(carried), start=1):
        if box is None:
            continue
        window = _padded(box, pad, carried.shape)
        footprint = carried[window] == index
        labels = target.labels[window]
        if _touches_tumor(labels, footprint, spacing):
            continue
        mask = footprint & (labels == LIVER)
        onto_vessel = mask.sum() < MIN_LIVER_FRACTION * footprint.sum()
        shell_fraction = 0.0
        if onto_vessel:
            if not vessel_searched or np.count_nonzero(footprint & (labels == VESSEL)) < MIN_LIVER_FRACTION * footprint.sum():
                continue
            drawn = vessel_drawn_lesion(labels, footprint, spacing)
            if drawn is None:
                continue
            mask, shell_fraction = drawn
        ring = _liver_ring(labels, mask if onto_vessel else footprint, spacing)
        contrast = float(hu[window][mask].mean() - hu[window][ring].mean()) if ring.any() else float("nan")
        where = np.argwhere(mask) + [s.start for s in window]
        out.append(CarriedLesion(window, mask, float(volumes[index - 1]), contrast,
                                 _centre_mm(target.image, where), onto_vessel, shell_fraction))
    return out


WASHOUT_PHASES: frozenset[str] = frozenset({"portal", "late"})
"""The later phases a lesion washes out in: darker than the liver there."""
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
    voxel_ml = _voxel_ml(arterial.image)
    statistics = cc3d.statistics(regions)
    found: dict[int, tuple[tuple[slice, ...], np.ndarray, float, float]] = {}
    for index in range(1, len(statistics["voxel_counts"])):
        box = statistics["bounding_boxes"][index]
        if statistics["voxel_counts"][index] * voxel_ml < WASHOUT_SMALLEST_ML:
            continue
        window = _padded(box, pad, regions.shape)
        mask = _opened(regions[window] == index, spacing)
        labels = arterial.labels[window]
        if not mask.any() or _touches_tumor(labels, mask, spacing):
            continue
        ring = _liver_ring(labels, mask, spacing)
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
        later_window = _padded(box, later_pad, carried.shape)
        footprint = carried[later_window] == index
        labels = later.labels[later_window]
        later_mask = footprint & (labels == LIVER)
        if later_mask.sum() < MIN_LIVER_FRACTION * footprint.sum() or _touches_tumor(labels, footprint, later_spacing):
            continue
        ring = _liver_ring(labels, later_mask, later_spacing)
        if not ring.any():
            continue
        washout = float(later_hu[later_window][ring].mean() - later_hu[later_window][later_mask].mean())
        arterial_where = np.argwhere(mask) + [s.start for s in window]
        later_where = np.argwhere(later_mask) + [s.start for s in later_window]
        out.append((WashoutLesion(window, mask, volume, brighter, washout, _centre_mm(arterial.image, arterial_where)),
                    WashoutLesion(later_window, later_mask, volume, brighter, washout,
                                  _centre_mm(later.image, later_where))))
    return out


FromOtherPhases = CarriedLesion | WashoutLesion
"""What the day's other scans bring to a scan whole: a lesion carried, or a washout half."""
Addition = DroppedCandidate | FromOtherPhases
"""Anything the step adds to a scan's labels."""


def paint_confirmed(labels: np.ndarray, candidates: Sequence[Addition]) -> np.ndarray:
    """``labels`` with ``candidates`` as tumor (a copy; ``labels`` itself when there are none)."""
    if not candidates:
        return labels
    out = labels.copy()
    for candidate in candidates:
        out[candidate.window][candidate.mask] = TUMOR
    return out


def apply_rule(
    scan: PhaseScan, candidates: Sequence[DroppedCandidate], carried: Sequence[FromOtherPhases], rule: CrossPhaseRule
) -> tuple[np.ndarray, list[Addition]]:
    """``scan``'s labels with what ``rule`` keeps of its confirmable candidates and of what the
    other phases bring, and those kept: the confirmed candidates first, then each carried
    lesion or washout half that does not overlap what is already painted (two phases may carry
    the same lesion)."""
    kept: list[Addition] = [c for c in candidates if c.kept_by(rule)]
    carried_kept = [lesion for lesion in carried if lesion.kept_by(rule)]
    labels = paint_confirmed(scan.labels, kept)
    if carried_kept and labels is scan.labels:
        labels = labels.copy()  # one copy for every carried lesion, painted in place
    for lesion in carried_kept:
        if not (labels[lesion.window][lesion.mask] == TUMOR).any():
            labels[lesion.window][lesion.mask] = TUMOR
            kept.append(lesion)
    return labels, kept


def measured_across_phases(
    scans: Sequence[PhaseScan], confirm: bool = True, carry: bool = True, washout: bool = True
) -> list[tuple[list[DroppedCandidate], list[FromOtherPhases]]]:
    """Per scan of one day, (``confirm``) its dropped candidates measured against the other
    scans' carried centres, (``carry``) the other scans' lesions carried onto it, and
    (``washout``) its halves of the lesions an arterial and a later scan show by their
    enhancement pattern: everything a rule chooses from, computed once."""
    transforms = pair_transforms(scans)
    centres = carried_centres(scans, transforms) if confirm else [[] for _ in scans]
    brought: list[list[FromOtherPhases]] = [
        [lesion for source in range(len(scans)) if source != target and carry
         for lesion in carried_lesions(scans[target], scans[source], transforms[source, target])]
        for target in range(len(scans))]
    pairs = [(a, later) for a, scan in enumerate(scans) if scan.phase in ENHANCING_PHASES
             for later, other in enumerate(scans) if other.phase in WASHOUT_PHASES] if washout else []
    for a, later in pairs:
        for arterial_half, later_half in washout_lesions(scans[a], scans[later], transforms[a, later]):
            brought[a].append(arterial_half)
            brought[later].append(later_half)
    return [(dropped_candidates(scans[target], points), brought[target]) for target, points in enumerate(centres)]


def confirm_across_phases(
    scans: Sequence[PhaseScan], rule: CrossPhaseRule
) -> list[tuple[np.ndarray, list[Addition]]]:
    """Per scan of one day (any order, two or more phases), its labels with what the other
    scans confirm or carry into it, and those additions; every scan's labels unchanged when
    the rule is off or the day has one scan."""
    if not rule.enabled or len(scans) < 2:
        return [(scan.labels, []) for scan in scans]
    measured = measured_across_phases(scans, rule.confirms_candidates, rule.carries_lesions, rule.finds_washout)
    return [apply_rule(scan, candidates, carried, rule)
            for scan, (candidates, carried) in zip(scans, measured, strict=True)]
