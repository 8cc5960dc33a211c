"""Model versus radiologist: linking measurements to tracks, agreement, earlier detection.

Pure functions on plain records (paper Figures 2 and 3); the store turns its rows into these.

- :func:`link_measurements` links the radiologist's measurements of a study to its model
  lesions one to one (a reader's two lesions are never one model lesion): by the location a
  measurement gives (nearest centroids within a tolerance; a location with no model lesion
  near it stays unlinked: the model missed it), else by its slice (lesions spanning that axial
  slice, closest in size), else by size alone (closest longest axial diameter, within a
  relative tolerance). Each step is an optimal assignment (Hungarian) over what is left. A
  reader's lesion label names one lesion across studies: a label linked to a track (by location
  or slice at any study, else by size at an earlier one) is linked by size only to that track,
  and its track is given to no other label of that reader.
- :func:`agreement_report` gives mean absolute difference, Bland–Altman bias and 95 % limits of
  agreement (differences are model − radiologist) and Pearson r, per patient and for the cohort.
- :func:`earlier_detection` lists tracks the model saw before the radiologist first measured
  them (the first measurement of the label, at a study that reader reported; never on a size
  link alone), with the lead time in days and in months (days / 30.4375).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import date
from typing import Any, Literal

import numpy as np
from scipy.optimize import linear_sum_assignment

DAYS_PER_MONTH = 365.25 / 12


@dataclass(frozen=True)
class RadiologistMeasurement:
    """One diameter from a report; ``lesion`` is the radiologist's own label, if any."""

    patient_id: str
    study_id: str
    study_date: date | None
    diameter_mm: float
    slice_index: int | None = None
    location_mm: tuple[float, float, float] | None = None
    lesion: str | None = None
    new_lesion: bool = False
    reader: str = ""


@dataclass(frozen=True)
class ModelLesion:
    """One model lesion of one study, with the track it belongs to."""

    patient_id: str
    study_id: str
    study_date: date | None
    track_id: int
    lesion_id: int
    diameter_mm: float
    centroid_mm: tuple[float, float, float]
    z_range: tuple[int, int] | None = None


LinkMethod = Literal["location", "slice", "size"]


@dataclass(frozen=True)
class MeasurementLink:
    """A measurement and the model lesion it was linked to (``None`` when nothing fits)."""

    measurement: RadiologistMeasurement
    lesion: ModelLesion | None
    method: LinkMethod | None

    @property
    def track_id(self) -> int | None:
        return self.lesion.track_id if self.lesion is not None else None


def model_lesions_from_tracking(
    patient_id: str, study_ids: Sequence[str], result: Any
) -> list[ModelLesion]:
    """Flatten a :class:`lvt_core.tracking.TrackingResult` into :class:`ModelLesion` records."""
    owner = {key: track.track_id for track in result.tracks for key in track.members}
    records = []
    for t, lesions in enumerate(result.lesions):
        for lesion in lesions:
            track_id = owner.get((t, lesion.id))
            if track_id is None:
                continue
            records.append(
                ModelLesion(
                    patient_id=patient_id,
                    study_id=study_ids[t],
                    study_date=result.dates[t],
                    track_id=track_id,
                    lesion_id=lesion.id,
                    diameter_mm=lesion.longest_axial_diameter_mm,
                    centroid_mm=tuple(lesion.centroid_mm),
                    z_range=(lesion.bbox_index[2], lesion.bbox_index[5]),
                )
            )
    return records


@dataclass(frozen=True)
class _Tolerances:
    location_mm: float
    slices: int
    size_pct: float


def link_measurements(
    measurements: Sequence[RadiologistMeasurement],
    lesions: Sequence[ModelLesion],
    location_tolerance_mm: float = 20.0,
    slice_tolerance: int = 1,
    size_tolerance_pct: float = 50.0,
) -> list[MeasurementLink]:
    """Link each reader's measurements of a study to its lesions one to one, each label of the
    reader keeping to its track across studies (module docstring).

    The links come back in the order of ``measurements`` and do not depend on it, so the
    follow-up page and the stored links agree whatever order each reads its rows in.
    """
    by_study: dict[tuple[str, str], list[ModelLesion]] = defaultdict(list)
    for lesion in lesions:
        by_study[(lesion.patient_id, lesion.study_id)].append(lesion)
    for found_in_study in by_study.values():
        found_in_study.sort(key=lambda c: (c.track_id, c.lesion_id))
    readers: dict[tuple[str, str], list[int]] = defaultdict(list)
    for index, m in enumerate(measurements):
        readers[(m.patient_id, m.reader)].append(index)
    tolerances = _Tolerances(location_tolerance_mm, slice_tolerance, size_tolerance_pct)
    found: dict[int, tuple[ModelLesion, LinkMethod]] = {}
    for (patient, _reader), indices in readers.items():
        studies = _studies_in_order(measurements, indices)
        candidates = {study: by_study.get((patient, study), []) for study in studies}
        found.update(_link_reader(measurements, studies, candidates, tolerances))
    return [MeasurementLink(m, *found.get(i, (None, None))) for i, m in enumerate(measurements)]


