"""Treatment response: RECIST 1.1 on target diameters, and a volumetric analogue.

Core API (plain numbers, so model tracks and radiologist reports use the same rules)::

    recist_response(target_diameters, new_lesions)

``target_diameters[t][k]`` is the longest diameter of target ``k`` at timepoint ``t`` (the same
targets in the same order at every timepoint; 0 when it has disappeared), timepoint 0 is the
baseline, and ``new_lesions[t]`` says whether an unequivocal new lesion appeared at ``t``.

Rules (RECIST 1.1, liver only): targets are lesions >= 10 mm, at most 2 per organ, the largest
first. At each follow-up, with the nadir the smallest sum at any earlier timepoint (baseline
included): PD when the sum is >= 20 % and >= 5 mm above the nadir, when a target reappears
after a CR, or when a new lesion appears; CR when every target has disappeared; PR when the sum
is >= 30 % below baseline; SD otherwise. A threshold met exactly counts (sums of 0.1 mm values
are compared without float noise). A target missed at a study but seen again later (a track
bridged over the gap, a label measured again) was not assessed there: that study is NE unless
progression shows anyway (a new lesion, or the assessed targets alone past the PD threshold),
and it does not set the nadir. Counted as 0 mm it gave a false PR, then a false PD against it.
Without measurable disease at baseline the answer is NE (or PD when a new lesion appears).
Non-target lesions and lymph-node rules are out of scope.

The volumetric response applies the same logic to total tumor volume, with thresholds that match
the diameter ones for a sphere: PR at -65 % (0.7³) and PD at +73 % (1.2³) over the nadir.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import date
from typing import Any, Literal, TypeVar

from lvt_core.agreement import RadiologistMeasurement

Response = Literal["BL", "CR", "PR", "SD", "PD", "NE"]
K = TypeVar("K", bound=Hashable)


@dataclass(frozen=True)
class RecistConfig:
    """RECIST 1.1 thresholds (defaults are the standard's)."""

    min_target_mm: float = 10.0
    max_targets: int = 2
    pr_pct: float = -30.0
    pd_pct: float = 20.0
    pd_abs_mm: float = 5.0


@dataclass(frozen=True)
class ResponseAssessment:
    """One timepoint's assessment; ``value`` is a diameter sum (mm) or a volume (ml)."""

    timepoint: int
    value: float
    baseline: float
    nadir: float
    change_from_baseline_pct: float | None
    change_from_nadir_pct: float | None
    new_lesion: bool
    response: Response

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def select_targets(diameters: Mapping[K, float], config: RecistConfig | None = None) -> list[K]:
    """The largest lesions >= ``min_target_mm``, at most ``max_targets`` (ties by key order)."""
    config = config or RecistConfig()
    eligible = [(d, k) for k, d in diameters.items() if d >= config.min_target_mm]
    eligible.sort(key=lambda item: -item[0])
    return [k for _, k in eligible[: config.max_targets]]


def _pct(value: float, reference: float) -> float | None:
    return (value - reference) / reference * 100.0 if reference > 0 else None


ROUNDING = 1e-9
"""Float noise: 23.0 → 16.1 mm is −30.000000000000004 %, 14.3 + 14.4 mm is 28.700000000000003."""


def _at_least(value: float, bound: float) -> bool:
    """``value >= bound`` for numbers written to 0.1 mm: a threshold met exactly counts."""
    return value >= bound - ROUNDING * max(1.0, abs(bound))


def _assess(
    values: Sequence[float],
    new_lesions: Sequence[bool] | None,
    pr_pct: float,
    pd_pct: float,
    pd_abs: float,
    assessed: Sequence[bool] | None = None,
) -> list[ResponseAssessment]:
    if not values:
        return []
    new = list(new_lesions) if new_lesions is not None else [False] * len(values)
    whole = list(assessed) if assessed is not None else [True] * len(values)
    if len(new) != len(values) or len(whole) != len(values):
        raise ValueError("new_lesions and assessed must have one flag per timepoint")
    baseline = float(values[0])
    out = [ResponseAssessment(0, baseline, baseline, baseline, 0.0, 0.0, False, "BL" if baseline > 0 else "NE")]
    nadir = baseline
    for t in range(1, len(values)):
        value = float(values[t])
        from_nadir = _pct(value, nadir)
        from_baseline = _pct(value, baseline)
        grew = _at_least(value - nadir, pd_abs) and _at_least(value, nadir * (1.0 + pd_pct / 100.0))
        returned = nadir <= 0.0 < value  # after a CR, any regrowth of a target is progression
        if new[t] or (baseline > 0 and (grew or returned)):
            response: Response = "PD"
        elif not whole[t]:  # a target not assessed: no response, and no nadir from a partial sum
            out.append(ResponseAssessment(t, value, baseline, nadir, from_baseline, from_nadir, False, "NE"))
            continue
        elif baseline <= 0:
            response = "NE"
        elif value == 0.0:
            response = "CR"
        elif from_baseline is not None and _at_least(-from_baseline, -pr_pct):
            response = "PR"
        else:
            response = "SD"
        out.append(ResponseAssessment(t, value, baseline, nadir, from_baseline, from_nadir, bool(new[t]), response))
        nadir = min(nadir, value)
    return out


def recist_response(
    target_diameters: Sequence[Sequence[float]],
    new_lesions: Sequence[bool] | None = None,
    config: RecistConfig | None = None,
    assessed: Sequence[bool] | None = None,
) -> list[ResponseAssessment]:
    """RECIST 1.1 per timepoint from the targets' diameters (see the module docstring);
    ``assessed[t]`` False says a target was not assessed at ``t`` (default: all were)."""
    config = config or RecistConfig()
    sums = [float(sum(diameters)) for diameters in target_diameters]
    return _assess(sums, new_lesions, config.pr_pct, config.pd_pct, config.pd_abs_mm, assessed)


def _targets_assessed(present: Sequence[Sequence[bool]]) -> list[list[bool]]:
    """Per timepoint and target, whether it was assessed: ``present[t][k]`` says target ``k``
    was seen at ``t``; one unseen at ``t`` but seen later was missed there, not gone."""
    n = len(present)
    return [
        [present[t][k] or not any(present[u][k] for u in range(t + 1, n)) for k in range(len(present[t]))]
        for t in range(n)
    ]


def volumetric_response(
    total_volumes_ml: Sequence[float],
    new_lesions: Sequence[bool] | None = None,
    pr_pct: float = -65.0,
    pd_pct: float = 73.0,
    pd_abs_ml: float = 0.0,
) -> list[ResponseAssessment]:
    """Volumetric analogue of RECIST on total tumor volume per timepoint."""
    return _assess([float(v) for v in total_volumes_ml], new_lesions, pr_pct, pd_pct, pd_abs_ml)


NEW_COUNTED = "counted"
NEW_AWAITING = "awaits confirmation"
NEW_NOT_SEEN_AGAIN = "not seen again"


def new_lesion_statuses(report: Mapping[str, Any], t: int) -> list[tuple[Any, str]]:
    """``(lesion id, status)`` of each new lesion at timepoint ``t`` of a report: counted, or
    (with ``confirm_new_lesions``) awaiting the next study, or not seen again and not counted."""
    return ([(i, NEW_COUNTED) for i in report["new_lesion_ids"][t]]
            + [(i, NEW_AWAITING) for i in report["awaiting_confirmation_ids"][t]]
            + [(i, NEW_NOT_SEEN_AGAIN) for i in report["not_seen_again_ids"][t]])


def describe_new_lesions(entries: Sequence[Mapping[str, str]]) -> str:
    """Stored new lesions (``{"lesion", "status"}``) as one line, grouped by status: "track 5;
    awaits confirmation: track 7; not seen again, not counted: track 4, track 6"; "no" for none."""
    groups = {status: [e["lesion"] for e in entries if e["status"] == status]
              for status in (NEW_COUNTED, NEW_AWAITING, NEW_NOT_SEEN_AGAIN)}
    parts = [", ".join(groups[NEW_COUNTED])] if groups[NEW_COUNTED] else []
    if groups[NEW_AWAITING]:
        parts.append(f"{NEW_AWAITING}: " + ", ".join(groups[NEW_AWAITING]))
    if groups[NEW_NOT_SEEN_AGAIN]:
        parts.append(f"{NEW_NOT_SEEN_AGAIN}, not counted: " + ", ".join(groups[NEW_NOT_SEEN_AGAIN]))
    return "; ".join(parts) or "no"


def recist_from_tracks(
    result: Any,
    config: RecistConfig | None = None,
    new_lesion_min_diameter_mm: float = 0.0,
    confirm_new_lesions: bool = False,
) -> dict[str, Any]:
    """RECIST and volumetric response of a :class:`lvt_core.tracking.TrackingResult`.

    Targets are chosen among baseline tracks whose lesion lies whole in the scan (one the
    scan's edge cuts is measured short). A target that split counts its fragments (and
    theirs, when a fragment split again); a target
    that merged into a non-target track passes its diameter on to that track (RECIST's rule for
    coalescing lesions); tracks first seen after baseline (not split from another) are new
    lesions when at least ``new_lesion_min_diameter_mm`` across. ``target_assessed[t][k]`` is
    False where target ``k`` was not drawn at ``t`` but is seen again later: a miss, not 0 mm
    gone (``assessed[t]``: all of them were); ``new_lesion_ids[t]`` names the new tracks.

    With ``confirm_new_lesions`` a new lesion must be unequivocal, as RECIST 1.1 asks (4.3.2):
    one seen again at a later study (or merged into another lesion) counts from the study it
    first appeared at; one drawn at a single study and not at the later ones is equivocal and
    does not count (``not_seen_again_ids``); one first drawn at the last study awaits the next
    (``awaiting_confirmation_ids``), which dates the progression back to it when it confirms it.
    """
    config = config or RecistConfig()
    diameters = {
        (t, lesion.id): lesion.longest_axial_diameter_mm
        for t, lesions in enumerate(result.lesions)
        for lesion in lesions
    }
    volumes = {(t, lesion.id): lesion.volume_ml for t, lesions in enumerate(result.lesions) for lesion in lesions}
    tracks = {track.track_id: track for track in result.tracks}
    n = len(result.lesions)
    cut = {(0, lesion.id) for lesion in result.lesions[0] if lesion.cut_by_scan_edge} if n else set()
    baseline = {
        tid: diameters[(0, lid)]
        for tid, track in tracks.items()
        if (lid := track.lesion_at(0)) is not None and (0, lid) not in cut
    }
    targets = select_targets(baseline, config)
    children: dict[int, list[int]] = defaultdict(list)
    for track in tracks.values():
        if track.split_from is not None:
            children[track.split_from].append(track.track_id)

    def lineage(tid: int) -> list[int]:
        """``tid`` and every fragment split from it, from its fragments, and so on."""
        found, todo = [], [tid]
        while todo:
            current = todo.pop()
            if current not in found:
                found.append(current)
                todo.extend(children.get(current, []))
        return found

    def diameter(tid: int, t: int) -> float:
        lid = tracks[tid].lesion_at(t)
        return diameters[(t, lid)] if lid is not None else 0.0

    per_timepoint: list[list[float]] = []
    present: list[list[bool]] = []
    for t in range(n):
        counted: set[int] = set()
        values, seen = [], []
        for tid in targets:
            group = lineage(tid)
            merged_into = tracks[tid].merged_into
            if merged_into is not None and merged_into not in targets and tracks[tid].lesion_at(t) is None:
                group.extend(g for g in lineage(merged_into) if g not in group)
            values.append(sum(diameter(g, t) for g in group if g not in counted))
            seen.append(any(tracks[g].lesion_at(t) is not None for g in group))
            counted.update(group)
        per_timepoint.append(values)
        present.append(seen)
    target_assessed = _targets_assessed(present)
    assessed = [all(row) for row in target_assessed]
    new_ids: list[list[int]] = [[] for _ in range(n)]
    awaiting: list[list[int]] = [[] for _ in range(n)]
    not_seen_again: list[list[int]] = [[] for _ in range(n)]
    for track in tracks.values():
        t0, lid = track.members[0]
        if t0 == 0 or track.split_from is not None or diameters[(t0, lid)] < new_lesion_min_diameter_mm:
            continue
        seen_again = track.merged_into is not None or any(t > t0 for t, _ in track.members)
        if not confirm_new_lesions or seen_again:
            new_ids[t0].append(track.track_id)
        elif t0 == n - 1:
            awaiting[t0].append(track.track_id)
        else:
            not_seen_again[t0].append(track.track_id)
    new = [bool(ids) for ids in new_ids]
    totals = [
        sum(v for key, v in volumes.items() if key[0] == tp and key not in result.excluded)
        for tp in range(n)
    ]
    return {
        "targets": targets,
        "target_diameters_mm": per_timepoint,
        "target_assessed": target_assessed,
        "new_lesions": new,
        "new_lesion_ids": [sorted(ids) for ids in new_ids],
        "awaiting_confirmation_ids": [sorted(ids) for ids in awaiting],
        "not_seen_again_ids": [sorted(ids) for ids in not_seen_again],
        "assessed": assessed,
        "recist": [a.to_dict() for a in recist_response(per_timepoint, new, config, assessed)],
        "total_volume_ml": totals,
        "volumetric": [a.to_dict() for a in volumetric_response(totals, new)],
    }


def recist_from_measurements(
    measurements: Sequence[RadiologistMeasurement], config: RecistConfig | None = None
) -> dict[str, Any]:
    """RECIST on a radiologist's measurements of one patient, studies ordered by date.

    A lesion is identified by the radiologist's ``lesion`` label; a target with no measurement at
    a later study counts as disappeared (0 mm), or as not assessed there when it is measured
    again afterwards. ``new_lesion`` flags mark new lesions (``new_lesion_ids[t]``: their labels). Undated studies come first, as
    every date-ordered list of the store puts them (and the model's timepoints).
    """
    config = config or RecistConfig()
    studies: dict[str, date | None] = {}
    for m in measurements:
        studies.setdefault(m.study_id, m.study_date)
    order = sorted(studies, key=lambda s: (studies[s] or date.min, _numeric_first(s)))
    if not order:
        return {"studies": [], "targets": [], "recist": []}
    table: dict[str, dict[str, float]] = defaultdict(dict)
    new_ids: list[list[str]] = [[] for _ in order]
    for m in measurements:
        t = order.index(m.study_id)
        label = m.lesion or f"unlabelled {t}:{len(table[m.study_id])}"
        table[m.study_id][label] = m.diameter_mm
        if m.new_lesion and t > 0:
            new_ids[t].append(label)
    new = [bool(ids) for ids in new_ids]
    targets = select_targets(table[order[0]], config)
    per_timepoint = [[table[s].get(label, 0.0) for label in targets] for s in order]
    target_assessed = _targets_assessed([[label in table[s] for label in targets] for s in order])
    assessed = [all(row) for row in target_assessed]
    return {
        "studies": order,
        "targets": targets,
        "target_diameters_mm": per_timepoint,
        "target_assessed": target_assessed,
        "new_lesions": new,
        "new_lesion_ids": new_ids,
        # a reader's new-lesion flag is the reader's judgement: it counts at once
        "awaiting_confirmation_ids": [[] for _ in order],
        "not_seen_again_ids": [[] for _ in order],
        "assessed": assessed,
        "recist": [a.to_dict() for a in recist_response(per_timepoint, new, config, assessed)],
    }


def _numeric_first(study_id: str) -> tuple[int, str]:
    """Study ids are row numbers as text: "9" before "10", as the database orders them."""
    return (int(study_id), "") if study_id.isdigit() else (1 << 62, study_id)
