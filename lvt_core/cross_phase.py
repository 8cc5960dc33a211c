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
shell around it is vessel, lying to one side of it by ``carry_vessel_min_one_sidedness`` or
more) and they are brighter than the liver around them by ``carry_vessel_min_brighter_hu`` or
more. Only the arterial phase is searched so (:data:`ENHANCING_PHASES`), so each scan says its
phase. A lesion drawn beside the place (within :data:`~lvt_core.day_scans.RING_MM`'s inner
edge) stops a carry onto liver, since it is most likely the same lesion a little out of
register; onto vessel it need not be (``carry_vessel_beside_tumor``): the carried lesion was
not drawn as tumor there, and in the arterial phase the network may draw an unenhanced
(darker) hepatic vein beside the lesion as tumor.

Some arterially enhancing lesions are missed in both phases: drawn as vessel in the arterial
scan, left as liver in the portal one. The radiologist's pattern finds them, arterial
hyperenhancement with washout (LI-RADS's major features of HCC). A vessel is drawn as vessel in
every contrast phase; an arterially enhancing lesion only in the arterial one. When
``washout_min_brighter_hu`` is set, a region the arterial scan drew as vessel and a portal or
late scan of the day (:data:`WASHOUT_PHASES`, registered) drew as liver, thicker than slivers
(:data:`WASHOUT_CORE_MM`), becomes tumor in both scans if it is that much brighter than the
liver around it in the arterial CT and ``washout_min_darker_hu`` or more darker than the liver
around it in the later CT.

The network also draws some unopacified hepatic veins of the arterial scan as tumor. When
``vein_min_brighter_hu`` is set, a tumor component of an arterial or a later scan whose place is
``vein_min_darker_hu`` or more darker than the liver in the arterial CT and ``vein_min_brighter_hu``
or more brighter in the later CT is a vein filling with contrast (:mod:`lvt_core.filling_veins`):
it becomes vessel, and nothing is carried from it.

Bile and cyst water take up no contrast. When ``fluid_max_hu`` is set, a tumor component whose
place reads at most that (median HU) in its own CT and in every other CT of the day is fluid
(:mod:`lvt_core.fluid_places`; the gallbladder drawn as a lesion): it becomes background, and
nothing is carried from it.

Only the decoded labels are carried (centres and masks), never what this step adds, so nothing
chains from phase to phase. ``min_peak`` 0 and ``carry_min_volume_ml`` 0 switch both parts off;
the numbers are decisions, chosen on validation phantoms and stored in the checkpoint
(``inference.cross_phase``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

import cc3d
import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from lvt_core.day_scans import (
    ENHANCING_PHASES,
    MIN_LIVER_FRACTION,
    VESSEL_MATCH_MM,
    VESSEL_SHELL_MM,
    WINDOW_MM,
    PhaseScan,
    arterial_later_pairs,
    carry_regions,
    liver_ring,
    nearest_centre_mm,
    padded,
    pair_transforms,
    touches_tumor,
    voxel_volume_ml,
)
from lvt_core.decision_meta import decisions_from_meta, decisions_to_meta
from lvt_core.filling_veins import FillingVein, filling_veins, tumor_components
from lvt_core.fluid_places import FluidPlace, fluid_places
from lvt_core.labels import BACKGROUND, LIVER, TUMOR, VESSEL
from lvt_core.washout import WashoutLesion, washout_lesions

NO_BRIGHTNESS_LIMIT_HU = 1000.0
"""``carry_max_brighter_hu`` that lets a carried lesion be any brighter than the liver."""


@dataclass(frozen=True)
class CrossPhaseRule:
    """When a candidate is confirmed by another phase (``min_peak`` 0: never), when a lesion
    is carried whole into a phase that shows it only in its CT (``carry_min_volume_ml`` 0: never),
    when a place neither phase drew as tumor is one by its enhancement pattern
    (``washout_min_brighter_hu`` 0: never), when a place drawn as tumor is a vein filling
    with contrast (``vein_min_brighter_hu`` 0: never), and when it holds fluid (``fluid_max_hu``
    0: never; water itself reads 0 HU, so a limit there would keep nothing real)."""

    min_peak: float = 0.0
    max_distance_mm: float = 10.0
    min_volume_ml: float = 0.1
    carry_min_volume_ml: float = 0.0
    carry_min_contrast_hu: float = 5.0
    carry_max_brighter_hu: float = NO_BRIGHTNESS_LIMIT_HU
    carry_vessel_min_brighter_hu: float = 0.0
    carry_vessel_max_shell_fraction: float = 0.1
    carry_vessel_min_one_sidedness: float = 0.0
    carry_vessel_beside_tumor: float = 0.0
    washout_min_brighter_hu: float = 0.0
    washout_min_darker_hu: float = 5.0
    washout_min_volume_ml: float = 0.3
    vein_min_darker_hu: float = 5.0
    vein_min_brighter_hu: float = 0.0
    fluid_max_hu: float = 0.0

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
    def removes_filling_veins(self) -> bool:
        return self.vein_min_brighter_hu > 0

    @property
    def removes_fluid(self) -> bool:
        return self.fluid_max_hu > 0

    @property
    def enabled(self) -> bool:
        return (self.confirms_candidates or self.carries_lesions or self.finds_washout or self.removes_filling_veins
                or self.removes_fluid)

    @classmethod
    def from_meta(cls, meta: dict | None) -> CrossPhaseRule:
        """The rule a checkpoint's ``inference.cross_phase`` describes (off when absent)."""
        return decisions_from_meta(cls, meta)

    def to_meta(self) -> dict:
        return decisions_to_meta(self)


def lesion_centres_mm(scan: PhaseScan) -> list[tuple[float, ...]]:
    """Physical centre (mm, LPS) of every tumor component of ``scan``."""
    components, count = tumor_components(scan)
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


def carried_centres(scans: Sequence[PhaseScan],
                    transforms: dict[tuple[int, int], sitk.Transform] | None = None) -> list[list[tuple[float, ...]]]:
    """Per scan, the lesion centres of the day's other scans carried onto it."""
    transforms = pair_transforms(scans) if transforms is None else transforms
    centres = [lesion_centres_mm(scan) for scan in scans]
    return [[transforms[source, target].TransformPoint(point)
             for source in range(len(scans)) if source != target for point in centres[source]]
            for target in range(len(scans))]


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
    voxel_ml = voxel_volume_ml(scan.image)
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
                                    float(mask.sum()) * voxel_ml, distance, nearest_centre_mm(scan.image, where)))
    return out


