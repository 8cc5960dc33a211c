"""Read-only queries the app, the CLI and the services share.

They return plain dataclasses (easy to JSON-encode and safe to use after the session
closes), never ORM rows.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from sqlalchemy import func, select
from sqlalchemy.orm import Session, selectinload

from db.models import Measurement, Patient, Series, Study
from db.ordering import newest_first, oldest_first


@dataclass(frozen=True)
class PatientSummary:
    """One row of the patients list."""

    pseudo_id: str
    studies: int
    series: int
    first_study_date: dt.date | None
    last_study_date: dt.date | None


@dataclass(frozen=True)
class SeriesInfo:
    """A series as the timeline shows it."""

    id: int
    series_instance_uid: str
    phase: str
    modality: str
    description: str | None
    spacing_mm: tuple[float, float, float]
    size: tuple[int, int, int]
    slice_thickness: float | None
    image_path: str
    content_hash: str
    warnings: tuple[str, ...] = ()  # what ingest noticed (split from a multiphase series, padding)


@dataclass(frozen=True)
class StudyInfo:
    """A study (timepoint) with its series."""

    id: int
    study_instance_uid: str
    study_date: dt.date | None
    accession: str | None
    description: str | None
    series: list[SeriesInfo] = field(default_factory=list)


@dataclass(frozen=True)
class PatientTimeline:
    """A patient's studies in date order, each with its series."""

    pseudo_id: str
    studies: list[StudyInfo]


@dataclass(frozen=True)
class MeasurementInfo:
    """A radiologist measurement with the study it belongs to."""

    study_id: int
    study_date: dt.date | None
    lesion_label: str
    longest_diameter_mm: float
    short_axis_mm: float | None
    reader: str
    slice_index: int | None
    location_mm: tuple[float, float, float] | None
    note: str | None


def list_patients(
    session: Session, limit: int | None = None, offset: int = 0
) -> list[PatientSummary]:
    """Every patient with study and series counts and first/last study date (one query)."""
    series_counts = (
        select(Series.study_id, func.count(Series.id).label("n"))
        .group_by(Series.study_id)
        .subquery()
    )
    stmt = (
        select(
            Patient.pseudo_id,
            func.count(Study.id),
            func.coalesce(func.sum(series_counts.c.n), 0),
            func.min(Study.study_date),
            func.max(Study.study_date),
        )
        .outerjoin(Study, Study.patient_id == Patient.id)
        .outerjoin(series_counts, series_counts.c.study_id == Study.id)
        .group_by(Patient.id, Patient.pseudo_id)
        .order_by(newest_first(func.max(Study.study_date)), Patient.pseudo_id)
        .offset(offset)
    )
    if limit is not None:
        stmt = stmt.limit(limit)
    return [
        PatientSummary(pid, int(n_st), int(n_se), first, last)
        for pid, n_st, n_se, first, last in session.execute(stmt)
    ]


def get_patient(session: Session, pseudo_id: str) -> Patient | None:
    """The patient row with this pseudonymous id, if any."""
    return session.scalar(select(Patient).where(Patient.pseudo_id == pseudo_id))


def _series_info(s: Series) -> SeriesInfo:
    return SeriesInfo(
        id=s.id,
        series_instance_uid=s.series_instance_uid,
        phase=s.phase,
        modality=s.modality,
        description=s.description,
        spacing_mm=(s.spacing_x, s.spacing_y, s.spacing_z),
        size=(s.size_x, s.size_y, s.size_z),
        slice_thickness=s.slice_thickness,
        image_path=s.image_path,
        content_hash=s.content_hash,
        warnings=tuple(s.warnings or ()),
    )


def patient_timeline(session: Session, pseudo_id: str) -> PatientTimeline | None:
    """The patient's studies (oldest first) with their series, or None if unknown."""
    stmt = (
        select(Study)
        .join(Patient, Patient.id == Study.patient_id)
        .where(Patient.pseudo_id == pseudo_id)
        .options(selectinload(Study.series))
        .order_by(oldest_first(Study.study_date), Study.id)
    )
    studies = session.scalars(stmt).all()
    if not studies and get_patient(session, pseudo_id) is None:
        return None
    return PatientTimeline(
        pseudo_id=pseudo_id,
        studies=[
            StudyInfo(
                id=st.id,
                study_instance_uid=st.study_instance_uid,
                study_date=st.study_date,
                accession=st.accession,
                description=st.description,
                series=[_series_info(s) for s in st.series],
            )
            for st in studies
        ],
    )


def list_studies(session: Session, pseudo_id: str) -> list[StudyInfo] | None:
    """The patient's studies with their series (None if the patient is unknown)."""
    timeline = patient_timeline(session, pseudo_id)
    return None if timeline is None else timeline.studies


def patient_measurements(session: Session, pseudo_id: str) -> list[MeasurementInfo]:
    """Radiologist measurements of a patient, oldest study first."""
    stmt = (
        select(Measurement, Study.study_date)
        .join(Study, Study.id == Measurement.study_id)
        .join(Patient, Patient.id == Measurement.patient_id)
        .where(Patient.pseudo_id == pseudo_id)
        .order_by(oldest_first(Study.study_date), Measurement.lesion_label, Measurement.reader)
    )
    out = []
    for m, date in session.execute(stmt):
        location = None
        if None not in (m.location_x_mm, m.location_y_mm, m.location_z_mm):
            location = (m.location_x_mm, m.location_y_mm, m.location_z_mm)
        out.append(
            MeasurementInfo(
                study_id=m.study_id,
                study_date=date,
                lesion_label=m.lesion_label,
                longest_diameter_mm=m.longest_diameter_mm,
                short_axis_mm=m.short_axis_mm,
                reader=m.reader,
                slice_index=m.slice_index,
                location_mm=location,  # type: ignore[arg-type]
                note=m.note,
            )
        )
    return out