def _studies_in_order(
    measurements: Sequence[RadiologistMeasurement], indices: list[int]
) -> dict[str, list[int]]:
    """Study id → its measurement indices, oldest study first (undated last), each study's
    measurements in a fixed order (label, size), so that ties fall the same way every time."""
    studies: dict[str, list[int]] = defaultdict(list)
    for i in indices:
        studies[measurements[i].study_id].append(i)

    def when(study: str) -> tuple[bool, date, str]:
        day = measurements[studies[study][0]].study_date
        return (day is None, day or date.min, study)

    def order(i: int) -> tuple[str, float, int]:
        m = measurements[i]
        return (m.lesion or "", m.diameter_mm, i)

    return {study: sorted(studies[study], key=order) for study in sorted(studies, key=when)}


def _link_reader(
    measurements: Sequence[RadiologistMeasurement], studies: dict[str, list[int]],
    candidates: dict[str, list[ModelLesion]], tolerances: _Tolerances,
) -> dict[int, tuple[ModelLesion, LinkMethod]]:
    """One reader's measurements of one patient → (lesion, method).

    Location and slice links come first at every study; they tie each label to its tracks.
    Size links then go study by study, oldest first: a label tied to a track is linked only to
    that track, a track tied to a label is given to no other label, and each size link ties
    its label in turn. A label names one lesion across studies: linked per study by size alone,
    two lesions of like size swapped labels at one study, and the swap read as a lesion the
    radiologist first measured later than they had.
    """
    links: dict[int, tuple[ModelLesion, LinkMethod]] = {}
    for study, indices in studies.items():
        links.update(_link_study(measurements, indices, candidates[study], tolerances,
                                 ("location", "slice"), {}))
    ties = _LabelTracks()
    for i, (lesion, _method) in links.items():
        ties.add(measurements[i].lesion, lesion.track_id)
    for study, indices in studies.items():
        sized = _link_study(measurements, indices, candidates[study], tolerances, ("size",),
                            links, ties.allows)
        for i, (lesion, _method) in sized.items():
            ties.add(measurements[i].lesion, lesion.track_id)
        links.update(sized)
    return links


class _LabelTracks:
    """Which tracks each label of one reader was linked to, and the reverse."""

    def __init__(self) -> None:
        self.tracks: dict[str, set[int]] = defaultdict(set)
        self.labels: dict[int, set[str]] = defaultdict(set)

    def add(self, label: str | None, track: int) -> None:
        if label:
            self.tracks[label].add(track)
            self.labels[track].add(label)

    def allows(self, m: RadiologistMeasurement, c: ModelLesion) -> bool:
        """A label keeps to its tracks; a track tied to other labels is not given to it.
        Unlabelled measurements are linked study by study, as before labels counted."""
        if not m.lesion:
            return True
        if self.tracks.get(m.lesion):
            return c.track_id in self.tracks[m.lesion]
        return not self.labels.get(c.track_id)


