"""Manifest CSV for NIfTI/NRRD inputs, which carry no patient or study metadata.

Required columns: ``patient_id`` and ``image`` (a volume file, relative to the CSV's
folder or absolute). Optional: ``study_date`` (YYYY-MM-DD or YYYYMMDD), ``phase``
(noncontrast|arterial|portal|late|unknown), ``series_description``, ``accession``,
``study_uid``, ``series_uid``, ``study_index``, ``modality`` (CT, the default; another is
refused). A row without ``image`` but with ``dicom_dir`` ingests that DICOM folder with the
row's patient id and phase. Other columns (the phantom's ``labels``, ``spacing_x`` ...) are ignored, so
``lvt phantom`` output's ``manifest.csv`` ingests as it is.
"""

from __future__ import annotations

import csv
import datetime as dt
from dataclasses import dataclass
from pathlib import Path

from app.cli.common import UserError
from app.services.deid import implausible_study_date, parse_date
from app.services.field_limits import too_long
from app.services.ingest.phase import PHASE_NAMES
from db.models import Patient, Series, Study

REQUIRED = ("patient_id",)


@dataclass(frozen=True)
class ManifestRow:
    """One validated manifest row."""

    row: int
    patient_id: str
    image: Path | None
    dicom_dir: Path | None
    study_date: dt.date | None
    phase: str | None
    series_description: str | None
    accession: str | None
    study_uid: str | None
    series_uid: str | None
    study_index: str | None
    modality: str



STORED_AS = {"patient_id": Patient.pseudo_id, "accession": Study.accession, "study_uid": Study.study_instance_uid,
             "series_uid": Series.series_instance_uid, "series_description": Series.description}
"""Manifest columns and the columns that keep them (``patient_id`` as given, with
``--keep-identifiers``)."""

def read_manifest(path: Path) -> list[ManifestRow]:
    """Parse and validate every row; all problems are reported together with row numbers."""
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            columns = [c.strip() for c in reader.fieldnames or []]
            records = list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise UserError(f"{path}: cannot read manifest ({exc})") from None
    missing = [c for c in REQUIRED if c not in columns]
    if "image" not in columns and "dicom_dir" not in columns:
        missing.append("image")
    if missing:
        raise UserError(f"{path}: missing required column(s) {', '.join(missing)}")
    rows: list[ManifestRow] = []
    errors: list[str] = []
    base = path.resolve().parent
    for number, raw in enumerate(records, start=2):  # row 1 is the header
        extra = raw.pop(None, None)  # csv.DictReader files fields past the header under None
        record = {(k or "").strip(): (v or "").strip() for k, v in raw.items()}
        problems = []
        if extra:
            problems.append(f"{len(columns) + len(extra)} fields but the header has {len(columns)} "
                            "(a comma inside a value needs quotes)")
        if not record.get("patient_id"):
            problems.append("patient_id is empty")
        image = base / record["image"] if record.get("image") else None
        dicom_dir = base / record["dicom_dir"] if record.get("dicom_dir") else None
        if image is None and dicom_dir is None:
            problems.append("neither image nor dicom_dir is given")
        elif image is not None and image.is_dir():
            problems.append(f"image {image} is a folder; a DICOM folder goes in the dicom_dir column")
        elif image is not None and not image.is_file():
            problems.append(f"image {image} does not exist")
        elif image is None and dicom_dir is not None and not dicom_dir.is_dir():
            problems.append(f"dicom_dir {dicom_dir} does not exist")
        try:
            study_date = parse_date(record.get("study_date"))
        except ValueError as exc:
            problems.append(f"study_date: {exc}")
            study_date = None
        if implausible := implausible_study_date(study_date):
            problems.append(f"study_date: {implausible}")
        modality = (record.get("modality") or "CT").upper()
        if modality != "CT":  # only CT is ingested, as for DICOM
            problems.append(f"modality {record['modality']!r} is not CT; only CT is ingested")
        phase = record.get("phase") or None
        if phase is not None and phase not in PHASE_NAMES:
            problems.append(f"phase {phase!r} is not one of {', '.join(PHASE_NAMES)}")
        problems += too_long(record, STORED_AS)
        if problems:
            errors.append(f"row {number}: " + "; ".join(problems))
            continue
        rows.append(
            ManifestRow(
                row=number,
                patient_id=record["patient_id"],
                image=image,
                dicom_dir=dicom_dir if image is None else None,
                study_date=study_date,
                phase=phase,
                series_description=record.get("series_description") or None,
                accession=record.get("accession") or None,
                study_uid=record.get("study_uid") or None,
                series_uid=record.get("series_uid") or None,
                study_index=record.get("study_index") or None,
                modality=modality,
            )
        )
    if errors:
        raise UserError(f"{path}: {len(errors)} invalid row(s):\n  " + "\n  ".join(errors))
    if not rows:
        raise UserError(f"{path}: the manifest has no rows")
    return rows
