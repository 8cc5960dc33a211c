"""Import radiologist measurements from CSV, linked to ingested studies. All rows or none.

Columns (header names, any order; extra columns are ignored):

=====================  ========  ==================================================
column                 required  meaning
=====================  ========  ==================================================
patient_id             yes       the SOURCE patient id (as in the DICOM PatientID)
study_date             one of    YYYY-MM-DD or YYYYMMDD, the SOURCE (unshifted) date, not
                                 before 1971-10-01 (the first CT)
accession              these     the SOURCE accession number
lesion_label           yes       the radiologist's name for the lesion (e.g. ``L1``)
longest_diameter_mm    yes       > 0 and at most 500
short_axis_mm          no        >= 0 and not above the longest diameter
slice_index            no        integer, 0 to 10000: from 0, on the tracked (portal) series
location_x_mm/_y/_z    no        all three or none (patient coordinates, LPS; within 10 m)
reader                 no        who measured (default empty)
new_lesion             no        yes/no (also true/false, 1/0): the lesion is new at this study,
                                 which makes the radiologist's RECIST progression (PD)
note                   no        free text
=====================  ========  ==================================================

Rows link to studies through the same pseudonymisation and date shift as ``lvt ingest``
(same key): the row's ids are de-identified first; if no such patient is stored, the ids
are looked up as given (for stores ingested with ``--keep-identifiers``). Re-importing a
file adds nothing; a row that differs from the stored measurement with the same
(study, lesion_label, reader) is a conflict, except that a ``new_lesion`` given for a row stored
without one (imported before the column existed) fills it.
"""

from __future__ import annotations

import csv
import datetime as dt
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.cli.common import UserError
from app.services import audit
from app.services.deid import Deidentifier, implausible_study_date, parse_date
from app.services.field_limits import too_long
from db.engine import acquire_lock, default_url, make_session_factory
from db.models import AuditEvent, Measurement, Patient, Study

REQUIRED = ("patient_id", "lesion_label", "longest_diameter_mm")
MAX_DIAMETER_MM = 500.0
"""Wider than any abdomen: a larger diameter is a typing or unit error (cm, µm)."""
MAX_SLICE_INDEX = 10_000
MAX_COORDINATE_MM = 10_000.0
"""Ten metres from the scanner's origin: beyond any table position."""
VALUE_FIELDS = (
    "longest_diameter_mm",
    "short_axis_mm",
    "slice_index",
    "location_x_mm",
    "location_y_mm",
    "location_z_mm",
    "note",
    "new_lesion",
)
YES = frozenset({"yes", "y", "true", "1"})
NO = frozenset({"no", "n", "false", "0"})


class MeasurementImportError(UserError):
    """A CSV that was refused as a whole; the message lists every bad row."""


@dataclass
class ImportReport:
    """What the import did."""

    file: str
    rows: int = 0
    added: int = 0
    already_present: int = 0
    flags_filled: int = 0  # new_lesion given for a stored row that had none (imported before 0009)
    patients: set[str] = field(default_factory=set)
    studies: set[int] = field(default_factory=set)

    def to_json(self) -> dict[str, Any]:
        """The ``--json`` document."""
        return {
            "file": self.file,
            "rows": self.rows,
            "added": self.added,
            "already_present": self.already_present,
            "new_lesion_flags_filled": self.flags_filled,
            "patients": len(self.patients),
            "studies": len(self.studies),
        }


@dataclass
class _Row:
    number: int
    patient_id: str
    study_date: dt.date | None
    accession: str | None
    values: dict[str, Any]


def _number(text: str, name: str, kind: type = float) -> Any:
    try:
        value = kind(text)
    except ValueError:
        raise ValueError(
            f"{name} {text!r} is not {'an integer' if kind is int else 'a number'}"
        ) from None
    if kind is float and not math.isfinite(value):
        raise ValueError(f"{name} {text!r} is not a finite number")
    return value