def _link_study(
    measurements: Sequence[RadiologistMeasurement], indices: list[int],
    candidates: list[ModelLesion], tolerances: _Tolerances, methods: tuple[LinkMethod, ...],
    linked: dict[int, tuple[ModelLesion, LinkMethod]],
    allows: Callable[[RadiologistMeasurement, ModelLesion], bool] | None = None,
) -> dict[int, tuple[ModelLesion, LinkMethod]]:
    """One reader's measurements of one study → (lesion, method) by ``methods`` in turn, each
    lesion used once, none that ``linked`` already holds (``allows`` may forbid more pairs)."""
    links: dict[int, tuple[ModelLesion, LinkMethod]] = {}
    used = {id(lesion) for i, (lesion, _m) in linked.items() if i in indices}

    def assign(method: LinkMethod, cost: Any) -> None:
        """Link the still unlinked measurements to unused lesions by least total ``cost``
        (``cost(m, c)`` is None where the pair may not be linked)."""
        rows = [i for i in indices
                if i not in links and i not in linked and _eligible(method, measurements[i])]
        taken = used | {id(lesion) for lesion, _ in links.values()}
        cols = [c for c in candidates if id(c) not in taken]
        if not rows or not cols:
            return
        costs = np.full((len(rows), len(cols)), np.inf)
        for r, i in enumerate(rows):
            for k, c in enumerate(cols):
                value = cost(measurements[i], c) if allows is None or allows(measurements[i], c) else None
                if value is not None:
                    costs[r, k] = value
        finite = np.isfinite(costs)
        if not finite.any():
            return
        big = float(costs[finite].max()) * 10 + 1e6  # never chosen over an allowed pair
        picked_rows, picked_cols = linear_sum_assignment(np.where(finite, costs, big))
        for r, k in zip(picked_rows, picked_cols, strict=True):
            if finite[r, k]:
                links[rows[r]] = (cols[k], method)

    def by_location(m: RadiologistMeasurement, c: ModelLesion) -> float | None:
        distance = float(np.linalg.norm(np.asarray(c.centroid_mm) - np.asarray(m.location_mm, dtype=float)))
        # a point clicked anywhere on a large lesion lies up to its radius from the centroid
        return distance if distance <= max(tolerances.location_mm, c.diameter_mm / 2) else None

    def by_slice(m: RadiologistMeasurement, c: ModelLesion) -> float | None:
        spans = c.z_range is not None and c.z_range[0] - tolerances.slices <= m.slice_index <= c.z_range[1] + tolerances.slices  # type: ignore[operator]
        return abs(c.diameter_mm - m.diameter_mm) if spans else None

    def by_size(m: RadiologistMeasurement, c: ModelLesion) -> float | None:
        difference = abs(c.diameter_mm - m.diameter_mm)
        return difference if difference <= tolerances.size_pct / 100.0 * m.diameter_mm else None

    costs = {"location": by_location, "slice": by_slice, "size": by_size}
    for method in methods:
        assign(method, costs[method])
    return links


def _eligible(method: LinkMethod, m: RadiologistMeasurement) -> bool:
    """A measurement that gives a location is linked by it or not at all."""
    if method == "location":
        return m.location_mm is not None
    if method == "slice":
        return m.location_mm is None and m.slice_index is not None
    return m.location_mm is None


@dataclass(frozen=True)
class AgreementStats:
    """Agreement of paired diameters; differences are model − radiologist, in mm."""

    n: int
    mean_abs_diff_mm: float | None
    bias_mm: float | None
    sd_diff_mm: float | None
    loa_low_mm: float | None
    loa_high_mm: float | None
    pearson_r: float | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def agreement_stats(model_mm: Sequence[float], radiologist_mm: Sequence[float]) -> AgreementStats:
    """Mean absolute difference, Bland–Altman bias ± 1.96 SD (sample SD), Pearson r.

    Values that need more pairs (SD, limits, r with one pair, r with no spread) are ``None``.
    """
    a = np.asarray(model_mm, dtype=float)
    b = np.asarray(radiologist_mm, dtype=float)
    if a.shape != b.shape:
        raise ValueError("model and radiologist values differ in number")
    n = int(a.size)
    if n == 0:
        return AgreementStats(0, None, None, None, None, None, None)
    diff = a - b
    bias = float(diff.mean())
    sd = float(diff.std(ddof=1)) if n > 1 else None
    r = None
    if n > 1 and a.std() > 0 and b.std() > 0:
        r = float(np.corrcoef(a, b)[0, 1])
    return AgreementStats(
        n=n,
        mean_abs_diff_mm=float(np.abs(diff).mean()),
        bias_mm=bias,
        sd_diff_mm=sd,
        loa_low_mm=bias - 1.96 * sd if sd is not None else None,
        loa_high_mm=bias + 1.96 * sd if sd is not None else None,
        pearson_r=r,
    )


def agreement_report(links: Sequence[MeasurementLink]) -> dict[str, Any]:
    """Agreement of linked pairs for the cohort and for each patient, plus the unlinked count."""
    linked = [lk for lk in links if lk.lesion is not None]
    per_patient: dict[str, list[MeasurementLink]] = defaultdict(list)
    for lk in linked:
        per_patient[lk.measurement.patient_id].append(lk)

    def stats(items: Sequence[MeasurementLink]) -> dict[str, Any]:
        return agreement_stats(
            [lk.lesion.diameter_mm for lk in items if lk.lesion is not None],
            [lk.measurement.diameter_mm for lk in items],
        ).to_dict()

    return {
        "difference": "model - radiologist, mm",
        "cohort": stats(linked),
        "patients": {pid: stats(items) for pid, items in sorted(per_patient.items())},
        "unlinked_measurements": len(links) - len(linked),
    }


