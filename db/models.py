"""Typed SQLAlchemy 2.0 models of the LVT store.

The database holds identifiers, measurements and paths; images live as content-addressed
files (see :mod:`db.storage`). Status-like columns are short strings guarded by CHECK
constraints rather than native enums, so the same Alembic revisions run on SQLite and
PostgreSQL and downgrades leave no orphan types behind.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    CheckConstraint,
    Date,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

PHASES = ("noncontrast", "arterial", "portal", "late", "unknown")
SEGMENTATION_STATUSES = ("pending", "running", "done", "failed")
JOB_STATUSES = ("pending", "running", "done", "failed", "cancelled")
ROLES = ("clinician", "researcher", "admin")
OVERRIDE_KINDS = ("relink", "not_lesion")
RESPONSE_SOURCES = ("model", "radiologist")
RECIST_CATEGORIES = ("CR", "PR", "SD", "PD", "NE")
TRACK_STATUSES = ("persisting", "new", "disappeared", "merged", "split")


def utcnow() -> dt.datetime:
    """Timezone-aware now, so timestamps compare the same on SQLite and PostgreSQL."""
    return dt.datetime.now(dt.UTC)


def _in(column: str, values: tuple[str, ...]) -> str:
    quoted = ", ".join(f"'{v}'" for v in values)
    return f"{column} IN ({quoted})"


class UTCDateTime(TypeDecorator[dt.datetime]):
    """A timestamp that always comes back timezone-aware in UTC.

    SQLite stores no zone and handed naive datetimes back, PostgreSQL aware ones in its session
    zone, so the same store printed ``…T21:24:31`` on one and ``…+00:00`` on the other.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Any) -> dt.datetime | None:
        return _as_utc(value)

    def process_result_value(self, value: dt.datetime | None, dialect: Any) -> dt.datetime | None:
        return _as_utc(value)


def _as_utc(value: dt.datetime | None) -> dt.datetime | None:
    if value is None:
        return None
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