def _parse_row(number: int, record: dict[str, str]) -> tuple[_Row | None, list[str]]:
    problems: list[str] = []
    get = lambda key: (record.get(key) or "").strip()  # noqa: E731
    for key in REQUIRED:
        if not get(key):
            problems.append(f"{key} is empty")
    if not get("study_date") and not get("accession"):
        problems.append("needs study_date or accession")
    date = None
    try:
        date = parse_date(get("study_date"))
    except ValueError as exc:
        problems.append(f"study_date: {exc}")
    if implausible := implausible_study_date(date):
        problems.append(f"study_date: {implausible}")
    problems += too_long(record, {"patient_id": Patient.pseudo_id, "accession": Study.accession,
                                  "lesion_label": Measurement.lesion_label, "reader": Measurement.reader})
    values: dict[str, Any] = {"note": get("note") or None, "new_lesion": None}
    if flag := get("new_lesion").lower():
        if flag in YES | NO:
            values["new_lesion"] = flag in YES
        else:
            problems.append(f"new_lesion {get('new_lesion')!r} is not yes or no")
    for key, kind in (
        ("longest_diameter_mm", float),
        ("short_axis_mm", float),
        ("slice_index", int),
        ("location_x_mm", float),
        ("location_y_mm", float),
        ("location_z_mm", float),
    ):
        values[key] = None
        if get(key):
            try:
                values[key] = _number(get(key), key, kind)
            except ValueError as exc:
                problems.append(str(exc))
    longest, short = values["longest_diameter_mm"], values["short_axis_mm"]
    if longest is not None and not 0 < longest <= MAX_DIAMETER_MM:
        problems.append(f"longest_diameter_mm must be > 0 and at most {MAX_DIAMETER_MM:g}, got {longest}")
    if short is not None and (short < 0 or (longest is not None and short > longest)):
        problems.append(f"short_axis_mm {short} must be between 0 and longest_diameter_mm")
    if values["slice_index"] is not None and not 0 <= values["slice_index"] <= MAX_SLICE_INDEX:
        problems.append(f"slice_index must be between 0 and {MAX_SLICE_INDEX}")
    for key in ("location_x_mm", "location_y_mm", "location_z_mm"):
        if values[key] is not None and abs(values[key]) > MAX_COORDINATE_MM:
            problems.append(f"{key} {values[key]:g} is more than {MAX_COORDINATE_MM:g} mm from the origin")
    located = [values[k] is not None for k in ("location_x_mm", "location_y_mm", "location_z_mm")]
    if any(located) and not all(located):
        problems.append("location_x_mm, location_y_mm and location_z_mm go together")
    if problems:
        return None, problems
    values["lesion_label"] = get("lesion_label")
    values["reader"] = get("reader")
    return _Row(number, get("patient_id"), date, get("accession") or None, values), []


def read_rows(path: Path) -> list[_Row]:
    """Parse and validate every row; raise listing all bad rows by number."""
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            columns = [c.strip() for c in reader.fieldnames or []]
            records = [{(k or "").strip(): v for k, v in r.items()} for r in reader]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise MeasurementImportError(f"{path}: cannot read CSV ({exc})") from None
    missing = [c for c in REQUIRED if c not in columns]
    if "study_date" not in columns and "accession" not in columns:
        missing.append("study_date or accession")
    if missing:
        raise MeasurementImportError(f"{path}: missing required column(s): {', '.join(missing)}")
    rows, errors = [], []
    for number, record in enumerate(records, start=2):  # row 1 is the header
        row, problems = _parse_row(number, {k: v or "" for k, v in record.items()})
        if problems:
            errors.append(f"row {number}: " + "; ".join(problems))
        elif row is not None:
            rows.append(row)
    if errors:
        raise MeasurementImportError(_listing(path, errors))
    if not rows and not records:
        raise MeasurementImportError(f"{path}: the CSV has no rows")
    return rows


def _listing(path: Path, errors: list[str]) -> str:
    shown = errors[:50]
    more = f"\n  … and {len(errors) - 50} more" if len(errors) > 50 else ""
    return (
        f"{path}: {len(errors)} invalid row(s), nothing was imported:\n  "
        + "\n  ".join(shown)
        + more
    )


def _date_mismatch(session: Session, policy: Deidentifier, patient: Patient, row: _Row) -> str | None:
    """Why a row's accession matched a study that its date did not, or None.

    Saying "no study with accession" there would send the user looking for the wrong error.
    """
    study = session.scalars(select(Study).where(
        Study.patient_id == patient.id, Study.accession == policy.accession(row.accession))).first()
    if study is None:
        return None
    start = f"patient {row.patient_id!r} has a study with accession {row.accession!r}, but it"
    if study.study_date is None:
        return (f"{start} was ingested without a study date (none readable in its files); "
                "leave study_date empty in this row to link it by accession")
    source = study.study_date - dt.timedelta(days=policy.date_offset_days(row.patient_id))
    return f"{start} is dated {source}, not {row.study_date}"


def _same(field_name: str, stored: Any, given: Any) -> bool:
    """Whether a stored value and a row's agree; an empty new_lesion reads as "no", so a file
    imported before the column existed (stored NULL) imports again without a conflict."""
    if field_name == "new_lesion":
        return bool(stored) == bool(given)
    return stored == given