MEASURED_SHELL_VESSEL_FRACTION = 0.5
"""A place whose shell is this much vessel or more has a vessel running through it whatever the
rule: it is not measured at all (``carry_vessel_max_shell_fraction`` chooses below it)."""


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
    shell_vessel_one_sidedness: float = 1.0  # onto vessel: :func:`one_sidedness` of that shell's vessel
    beside_tumor: bool = False  # onto vessel: a lesion drawn in this scan lies beside (not on) the place
    source_component: int = 0  # its number among the source scan's tumor components
    source_veins: list[FillingVein] = field(default_factory=list)  # that component measured as a vein
    source_fluid: list[FluidPlace] = field(default_factory=list)  # that component measured as fluid

    def kept_by(self, rule: CrossPhaseRule) -> bool:
        if not rule.carries_lesions or self.source_volume_ml < rule.carry_min_volume_ml:
            return False
        if any(vein.kept_by(rule) for vein in self.source_veins):
            return False  # a vein in its own phase, no lesion to carry
        if any(place.kept_by(rule) for place in self.source_fluid):
            return False  # fluid, no lesion to carry
        if self.onto_vessel:
            return (rule.carries_onto_vessels and self.contrast_hu >= rule.carry_vessel_min_brighter_hu
                    and self.shell_vessel_fraction < rule.carry_vessel_max_shell_fraction
                    and self.shell_vessel_one_sidedness >= rule.carry_vessel_min_one_sidedness
                    and (not self.beside_tumor or rule.carry_vessel_beside_tumor > 0))
        return abs(self.contrast_hu) >= rule.carry_min_contrast_hu and self.contrast_hu <= rule.carry_max_brighter_hu


def one_sidedness(around: np.ndarray, footprint: np.ndarray, spacing_zyx: np.ndarray) -> float:
    """How much the voxels of ``around`` lie on one side of ``footprint`` (both within one
    window): the length of the mean unit vector from the footprint's centre to them, 1 when
    they all lie in one direction (a lesion against a branch, or fed by one), near 0 when they
    lie on opposite sides (a vessel running through the place); 1 when there are none."""
    where = np.argwhere(around) * spacing_zyx
    if not len(where):
        return 1.0
    directions = where - np.argwhere(footprint).mean(axis=0) * spacing_zyx
    lengths = np.linalg.norm(directions, axis=1, keepdims=True)
    return float(np.linalg.norm((directions / np.maximum(lengths, 1e-6)).mean(axis=0)))


