"""Read queries of the web pages: one round trip per table, returned as DataFrames.

Pages never touch ORM rows or sessions; they call these (through the cached wrappers in
:mod:`app.web.data`). Every query is written to stay fast at 1,000 patients and 10,000
studies: aggregates and window functions in SQL, no per-patient loops.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
from sqlalchemy import and_, func, or_, select
from sqlalchemy.orm import Session, aliased

from app.services.analytics import (
    current_model_id,
    shown_responses,
    tracked_series_ids,
    tracking_warnings,
)
from db import queries as dbq
from db.models import (
    BatchJob,
    BatchRun,
    Lesion,
    LesionTrack,
    LesionTrackMember,
    Measurement,
    MeasurementLink,
    Model,
    Patient,
    Response,
    Segmentation,
    Series,
    Study,
    VolumetryResult,
)
from db.ordering import newest_first, oldest_first
from lvt_core import __version__ as lvt_version
from lvt_core.coverage import MIN_LIVER_ML


def data_version(session: Session) -> tuple[object, ...]:
    """A cheap fingerprint of the analysed data (one round trip of indexed aggregates).

    Cached page reads are keyed on it, so a batch, an import or a correction shows at the
    next rerun while unchanged data is never queried twice within the cache TTL.
    """
    parts = [
        select(func.max(Segmentation.id)).scalar_subquery(),
        select(func.count(Segmentation.id)).where(Segmentation.status == "done").scalar_subquery(),
        select(func.max(Response.id)).scalar_subquery(),
        select(func.max(MeasurementLink.id)).scalar_subquery(),
        select(func.max(Measurement.id)).scalar_subquery(),
        select(func.max(LesionTrack.updated_at)).scalar_subquery(),
        select(func.max(VolumetryResult.id)).scalar_subquery(),
        select(func.max(Patient.id)).scalar_subquery(),
    ]
    return tuple(session.execute(select(*parts)).one())


def model_label(session: Session, model_id: int | None) -> str:
    """``name version`` of a model, for captions."""
    if model_id is None:
        return "no model results yet"
    m = session.get(Model, model_id)
    return f"{m.name} {m.version}" if m else f"model {model_id}"


def _latest_response(source: str, model_id: int | None):  # type: ignore[no-untyped-def]
    ranked = (
        select(
            Response.patient_id.label("patient_id"),
            Response.recist_category.label("category"),
            func.row_number()
            .over(partition_by=Response.patient_id, order_by=(newest_first(Study.study_date), Study.id.desc()))
            .label("rn"),
        )
        .join(Study, Study.id == Response.study_id)
        .where(Response.source == source, shown_responses(model_id))
        .subquery()
    )
    return select(ranked.c.patient_id, ranked.c.category).where(ranked.c.rn == 1).subquery()


def patient_rows(session: Session, search: str = "", limit: int = 500) -> pd.DataFrame:
    """The patients list: last study, studies, tracked lesions, current responses, volumetry flag,
    and how many radiologist measurements link to no track (the model's possible misses).

    ``search`` matches the pseudonymous id (case-insensitive substring).
    """
    model_id = current_model_id(session)
    studies = (
        select(
            Study.patient_id.label("patient_id"),
            func.count(Study.id).label("studies"),
            func.max(Study.study_date).label("last_study"),
        )
        .group_by(Study.patient_id)
        .subquery()
    )
    tracks = (
        select(LesionTrack.patient_id.label("patient_id"), func.count(LesionTrack.id).label("n"))
        .where(LesionTrack.model_id == model_id)
        .group_by(LesionTrack.patient_id)
        .subquery()
    )
    flags = (  # a flagged phase, or one whose scan holds no liver: either needs a look
        select(Study.patient_id.label("patient_id"), func.count(VolumetryResult.id).label("n"))
        .join(VolumetryResult, VolumetryResult.study_id == Study.id)
        .where(VolumetryResult.model_id == model_id,
               or_(VolumetryResult.flagged.is_(True), VolumetryResult.total_ml < MIN_LIVER_ML))
        .group_by(Study.patient_id)
        .subquery()
    )
    unlinked = (  # the radiologist's measurements the last refresh linked to no track: possible misses
        select(MeasurementLink.patient_id.label("patient_id"), func.count(MeasurementLink.id).label("n"))
        .where(MeasurementLink.model_id == model_id, MeasurementLink.track_number.is_(None))
        .group_by(MeasurementLink.patient_id)
        .subquery()
    )
    model_resp = _latest_response("model", model_id)
    rad_resp = _latest_response("radiologist", model_id)
    stmt = (
        select(
            Patient.pseudo_id,
            studies.c.last_study,
            func.coalesce(studies.c.studies, 0),
            func.coalesce(tracks.c.n, 0),
            model_resp.c.category,
            rad_resp.c.category,
            func.coalesce(flags.c.n, 0),
            func.coalesce(unlinked.c.n, 0),
        )
        .outerjoin(studies, studies.c.patient_id == Patient.id)
        .outerjoin(unlinked, unlinked.c.patient_id == Patient.id)
        .outerjoin(tracks, tracks.c.patient_id == Patient.id)
        .outerjoin(flags, flags.c.patient_id == Patient.id)
        .outerjoin(model_resp, model_resp.c.patient_id == Patient.id)
        .outerjoin(rad_resp, rad_resp.c.patient_id == Patient.id)
        .order_by(studies.c.last_study.desc(), Patient.pseudo_id)
        .limit(limit)
    )
    if search.strip():
        stmt = stmt.where(Patient.pseudo_id.ilike(f"%{search.strip()}%"))
    columns = [
        "patient",
        "last study",
        "studies",
        "tracked lesions",
        "response (model)",
        "response (radiologist)",
        "flagged volumetry",
        "unlinked measurements",
    ]
    frame = pd.DataFrame(session.execute(stmt).all(), columns=columns)
    frame["volumetry"] = frame.pop("flagged volumetry").map(lambda n: "⚠ check" if n else "ok")
    return frame


def count_patients(session: Session) -> int:
    """Number of patients in the store."""
    return int(session.scalar(select(func.count(Patient.id))) or 0)


@dataclass
class FollowUp:
    """Everything the follow-up page shows for one patient (plain frames, no ORM rows)."""

    pseudo_id: str
    model_id: int | None
    studies: list[dbq.StudyInfo]
    lesions: pd.DataFrame
    measurements: pd.DataFrame
    responses: pd.DataFrame
    volumes: pd.DataFrame
    label_maps: dict[int, str] = field(default_factory=dict)
    """series id → store-relative label map path of the shown model."""
    tracked_series: frozenset[int] = frozenset()
    """The series the tracks follow, one per day (:func:`app.services.analytics.tracked_series_ids`)."""
    tracking_warnings: list[str] = field(default_factory=list)
    """Why the last tracking deserves a second look (:func:`app.services.analytics.tracking_warnings`)."""
    dates_shifted: bool | None = None
    """Whether de-identification shifted the patient's dates (None: stored before LVT recorded it)."""

    def tracked_by_day(self) -> dict[dt.date | None, dbq.SeriesInfo]:
        """The series the tracks follow on each study day, where a reader's measurements are read."""
        return {study.study_date: se for study in self.studies for se in study.series if se.id in self.tracked_series}


LESION_COLUMNS = [
    "lesion_id", "lesion_index", "study_id", "study_date", "series_id", "phase", "track",
    "track_id", "diameter_mm", "short_axis_mm", "volume_ml", "x", "y", "z", "found_by",
    "cut_by_scan_edge", "z_range",
]


def _z_range(bbox: list[int] | None) -> tuple[int, int] | None:
    """The axial slices a lesion spans, as the stored measurement links read them."""
    return (bbox[2], bbox[5]) if bbox and len(bbox) == 6 else None


def followup(session: Session, pseudo_id: str) -> FollowUp | None:
    """One patient's studies, tracked lesions, measurements, responses and volumes."""
    timeline = dbq.patient_timeline(session, pseudo_id)
    if timeline is None:
        return None
    patient = dbq.get_patient(session, pseudo_id)
    assert patient is not None
    model_id = current_model_id(session)
    lesion_rows = session.execute(
        select(
            Lesion.id, Lesion.lesion_index, Study.id, Study.study_date, Series.id, Series.phase,
            LesionTrack.track_number, LesionTrack.id, Lesion.longest_axial_diameter_mm,
            Lesion.short_axis_mm, Lesion.volume_ml, Lesion.centroid_x, Lesion.centroid_y,
            Lesion.centroid_z, Lesion.found_by, Lesion.cut_by_scan_edge, Lesion.bbox,
        )
        .join(LesionTrackMember, LesionTrackMember.lesion_id == Lesion.id)
        .join(LesionTrack, LesionTrack.id == LesionTrackMember.track_id)
        .join(Study, Study.id == LesionTrackMember.study_id)
        .join(Segmentation, Segmentation.id == Lesion.segmentation_id)
        .join(Series, Series.id == Segmentation.series_id)
        .where(LesionTrack.patient_id == patient.id, LesionTrack.model_id == model_id)
        .order_by(oldest_first(Study.study_date), LesionTrack.track_number)
    ).all()
    lesions = pd.DataFrame([(*row[:-1], _z_range(row.bbox)) for row in lesion_rows], columns=LESION_COLUMNS)
    measurements = pd.DataFrame(
        [
            {
                "study_id": m.study_id,
                "study_date": m.study_date,
                "lesion": m.lesion_label,
                "diameter_mm": m.longest_diameter_mm,
                "short_axis_mm": m.short_axis_mm,
                "reader": m.reader,
                "slice_index": m.slice_index,
                "location_mm": m.location_mm,
            }
            for m in dbq.patient_measurements(session, pseudo_id)
        ],
        columns=[
            "study_id", "study_date", "lesion", "diameter_mm", "short_axis_mm", "reader",
            "slice_index", "location_mm",
        ],
    )
    baseline = aliased(Study)
    responses = pd.DataFrame(
        session.execute(
            select(
                Response.study_id, Study.study_date, Response.source, Response.recist_category,
                Response.sum_diameters_mm, Response.nadir_sum_mm, Response.new_lesion, Response.new_lesions,
                Response.targets, baseline.study_date,
            )
            .join(Study, Study.id == Response.study_id)
            .outerjoin(baseline, baseline.id == Response.baseline_study_id)
            .where(Response.patient_id == patient.id, shown_responses(model_id))
            .order_by(oldest_first(Study.study_date))
        ).all(),
        columns=["study_id", "study_date", "source", "category", "sum_mm", "nadir_mm", "new_lesion", "new_lesions",
                 "targets", "baseline_date"],
    )
    volumes = pd.DataFrame(
        session.execute(
            select(
                VolumetryResult.study_id, Study.study_date, Series.phase, VolumetryResult.total_ml,
                VolumetryResult.functional_ml, VolumetryResult.deviation_pct,
                VolumetryResult.flagged, VolumetryResult.liver_cut_at,
            )
            .join(Study, Study.id == VolumetryResult.study_id)
            .join(Series, Series.id == VolumetryResult.series_id)
            .where(Study.patient_id == patient.id)
            .where(VolumetryResult.model_id == model_id)
            .order_by(oldest_first(Study.study_date), Series.phase)
        ).all(),
        columns=["study_id", "study_date", "phase", "total_ml", "functional_ml", "deviation_pct", "flagged",
                 "liver_cut_at"],
    )
    label_maps = dict(
        session.execute(
            select(Segmentation.series_id, Segmentation.label_map_path)
            .join(Series, Series.id == Segmentation.series_id)
            .join(Study, Study.id == Series.study_id)
            .where(
                Study.patient_id == patient.id,
                Segmentation.model_id == model_id,
                Segmentation.status == "done",
                Segmentation.label_map_path.is_not(None),
            )
        ).all()
    )
    return FollowUp(
        pseudo_id, model_id, timeline.studies, lesions, measurements, responses, volumes, label_maps,
        tracked_series_ids(session, patient.id, model_id), tracking_warnings(session, patient.id, model_id),
        patient.dates_shifted,
    )


def volumetry_rows(session: Session, limit: int = 20_000) -> pd.DataFrame:
    """The volumetry result of every phase of a multi-phase day: patient, study, phase, volumes,
    deviation, flag (a phase without a liver has no deviation, and its day stays listed)."""
    model_id = current_model_id(session)
    stmt = (
        select(
            Patient.pseudo_id, Study.id, Study.study_date, Series.phase, VolumetryResult.total_ml,
            VolumetryResult.functional_ml, VolumetryResult.deviation_pct, VolumetryResult.flagged,
            VolumetryResult.liver_cut_at,
        )
        .join(Study, Study.id == VolumetryResult.study_id)
        .join(Series, Series.id == VolumetryResult.series_id)
        .join(Patient, Patient.id == Study.patient_id)
        .order_by(newest_first(Study.study_date), Study.id, Series.phase)
        .limit(limit)
    )
    if model_id is not None:
        stmt = stmt.where(VolumetryResult.model_id == model_id)
    frame = pd.DataFrame(
        session.execute(stmt).all(),
        columns=[
            "patient", "study_id", "study_date", "phase", "total_ml", "functional_ml",
            "deviation_pct", "flagged", "liver_cut_at",
        ],
    )
    day = frame["study_date"].astype(object).where(frame["study_date"].notna(), "study " + frame["study_id"].astype(str))
    phases_of_day = frame.groupby([frame["patient"], day])["phase"].transform("size")
    return frame[phases_of_day >= 2].reset_index(drop=True)


@dataclass(frozen=True)
class LesionFilter:
    """Cohort table filters, applied in SQL (``None`` means no restriction)."""

    phases: tuple[str, ...] | None = None
    min_diameter_mm: float = 0.0
    categories: tuple[str, ...] | None = None
    """Latest model RECIST category of the patient."""


def _lesion_query(session: Session, flt: LesionFilter, columns: list) -> Any:  # type: ignore[type-arg]
    model_id = current_model_id(session)
    stmt = (
        select(*columns)
        .select_from(Lesion)
        .join(LesionTrackMember, LesionTrackMember.lesion_id == Lesion.id)
        .join(LesionTrack, LesionTrack.id == LesionTrackMember.track_id)
        .join(Study, Study.id == LesionTrackMember.study_id)
        .join(Patient, Patient.id == Study.patient_id)
        .join(Segmentation, Segmentation.id == Lesion.segmentation_id)
        .join(Series, Series.id == Segmentation.series_id)
        .where(LesionTrack.model_id == model_id)
    )
    if flt.phases is not None:
        stmt = stmt.where(Series.phase.in_(flt.phases))
    if flt.min_diameter_mm > 0:
        stmt = stmt.where(Lesion.longest_axial_diameter_mm >= flt.min_diameter_mm)
    if flt.categories is not None:
        latest = _latest_response("model", model_id)
        stmt = stmt.where(Patient.id.in_(
            select(latest.c.patient_id).where(latest.c.category.in_(flt.categories))))
    return stmt


def cohort_lesion_rows(
    session: Session, flt: LesionFilter | None = None, limit: int | None = None
) -> pd.DataFrame:
    """One row per tracked model lesion across the cohort (table and downloads), filtered in SQL."""
    columns = [
        Patient.pseudo_id, Study.id, Study.study_date, Series.phase, LesionTrack.track_number,
        LesionTrack.status, Lesion.longest_axial_diameter_mm, Lesion.short_axis_mm,
        Lesion.volume_ml, Lesion.centroid_x, Lesion.centroid_y, Lesion.centroid_z, Lesion.found_by,
    ]
    stmt = _lesion_query(session, flt or LesionFilter(), columns).order_by(
        Patient.pseudo_id, Study.study_date, LesionTrack.track_number).limit(limit)
    return pd.DataFrame(
        session.execute(stmt).all(),
        columns=[
            "patient", "study_id", "study_date", "phase", "track", "track_status", "diameter_mm",
            "short_axis_mm", "volume_ml", "x", "y", "z", "found_by",
        ],
    )


def cohort_lesion_counts(session: Session, flt: LesionFilter | None = None) -> tuple[int, int]:
    """(lesion rows, patients) matching the filter, counted in SQL."""
    stmt = _lesion_query(session, flt or LesionFilter(),
                         [func.count(Lesion.id), func.count(func.distinct(Patient.id))])
    rows, patients = session.execute(stmt).one()
    return int(rows or 0), int(patients or 0)


def tracked_phases(session: Session) -> list[str]:
    """Phases that have tracked lesions of the current model (filter choices)."""
    stmt = _lesion_query(session, LesionFilter(), [Series.phase]).distinct()
    return sorted(p for p in session.scalars(stmt) if p)


def cohort_pair_rows(session: Session) -> pd.DataFrame:
    """Linked (radiologist, model) diameter pairs, read from the precomputed links."""
    model_id = current_model_id(session)
    stmt = (
        select(
            Patient.pseudo_id, MeasurementLink.radiologist_mm, MeasurementLink.model_mm,
            MeasurementLink.method,
        )
        .join(Patient, Patient.id == MeasurementLink.patient_id)
        .where(MeasurementLink.model_id == model_id, MeasurementLink.lesion_id.is_not(None))
    )
    return pd.DataFrame(
        session.execute(stmt).all(), columns=["patient", "radiologist_mm", "model_mm", "method"]
    )


def response_counts(session: Session) -> pd.DataFrame:
    """Number of RECIST assessments per source and category (aggregated in SQL)."""
    stmt = (select(Response.source, Response.recist_category, func.count(Response.id))
            .where(shown_responses(current_model_id(session)))
            .group_by(Response.source, Response.recist_category))
    return pd.DataFrame(session.execute(stmt).all(), columns=["source", "category", "n"])


def store_counts(session: Session) -> dict[str, int]:
    """Ingest status: rows per table and segmentations per status."""
    counts = {
        "patients": select(func.count(Patient.id)),
        "studies": select(func.count(Study.id)),
        "series": select(func.count(Series.id)),
        "measurements": select(func.count(Measurement.id)),
        "lesions": select(func.count(Lesion.id)),
        "tracks": select(func.count(LesionTrack.id)),
    }
    out = {name: int(session.scalar(stmt) or 0) for name, stmt in counts.items()}
    for status, n in session.execute(
        select(Segmentation.status, func.count(Segmentation.id)).group_by(Segmentation.status)
    ):
        out[f"segmentations {status}"] = int(n)
    return out


def batch_runs(session: Session, limit: int = 20) -> pd.DataFrame:
    """Newest batch runs with job counts per status (one grouped query)."""
    runs = session.execute(
        select(BatchRun.id, BatchRun.status, BatchRun.created_at, BatchRun.finished_at)
        .order_by(BatchRun.id.desc())
        .limit(limit)
    ).all()
    frame = pd.DataFrame(runs, columns=["run", "status", "created", "finished"])
    if frame.empty:
        return frame.assign(done=[], failed=[], total=[])
    jobs = session.execute(
        select(BatchJob.run_id, BatchJob.status, func.count(BatchJob.id))
        .where(BatchJob.run_id.in_(frame["run"].tolist()))
        .group_by(BatchJob.run_id, BatchJob.status)
    ).all()
    per = pd.DataFrame(jobs, columns=["run", "job_status", "n"])
    pivot = per.pivot_table(index="run", columns="job_status", values="n", fill_value=0, aggfunc="sum")
    frame = frame.set_index("run")
    frame["done"] = pivot.get("done", pd.Series(dtype=int)).reindex(frame.index).fillna(0).astype(int)
    frame["failed"] = pivot.get("failed", pd.Series(dtype=int)).reindex(frame.index).fillna(0).astype(int)
    frame["total"] = pivot.sum(axis=1).reindex(frame.index).fillna(0).astype(int)
    return frame.reset_index()


def segmentations_by_version(session: Session) -> pd.DataFrame:
    """Finished segmentations per model and the LVT version whose pipeline drew them, so an
    admin sees what an upgrade left drawn by the old pipeline (``outdated``: a checkpoint's
    result from another version, or from before versions were recorded; imported label maps,
    which name no checkpoint file, are never outdated)."""
    rows = session.execute(
        select(Model.name, Model.version, Model.path, Segmentation.lvt_version, func.count(Segmentation.id))
        .join(Model, Model.id == Segmentation.model_id)
        .where(Segmentation.status == "done")
        .group_by(Model.name, Model.version, Model.path, Segmentation.lvt_version)
        .order_by(Model.name, Model.version, Segmentation.lvt_version)
    ).all()
    frame = pd.DataFrame(rows, columns=["model", "model_version", "path", "lvt_version", "segmentations"])
    frame["outdated"] = frame["path"].notna() & (frame["lvt_version"] != lvt_version)
    frame["lvt_version"] = frame["lvt_version"].fillna("not recorded")
    return frame.drop(columns=["path"])


def segmentations_to_redraw(session: Session) -> pd.DataFrame:
    """Finished segmentations a correction made stale (a day's phase corrected, a study dated
    into a day), per patient and reason: ``lvt batch --patient P --outdated`` redraws them."""
    rows = session.execute(
        select(Patient.pseudo_id, Segmentation.redraw_reason, func.count(Segmentation.id))
        .join(Series, Series.id == Segmentation.series_id)
        .join(Study, Study.id == Series.study_id)
        .join(Patient, Patient.id == Study.patient_id)
        .where(Segmentation.status == "done", Segmentation.redraw_reason.is_not(None))
        .group_by(Patient.pseudo_id, Segmentation.redraw_reason)
        .order_by(Patient.pseudo_id, Segmentation.redraw_reason)
    ).all()
    return pd.DataFrame(rows, columns=["patient", "reason", "segmentations"])


def track_choices(session: Session, patient_pseudo_id: str, model_id: int | None) -> list[tuple[int, int]]:
    """(track id, track number) pairs of a patient, for the relink selector."""
    return [
        (int(a), int(b))
        for a, b in session.execute(
            select(LesionTrack.id, LesionTrack.track_number)
            .join(Patient, Patient.id == LesionTrack.patient_id)
            .where(and_(Patient.pseudo_id == patient_pseudo_id, LesionTrack.model_id == model_id))
            .order_by(LesionTrack.track_number)
        )
    ]


def today() -> dt.date:
    """Today's date (one place, so tests can reason about it)."""
    return dt.date.today()