def _find_study(session: Session, deid: Deidentifier, row: _Row) -> tuple[Study | None, str]:
    """The study a row refers to, trying pseudonymised ids first, then ids as given."""
    tried = []
    for policy in (deid, Deidentifier(key=b"", enabled=False, shift_dates=False)):
        pseudo = policy.patient_id(row.patient_id)
        if pseudo in tried:
            continue
        tried.append(pseudo)
        patient = session.scalar(select(Patient).where(Patient.pseudo_id == pseudo))
        if patient is None:
            continue
        stmt = select(Study).where(Study.patient_id == patient.id)
        if row.accession:
            stmt = stmt.where(Study.accession == policy.accession(row.accession))
        if row.study_date:
            stmt = stmt.where(Study.study_date == policy.date(row.patient_id, row.study_date))
        studies = session.scalars(stmt).all()
        if not studies and row.accession and row.study_date:  # a study ingested without accession
            studies = session.scalars(select(Study).where(
                Study.patient_id == patient.id, Study.accession.is_(None),
                Study.study_date == policy.date(row.patient_id, row.study_date))).all()
        if len(studies) == 1:
            return studies[0], ""
        if len(studies) > 1:
            return (
                None,
                f"{len(studies)} studies of patient {row.patient_id!r} match; add accession",
            )
        if row.accession and row.study_date and (why := _date_mismatch(session, policy, patient, row)):
            return None, why
        what = f"accession {row.accession!r}" if row.accession else f"date {row.study_date}"
        return None, f"patient {row.patient_id!r} has no ingested study with {what}"
    return None, f"patient {row.patient_id!r} is not in the store (ingest the images first)"


def import_measurements(
    path: Path, url: str | None = None, deidentify: bool = True
) -> ImportReport:
    """Import every row of ``path`` in one transaction, or none of them."""
    rows = read_rows(path)
    deid = Deidentifier.from_settings(deidentify)
    report = ImportReport(file=str(path), rows=len(rows))
    session = make_session_factory(url or default_url())()
    try:
        acquire_lock(session, "measurements")
        errors: list[str] = []
        seen: dict[tuple[int, str, str], int] = {}
        for row in rows:
            study, why = _find_study(session, deid, row)
            if study is None:
                errors.append(f"row {row.number}: {why}")
                continue
            key = (study.id, row.values["lesion_label"], row.values["reader"])
            if key in seen:
                errors.append(
                    f"row {row.number}: same lesion_label, reader and study as row {seen[key]}"
                )
                continue
            seen[key] = row.number
            existing = session.scalar(
                select(Measurement).where(
                    Measurement.study_id == study.id,
                    Measurement.lesion_label == key[1],
                    Measurement.reader == key[2],
                )
            )
            if existing is not None:
                same = all(_same(f, getattr(existing, f), row.values[f]) for f in VALUE_FIELDS)
                flag = row.values["new_lesion"]
                if not same and existing.new_lesion is None and flag is not None and all(
                        _same(f, getattr(existing, f), row.values[f]) for f in VALUE_FIELDS if f != "new_lesion"):
                    existing.new_lesion = flag  # a row imported before the column existed gets it now
                    report.flags_filled += 1
                    report.patients.add(row.patient_id)
                    report.studies.add(study.id)
                elif same:
                    report.already_present += 1
                else:
                    errors.append(
                        f"row {row.number}: differs from the stored measurement of lesion "
                        f"{key[1]!r} by reader {key[2]!r} at that study"
                    )
                continue
            session.add(
                Measurement(
                    patient_id=study.patient_id,
                    study_id=study.id,
                    source_file=path.name,
                    source_row=row.number,
                    **row.values,
                )
            )
            report.added += 1
            report.patients.add(row.patient_id)
            report.studies.add(study.id)
        if errors:
            raise MeasurementImportError(_listing(path, errors))
        session.add(
            AuditEvent(
                action="measurements.import",
                actor=audit.command_line_actor("lvt measurements import"),
                target=path.name,
                detail={"rows": len(rows), "added": report.added, "flags_filled": report.flags_filled},
            )
        )
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()
    if report.added or report.flags_filled:
        _refresh_analytics(url, sorted(report.studies))
    return report


def _refresh_analytics(url: str | None, study_ids: list[int]) -> None:
    """Radiologist responses and measurement links of the touched patients (hook after import)."""
    from app.services.analytics import refresh_responses

    with make_session_factory(url or default_url())() as session:
        patient_ids = sorted(set(session.scalars(select(Study.patient_id).where(Study.id.in_(study_ids)))))
    refresh_responses(url=url, patient_ids=patient_ids)
