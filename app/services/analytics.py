"""Longitudinal analytics on the store: tracks, volumetry, responses, agreement with readers.

:func:`refresh_patient` runs at batch time (and after every clinician correction) and
persists what pages show: lesion tracks with stable numbers, per-series volumetry residuals,
RECIST categories from the model and from the radiologist, and the measurement→lesion/track
links (``measurement_links``, so cohort pages aggregate them in SQL at 20,000 measurements).
:func:`refresh_responses` redoes responses and links after a measurements import. Page
functions (:func:`patient_followup`, :func:`agreement`, :func:`cohort_tables`,
:func:`volumetry_overview`) only read rows; the per-patient agreement statistics are cheap
pure functions of those rows, so they are computed on read.

Which series of a day is tracked: the portal-venous one if present (then late, arterial,
unknown, non-contrast; lowest id first), since lesions are measured on that phase clinically.
A day is the studies of one date (:mod:`app.services.timepoints`: sites often store a day's
phases as separate studies); tracks and model responses name the study holding that series.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pandas as pd
import SimpleITK as sitk
from sqlalchemy import ColumnElement, delete, func, or_, select
from sqlalchemy.orm import Session

from app.cli.common import UserError
from app.services.patient_lookup import require_patient
from app.services.timepoints import DayKey, day_key
from app.settings import get_settings
from db import storage
from db.engine import default_url, make_session_factory
from db.models import (
    AuditEvent,
    Lesion,
    LesionTrack,
    LesionTrackMember,
    Measurement,
    MeasurementLink,
    Patient,
    Response,
    Segmentation,
    Series,
    Study,
    TrackingWarning,
    TrackOverride,
    VolumetryResult,
)
from db.ordering import oldest_first
from lvt_core.agreement import (
    ModelLesion,
    RadiologistMeasurement,
    agreement_report,
    earlier_detection,
    link_measurements,
)
from lvt_core.coverage import MIN_LIVER_ML
from lvt_core.response import (
    describe_new_lesions,
    new_lesion_statuses,
    recist_from_measurements,
    recist_from_tracks,
    volumetric_response,
)
from lvt_core.tracking import TimepointInput, TrackingConfig, TrackOverrides, track_lesions
from lvt_core.volumetry import FLAG_THRESHOLD_PCT

log = logging.getLogger(__name__)

PHASE_PRIORITY = ("portal", "late", "arterial", "unknown", "noncontrast")


@dataclass(frozen=True)
class AnalyticsConfig:
    """Thresholds of the persisted analytics."""

    volumetry_threshold_pct: float = FLAG_THRESHOLD_PCT
    thickness_tolerance_mm: float = 0.01
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    new_lesion_min_mm: float = field(default_factory=lambda: get_settings().display_min_lesion_mm)
    """A model lesion first seen after baseline is a new lesion (RECIST: PD) from this size:
    what the follow-up page shows by default, so a PD always has a new lesion on screen."""
    confirm_new_lesions: bool = field(default_factory=lambda: get_settings().confirm_new_lesions)
    """A model's new lesion counts (PD) once a later study shows it again: RECIST 1.1 asks for
    an unequivocal one, and a segmentation's false lesion is rarely drawn twice
    (``bench/new_lesion_confirmation.py``)."""


# -- helpers --------------------------------------------------------------------------------


def current_model_id(session: Session) -> int | None:
    """The model whose segmentations finished last (what pages show by default)."""
    return session.scalar(
        select(Segmentation.model_id)
        .where(Segmentation.status == "done")
        .order_by(Segmentation.finished_at.desc(), Segmentation.id.desc())
        .limit(1)
    )


def _done_on_dated_days(patient_id: int, model_id: int, *columns: Any) -> Any:
    """``columns`` of every done segmentation by ``model_id`` of the patient's dated studies:
    what tracking reads (undated studies wait for ``lvt studies set-date``)."""
    return (select(*columns)
            .join(Series, Series.study_id == Study.id)
            .join(Segmentation, Segmentation.series_id == Series.id)
            .where(Study.patient_id == patient_id, Study.study_date.is_not(None),
                   Segmentation.model_id == model_id, Segmentation.status == "done"))


def _tracked_segmentations(
    session: Session, patient_id: int, model_id: int
) -> list[tuple[Study, Segmentation]]:
    """One done segmentation per day (by phase priority), days in date order.

    The scans of one date are one timepoint even when stored as separate studies (sites often
    give a day's phases their own study UIDs): reading each study as a timepoint made the
    baseline day two timepoints, and a lesion drawn only in its portal scan a "new lesion".
    The study returned is the one holding the tracked series. An undated study cannot be
    placed among the days: it is left out (first in line, it became the RECIST baseline and a
    dated study's lesions read as progression against it) until ``lvt studies set-date``.
    """
    rows = session.execute(
        _done_on_dated_days(patient_id, model_id, Study, Segmentation, Series.phase)
        .order_by(oldest_first(Study.study_date), Study.id, Series.id)
    ).all()
    best: dict[DayKey, tuple[int, Study, Segmentation]] = {}
    for study, seg, phase in rows:
        rank = _phase_rank(phase)
        key = day_key(study.patient_id, study.id, study.study_date)
        if key not in best or rank < best[key][0]:
            best[key] = (rank, study, seg)
    ordered = sorted(best.values(), key=lambda v: (v[1].study_date or dt.date.min, v[1].id))
    return [(study, seg) for _, study, seg in ordered]


def _fluid_places_by_day(session: Session, patient_id: int, model_id: int) -> dict[dt.date, list[dict[str, Any]]]:
    """The places every done segmentation of a day left out as fluid, by date: tracking follows
    one phase of the day, but the reading may have left the fluid out of another (the phases
    of one visit share the scanner frame, give or take a breath)."""
    rows = session.execute(_done_on_dated_days(patient_id, model_id, Study.study_date, Segmentation.fluid_places)).all()
    by_date: dict[dt.date, list[dict[str, Any]]] = defaultdict(list)
    for date, places in rows:
        by_date[date].extend(places or [])
    return by_date


def _phase_rank(phase: str) -> int:
    """Which phase tracking follows first (:data:`PHASE_PRIORITY`; an unlisted phase last)."""
    return PHASE_PRIORITY.index(phase) if phase in PHASE_PRIORITY else len(PHASE_PRIORITY)


def _thickness_warning(thicknesses: list[float | None], tolerance: float) -> str | None:
    known = [t for t in thicknesses if t is not None]
    if len(known) >= 2 and max(known) - min(known) > tolerance:
        return "slice thicknesses differ (" + ", ".join(f"{t:g} mm" for t in known) + ")"
    return None


def _no_liver_warning(phase_volumes: list[tuple[str, float]], compared: int) -> str | None:
    """Names the phases whose scans hold no liver (under ``MIN_LIVER_ML``): left out of the
    comparison, which is not made at all when fewer than two phases remain."""
    empty = [f"{phase} ({ml:.1f} ml)" for phase, ml in phase_volumes if ml < MIN_LIVER_ML]
    if not empty:
        return None
    outcome = "the other phases compared without it" if compared >= 2 else "volumetry not possible on this day"
    return f"no liver found in the {', '.join(empty)} scan: {outcome}"


def _cut_warning(phases_cut_at: list[tuple[str, str | None]]) -> str | None:
    """Names the phases whose scan stops inside the liver (their volume is a lower bound)."""
    from lvt_core.coverage import ends_phrase

    cut = [f"{phase} at the {ends_phrase(ends)}" for phase, ends in phases_cut_at if ends]
    if cut:
        return "the liver runs out of the scan (" + ", ".join(cut) + "): a lower-bound volume"
    return None


# -- refresh (batch time) -------------------------------------------------------------------


def refresh_patient(
    session: Session,
    patient_id: int,
    model_id: int,
    data_root: Path | None = None,
    config: AnalyticsConfig | None = None,
) -> dict[str, Any]:
    """Recompute and persist volumetry, tracks and responses of one patient; caller commits.

    The summary's ``warnings`` are tracking's (a registration replaced by the scanner frame)
    and the undated studies left out, also logged: the tracks and responses stand, but a
    reader should know why.
    """
    config = config or AnalyticsConfig()
    root = data_root or storage.data_dir()
    flagged = _refresh_volumetry(session, patient_id, model_id, config, root)
    tracked = _tracked_segmentations(session, patient_id, model_id)
    result = _refresh_tracks(session, patient_id, model_id, tracked, root, config)
    _refresh_responses(session, patient_id, tracked, result, config, model_id)
    session.flush()
    links = refresh_links(session, patient_id, model_id)
    warnings = list(result.warnings) if result else []
    _store_tracking_warnings(session, patient_id, model_id, warnings)
    undated = session.scalar(select(func.count(Study.id)).where(Study.patient_id == patient_id,
                                                                Study.study_date.is_(None)))
    if undated:
        warnings.append(f"{undated} undated stud{'y is' if undated == 1 else 'ies are'} left out of tracking "
                        "and response: date it with `lvt studies set-date`")
    for warning in warnings:
        log.warning("patient %s tracking: %s", patient_id, warning)
    return {"studies": len(tracked), "tracks": len(result.tracks) if result else 0,
            "volumetry_flags": flagged, "measurement_links": links, "warnings": warnings}


def _store_tracking_warnings(session: Session, patient_id: int, model_id: int, warnings: list[str]) -> None:
    """Keep this tracking's warnings for the pages, in place of the last tracking's."""
    session.execute(delete(TrackingWarning).where(
        TrackingWarning.patient_id == patient_id, TrackingWarning.model_id == model_id))
    session.add_all(TrackingWarning(patient_id=patient_id, model_id=model_id, message=w) for w in warnings)


def tracking_warnings(session: Session, patient_id: int, model_id: int | None) -> list[str]:
    """The warnings of the patient's last tracking under ``model_id``, oldest first."""
    return list(session.scalars(
        select(TrackingWarning.message)
        .where(TrackingWarning.patient_id == patient_id, TrackingWarning.model_id == model_id)
        .order_by(TrackingWarning.id)))


def refresh_links(session: Session, patient_id: int, model_id: int) -> int:
    """Replace the stored measurement links of one patient and model; return how many.

    Uses the stored tracks (call after tracking); caller commits.
    """
    session.execute(delete(MeasurementLink).where(
        MeasurementLink.patient_id == patient_id, MeasurementLink.model_id == model_id))
    links = _agreement_doc(session, [patient_id], model_id)["links"]
    for link in links:
        model_mm = link["model_mm"]
        session.add(MeasurementLink(
            measurement_id=link["measurement_id"], model_id=model_id, patient_id=patient_id,
            lesion_id=link["lesion_id"], track_number=link["track_number"],
            radiologist_mm=link["radiologist_mm"], model_mm=model_mm,
            diff_mm=None if model_mm is None else model_mm - link["radiologist_mm"],
            method=link["method"] or ""))
    session.flush()
    return len(links)


def _refresh_volumetry(
    session: Session, patient_id: int, model_id: int, config: AnalyticsConfig, root: Path
) -> int:
    from lvt_core.volumetry import VolumetryResult as CoreVolumetry

    dated = session.execute(
        select(VolumetryResult, Study.study_date)
        .join(Study, Study.id == VolumetryResult.study_id)
        .where(Study.patient_id == patient_id, VolumetryResult.model_id == model_id)
        .order_by(VolumetryResult.study_id, VolumetryResult.series_id)
    ).all()
    rows = [row for row, _ in dated]
    _fill_liver_coverage(session, [row for row in rows if row.liver_cut_at is None], model_id, root)
    flagged = 0
    for day in _volumes_by_day(patient_id, dated):
        for r in day:
            r.deviation_pct, r.flagged = None, False
        group = [r for r in day if r.total_ml >= MIN_LIVER_ML]  # a phase without a liver is named, not compared
        if len(group) < 2:
            continue
        core = CoreVolumetry(
            names=[str(r.series_id) for r in group],
            volumes_ml=[r.total_ml for r in group],
            functional_volumes_ml=[r.functional_ml for r in group],
            slice_thickness_mm=[0.0 for _ in group],
            threshold_pct=config.volumetry_threshold_pct,
        )
        for r, dev, flag in zip(group, core.deviation_pct, core.flags, strict=True):
            r.deviation_pct, r.flagged = dev, flag
            flagged += int(flag)
    return flagged


def tracked_series_ids(session: Session, patient_id: int, model_id: int | None) -> frozenset[int]:
    """The series the tracks follow, one per day (portal first): what pages mark as tracked,
    from the rule tracking itself uses."""
    if model_id is None:
        return frozenset()
    return frozenset(seg.series_id for _, seg in _tracked_segmentations(session, patient_id, model_id))


def _volumes_by_day(
    patient_id: int, dated: Iterable[tuple[VolumetryResult, dt.date | None]]
) -> list[list[VolumetryResult]]:
    """The volumes of each day, whichever study row holds each phase: a day's phases stored
    as separate studies were never compared with each other."""
    by_day: dict[DayKey, list[VolumetryResult]] = defaultdict(list)
    for row, study_date in dated:
        by_day[day_key(patient_id, row.study_id, study_date)].append(row)
    return list(by_day.values())


def _fill_liver_coverage(
    session: Session, rows: list[VolumetryResult], model_id: int, root: Path
) -> None:
    """Volumes stored before revision 0005 do not say whether their scan stops inside the
    liver: measure it once from their label map. A missing file leaves it unknown (NULL)."""
    from lvt_core.coverage import liver_coverage

    for row in rows:
        path = session.scalar(select(Segmentation.label_map_path).where(
            Segmentation.series_id == row.series_id, Segmentation.model_id == model_id,
            Segmentation.status == "done"))
        file = storage.resolve(path, root) if path else None
        if file is not None and file.is_file():
            row.liver_cut_at = ",".join(liver_coverage(sitk.ReadImage(str(file))).cut_at)


def _refresh_tracks(
    session: Session,
    patient_id: int,
    model_id: int,
    tracked: list[tuple[Study, Segmentation]],
    root: Path,
    config: AnalyticsConfig,
) -> Any:
    existing = {
        t.track_number: t
        for t in session.scalars(
            select(LesionTrack).where(
                LesionTrack.patient_id == patient_id, LesionTrack.model_id == model_id
            )
        )
    }
    track_ids = [t.id for t in existing.values()]
    old_members = session.execute(
        select(LesionTrackMember.lesion_id, LesionTrack.track_number, LesionTrack.id)
        .join(LesionTrack, LesionTrack.id == LesionTrackMember.track_id)
        .where(LesionTrackMember.track_id.in_(track_ids))
    ).all() if track_ids else []
    if not tracked:
        for t in existing.values():
            session.delete(t)
        return None
    key_of: dict[int, tuple[int, int]] = {}
    row_of: dict[tuple[int, int], Lesion] = {}
    timepoints = []
    fluid = _fluid_places_by_day(session, patient_id, model_id)
    for t, (study, seg) in enumerate(tracked):
        labels = storage.read_stored(seg.label_map_path or "", root)
        tp = TimepointInput.from_labels(labels, None, study.study_date, config.tracking.min_voxels)
        tp.fluid_places = fluid.get(study.study_date, [])
        timepoints.append(tp)
        for lesion in session.scalars(select(Lesion).where(Lesion.segmentation_id == seg.id)):
            key_of[lesion.id] = (t, lesion.lesion_index)
            row_of[(t, lesion.lesion_index)] = lesion
    previous = {key_of[lid]: num for lid, num, _ in old_members if lid in key_of}
    track_number_by_row = {tid: num for _, num, tid in old_members}
    track_number_by_row.update({t.id: n for n, t in existing.items()})
    members_by_number: dict[int, list[tuple[int, int]]] = defaultdict(list)
    for lid, num, _ in old_members:
        if lid in key_of:
            members_by_number[num].append(key_of[lid])
    excluded: list[tuple[int, int]] = []
    forced: list[tuple[tuple[int, int], tuple[int, int]]] = []
    overrides = session.scalars(
        select(TrackOverride)
        .where(TrackOverride.lesion_id.in_(list(key_of)))
        .order_by(TrackOverride.created_at, TrackOverride.id)
    ).all() if key_of else []
    latest: dict[int, TrackOverride] = {}
    for o in overrides:
        latest[o.lesion_id] = o  # the newest decision about a lesion wins
    for o in latest.values():
        key = key_of[o.lesion_id]
        if o.kind == "not_lesion":
            excluded.append(key)
            continue
        number = track_number_by_row.get(o.target_track_id or -1)
        others = sorted(k for k in members_by_number.get(number or -1, []) if k[0] != key[0])
        earlier = [k for k in others if k[0] < key[0]]
        later = [k for k in others if k[0] > key[0]]
        if earlier:
            forced.append((earlier[-1], key))
        elif later:
            forced.append((key, later[0]))
        if number is not None:
            previous[key] = number
    result = track_lesions(
        timepoints,
        config.tracking,
        TrackOverrides(forced_links=forced, excluded=excluded, previous_track_ids=previous),
    )
    if track_ids:
        session.execute(delete(LesionTrackMember).where(LesionTrackMember.track_id.in_(track_ids)))
    keep = {track.track_id for track in result.tracks}
    for number, row in existing.items():
        if number not in keep:
            session.delete(row)
    session.flush()
    for track in result.tracks:
        row = existing.get(track.track_id)
        if row is None:
            row = LesionTrack(patient_id=patient_id, model_id=model_id, track_number=track.track_id)
            session.add(row)
        row.status = track.status
        session.flush()
        for key in track.members:
            lesion = row_of.get(key)
            if lesion is None:
                continue
            session.add(
                LesionTrackMember(track_id=row.id, lesion_id=lesion.id, study_id=tracked[key[0]][0].id)
            )
    return result


def shown_responses(model_id: int | None) -> ColumnElement[bool]:
    """The responses shown beside one model's results: the radiologist's, and that model's."""
    return or_(Response.source != "model", Response.model_id == model_id)


TRACK_LABEL = "track {}"
"""How the model's responses name a target or new lesion: by its track number."""


def _refresh_responses(
    session: Session, patient_id: int, tracked: list[tuple[Study, Segmentation]], result: Any,
    config: AnalyticsConfig, model_id: int,
) -> None:
    """One model's responses from a fresh tracking result (its split and merge lineage is not
    stored, so only a re-track can redo them), then the radiologist's."""
    session.execute(delete(Response).where(  # and rows revision 0010 could not give a model
        Response.patient_id == patient_id, Response.source == "model",
        or_(Response.model_id == model_id, Response.model_id.is_(None))))
    if result is not None and len(tracked) > 1:
        report = recist_from_tracks(result, new_lesion_min_diameter_mm=config.new_lesion_min_mm,
                                    confirm_new_lesions=config.confirm_new_lesions)
        baseline = tracked[0][0].id
        for t in range(1, len(report["recist"])):
            session.add(
                Response(patient_id=patient_id, study_id=tracked[t][0].id, source="model", model_id=model_id,
                         baseline_study_id=baseline, **_response_fields(report, t, TRACK_LABEL.format))
            )
    _refresh_radiologist_responses(session, patient_id)


def _response_fields(report: dict[str, Any], t: int, label_of: Callable[[Any], str]) -> dict[str, Any]:
    """The stored fields of timepoint ``t`` of a :mod:`lvt_core.response` report, with what a
    reader needs to check its category: the nadir it was compared with, each target's diameter
    at baseline and here (None where the target was not drawn, as opposed to 0 mm gone), and
    the new lesions; ``label_of`` names a target or new lesion."""
    item = report["recist"][t]
    labels = [label_of(target) for target in report["targets"]]
    diameters, assessed = report["target_diameters_mm"], report["target_assessed"]
    return {
        "recist_category": item["response"],
        "sum_diameters_mm": float(sum(diameters[t])),
        "new_lesion": bool(item["new_lesion"]),
        "nadir_sum_mm": float(item["nadir"]),
        "new_lesions": [{"lesion": label_of(i), "status": status} for i, status in new_lesion_statuses(report, t)],
        "targets": [
            {"target": label, "baseline_mm": float(diameters[0][k]),
             "mm": float(diameters[t][k]) if assessed[t][k] else None}
            for k, label in enumerate(labels)
        ],
    }


def _refresh_radiologist_responses(session: Session, patient_id: int) -> None:
    """The radiologist's RECIST from the stored measurements of the first reader."""
    session.execute(delete(Response).where(Response.patient_id == patient_id,
                                           Response.source == "radiologist"))
    session.flush()
    measurements = [m for m in _radiologist(session, [patient_id]) if m[0].study_date is not None]  # as the model's
    reader = min((m[1] for m in measurements), default=None)
    first_of_day = _first_study_of_each_day(session, patient_id)  # a day's studies are one timepoint
    chosen = [replace(m[0], study_id=str(first_of_day[int(m[0].study_id)])) for m in measurements if m[1] == reader]
    if len({m.study_id for m in chosen}) > 1:
        report = recist_from_measurements(chosen)
        baseline = int(report["studies"][0])
        for t in range(1, len(report["recist"])):
            session.add(
                Response(patient_id=patient_id, study_id=int(report["studies"][t]), source="radiologist",
                         baseline_study_id=baseline, **_response_fields(report, t, str))
            )


def _first_study_of_each_day(session: Session, patient_id: int) -> dict[int, int]:
    """Each study's day, named by the day's first study (a day's phases may be separate studies)."""
    first: dict[DayKey, int] = {}
    out: dict[int, int] = {}
    for study_id, study_date in session.execute(
        select(Study.id, Study.study_date).where(Study.patient_id == patient_id).order_by(Study.id)
    ):
        out[study_id] = first.setdefault(day_key(patient_id, study_id, study_date), study_id)
    return out


def refresh_responses(patients: list[str] | None = None, url: str | None = None,
                      model_id: int | None = None, patient_ids: list[int] | None = None) -> int:
    """Recompute the radiologist's responses and the measurement links, no re-tracking.

    Call after ``lvt measurements import``: those depend on the measurements and the stored
    lesions. The model's responses are left as the last tracking made them (rebuilt from stored
    rows, a split target's fragment read as a new lesion). ``patients`` are pseudonyms,
    ``patient_ids`` row ids (both None: everyone). Returns the number of patients refreshed.
    """
    with _session(url) as session:
        model_id = model_id or current_model_id(session)
        stmt = select(Patient.id)
        if patients:
            stmt = stmt.where(Patient.pseudo_id.in_(patients))
        if patient_ids is not None:
            stmt = stmt.where(Patient.id.in_(patient_ids))
        ids = list(session.scalars(stmt))
        for pid in ids:
            _refresh_radiologist_responses(session, pid)
            if model_id:
                refresh_links(session, pid, model_id)
        session.commit()
        return len(ids)


def _core_lesion(row: Lesion) -> Any:
    from lvt_core.lesions import Lesion as CoreLesion

    bbox = tuple(row.bbox or (0, 0, 0, 0, 0, 0))
    return CoreLesion(id=row.lesion_index, voxels=row.voxels, volume_ml=row.volume_ml,
                      longest_axial_diameter_mm=row.longest_axial_diameter_mm,
                      short_axis_mm=row.short_axis_mm or 0.0,
                      centroid_mm=(row.centroid_x, row.centroid_y, row.centroid_z),
                      bbox_index=bbox, axial_slice=bbox[2])


# -- reading rows ---------------------------------------------------------------------------


def _radiologist(
    session: Session, patient_ids: list[int] | None
) -> list[tuple[RadiologistMeasurement, str, int]]:
    """(record, reader, measurement row id) for the patients (all when None)."""
    stmt = (
        select(Measurement, Study.study_date, Patient.pseudo_id)
        .join(Study, Study.id == Measurement.study_id)
        .join(Patient, Patient.id == Measurement.patient_id)
        .order_by(oldest_first(Study.study_date), Measurement.id)
    )
    if patient_ids is not None:
        stmt = stmt.where(Measurement.patient_id.in_(patient_ids))
    out = []
    for m, date, pseudo in session.execute(stmt):
        location = None
        if None not in (m.location_x_mm, m.location_y_mm, m.location_z_mm):
            location = (m.location_x_mm, m.location_y_mm, m.location_z_mm)
        record = RadiologistMeasurement(
            patient_id=pseudo, study_id=str(m.study_id), study_date=date,
            diameter_mm=m.longest_diameter_mm, slice_index=m.slice_index,
            location_mm=location, lesion=m.lesion_label, reader=m.reader or "",
            new_lesion=bool(m.new_lesion),
        )
        out.append((record, m.reader, m.id))
    return out


def _model_lesions(
    session: Session, patient_ids: list[int] | None, model_id: int
) -> list[ModelLesion]:
    stmt = (
        select(Lesion, LesionTrack.track_number, Study.id, Study.study_date, Patient.pseudo_id)
        .join(LesionTrackMember, LesionTrackMember.lesion_id == Lesion.id)
        .join(LesionTrack, LesionTrack.id == LesionTrackMember.track_id)
        .join(Study, Study.id == LesionTrackMember.study_id)
        .join(Patient, Patient.id == LesionTrack.patient_id)
        .where(LesionTrack.model_id == model_id)
    )
    if patient_ids is not None:
        stmt = stmt.where(LesionTrack.patient_id.in_(patient_ids))
    out = []
    for lesion, number, study_id, date, pseudo in session.execute(stmt):
        bbox = lesion.bbox or []
        out.append(
            ModelLesion(
                patient_id=pseudo, study_id=str(study_id), study_date=date, track_id=number,
                lesion_id=lesion.id, diameter_mm=lesion.longest_axial_diameter_mm,
                centroid_mm=(lesion.centroid_x, lesion.centroid_y, lesion.centroid_z),
                z_range=(bbox[2], bbox[5]) if len(bbox) == 6 else None,
            )
        )
    return out


def _with_same_day_studies(
    session: Session, patient_ids: list[int] | None, lesions: list[ModelLesion]
) -> list[ModelLesion]:
    """``lesions`` and, after them, a copy under each other study of their day.

    A day's phases stored as separate studies are tracked on one of them; a measurement
    recorded on another (its own accession) found no lesion to link to.
    """
    stmt = select(Study.id, Study.patient_id, Study.study_date).where(Study.study_date.is_not(None))
    if patient_ids is not None:
        stmt = stmt.where(Study.patient_id.in_(patient_ids))
    day_of: dict[int, DayKey] = {}
    studies_of: dict[DayKey, list[int]] = defaultdict(list)
    for study_id, patient_id, study_date in session.execute(stmt):
        day_of[study_id] = day_key(patient_id, study_id, study_date)
        studies_of[day_of[study_id]].append(study_id)
    tracked = {int(lesion.study_id) for lesion in lesions}
    copies = [
        replace(lesion, study_id=str(other))
        for lesion in lesions if int(lesion.study_id) in day_of
        for other in studies_of[day_of[int(lesion.study_id)]] if other not in tracked
    ]
    return lesions + copies


def _agreement_doc(session: Session, patient_ids: list[int] | None, model_id: int) -> dict[str, Any]:
    lesions = _with_same_day_studies(session, patient_ids, _model_lesions(session, patient_ids, model_id))
    measured = _radiologist(session, patient_ids)
    links = link_measurements([m[0] for m in measured], lesions)
    report = agreement_report(links)
    report["links"] = [
        {
            "measurement_id": row_id,
            "patient": lk.measurement.patient_id,
            "study_id": int(lk.measurement.study_id),
            "study_date": lk.measurement.study_date,
            "lesion_label": lk.measurement.lesion,
            "reader": reader,
            "radiologist_mm": lk.measurement.diameter_mm,
            "model_mm": lk.lesion.diameter_mm if lk.lesion else None,
            "track_number": lk.track_id,
            "lesion_id": lk.lesion.lesion_id if lk.lesion else None,
            "method": lk.method,
        }
        for lk, (_, reader, row_id) in zip(links, measured, strict=True)
    ]
    report["earlier_detection"] = [e.to_dict() for e in earlier_detection(lesions, links)]
    report["model_id"] = model_id
    return report


def _session(url: str | None) -> Session:
    return make_session_factory(url or default_url())()


def agreement(
    patient_id: str | None = None, model_id: int | None = None, url: str | None = None
) -> dict[str, Any]:
    """Model vs radiologist: links, MAD / Bland–Altman / Pearson r, earlier detection."""
    with _session(url) as session:
        model_id = model_id or current_model_id(session)
        if model_id is None:
            return {"cohort": None, "patients": {}, "links": [], "earlier_detection": []}
        ids = None if patient_id is None else [require_patient(session, patient_id).id]
        return _agreement_doc(session, ids, model_id)


@dataclass
class PatientFollowup:
    """Everything the follow-up page shows for one patient (plain values)."""

    patient: str
    model_id: int | None
    timeline: list[dict[str, Any]]
    tracks: list[dict[str, Any]]
    measurements: list[dict[str, Any]]
    responses: dict[str, list[dict[str, Any]]]
    volumes: list[dict[str, Any]]
    agreement: dict[str, Any]
    earlier_detection: list[dict[str, Any]]


def patient_followup(
    patient_id: str, model_id: int | None = None, url: str | None = None
) -> PatientFollowup:
    """Timeline, tracks with per-date diameters, measurements, responses, badges, volumes."""
    with _session(url) as session:
        patient = require_patient(session, patient_id)
        model_id = model_id or current_model_id(session)
        studies = session.execute(
            select(Study.id, Study.study_date, Series.id, Series.phase, Segmentation.status)
            .join(Series, Series.study_id == Study.id)
            .outerjoin(
                Segmentation,
                (Segmentation.series_id == Series.id) & (Segmentation.model_id == model_id),
            )
            .where(Study.patient_id == patient.id)
            .order_by(oldest_first(Study.study_date), Study.id, Series.id)
        ).all()
        timeline: dict[int, dict[str, Any]] = {}
        for sid, date, series_id, phase, status in studies:
            entry = timeline.setdefault(sid, {"study_id": sid, "date": date, "series": []})
            entry["series"].append({"series_id": series_id, "phase": phase, "segmentation": status})
        doc = _agreement_doc(session, [patient.id], model_id) if model_id else {
            "links": [], "earlier_detection": [], "patients": {}}
        badges = {e["track_id"]: e for e in doc["earlier_detection"]}
        tracks: dict[int, dict[str, Any]] = {}
        if model_id:
            rows = session.execute(
                select(LesionTrack.track_number, LesionTrack.status, Lesion, Study.id,
                       Study.study_date)
                .join(LesionTrackMember, LesionTrackMember.track_id == LesionTrack.id)
                .join(Lesion, Lesion.id == LesionTrackMember.lesion_id)
                .join(Study, Study.id == LesionTrackMember.study_id)
                .where(LesionTrack.patient_id == patient.id, LesionTrack.model_id == model_id)
                .order_by(LesionTrack.track_number, oldest_first(Study.study_date))
            ).all()
            for number, status, lesion, study_id, date in rows:
                track = tracks.setdefault(number, {
                    "track_number": number, "status": status, "points": [],
                    "earlier_detection": badges.get(number)})
                track["points"].append({
                    "study_id": study_id, "date": date, "lesion_id": lesion.id,
                    "diameter_mm": lesion.longest_axial_diameter_mm,
                    "short_axis_mm": lesion.short_axis_mm, "volume_ml": lesion.volume_ml,
                    "centroid_mm": [lesion.centroid_x, lesion.centroid_y, lesion.centroid_z],
                    "found_by": lesion.found_by})
        responses: dict[str, list[dict[str, Any]]] = {"model": [], "radiologist": []}
        for r, date in session.execute(
            select(Response, Study.study_date).join(Study, Study.id == Response.study_id)
            .where(Response.patient_id == patient.id, shown_responses(model_id))
            .order_by(oldest_first(Study.study_date))
        ):
            responses[r.source].append({"study_id": r.study_id, "date": date,
                                        "category": r.recist_category,
                                        "sum_diameters_mm": r.sum_diameters_mm,
                                        "new_lesion": r.new_lesion,
                                        "baseline_study_id": r.baseline_study_id})
        per_study_volume: dict[int, float] = defaultdict(float)
        for track in tracks.values():
            for p in track["points"]:
                per_study_volume[p["study_id"]] += p["volume_ml"]
        tracked = _tracked_segmentations(session, patient.id, model_id) if model_id else []
        ordered = [study.id for study, _ in tracked]  # one per day, as the tracks and RECIST
        if len(ordered) > 1:  # a new lesion is progression here too, as in RECIST
            new_at = {r["study_id"] for r in responses.get("model", []) if r["new_lesion"]}
            responses["volumetric"] = [
                {"study_id": s, **a.to_dict()}
                for s, a in zip(ordered, volumetric_response(
                    [per_study_volume.get(s, 0.0) for s in ordered],
                    [s in new_at and i > 0 for i, s in enumerate(ordered)]), strict=True)
            ]
        volumes = [
            {"study_id": v.study_id, "series_id": v.series_id, "phase": phase,
             "total_ml": v.total_ml, "functional_ml": v.functional_ml,
             "deviation_pct": v.deviation_pct, "flagged": v.flagged, "liver_cut_at": v.liver_cut_at}
            for v, phase in session.execute(
                select(VolumetryResult, Series.phase)
                .join(Series, Series.id == VolumetryResult.series_id)
                .join(Study, Study.id == VolumetryResult.study_id)
                .where(Study.patient_id == patient.id, VolumetryResult.model_id == model_id)
                .order_by(oldest_first(Study.study_date), VolumetryResult.series_id)
            )
        ]
        return PatientFollowup(
            patient=patient_id, model_id=model_id, timeline=list(timeline.values()),
            tracks=list(tracks.values()), measurements=doc["links"], responses=responses,
            volumes=volumes, agreement=doc["patients"].get(patient_id, {}),
            earlier_detection=doc["earlier_detection"],
        )


def volumetry_overview(
    model_id: int | None = None, url: str | None = None,
    config: AnalyticsConfig | None = None,
) -> pd.DataFrame:
    """One row per day with two or more segmented phases: spread, flag, thickness warning.

    A day whose phases are separate studies is one row; ``study_id`` is its lowest.
    """
    config = config or AnalyticsConfig()
    with _session(url) as session:
        model_id = model_id or current_model_id(session)
        rows = session.execute(
            select(Patient.pseudo_id, Study.id, Study.study_date, VolumetryResult, Series.phase,
                   Series.slice_thickness, Series.spacing_z, Study.patient_id)
            .join(Study, Study.id == VolumetryResult.study_id)
            .join(Patient, Patient.id == Study.patient_id)
            .join(Series, Series.id == VolumetryResult.series_id)
            .where(VolumetryResult.model_id == model_id)
            .order_by(Patient.pseudo_id, oldest_first(Study.study_date), VolumetryResult.series_id)
        ).all()
    groups: dict[DayKey, list[Any]] = defaultdict(list)
    for row in rows:
        groups[day_key(row[7], row[1], row[2])].append(row)
    records = []
    for group in groups.values():
        if len(group) < 2:
            continue
        study_id = min(r[1] for r in group)
        with_liver = [r for r in group if r[3].total_ml >= MIN_LIVER_ML]
        devs = [abs(r[3].deviation_pct) for r in with_liver if r[3].deviation_pct is not None]
        thickness = [r[5] if r[5] is not None else r[6] for r in with_liver]
        records.append({
            "patient": group[0][0], "study_id": study_id, "study_date": group[0][2],
            "phases": ",".join(r[4] for r in group), "series": len(group),
            "mean_total_ml": (sum(r[3].total_ml for r in with_liver) / len(with_liver)) if with_liver else None,
            "max_abs_deviation_pct": max(devs) if devs else None,
            "flagged": any(r[3].flagged for r in group),
            "phases_cut": sum(bool(r[3].liver_cut_at) for r in group),
            "phases_without_liver": len(group) - len(with_liver),
            "threshold_pct": config.volumetry_threshold_pct,
            "warning": "; ".join(w for w in (
                _no_liver_warning([(r[4], r[3].total_ml) for r in group], len(with_liver)),
                _thickness_warning(thickness, config.thickness_tolerance_mm),
                _cut_warning([(r[4], r[3].liver_cut_at) for r in group])) if w) or None,
        })
    columns = ["patient", "study_id", "study_date", "phases", "series", "mean_total_ml",
               "max_abs_deviation_pct", "flagged", "phases_cut", "phases_without_liver", "threshold_pct",
               "warning"]
    return pd.DataFrame.from_records(records, columns=columns)


def cohort_tables(
    filters: dict[str, Any] | None = None, url: str | None = None
) -> dict[str, pd.DataFrame]:
    """Flat tables of the cohort (``filters``: ``patients`` list, ``model_id``)."""
    filters = filters or {}
    with _session(url) as session:
        model_id = filters.get("model_id") or current_model_id(session)
        patient_ids = None
        if filters.get("patients"):
            patient_ids = [require_patient(session, p).id for p in filters["patients"]]

        def where_patient(stmt: Any, column: Any) -> Any:
            return stmt if patient_ids is None else stmt.where(column.in_(patient_ids))

        def frame(stmt: Any) -> pd.DataFrame:
            result = session.execute(stmt)
            return pd.DataFrame(result.all(), columns=list(result.keys()))

        # a series being redrawn (`lvt batch --force`) still holds its old lesions and volumes:
        # the tables carry finished segmentations only, as the series table's status says
        finished = Segmentation.status == "done"

        tables = {
            "patients": frame(where_patient(
                select(Patient.id.label("patient_id"), Patient.pseudo_id.label("patient"),
                       func.count(Study.id).label("studies"))
                .outerjoin(Study, Study.patient_id == Patient.id)
                .group_by(Patient.id, Patient.pseudo_id).order_by(Patient.pseudo_id),
                Patient.id)),
            "studies": frame(where_patient(
                select(Study.id.label("study_id"), Patient.pseudo_id.label("patient"),
                       Study.study_date, Study.accession, Study.study_instance_uid)
                .join(Patient, Patient.id == Study.patient_id)
                .order_by(Patient.pseudo_id, oldest_first(Study.study_date)), Study.patient_id)),
            "series": frame(where_patient(
                select(Series.id.label("series_id"), Study.id.label("study_id"),
                       Patient.pseudo_id.label("patient"), Series.phase, Series.modality,
                       Series.spacing_x.label("spacing_x_mm"), Series.spacing_y.label("spacing_y_mm"),
                       Series.spacing_z.label("spacing_z_mm"), Series.size_x, Series.size_y,
                       Series.size_z, Series.slice_thickness.label("slice_thickness_mm"),
                       Series.series_instance_uid, Segmentation.status.label("segmentation"),
                       Segmentation.runtime_s, Segmentation.precision, Segmentation.lvt_version)
                .join(Study, Study.id == Series.study_id)
                .join(Patient, Patient.id == Study.patient_id)
                .outerjoin(Segmentation, (Segmentation.series_id == Series.id)
                           & (Segmentation.model_id == model_id))
                .order_by(Series.id), Study.patient_id)),
            "lesions": frame(where_patient(
                select(Lesion.id.label("lesion_id"), Lesion.lesion_index,
                       Series.id.label("series_id"), Study.id.label("study_id"),
                       Patient.pseudo_id.label("patient"), Lesion.voxels, Lesion.volume_ml,
                       Lesion.longest_axial_diameter_mm, Lesion.short_axis_mm,
                       Lesion.centroid_x.label("centroid_x_mm"), Lesion.centroid_y.label("centroid_y_mm"),
                       Lesion.centroid_z.label("centroid_z_mm"), Lesion.mean_hu,
                       Lesion.found_by, Lesion.cut_by_scan_edge)
                .join(Segmentation, Segmentation.id == Lesion.segmentation_id)
                .join(Series, Series.id == Segmentation.series_id)
                .join(Study, Study.id == Series.study_id)
                .join(Patient, Patient.id == Study.patient_id)
                .where(Segmentation.model_id == model_id, finished).order_by(Lesion.id), Study.patient_id)),
            "tracks": frame(where_patient(
                select(Patient.pseudo_id.label("patient"), LesionTrack.track_number,
                       LesionTrack.status, LesionTrackMember.study_id,
                       Study.study_date, LesionTrackMember.lesion_id,
                       Lesion.longest_axial_diameter_mm, Lesion.volume_ml)
                .join(LesionTrackMember, LesionTrackMember.track_id == LesionTrack.id)
                .join(Lesion, Lesion.id == LesionTrackMember.lesion_id)
                .join(Segmentation, Segmentation.id == Lesion.segmentation_id)
                .join(Study, Study.id == LesionTrackMember.study_id)
                .join(Patient, Patient.id == LesionTrack.patient_id)
                .where(LesionTrack.model_id == model_id, finished)
                .order_by(Patient.pseudo_id, LesionTrack.track_number, oldest_first(Study.study_date)),
                LesionTrack.patient_id)),
            "volumetry": frame(where_patient(
                select(Patient.pseudo_id.label("patient"), VolumetryResult.study_id,
                       VolumetryResult.series_id, Series.phase, VolumetryResult.total_ml,
                       VolumetryResult.functional_ml, VolumetryResult.deviation_pct,
                       VolumetryResult.flagged, VolumetryResult.liver_cut_at)
                .join(Series, Series.id == VolumetryResult.series_id)
                .join(Segmentation, (Segmentation.series_id == Series.id) & (Segmentation.model_id == model_id))
                .join(Study, Study.id == VolumetryResult.study_id)
                .join(Patient, Patient.id == Study.patient_id)
                .where(VolumetryResult.model_id == model_id, finished)
                .order_by(VolumetryResult.study_id, VolumetryResult.series_id), Study.patient_id)),
            "tracking_warnings": frame(where_patient(
                select(Patient.pseudo_id.label("patient"), TrackingWarning.message)
                .join(Patient, Patient.id == TrackingWarning.patient_id)
                .where(TrackingWarning.model_id == model_id)
                .order_by(Patient.pseudo_id, TrackingWarning.id), TrackingWarning.patient_id)),
        }
        tables["response"], tables["response_targets"] = _response_tables(session.execute(where_patient(
            select(Patient.pseudo_id.label("patient"), Response.study_id, Study.study_date,
                   Response.source, Response.recist_category, Response.sum_diameters_mm,
                   Response.nadir_sum_mm, Response.baseline_study_id, Response.targets, Response.new_lesions)
            .join(Study, Study.id == Response.study_id)
            .join(Patient, Patient.id == Response.patient_id)
            .where(shown_responses(model_id))
            .order_by(Patient.pseudo_id, oldest_first(Study.study_date), Response.source),
            Response.patient_id)).all())
        tables["fluid_places"] = _fluid_places_table(session.execute(where_patient(
            select(Patient.pseudo_id.label("patient"), Study.id.label("study_id"), Series.id.label("series_id"),
                   Series.phase, Segmentation.fluid_places)
            .join(Series, Series.id == Segmentation.series_id)
            .join(Study, Study.id == Series.study_id)
            .join(Patient, Patient.id == Study.patient_id)
            .where(Segmentation.model_id == model_id, finished)
            .order_by(Patient.pseudo_id, Series.id), Study.patient_id)).all())
        # "" is "looked, not cut" in the store; a file reader takes any string for a cut
        cut_at = tables["volumetry"]["liver_cut_at"]
        tables["volumetry"]["liver_cut_at"] = cut_at.where(cut_at != "", None)
        doc = _agreement_doc(session, patient_ids, model_id) if model_id else None
    links = doc["links"] if doc else []
    tables["measurements"] = pd.DataFrame.from_records(links, columns=[
        "measurement_id", "patient", "study_id", "study_date", "lesion_label", "reader",
        "radiologist_mm", "model_mm", "track_number", "lesion_id", "method"])
    stats_rows = []
    if doc:
        stats_rows.append({"scope": "cohort", "patient": None, **doc["cohort"]})
        stats_rows += [{"scope": "patient", "patient": p, **s} for p, s in doc["patients"].items()]
    tables["agreement"] = pd.DataFrame.from_records(stats_rows, columns=[
        "scope", "patient", "n", "mean_abs_diff_mm", "bias_mm", "sd_diff_mm", "loa_low_mm",
        "loa_high_mm", "pearson_r"])
    return {name: _whole_number_ids(table) for name, table in tables.items()}


def _response_tables(rows: Sequence[Any]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The responses, with the baseline sum their changes are read from and the new lesions
    (:func:`lvt_core.response.describe_new_lesions`, "" for none), and one row per target and response
    (``responses.targets``): which lesions made each sum. Rows stored before revision 0013
    have no targets, and their baseline, nadir and new lesions are empty."""
    response = pd.DataFrame.from_records(
        [(r.patient, r.study_id, r.study_date, r.source, r.recist_category, r.sum_diameters_mm,
          sum(t["baseline_mm"] for t in r.targets) if r.targets is not None else None, r.nadir_sum_mm,
          (describe_new_lesions(r.new_lesions) if r.new_lesions else "") if r.new_lesions is not None else None,
          r.baseline_study_id)
         for r in rows],
        columns=["patient", "study_id", "study_date", "source", "recist_category", "sum_diameters_mm",
                 "baseline_sum_mm", "nadir_sum_mm", "new_lesions", "baseline_study_id"])
    targets = pd.DataFrame.from_records(
        [(r.patient, r.study_id, r.source, t["target"], t["baseline_mm"], t["mm"])
         for r in rows for t in r.targets or []],
        columns=["patient", "study_id", "source", "target", "baseline_mm", "diameter_mm"])
    return response, targets


def _fluid_places_table(rows: Iterable[Any]) -> pd.DataFrame:
    """One row per place a segmentation left out as fluid (``segmentations.fluid_places``), so a
    cohort study can see what the fluid rule removed, and where."""
    columns = ["patient", "study_id", "series_id", "phase", "centre_x_mm", "centre_y_mm", "centre_z_mm",
               "volume_ml", "densest_hu"]
    records = [(patient, study_id, series_id, phase, *place["centre_mm"], place["volume_ml"], place["densest_hu"])
               for patient, study_id, series_id, phase, places in rows for place in places or []]
    return pd.DataFrame.from_records(records, columns=columns)


def _whole_number_ids(table: pd.DataFrame) -> pd.DataFrame:
    """Ids, numbers and indices as nullable integers: a missing link made pandas write the
    whole column as floats (``track_number`` 1.0), which other tools do not join on."""
    for column in table.columns:
        if (column.endswith(("_id", "_number", "_index")) and pd.api.types.is_float_dtype(table[column])
                and (table[column].dropna() % 1 == 0).all()):
            table[column] = table[column].astype("Int64")
    return table


# -- clinician corrections ------------------------------------------------------------------


def _override(
    kind: str, lesion_id: int, track_number: int | None, user_id: int | None,
    note: str | None, url: str | None, data_root: Path | None,
) -> dict[str, Any]:
    with _session(url) as session:
        lesion = session.get(Lesion, lesion_id)
        if lesion is None:
            raise UserError(f"lesion {lesion_id} does not exist")
        seg = session.get(Segmentation, lesion.segmentation_id)
        assert seg is not None
        series = session.get(Series, seg.series_id)
        assert series is not None
        study = session.get(Study, series.study_id)
        assert study is not None
        target = None
        if kind == "relink":
            target = session.scalar(select(LesionTrack).where(
                LesionTrack.patient_id == study.patient_id, LesionTrack.model_id == seg.model_id,
                LesionTrack.track_number == track_number))
            if target is None:
                raise UserError(f"track {track_number} does not exist for this patient")
        session.add(TrackOverride(kind=kind, lesion_id=lesion_id,
                                  target_track_id=target.id if target else None,
                                  user_id=user_id, note=note))
        session.add(AuditEvent(user_id=user_id, action=f"track_{kind}", target=f"lesion {lesion_id}",
                               detail={"track_number": track_number, "note": note}))
        session.flush()
        summary = refresh_patient(session, study.patient_id, seg.model_id, data_root)
        session.commit()
        return summary


def relink_lesion(
    lesion_id: int, track_number: int, user_id: int | None = None, note: str | None = None,
    url: str | None = None, data_root: Path | None = None,
) -> dict[str, Any]:
    """Put a lesion into track ``track_number``; kept by every later re-track."""
    return _override("relink", lesion_id, track_number, user_id, note, url, data_root)


def mark_not_lesion(
    lesion_id: int, user_id: int | None = None, note: str | None = None,
    url: str | None = None, data_root: Path | None = None,
) -> dict[str, Any]:
    """Exclude a lesion from tracking and response ("not a lesion"); kept by later runs."""
    return _override("not_lesion", lesion_id, None, user_id, note, url, data_root)


# -- 3D -------------------------------------------------------------------------------------


def scene_for_study(
    study_id: int, cache_dir: Path | None = None, model_id: int | None = None,
    url: str | None = None, data_root: Path | None = None,
) -> Any:
    """Meshes (:class:`lvt_core.scene.SceneMeshes`) of a study's series tracking would follow.

    Cached on disk under ``cache_dir`` (default ``<data dir>/meshes``) by label-map hash, so
    the 3D page loads a study's meshes once. Tumor keys are lesion indices of that series.
    """
    from lvt_core.scene import build_scene_meshes

    root = data_root or storage.data_dir()
    with _session(url) as session:
        study = session.get(Study, study_id)
        if study is None:
            raise UserError(f"study {study_id} is not in the store")
        model_id = model_id or current_model_id(session)
        drawn = session.execute(
            select(Segmentation, Series.phase).join(Series, Series.id == Segmentation.series_id)
            .where(Series.study_id == study_id, Segmentation.model_id == model_id,
                   Segmentation.status == "done").order_by(Series.id)
        ).all()
        if not drawn:
            raise UserError(f"study {study_id} has no finished segmentation; run `lvt batch`")
        # the study's own series, portal first as tracking picks (undated studies included)
        seg = min(drawn, key=lambda row: _phase_rank(row[1]))[0]
        path = storage.resolve(seg.label_map_path or "", root)
    labels = sitk.ReadImage(str(path))
    return build_scene_meshes(labels, cache_dir=cache_dir or root / "meshes")
