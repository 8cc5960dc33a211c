"""Model versus radiologist: linking measurements to tracks, agreement, earlier detection.

Pure functions on plain records (paper Figures 2 and 3); the store turns its rows into these.

- :func:`link_measurements` links the radiologist's measurements of a study to its model
  lesions one to one (a reader's two lesions are never one model lesion): by the location a
  measurement gives (nearest centroids within a tolerance; a location with no model lesion
  near it stays unlinked: the model missed it), else by its slice (lesions spanning that axial
  slice, closest in size), else by size alone (closest longest axial diameter, within a
  relative tolerance). Each step is an optimal assignment (Hungarian) over what is left.
- :func:`agreement_report` gives mean absolute difference, Bland–Altman bias and 95 % limits of
  agreement (differences are model − radiologist) and Pearson r, per patient and for the cohort.
- :func:`earlier_detection` lists tracks the model saw before the radiologist first measured
  them, with the lead time in months (days / 30.4375).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
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


def link_measurements(
    measurements: Sequence[RadiologistMeasurement],
    lesions: Sequence[ModelLesion],
    location_tolerance_mm: float = 20.0,
    slice_tolerance: int = 1,
    size_tolerance_pct: float = 50.0,
) -> list[MeasurementLink]:
    """Link each reader's measurements of a study to its lesions one to one (module docstring);
    the links come back in the order of ``measurements``."""
    by_study: dict[tuple[str, str], list[ModelLesion]] = defaultdict(list)
    for lesion in lesions:
        by_study[(lesion.patient_id, lesion.study_id)].append(lesion)
    groups: dict[tuple[str, str, str], list[int]] = defaultdict(list)
    for index, m in enumerate(measurements):
        groups[(m.patient_id, m.study_id, m.reader)].append(index)
    found: dict[int, tuple[ModelLesion, LinkMethod]] = {}
    for (patient, study, _reader), indices in groups.items():
        candidates = by_study.get((patient, study), [])
        group = [measurements[i] for i in indices]
        for position, link in _link_study(group, candidates, location_tolerance_mm, slice_tolerance,
                                          size_tolerance_pct).items():
            found[indices[position]] = link
    return [MeasurementLink(m, *found.get(i, (None, None))) for i, m in enumerate(measurements)]


def _link_study(
    measurements: list[RadiologistMeasurement], candidates: list[ModelLesion],
    location_tolerance_mm: float, slice_tolerance: int, size_tolerance_pct: float,
) -> dict[int, tuple[ModelLesion, LinkMethod]]:
    """One reader's measurements of one study → (lesion, method), each lesion used once."""
    links: dict[int, tuple[ModelLesion, LinkMethod]] = {}

    def assign(method: LinkMethod, cost: Any) -> None:
        """Link the still unlinked measurements to unused lesions by least total ``cost``
        (``cost(m, c)`` is None where the pair may not be linked)."""
        rows = [i for i in range(len(measurements)) if i not in links and _eligible(method, measurements[i])]
        used = {id(lesion) for lesion, _ in links.values()}
        cols = [c for c in candidates if id(c) not in used]
        if not rows or not cols:
            return
        costs = np.full((len(rows), len(cols)), np.inf)
        for r, i in enumerate(rows):
            for k, c in enumerate(cols):
                value = cost(measurements[i], c)
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
        return distance if distance <= max(location_tolerance_mm, c.diameter_mm / 2) else None

    def by_slice(m: RadiologistMeasurement, c: ModelLesion) -> float | None:
        spans = c.z_range is not None and c.z_range[0] - slice_tolerance <= m.slice_index <= c.z_range[1] + slice_tolerance  # type: ignore[operator]
        return abs(c.diameter_mm - m.diameter_mm) if spans else None

    def by_size(m: RadiologistMeasurement, c: ModelLesion) -> float | None:
        difference = abs(c.diameter_mm - m.diameter_mm)
        return difference if difference <= size_tolerance_pct / 100.0 * m.diameter_mm else None

    assign("location", by_location)
    assign("slice", by_slice)
    assign("size", by_size)
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

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["model_first_date"] = self.model_first_date.isoformat()
        out["radiologist_first_date"] = self.radiologist_first_date.isoformat()
        return out


def earlier_detection(
    lesions: Sequence[ModelLesion], links: Sequence[MeasurementLink], min_lead_days: int = 1
) -> list[EarlierDetection]:
    """Tracks first seen by the model at least ``min_lead_days`` before the radiologist."""
    first_model: dict[tuple[str, int], ModelLesion] = {}
    for lesion in lesions:
        if lesion.study_date is None:
            continue
        key = (lesion.patient_id, lesion.track_id)
        if key not in first_model or lesion.study_date < first_model[key].study_date:  # type: ignore[operator]
            first_model[key] = lesion
    first_radiologist: dict[tuple[str, int], date] = {}
    for lk in links:
        when = lk.measurement.study_date
        if lk.track_id is None or when is None:
            continue
        key = (lk.measurement.patient_id, lk.track_id)
        if key not in first_radiologist or when < first_radiologist[key]:
            first_radiologist[key] = when
    out = []
    for key, seen in sorted(first_model.items()):
        measured = first_radiologist.get(key)
        if measured is None or seen.study_date is None:
            continue
        lead = (measured - seen.study_date).days
        if lead >= min_lead_days:
            out.append(
                EarlierDetection(
                    patient_id=key[0],
                    track_id=key[1],
                    model_first_study=seen.study_id,
                    model_first_date=seen.study_date,
                    radiologist_first_date=measured,
                    lead_months=lead / DAYS_PER_MONTH,
                )
            )
    return out
