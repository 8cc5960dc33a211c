"""``lvt measurements import``: validation with row numbers, all-or-none, linking to studies."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from db_fixtures import write_ct_series
from sqlalchemy import func, select

from app.cli.common import UserError
from app.services.ingest import IngestOptions, ingest_paths
from app.services.measurements import import_measurements
from db import queries
from db.engine import session_scope
from db.models import Measurement

HEADER = "patient_id,study_date,accession,lesion_label,longest_diameter_mm,short_axis_mm,slice_index,location_x_mm,location_y_mm,location_z_mm,reader,note"


def _count(url: str) -> int:
    with session_scope(url) as s:
        return s.scalar(select(func.count(Measurement.id))) or 0


def _cohort(tmp_path: Path, url: str, deidentify: bool = True) -> None:
    """Two patients, two timepoints each, ingested from DICOM."""
    for i, p in enumerate(("PAT1", "PAT2")):
        for k, date in enumerate(("20240110", "20240410")):
            write_ct_series(
                tmp_path / "dicom" / p / str(k),
                patient_id=p,
                study_date=date,
                accession=f"{p}-A{k}",
                seed=10 * i + k,  # distinct pixels: one image under two patients is a conflict
            )
    ingest_paths([tmp_path / "dicom"], IngestOptions(deidentify=deidentify), url=url)


def _csv(tmp_path: Path, rows: list[str], name: str = "m.csv") -> Path:
    path = tmp_path / name
    path.write_text(HEADER + "\n" + "\n".join(rows) + "\n")
    return path


def test_every_row_links_to_deidentified_studies(migrated_db: str, tmp_path: Path) -> None:
    _cohort(tmp_path, migrated_db)
    csv_path = _csv(
        tmp_path,
        [
            "PAT1,2024-01-10,,L1,21.5,14.0,3,10.0,-20.0,5.0,dr_a,baseline",
            "PAT1,2024-04-10,,L1,17.0,,,,,,dr_a,",
            "PAT1,,PAT1-A1,L2,9.0,,,,,,dr_a,by accession",
            "PAT2,20240110,,L1,30.0,20.0,2,,,,dr_b,",
        ],
    )
    report = import_measurements(csv_path, url=migrated_db)
    assert report.added == 4 and report.patients == {"PAT1", "PAT2"}
    with session_scope(migrated_db) as s:
        pseudo = [p.pseudo_id for p in queries.list_patients(s)]
        by_patient = {pid: queries.patient_measurements(s, pid) for pid in pseudo}
    measured = sorted(
        (len(v), sorted(m.longest_diameter_mm for m in v)) for v in by_patient.values()
    )
    assert measured == [(1, [30.0]), (3, [9.0, 17.0, 21.5])]
    pat1 = next(v for v in by_patient.values() if len(v) == 3)
    dates = sorted({m.study_date for m in pat1 if m.study_date})
    assert dates[0] != dt.date(2024, 1, 10)  # stored dates are shifted ...
    assert (dates[1] - dates[0]).days == 91  # ... but the interval is true
    first = next(m for m in pat1 if m.lesion_label == "L1" and m.study_date == dates[0])
    assert first.location_mm == (10.0, -20.0, 5.0) and first.slice_index == 3
    again = import_measurements(csv_path, url=migrated_db)  # idempotent
    assert again.added == 0 and again.already_present == 4 and _count(migrated_db) == 4


def test_a_row_with_an_accession_links_to_a_study_ingested_without_one(migrated_db: str, tmp_path: Path) -> None:
    """A manifest ingest stores no accession; the phantom's own measurements.csv carries one."""
    import numpy as np
    import SimpleITK as sitk

    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((4, 8, 8), np.int16)), str(tmp_path / "ct.nii.gz"))
    (tmp_path / "manifest.csv").write_text("patient_id,image,study_date\nPAT3,ct.nii.gz,2024-01-10\n")
    ingest_paths([], IngestOptions(manifest=tmp_path / "manifest.csv"), url=migrated_db)
    report = import_measurements(_csv(tmp_path, ["PAT3,2024-01-10,A0002T00,L1,12,,,,,,dr_a,"]), url=migrated_db)
    assert report.added == 1


def test_keep_identifiers_store_links_too(migrated_db: str, tmp_path: Path) -> None:
    _cohort(tmp_path, migrated_db, deidentify=False)
    report = import_measurements(_csv(tmp_path, ["PAT2,2024-04-10,,L1,12,,,,,,,"]), url=migrated_db)
    assert report.added == 1
    with session_scope(migrated_db) as s:
        (m,) = queries.patient_measurements(s, "PAT2")
    assert m.study_date == dt.date(2024, 4, 10)