@dataclass(frozen=True)
class EarlierDetection:
    """A track the model saw before the radiologist's first measurement of it."""

    patient_id: str
    track_id: int
    model_first_study: str
    model_first_date: date
    radiologist_first_date: date
    lead_months: float
    lead_days: int

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["model_first_date"] = self.model_first_date.isoformat()
        out["radiologist_first_date"] = self.radiologist_first_date.isoformat()
        return out


_PLACED: tuple[LinkMethod, ...] = ("location", "slice")
"""Link methods that place the measurement on the lesion; size alone does not."""


def earlier_detection(
    lesions: Sequence[ModelLesion], links: Sequence[MeasurementLink], min_lead_days: int = 1
) -> list[EarlierDetection]:
    """Tracks the model saw at least ``min_lead_days`` before a radiologist first measured them.

    ``links`` are every measurement's link, as :func:`link_measurements` returns them. Each of
    the first three rules removed a false badge:

    - the radiologist first measured a lesion at the first measurement of its label, whichever
      study the link was made at (the label may be unlinked where the model's size differed);
    - the model saw it first only at a study that reader reported: a study with no measurement
      of theirs says nothing about what they saw;
    - a track linked by size alone gets no badge: size is too weak a clue to claim the model
      saw that lesion first (a lymph node of like size links by size to a liver lesion);
    - with several readers, the one who measured it soonest after the model decides (the
      smallest lead claimed).
    """
    sightings = _sightings(lesions)
    reported, first_of_label = _reader_history(links)
    per_track: dict[tuple[str, int], list[MeasurementLink]] = defaultdict(list)
    for lk in links:
        if lk.track_id is not None:
            per_track[(lk.measurement.patient_id, lk.track_id)].append(lk)
    out = []
    for key, linked in sorted(per_track.items()):
        if not any(lk.method in _PLACED for lk in linked) or key not in sightings:
            continue
        leads = [_reader_lead(key, reader, linked, sightings[key], reported, first_of_label)
                 for reader in sorted({lk.measurement.reader for lk in linked})]
        known = [lead for lead in leads if lead is not None]
        if known:
            soonest = min(known, key=lambda e: e.lead_days)
            if soonest.lead_days >= min_lead_days:
                out.append(soonest)
    return out


def _sightings(lesions: Sequence[ModelLesion]) -> dict[tuple[str, int], list[ModelLesion]]:
    """(patient, track) → its dated lesions, oldest first."""
    out: dict[tuple[str, int], list[ModelLesion]] = defaultdict(list)
    for lesion in lesions:
        if lesion.study_date is not None:
            out[(lesion.patient_id, lesion.track_id)].append(lesion)
    for seen in out.values():
        seen.sort(key=lambda lesion: (lesion.study_date, lesion.study_id))
    return out


def _reader_history(
    links: Sequence[MeasurementLink],
) -> tuple[dict[tuple[str, str], set[str]], dict[tuple[str, str, str], date]]:
    """The studies each (patient, reader) reported, and the first date of each of their labels."""
    reported: dict[tuple[str, str], set[str]] = defaultdict(set)
    first: dict[tuple[str, str, str], date] = {}
    for lk in links:
        m = lk.measurement
        reported[(m.patient_id, m.reader)].add(m.study_id)
        key = (m.patient_id, m.reader, m.lesion or "")
        if m.lesion and m.study_date is not None and (key not in first or m.study_date < first[key]):
            first[key] = m.study_date
    return reported, first


def _reader_lead(
    key: tuple[str, int], reader: str, linked: list[MeasurementLink], seen: list[ModelLesion],
    reported: dict[tuple[str, str], set[str]], first_of_label: dict[tuple[str, str, str], date],
) -> EarlierDetection | None:
    """How long before ``reader`` first measured the track the model saw it at a study that
    reader reported; None when the dates do not tell (undated measurements or studies)."""
    patient, track = key
    dates = [first_of_label.get((patient, reader, lk.measurement.lesion or ""), lk.measurement.study_date)
             for lk in linked if lk.measurement.reader == reader]
    known = [d for d in dates if d is not None]
    if not known:
        return None
    measured = min(known)
    studies = reported[(patient, reader)]
    model_first = next((lesion for lesion in seen
                        if lesion.study_id in studies or lesion.study_date >= measured), None)  # type: ignore[operator]
    if model_first is None:
        return None
    lead = (measured - model_first.study_date).days  # type: ignore[operator]
    return EarlierDetection(
        patient_id=patient, track_id=track, model_first_study=model_first.study_id,
        model_first_date=model_first.study_date,  # type: ignore[arg-type]
        radiologist_first_date=measured, lead_months=lead / DAYS_PER_MONTH, lead_days=lead,
    )