def vessel_drawn_lesion(labels: np.ndarray, footprint: np.ndarray,
                        spacing_zyx: np.ndarray) -> tuple[np.ndarray, float, float] | None:
    """The voxels the network drew as vessel where a carried ``footprint`` marks a lesion
    (both cropped to a window reaching :data:`WINDOW_MM` past the footprint), and the share of
    the shell around the place (:data:`VESSEL_SHELL_MM` beyond :data:`VESSEL_MATCH_MM`) drawn
    as vessel and how one-sided that vessel is (:func:`one_sidedness`); None when the place has
    no shell in the window or a vessel surely runs through it
    (:data:`MEASURED_SHELL_VESSEL_FRACTION`). A lesion drawn as vessel is a closed region,
    met by a vessel or two at most, so little of its shell is vessel; a vessel as thick as the
    footprint crossing it fills much of it. Where the rule draws the line is a decision
    (``carry_vessel_max_shell_fraction``): a lesion lying against a thick branch has more of
    its shell drawn as vessel, but on one side of it, where a vessel running through leaves on
    two (``carry_vessel_min_one_sidedness``)."""
    vessel = labels == VESSEL
    distance = ndimage.distance_transform_edt(~footprint, sampling=spacing_zyx)
    shell = (distance > VESSEL_MATCH_MM) & (distance <= VESSEL_MATCH_MM + VESSEL_SHELL_MM)
    if not shell.any():
        return None
    fraction = np.count_nonzero(vessel & shell) / np.count_nonzero(shell)
    if fraction >= MEASURED_SHELL_VESSEL_FRACTION:
        return None
    return (vessel & (distance <= VESSEL_MATCH_MM), float(fraction),
            one_sidedness(vessel & shell, footprint, spacing_zyx))


def carried_lesions(target: PhaseScan, source: PhaseScan, transform: sitk.Transform) -> list[CarriedLesion]:
    """Every lesion of ``source`` carried onto ``target`` (``transform`` maps source points to
    target points) that lands mostly on liver touching none of ``target``'s lesions, or, in a
    phase of :data:`ENHANCING_PHASES`, mostly on vessel where a vessel-drawn region matches it
    (:func:`vessel_drawn_lesion`) and none of ``target``'s lesions lies on it, with the contrast
    ``target``'s CT shows there."""
    components, count = tumor_components(source)
    if not count:
        return []
    volumes = np.bincount(components.ravel())[1:] * voxel_volume_ml(source.image)
    carried = carry_regions(components, source.image,
                            target.image, transform)
    hu = sitk.GetArrayViewFromImage(target.image)
    spacing = np.array(target.image.GetSpacing()[::-1])
    pad = np.ceil(WINDOW_MM / spacing).astype(int)
    vessel_searched = target.phase in ENHANCING_PHASES
    out = []
    for index, box in enumerate(ndimage.find_objects(carried), start=1):
        if box is None:
            continue
        window = padded(box, pad, carried.shape)
        footprint = carried[window] == index
        labels = target.labels[window]
        beside = touches_tumor(labels, footprint, spacing)
        mask = footprint & (labels == LIVER)
        onto_vessel = mask.sum() < MIN_LIVER_FRACTION * footprint.sum()
        shell_fraction, sidedness = 0.0, 1.0
        if not onto_vessel and beside:
            continue
        if onto_vessel:
            if not vessel_searched or np.count_nonzero(footprint & (labels == VESSEL)) < MIN_LIVER_FRACTION * footprint.sum():
                continue
            if np.any(labels[footprint] == TUMOR):
                continue
            drawn = vessel_drawn_lesion(labels, footprint, spacing)
            if drawn is None:
                continue
            mask, shell_fraction, sidedness = drawn
        ring = liver_ring(labels, mask if onto_vessel else footprint, spacing)
        contrast = float(hu[window][mask].mean() - hu[window][ring].mean()) if ring.any() else float("nan")
        where = np.argwhere(mask) + [s.start for s in window]
        out.append(CarriedLesion(window, mask, float(volumes[index - 1]), contrast,
                                 nearest_centre_mm(target.image, where), onto_vessel, shell_fraction,
                                 sidedness, onto_vessel and beside, index))
    return out



FromOtherPhases = CarriedLesion | WashoutLesion
"""What the day's other scans bring to a scan whole: a lesion carried, or a washout half."""
Addition = DroppedCandidate | FromOtherPhases
"""Anything the step adds to a scan's labels."""


class DayReading(NamedTuple):
    """One scan after its day's reading: its labels, the lesions added to them, and the fluid
    made background (kept so a follow-up can say where a lesion may have turned cystic)."""

    labels: np.ndarray
    added: list[Addition]
    fluid: list[FluidPlace]