def test_invalid_rows_are_listed_and_nothing_goes_in(migrated_db: str, tmp_path: Path) -> None:
    _cohort(tmp_path, migrated_db)
    csv_path = _csv(
        tmp_path,
        [
            "PAT1,2024-01-10,,L1,21.5,,,,,,dr_a,fine",
            "PAT1,2024-01-10,,L2,-3,,,,,,dr_a,",
            "PAT1,2024/01/10,,L3,5,,,,,,dr_a,",
            ",2024-01-10,,L4,abc,,,,,,dr_a,",
            "PAT1,2024-01-10,,L5,10,12,,,,,dr_a,short > long",
            "PAT1,2024-01-10,,L6,10,,,1.0,,,dr_a,partial location",
            "PAT1,2024-01-10,,L7,1e300,,99999999,1e308,0,0,dr_a,out of bounds",
            "PAT1,1800-01-01,,L8,10,,,,,,dr_a,before CT",
            "PAT1,2024-01-10,," + "L" * 100 + ",10,,,,,,dr_a,a label longer than the column",
        ],
    )
    with pytest.raises(UserError) as info:
        import_measurements(csv_path, url=migrated_db)
    text = str(info.value)
    for fragment in (
        "row 3: longest_diameter_mm must be > 0",
        "row 4: study_date",
        "row 5: patient_id is empty",
        "longest_diameter_mm 'abc' is not a number",
        "row 6: short_axis_mm",
        "row 7: location_x_mm",
        "row 8: longest_diameter_mm must be > 0 and at most 500",
        "slice_index must be between 0 and 10000",
        "location_x_mm 1e+308 is more than 10000 mm",
        "row 9: study_date: 1800-01-01 is before the first CT scan",
        "row 10: lesion_label is 100 characters long, at most 64 fit",  # PostgreSQL died on it
    ):
        assert fragment in text
    assert "row 2" not in text and _count(migrated_db) == 0


def test_unlinkable_and_duplicate_rows_reject_the_file(migrated_db: str, tmp_path: Path) -> None:
    _cohort(tmp_path, migrated_db)
    csv_path = _csv(
        tmp_path,
        [
            "PAT1,2024-01-10,,L1,21.5,,,,,,dr_a,",
            "PAT9,2024-01-10,,L1,21.5,,,,,,dr_a,",
            "PAT1,2023-01-10,,L1,21.5,,,,,,dr_a,",
            "PAT1,2024-01-10,,L1,22.0,,,,,,dr_a,",
        ],
    )
    with pytest.raises(UserError) as info:
        import_measurements(csv_path, url=migrated_db)
    text = str(info.value)
    assert "row 3: patient 'PAT9' is not in the store" in text
    assert "row 4: patient 'PAT1' has no ingested study with date 2023-01-10" in text
    assert "row 5: same lesion_label, reader and study as row 2" in text
    assert _count(migrated_db) == 0
    import_measurements(
        _csv(tmp_path, ["PAT1,2024-01-10,,L1,21.5,,,,,,dr_a,"], "ok.csv"), url=migrated_db
    )
    with pytest.raises(UserError, match="differs from the stored measurement"):
        import_measurements(
            _csv(tmp_path, ["PAT1,2024-01-10,,L1,25,,,,,,dr_a,"], "changed.csv"), url=migrated_db
        )
    assert _count(migrated_db) == 1


def test_missing_columns(migrated_db: str, tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text("patient_id,lesion_label\nP,L1\n")
    with pytest.raises(UserError, match="missing required column"):
        import_measurements(path, url=migrated_db)


def test_an_accession_matching_a_study_of_another_or_no_date_says_so(
    migrated_db: str, tmp_path: Path
) -> None:
    """The row's accession found the study but its date did not: the message said
    "has no ingested study with accession", which sent the user looking for the wrong error."""
    import pydicom

    write_ct_series(tmp_path / "a", patient_id="PAT1", study_date="20240110", accession="ACC1")
    write_ct_series(tmp_path / "b", patient_id="PAT1", accession="ACC2", seed=1)
    for path in (tmp_path / "b").iterdir():
        ds = pydicom.dcmread(path)
        del ds.StudyDate, ds.SeriesDate
        ds.save_as(path, enforce_file_format=True)
    ingest_paths([tmp_path / "a", tmp_path / "b"], url=migrated_db)
    rows = ["PAT1,2024-01-11,ACC1,L1,12,,,,,,dr_a,", "PAT1,2024-01-10,ACC2,L1,12,,,,,,dr_a,"]
    with pytest.raises(UserError) as info:
        import_measurements(_csv(tmp_path, rows), url=migrated_db)
    text = str(info.value)
    assert "row 2: patient 'PAT1' has a study with accession 'ACC1', but it is dated 2024-01-10, not 2024-01-11" in text
    assert "row 3: patient 'PAT1' has a study with accession 'ACC2', but it was ingested without a study date" in text
    report = import_measurements(_csv(tmp_path, ["PAT1,,ACC2,L1,12,,,,,,dr_a,"], "ok.csv"), url=migrated_db)
    assert report.added == 1