class Base(DeclarativeBase):
    """Declarative base with a naming convention, so constraint names are stable."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {dict[str, Any]: JSON, dt.datetime: UTCDateTime()}  # noqa: RUF012


class Patient(Base):
    """A patient known only by a pseudonymous id (an HMAC of the source id by default)."""

    __tablename__ = "patients"

    id: Mapped[int] = mapped_column(primary_key=True)
    pseudo_id: Mapped[str] = mapped_column(String(64), unique=True)
    # the de-identification policy the patient was ingested under (every later ingest must
    # match it, or intervals between studies break); NULL before revision 0008: not recorded
    identity_removed: Mapped[bool | None] = mapped_column(Boolean)
    dates_shifted: Mapped[bool | None] = mapped_column(Boolean)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)

    studies: Mapped[list[Study]] = relationship(
        back_populates="patient", cascade="all, delete-orphan", order_by="Study.study_date"
    )


class Study(Base):
    """One imaging visit (timepoint); dates are shifted per patient when de-identified."""

    __tablename__ = "studies"
    __table_args__ = (Index("ix_studies_patient_date", "patient_id", "study_date"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    patient_id: Mapped[int] = mapped_column(ForeignKey("patients.id", ondelete="CASCADE"))
    study_instance_uid: Mapped[str] = mapped_column(String(64), unique=True)
    accession: Mapped[str | None] = mapped_column(String(64), index=True)
    study_date: Mapped[dt.date | None] = mapped_column(Date)
    description: Mapped[str | None] = mapped_column(String(256))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)

    patient: Mapped[Patient] = relationship(back_populates="studies")
    series: Mapped[list[Series]] = relationship(
        back_populates="study", cascade="all, delete-orphan", order_by="Series.id"
    )


class Series(Base):
    """One 3D volume of a study (one contrast phase), stored as a content-addressed file."""

    __tablename__ = "series"
    __table_args__ = (CheckConstraint(_in("phase", PHASES), name="phase"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id", ondelete="CASCADE"), index=True)
    series_instance_uid: Mapped[str] = mapped_column(String(64), unique=True)
    phase: Mapped[str] = mapped_column(String(16), default="unknown")
    modality: Mapped[str] = mapped_column(String(16), default="CT")
    description: Mapped[str | None] = mapped_column(String(256))
    spacing_x: Mapped[float] = mapped_column(Float)
    spacing_y: Mapped[float] = mapped_column(Float)
    spacing_z: Mapped[float] = mapped_column(Float)
    size_x: Mapped[int] = mapped_column(Integer)
    size_y: Mapped[int] = mapped_column(Integer)
    size_z: Mapped[int] = mapped_column(Integer)
    slice_thickness: Mapped[float | None] = mapped_column(Float)
    image_path: Mapped[str] = mapped_column(String(256))
    content_hash: Mapped[str] = mapped_column(String(64), index=True)
    source_format: Mapped[str] = mapped_column(String(16), default="dicom")
    warnings: Mapped[list[str] | None] = mapped_column(JSON)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)

    study: Mapped[Study] = relationship(back_populates="series")


class Model(Base):
    """A segmentation model checkpoint, identified by name, version and file checksum."""

    __tablename__ = "models"
    __table_args__ = (UniqueConstraint("name", "version", name="uq_models_name_version"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(128))
    version: Mapped[str] = mapped_column(String(64))
    checksum: Mapped[str] = mapped_column(String(64))
    path: Mapped[str | None] = mapped_column(String(512))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class Segmentation(Base):
    """The label map one model produced for one series (at most one per pair)."""

    __tablename__ = "segmentations"
    __table_args__ = (
        UniqueConstraint("series_id", "model_id", name="uq_segmentations_series_model"),
        CheckConstraint(_in("status", SEGMENTATION_STATUSES), name="status"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    series_id: Mapped[int] = mapped_column(ForeignKey("series.id", ondelete="CASCADE"))
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id"), index=True)
    status: Mapped[str] = mapped_column(String(16), default="pending", index=True)
    label_map_path: Mapped[str | None] = mapped_column(String(256))
    label_map_hash: Mapped[str | None] = mapped_column(String(64))
    runtime_s: Mapped[float | None] = mapped_column(Float)
    # the arithmetic the network ran in ("fp32", "bf16", "fp16"): the same checkpoint gives
    # slightly different label maps in each, so a result names it; NULL before revision 0004
    precision: Mapped[str | None] = mapped_column(String(8))
    # the LVT version whose pipeline drew it (``lvt_core.__version__``): inference changes
    # between versions alter a checkpoint's label maps; NULL before revision 0006
    lvt_version: Mapped[str | None] = mapped_column(String(16))
    # why a correction made this segmentation stale (its day's phase corrected, a study dated
    # into its day); `lvt batch --outdated` redraws it, and the redraw clears it (migration 0011)
    redraw_reason: Mapped[str | None] = mapped_column(String(64))
    # places drawn as tumor that the day's reading made background as fluid, each
    # {centre_mm, volume_ml, densest_hu}: tracking warns when a lesion disappears at one (a
    # metastasis turned cystic); NULL not recorded (before migration 0012, an imported map)
    fluid_places: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON)
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    started_at: Mapped[dt.datetime | None]
    finished_at: Mapped[dt.datetime | None]

    lesions: Mapped[list[Lesion]] = relationship(
        back_populates="segmentation", cascade="all, delete-orphan", order_by="Lesion.lesion_index"
    )


class Lesion(Base):
    """One connected component of the tumor label in a segmentation (mm, ml, LPS)."""

    __tablename__ = "lesions"
    __table_args__ = (
        UniqueConstraint("segmentation_id", "lesion_index", name="uq_lesions_segmentation_index"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    segmentation_id: Mapped[int] = mapped_column(ForeignKey("segmentations.id", ondelete="CASCADE"))
    lesion_index: Mapped[int] = mapped_column(Integer)
    voxels: Mapped[int] = mapped_column(Integer)
    volume_ml: Mapped[float] = mapped_column(Float)
    longest_axial_diameter_mm: Mapped[float] = mapped_column(Float)
    short_axis_mm: Mapped[float | None] = mapped_column(Float)
    centroid_x: Mapped[float] = mapped_column(Float)
    centroid_y: Mapped[float] = mapped_column(Float)
    centroid_z: Mapped[float] = mapped_column(Float)
    bbox: Mapped[list[int] | None] = mapped_column(JSON)
    mean_hu: Mapped[float | None] = mapped_column(Float)
    # who drew it: "network", "faint_search" (the search after the network), NULL unknown
    # (an imported label map, or a row older than migration 0003)
    found_by: Mapped[str | None] = mapped_column(String(16))
    # the scan's edge cuts it: its sizes are lower bounds and it is never a RECIST target
    # (NULL: not known, a row older than migration 0011 until the patient's next refresh)
    cut_by_scan_edge: Mapped[bool | None] = mapped_column(Boolean)

    segmentation: Mapped[Segmentation] = relationship(back_populates="lesions")


class LesionTrack(Base):
    """A lesion followed over time; ``track_number`` stays stable for the patient."""

    __tablename__ = "lesion_tracks"
    __table_args__ = (
        UniqueConstraint("patient_id", "model_id", "track_number", name="uq_lesion_tracks_number"),
        CheckConstraint(_in("status", TRACK_STATUSES), name="status"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    patient_id: Mapped[int] = mapped_column(ForeignKey("patients.id", ondelete="CASCADE"))
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id"), index=True)
    track_number: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16), default="persisting")
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    members: Mapped[list[LesionTrackMember]] = relationship(
        back_populates="track", cascade="all, delete-orphan"
    )


class TrackingWarning(Base):
    """Why one patient's tracks under one model deserve a second look (a registration replaced
    by the scanner frame); replaced at each refresh of the patient."""

    __tablename__ = "tracking_warnings"
    __table_args__ = (Index("ix_tracking_warnings_patient_model", "patient_id", "model_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    patient_id: Mapped[int] = mapped_column(ForeignKey("patients.id", ondelete="CASCADE"))
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id", ondelete="CASCADE"))
    message: Mapped[str] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class LesionTrackMember(Base):
    """Links one lesion row (at one timepoint) to a track."""

    __tablename__ = "lesion_track_members"
    __table_args__ = (
        UniqueConstraint("track_id", "lesion_id", name="uq_lesion_track_members_pair"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    track_id: Mapped[int] = mapped_column(ForeignKey("lesion_tracks.id", ondelete="CASCADE"))
    lesion_id: Mapped[int] = mapped_column(ForeignKey("lesions.id", ondelete="CASCADE"), index=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id", ondelete="CASCADE"), index=True)

    track: Mapped[LesionTrack] = relationship(back_populates="members")


class TrackOverride(Base):
    """A clinician's correction of the automatic tracking; replayed after every re-track."""

    __tablename__ = "track_overrides"
    __table_args__ = (CheckConstraint(_in("kind", OVERRIDE_KINDS), name="kind"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    lesion_id: Mapped[int] = mapped_column(ForeignKey("lesions.id", ondelete="CASCADE"), index=True)
    target_track_id: Mapped[int | None] = mapped_column(
        ForeignKey("lesion_tracks.id", ondelete="SET NULL")
    )
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    note: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class Measurement(Base):
    """A radiologist's measurement of one lesion at one study (imported from CSV)."""

    __tablename__ = "measurements"
    __table_args__ = (
        UniqueConstraint("study_id", "lesion_label", "reader", name="uq_measurements_key"),
        Index("ix_measurements_patient", "patient_id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    patient_id: Mapped[int] = mapped_column(ForeignKey("patients.id", ondelete="CASCADE"))
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id", ondelete="CASCADE"))
    lesion_label: Mapped[str] = mapped_column(String(64))
    longest_diameter_mm: Mapped[float] = mapped_column(Float)
    short_axis_mm: Mapped[float | None] = mapped_column(Float)
    slice_index: Mapped[int | None] = mapped_column(Integer)
    location_x_mm: Mapped[float | None] = mapped_column(Float)
    location_y_mm: Mapped[float | None] = mapped_column(Float)
    location_z_mm: Mapped[float | None] = mapped_column(Float)
    reader: Mapped[str] = mapped_column(String(128), default="")
    note: Mapped[str | None] = mapped_column(Text)
    # the radiologist called the lesion new at this study (RECIST: progression); NULL before 0009
    new_lesion: Mapped[bool | None] = mapped_column(Boolean)
    source_file: Mapped[str | None] = mapped_column(String(512))
    source_row: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class VolumetryResult(Base):
    """Liver volume of one series, and its deviation from the same-day mean."""

    __tablename__ = "volumetry_results"
    __table_args__ = (
        UniqueConstraint("series_id", "model_id", name="uq_volumetry_results_series_model"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id", ondelete="CASCADE"), index=True)
    series_id: Mapped[int] = mapped_column(ForeignKey("series.id", ondelete="CASCADE"))
    model_id: Mapped[int | None] = mapped_column(ForeignKey("models.id"))
    total_ml: Mapped[float] = mapped_column(Float)
    functional_ml: Mapped[float] = mapped_column(Float)
    deviation_pct: Mapped[float | None] = mapped_column(Float)
    flagged: Mapped[bool] = mapped_column(Boolean, default=False)
    # ends of the scan the liver runs into ("", "head", "foot" or "head,foot"): there the scan
    # stops inside the liver and the volume is a lower bound; NULL before revision 0005
    liver_cut_at: Mapped[str | None] = mapped_column(String(16))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class Response(Base):
    """RECIST response of a patient at one timepoint, from the model or the radiologist."""

    __tablename__ = "responses"
    __table_args__ = (
        UniqueConstraint("study_id", "source", "model_id", name="uq_responses_study_source_model"),
        # the radiologist's rows have no model, and NULLs never collide in the key above
        Index("uq_responses_radiologist_study", "study_id", unique=True,
              sqlite_where=text("source = 'radiologist'"), postgresql_where=text("source = 'radiologist'")),
        CheckConstraint(_in("source", RESPONSE_SOURCES), name="source"),
        CheckConstraint(_in("recist_category", RECIST_CATEGORIES), name="recist_category"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    patient_id: Mapped[int] = mapped_column(
        ForeignKey("patients.id", ondelete="CASCADE"), index=True
    )
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id", ondelete="CASCADE"))
    source: Mapped[str] = mapped_column(String(16))
    # the model whose tracks gave a "model" response; NULL for the radiologist's (and for a model
    # response from before revision 0010 whose model could not be told)
    model_id: Mapped[int | None] = mapped_column(ForeignKey("models.id", ondelete="CASCADE"))
    recist_category: Mapped[str] = mapped_column(String(4))
    sum_diameters_mm: Mapped[float] = mapped_column(Float)
    # a new lesion appeared at this study (PD whatever the sum says); NULL before revision 0009
    new_lesion: Mapped[bool | None] = mapped_column(Boolean)
    # the smallest earlier sum this one was compared with (RECIST's nadir; a study where a
    # target was missed sets none) and each target's diameter here and at baseline,
    # [{"target": "track 3" | a reader's label, "baseline_mm", "mm": None where missed}]:
    # what a reader needs to check the category (NULL before revision 0013, until a refresh)
    nadir_sum_mm: Mapped[float | None] = mapped_column(Float)
    targets: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON)
    # the lesions new here, [{"lesion": "track 5" | a reader's label, "status": "counted" |
    # "awaits confirmation" | "not seen again"}]: a PD a reader can find, and the model's new
    # lesions RECIST does not count until a later study shows them again
    new_lesions: Mapped[list[dict[str, str]] | None] = mapped_column(JSON)
    baseline_study_id: Mapped[int | None] = mapped_column(
        ForeignKey("studies.id", ondelete="SET NULL")
    )
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class MeasurementLink(Base):
    """A radiologist measurement linked to a model lesion and track (precomputed at analysis).

    Written by :func:`app.services.analytics.refresh_patient` (and after a measurements
    import), so cohort pages aggregate in SQL instead of linking 20,000 rows on every view.
    ``lesion_id`` is None when no lesion of the model fits the measurement.
    """

    __tablename__ = "measurement_links"
    __table_args__ = (
        UniqueConstraint("measurement_id", "model_id", name="uq_measurement_links_measurement_model"),
        Index("ix_measurement_links_model_patient", "model_id", "patient_id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    measurement_id: Mapped[int] = mapped_column(ForeignKey("measurements.id", ondelete="CASCADE"))
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id", ondelete="CASCADE"))
    patient_id: Mapped[int] = mapped_column(ForeignKey("patients.id", ondelete="CASCADE"))
    lesion_id: Mapped[int | None] = mapped_column(ForeignKey("lesions.id", ondelete="SET NULL"))
    track_number: Mapped[int | None] = mapped_column(Integer)
    radiologist_mm: Mapped[float] = mapped_column(Float)
    model_mm: Mapped[float | None] = mapped_column(Float)
    diff_mm: Mapped[float | None] = mapped_column(Float)
    """model − radiologist longest diameter (mm)."""
    method: Mapped[str] = mapped_column(String(32), default="")
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class User(Base):
    """A person who signs in; the password is stored only as an argon2 hash."""

    __tablename__ = "users"
    __table_args__ = (CheckConstraint(_in("role", ROLES), name="role"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(String(128), unique=True)
    password_hash: Mapped[str] = mapped_column(String(256))
    role: Mapped[str] = mapped_column(String(16), default="clinician")
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    last_login: Mapped[dt.datetime | None]


class WebSession(Base):
    """A browser sign-in that survives a reload: the browser keeps a random token in a cookie,
    the store keeps only its SHA-256, so a copy of the database cannot sign anyone in."""

    __tablename__ = "web_sessions"

    id: Mapped[int] = mapped_column(primary_key=True)
    token_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    signed_in_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    ended_at: Mapped[dt.datetime | None]


class BatchRun(Base):
    """One batch inference run over many series."""

    __tablename__ = "batch_runs"
    __table_args__ = (CheckConstraint(_in("status", JOB_STATUSES), name="status"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    model_id: Mapped[int | None] = mapped_column(ForeignKey("models.id"))
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    status: Mapped[str] = mapped_column(String(16), default="pending", index=True)
    params: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    started_at: Mapped[dt.datetime | None]
    finished_at: Mapped[dt.datetime | None]

    jobs: Mapped[list[BatchJob]] = relationship(back_populates="run", cascade="all, delete-orphan")


class BatchJob(Base):
    """One series of a batch run."""

    __tablename__ = "batch_jobs"
    __table_args__ = (
        UniqueConstraint("run_id", "series_id", name="uq_batch_jobs_run_series"),
        CheckConstraint(_in("status", JOB_STATUSES), name="status"),
        Index("ix_batch_jobs_run_status", "run_id", "status"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("batch_runs.id", ondelete="CASCADE"))
    series_id: Mapped[int] = mapped_column(ForeignKey("series.id", ondelete="CASCADE"), index=True)
    segmentation_id: Mapped[int | None] = mapped_column(
        ForeignKey("segmentations.id", ondelete="SET NULL")
    )
    status: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text)
    started_at: Mapped[dt.datetime | None]
    finished_at: Mapped[dt.datetime | None]

    run: Mapped[BatchRun] = relationship(back_populates="jobs")


class AuditEvent(Base):
    """Who did what to which target, and when (ingest, imports, overrides, sign-ins)."""

    __tablename__ = "audit_events"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    actor: Mapped[str | None] = mapped_column(String(128))
    action: Mapped[str] = mapped_column(String(64), index=True)
    target: Mapped[str | None] = mapped_column(String(256))
    at: Mapped[dt.datetime] = mapped_column(default=utcnow, index=True)
    detail: Mapped[dict[str, Any] | None] = mapped_column(JSON)


class StoreLock(Base):
    """Named row locks that serialise writers (ingest) on SQLite and PostgreSQL alike."""

    __tablename__ = "store_locks"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    acquired_at: Mapped[dt.datetime | None]