def apply_rule(
    scan: PhaseScan, candidates: Sequence[DroppedCandidate], carried: Sequence[FromOtherPhases], rule: CrossPhaseRule,
    veins: Sequence[FillingVein] = (), fluid: Sequence[FluidPlace] = (),
) -> DayReading:
    """``scan``'s labels with what ``rule`` keeps of its confirmable candidates and of what the
    other phases bring, those kept, and the fluid made background: the veins it tells made
    vessel and the fluid made background first, then the confirmed
    candidates, then each carried lesion or washout half that does not overlap what is already
    painted (two phases may carry the same lesion). The labels are ``scan.labels`` itself when
    the rule keeps nothing."""
    kept: list[Addition] = [c for c in candidates if c.kept_by(rule)]
    carried_kept = [lesion for lesion in carried if lesion.kept_by(rule)]
    veins_kept = [vein for vein in veins if vein.kept_by(rule)]
    fluid_kept = [place for place in fluid if place.kept_by(rule)]
    if not (kept or carried_kept or veins_kept or fluid_kept):
        return DayReading(scan.labels, [], [])
    labels = scan.labels.copy()
    for vein in veins_kept:
        labels[vein.window][vein.mask] = VESSEL
    for place in fluid_kept:
        labels[place.window][place.mask] = BACKGROUND
    for candidate in kept:
        labels[candidate.window][candidate.mask] = TUMOR
    for lesion in carried_kept:
        if not (labels[lesion.window][lesion.mask] == TUMOR).any():
            labels[lesion.window][lesion.mask] = TUMOR
            kept.append(lesion)
    return DayReading(labels, kept, fluid_kept)


MeasuredScan = tuple[list[DroppedCandidate], list[FromOtherPhases], list[FillingVein], list[FluidPlace]]
"""What one scan of a day offers a rule: its dropped candidates, what the other scans bring it,
and its tumor components measured as veins and as fluid."""


def measured_across_phases(
    scans: Sequence[PhaseScan], confirm: bool = True, carry: bool = True, washout: bool = True, veins: bool = True,
    fluid: bool = True,
) -> list[MeasuredScan]:
    """Per scan of one day, (``confirm``) its dropped candidates measured against the other
    scans' carried centres, (``carry``) the other scans' lesions carried onto it, (``washout``)
    its halves of the lesions an arterial and a later scan show by their enhancement pattern,
    and its tumor components measured as filling veins (``veins``) and as fluid (``fluid``):
    everything a rule chooses from, computed once. A carried lesion knows how its source
    component measured as a vein and as fluid."""
    transforms = pair_transforms(scans)
    centres = carried_centres(scans, transforms) if confirm else [[] for _ in scans]
    measured_veins = filling_veins(scans, transforms) if veins else [[] for _ in scans]
    measured_fluid = fluid_places(scans, transforms) if fluid else [[] for _ in scans]
    brought: list[list[FromOtherPhases]] = [[] for _ in scans]
    for target in range(len(scans)):
        for source in range(len(scans)):
            if source == target or not carry:
                continue
            for lesion in carried_lesions(scans[target], scans[source], transforms[source, target]):
                lesion.source_veins = [v for v in measured_veins[source] if v.component == lesion.source_component]
                lesion.source_fluid = [f for f in measured_fluid[source] if f.component == lesion.source_component]
                brought[target].append(lesion)
    for a, later in arterial_later_pairs(scans) if washout else []:
        for arterial_half, later_half in washout_lesions(scans[a], scans[later], transforms[a, later]):
            brought[a].append(arterial_half)
            brought[later].append(later_half)
    return [(dropped_candidates(scans[target], points), brought[target], measured_veins[target],
             measured_fluid[target]) for target, points in enumerate(centres)]


def confirm_across_phases(scans: Sequence[PhaseScan], rule: CrossPhaseRule) -> list[DayReading]:
    """Per scan of one day (any order, two or more phases), its labels with what the other
    scans confirm or carry into it, those additions and the fluid made background; every
    scan's labels unchanged when the rule is off or the day has one scan."""
    if not rule.enabled or len(scans) < 2:
        return [DayReading(scan.labels, [], []) for scan in scans]
    measured = measured_across_phases(scans, rule.confirms_candidates, rule.carries_lesions, rule.finds_washout,
                                      rule.removes_filling_veins, rule.removes_fluid)
    return [apply_rule(scan, candidates, carried, rule, veins, fluid)
            for scan, (candidates, carried, veins, fluid) in zip(scans, measured, strict=True)]
