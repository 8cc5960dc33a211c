"""``lvt ingest`` on real and synthetic DICOM, NIfTI with a manifest, and broken inputs.

Every test runs on SQLite and, with LVT_TEST_POSTGRES_URL, on PostgreSQL (``db_url``).
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import SimpleITK as sitk
from db_fixtures import edit_dicom, write_ct_series, write_enhanced_ct
from sqlalchemy import func, select

from app.cli.common import UserError
from app.services.ingest import IngestOptions, ingest_paths
from db import queries, storage
from db.engine import default_url, session_scope
from db.models import AuditEvent, Patient, Series, Study
from lvt_core.imageio import read_image

REPO = Path(__file__).resolve().parent.parent
LVT = [sys.executable, "-m", "app.cli.main"]


def _counts(url: str) -> tuple[int, int, int]:
    with session_scope(url) as s:
        return (
            s.scalar(select(func.count(Patient.id))) or 0,
            s.scalar(select(func.count(Study.id))) or 0,
            s.scalar(select(func.count(Series.id))) or 0,
        )


def _store_files() -> set[Path]:
    root = storage.data_dir()
    return {p for p in root.rglob("*") if p.is_file()} if root.exists() else set()


def _run_cli(
    *args: str, env_extra: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "400", **(env_extra or {})}
    code = "from app.cli.main import main; main()"
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        timeout=120,
    )


def test_real_dicom_plain_and_jpeg2000(migrated_db: str, real_data: Path) -> None:
    lits = real_data / "lits-volume-0-dicom"
    j2k = real_data / "totalsegmentator" / "example_ct_dicom"
    report = ingest_paths([lits], url=migrated_db)
    assert len(report.added) == 1
    # the JPEG 2000 files are anonymised without PatientID or UIDs: the id is required
    with pytest.raises(UserError, match="no PatientID"):
        ingest_paths([j2k], url=migrated_db)
    report2 = ingest_paths([j2k], IngestOptions(patient_id="TS-1"), url=migrated_db)
    assert len(report2.added) == 1
    added = report2.added[0]
    assert added["size"] == [512, 512, 20]
    assert added["phase"] == "portal"  # 96 s after ContrastBolusStartTime
    stored = sitk.ReadImage(str(storage.resolve(added["image_path"])))
    source = read_image(j2k)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(stored), sitk.GetArrayFromImage(source))
    assert np.allclose(stored.GetSpacing(), source.GetSpacing())
    lits_img = sitk.ReadImage(str(storage.resolve(report.added[0]["image_path"])))
    assert lits_img.GetSize() == (512, 512, 75)
    assert np.allclose(lits_img.GetSpacing(), (0.703125, 0.703125, 5.0), atol=1e-4)
    arr = sitk.GetArrayViewFromImage(lits_img)
    assert arr.min() == -3024 and arr.max() == 1410  # HU as the README states
    assert _counts(migrated_db) == (2, 2, 2)


def test_multiphase_study_grouping_and_non_ct(migrated_db: str, tmp_path: Path) -> None:
    folder = tmp_path / "mixed"
    study = write_ct_series(folder / "a", description="Leber arteriell 2mm", seed=1)["study_uid"]
    write_ct_series(
        folder / "a", description="Portal venous 2mm", study_uid=study, seed=2, prefix="PV"
    )
    write_ct_series(folder / "b", description="Delayed", study_uid=study, seed=3, modality="MR")
    (folder / "notes.txt").write_text("not dicom")
    report = ingest_paths([folder], url=migrated_db)
    assert sorted(a["phase"] for a in report.added) == ["arterial", "portal"]
    reasons = " ".join(s["reason"] for s in report.skipped)
    assert "modality MR is not CT" in reasons and "1 file(s) are not DICOM" in reasons
    assert _counts(migrated_db) == (1, 1, 2)
    with session_scope(migrated_db) as s:
        (patient,) = queries.list_patients(s)
        assert patient.pseudo_id.startswith("P-") and "PAT001" not in patient.pseudo_id
        timeline = queries.patient_timeline(s, patient.pseudo_id)
        assert s.scalar(select(func.count(AuditEvent.id))) == 1
    assert timeline is not None and len(timeline.studies[0].series) == 2
    # dates are shifted back by one per-patient offset; UIDs are replaced
    assert timeline.studies[0].study_date is not None
    assert timeline.studies[0].study_date.isoformat() < "2024-01-15"
    assert timeline.studies[0].study_instance_uid != study
    # free-text descriptions go too (a technologist may type a name there); the phase they
    # gave stays
    assert [series.description for series in timeline.studies[0].series] == [None, None]


def test_duplicate_ingest_adds_nothing_and_conflict_changes_nothing(
    migrated_db: str, tmp_path: Path
) -> None:
    uids = write_ct_series(tmp_path / "s1", seed=1)
    first = ingest_paths([tmp_path / "s1"], url=migrated_db)
    assert len(first.added) == 1
    files = _store_files()
    again = ingest_paths([tmp_path / "s1"], url=migrated_db)
    assert again.added == [] and len(again.already_present) == 1
    assert _counts(migrated_db) == (1, 1, 1) and _store_files() == files
    # same UIDs, other pixels: a conflict; a new valid series in the same run is not added either
    write_ct_series(
        tmp_path / "s2", seed=9, study_uid=uids["study_uid"], series_uid=uids["series_uid"]
    )
    write_ct_series(tmp_path / "s3", seed=4, patient_id="PAT002")
    with pytest.raises(UserError, match="different image content"):
        ingest_paths([tmp_path / "s3", tmp_path / "s2"], url=migrated_db)
    assert _counts(migrated_db) == (1, 1, 1)
    assert _store_files() == files  # s3's file was moved into place, then removed again
    report = ingest_paths(
        [tmp_path / "s3", tmp_path / "s2"], IngestOptions(skip_invalid=True), url=migrated_db
    )
    assert len(report.added) == 1 and "different image content" in report.skipped[-1]["reason"]


def test_truncated_and_corrupt_files_are_named(migrated_db: str, tmp_path: Path) -> None:
    write_ct_series(tmp_path / "x" / "good", seed=1, patient_id="PAT1")
    write_ct_series(tmp_path / "x" / "bad", seed=2, patient_id="PAT2")
    victim = tmp_path / "x" / "bad" / "IM0002.dcm"
    victim.write_bytes(victim.read_bytes()[:300])
    garbage = tmp_path / "x" / "bad" / "IM0009.dcm"
    garbage.write_bytes(b"\0" * 128 + b"DICM" + os.urandom(64))
    with pytest.raises(UserError) as info:
        ingest_paths([tmp_path / "x"], url=migrated_db)
    assert str(victim) in str(info.value) and str(garbage) in str(info.value)
    assert _counts(migrated_db) == (0, 0, 0) and _store_files() == set()
    # chosen behaviour: with --skip-invalid the broken files are skipped and the rest is
    # ingested; the series that lost a slice then has a gap and is skipped as well.
    report = ingest_paths([tmp_path / "x"], IngestOptions(skip_invalid=True), url=migrated_db)
    assert len(report.added) == 1
    reasons = " ".join(s["reason"] for s in report.skipped)
    assert "truncated" in reasons and "missing slices" in reasons
    assert _counts(migrated_db) == (1, 1, 1)


def test_an_unreadable_slice_is_named_beside_the_gap_it_leaves(migrated_db: str, tmp_path: Path) -> None:
    """A zero-byte slice is "not DICOM" to pydicom; the gap it leaves now names it."""
    write_ct_series(tmp_path / "s", seed=6)
    emptied = sorted((tmp_path / "s").iterdir())[2]
    emptied.write_bytes(b"")
    with pytest.raises(UserError) as info:
        ingest_paths([tmp_path / "s"], url=migrated_db)
    text = " ".join(str(info.value).split())
    assert "missing slices" in text and f"perhaps damaged slices: {emptied}" in text
    assert _counts(migrated_db) == (0, 0, 0)


def test_a_folder_without_a_series_is_an_error(migrated_db: str, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "readme.txt").write_text("no images here")
    with pytest.raises(UserError, match=r"no CT series found in .*empty"):
        ingest_paths([tmp_path / "empty"], url=migrated_db)
    with pytest.raises(UserError) as info:
        ingest_paths([tmp_path / "notes"], url=migrated_db)
    assert "not DICOM" in str(info.value) and "readme.txt" in str(info.value)
    assert _counts(migrated_db) == (0, 0, 0)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"tilt_mm_per_slice": 0.6}, "gantry tilt"),
        ({"z_positions": [0, 2, 4, 8, 10, 12]}, "missing slices"),
        ({"z_positions": [0, 2, 2, 4, 6, 8]}, "duplicate slice position"),
    ],
)
def test_geometry_problems_are_errors(
    migrated_db: str, tmp_path: Path, kwargs: dict, message: str
) -> None:
    write_ct_series(tmp_path / "s", **kwargs)
    with pytest.raises(UserError, match=message):
        ingest_paths([tmp_path / "s"], url=migrated_db)
    assert _counts(migrated_db) == (0, 0, 0)


def test_non_uniform_spacing_is_a_warning(migrated_db: str, tmp_path: Path) -> None:
    """Steps alternating 1.8/2.2 mm were stored with the median step (2.2 mm here), which
    stretched the volume beyond the scanned extent; now (last - first)/(n - 1), with a
    warning when a step is more than 10 % from it (small variations need none)."""
    write_ct_series(tmp_path / "s", z_positions=[0, 2.2, 4.0, 6.2, 8.0, 10.2])
    report = ingest_paths([tmp_path / "s"], url=migrated_db)
    assert len(report.added) == 1 and "non-uniform slice spacing" in report.warnings[0]["warning"]
    assert report.added[0]["spacing_mm"][2] == pytest.approx(10.2 / 5)
    write_ct_series(tmp_path / "t", z_positions=[0, 2, 4.2, 6.2, 8.1, 10.2], seed=1)
    report = ingest_paths([tmp_path / "t"], url=migrated_db)
    assert report.warnings == [] and report.added[0]["spacing_mm"][2] == pytest.approx(2.04)


def test_zip_input_and_path_traversal(migrated_db: str, tmp_path: Path) -> None:
    write_ct_series(tmp_path / "s", seed=5)
    good = tmp_path / "good.zip"
    with zipfile.ZipFile(good, "w") as zf:
        for f in sorted((tmp_path / "s").iterdir()):
            zf.write(f, f"case/{f.name}")
    evil = tmp_path / "evil.zip"
    with zipfile.ZipFile(evil, "w") as zf:
        zf.writestr("../../escaped.dcm", b"x")
        for f in sorted((tmp_path / "s").iterdir()):
            zf.write(f, f"case/{f.name}")
    with pytest.raises(UserError, match="path traversal"):
        ingest_paths([evil], url=migrated_db)
    assert not (tmp_path.parent / "escaped.dcm").exists()
    assert _counts(migrated_db) == (0, 0, 0)
    report = ingest_paths([good], url=migrated_db)
    assert len(report.added) == 1 and _counts(migrated_db) == (1, 1, 1)


def test_nifti_with_phantom_style_manifest_and_dry_run(migrated_db: str, tmp_path: Path) -> None:
    header = "patient_id,study_date,study_index,phase,series_uid,study_uid,spacing_x,spacing_y,spacing_z,size_x,size_y,size_z,image,labels,lesion_ids,dicom_dir"
    rows = []
    for i, (date, phase) in enumerate(
        [("2024-01-10", "arterial"), ("2024-01-10", "portal"), ("2024-04-10", "portal")]
    ):
        image = sitk.GetImageFromArray(np.full((4, 6, 6), i * 10, dtype=np.int16))
        sitk.WriteImage(image, str(tmp_path / f"img{i}.nii.gz"))
        study = 0 if date == "2024-01-10" else 1
        rows.append(
            f"PH001,{date},{study},{phase},1.2.3.{i},1.2.{study},1,1,1,6,6,4,img{i}.nii.gz,lab{i}.nii.gz,,"
        )
    manifest = tmp_path / "manifest.csv"
    manifest.write_text(header + "\n" + "\n".join(rows) + "\n")
    dry = ingest_paths([], IngestOptions(manifest=manifest, dry_run=True), url=migrated_db)
    assert len(dry.added) == 3 and _counts(migrated_db) == (0, 0, 0) and _store_files() == set()
    report = ingest_paths([], IngestOptions(manifest=manifest), url=migrated_db)
    assert [a["phase"] for a in report.added] == ["arterial", "portal", "portal"]
    assert _counts(migrated_db) == (1, 2, 3)
    with session_scope(migrated_db) as s:
        (study1, study2) = queries.patient_timeline(s, report.added[0]["patient"]).studies  # type: ignore[union-attr]
    assert (study2.study_date - study1.study_date).days == 91  # interval survives the shift


def _image_and_manifest(folder: Path, text: str, values: dict[str, int] | None = None) -> Path:
    """Small NIfTI images (name -> fill value; default ``a.nii.gz`` of 7s) and ``m.csv``
    holding ``text``, for manifest tests."""
    for name, value in (values or {"a": 7}).items():
        image = sitk.GetImageFromArray(np.full((4, 6, 6), value, dtype=np.int16))
        sitk.WriteImage(image, str(folder / f"{name}.nii.gz"))
    manifest = folder / "m.csv"
    manifest.write_text(text)
    return manifest


def test_a_stored_image_under_another_patient_or_date_is_a_conflict(
    migrated_db: str, tmp_path: Path
) -> None:
    """Before, it was "already present" with exit 0, so a mistyped row could never be noticed."""
    manifest = _image_and_manifest(tmp_path, "patient_id,image,study_date\nP1,a.nii.gz,2024-01-10\n")
    ingest_paths([], IngestOptions(manifest=manifest), url=migrated_db)
    files = _store_files()
    again = ingest_paths([], IngestOptions(manifest=manifest), url=migrated_db)
    assert len(again.already_present) == 1
    for row, said in (("P2,a.nii.gz,2024-01-10", "of patient"), ("P1,a.nii.gz,2024-02-10", "dated")):
        manifest.write_text(f"patient_id,image,study_date\n{row}\n")
        with pytest.raises(UserError, match=rf"already stored as series .* {said}"):
            ingest_paths([], IngestOptions(manifest=manifest), url=migrated_db)
        assert _counts(migrated_db) == (1, 1, 1) and _store_files() == files


def test_manifest_errors_list_rows(migrated_db: str, tmp_path: Path) -> None:
    manifest = tmp_path / "m.csv"
    manifest.write_text(
        "patient_id,image,phase,study_date\nP1,missing.nii.gz,portal,2024-01-01\n,x.nii.gz,hepatic,2024-13-01\n"
    )
    with pytest.raises(UserError) as info:
        ingest_paths([], IngestOptions(manifest=manifest), url=migrated_db)
    text = str(info.value)
    assert "row 2: image" in text and "row 3: patient_id is empty" in text and "hepatic" in text
    (tmp_path / "scan.nii.gz").write_bytes(b"")
    (tmp_path / "folder").mkdir()
    manifest.write_text(
        "patient_id,image,study_date\nP1,scan.nii.gz,2024-01-01,EXTRA\nP2,folder,2024-01-01\n"
        "P3,scan.nii.gz,1899-01-01\n"
    )
    with pytest.raises(UserError) as info:
        ingest_paths([], IngestOptions(manifest=manifest), url=migrated_db)
    text = str(info.value)
    assert "row 2: 4 fields but the header has 3" in text
    assert "row 3: image" in text and "is a folder" in text
    assert "row 4: study_date: 1899-01-01 is before the first CT scan" in text


def _invoke(*args: str) -> tuple[int, str]:
    from typer.testing import CliRunner

    from app.cli.main import app

    result = CliRunner().invoke(app, list(args))
    if isinstance(result.exception, UserError):
        return 1, str(result.exception)
    return result.exit_code, result.stdout


def test_cli_json_and_exit_codes(migrated_db: str, tmp_path: Path) -> None:
    write_ct_series(tmp_path / "s", seed=3)
    code, out = _invoke("ingest", str(tmp_path / "s"), "--json")
    assert code == 0, out
    doc = json.loads(out)
    assert doc["series_added"] == 1 and doc["patients"] == 1
    again = json.loads(_invoke("ingest", str(tmp_path / "s"), "--json")[1])
    assert again["series_added"] == 0 and again["series_already_present"] == 1
    listed = json.loads(_invoke("patients", "list", "--json")[1])
    pid = listed["patients"][0]["pseudo_id"]
    studies = json.loads(_invoke("studies", "list", pid, "--json")[1])
    assert studies["studies"][0]["series"][0]["phase"] == "portal"
    by_source_id = json.loads(_invoke("studies", "list", "PAT001", "--json")[1])  # the DICOM PatientID
    assert by_source_id == studies and by_source_id["patient"] == pid != "PAT001"
    assert _invoke("ingest", "--phase", "hepatic", str(tmp_path / "s"))[0] == 2
    assert _invoke("studies", "list", "P-unknown")[0] == 1
    # through the real entry point: a user error is one message on stderr and exit 1, and with
    # --json stdout holds the one document that says so
    missing = _run_cli("ingest", str(tmp_path / "nope"), "--json")
    assert missing.returncode == 1 and "nope: no such file" in missing.stderr
    assert "nope: no such file" in json.loads(missing.stdout)["error"]


def test_a_usage_error_under_json_is_one_json_document(lvt_env: Path, tmp_path: Path) -> None:
    """Typer's box went to stderr and stdout stayed empty, though --json promises one document."""
    write_ct_series(tmp_path / "s", seed=3)
    for args, said in ((["ingest", str(tmp_path / "s"), "--phase", "bogus", "--json"], "--phase must be one of"),
                       (["db", "current", "--json", "--bogus"], "No such option: --bogus")):
        done = _run_cli(*args)
        assert done.returncode == 2 and said in done.stderr, done.stderr  # Typer's box stays
        doc = json.loads(done.stdout)
        assert set(doc) == {"error", "exit_code"} and doc["exit_code"] == 2 and said in doc["error"]
    assert _run_cli("ingest", str(tmp_path / "s"), "--phase", "bogus").stdout == ""  # without --json: none
    assert not lvt_env.exists()


def test_two_concurrent_ingests(migrated_db: str, tmp_path: Path) -> None:
    for k in range(3):
        write_ct_series(
            tmp_path / "batch" / f"s{k}", seed=k, size=32, n_slices=12, patient_id=f"C{k}"
        )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    # the service without the CLI's heavier imports: two real processes, started together
    code = (
        "import json, sys; from pathlib import Path; from app.services.ingest import ingest_paths; "
        "print(json.dumps(ingest_paths([Path(sys.argv[1])]).to_json()))"
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, str(tmp_path / "batch")],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=REPO,
            env=env,
        )
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1] for o in outputs]
    docs = [json.loads(o[0]) for o in outputs]
    assert (
        sorted(d["series_added"] for d in docs) == [0, 3]
        or sum(d["series_added"] for d in docs) == 3
    )
    assert sum(d["series_added"] + 0 for d in docs) == 3
    assert sum(d["series_already_present"] for d in docs) == 3
    assert _counts(migrated_db) == (3, 3, 3)
    with session_scope(migrated_db) as s:
        paths = s.scalars(select(Series.image_path)).all()
    assert all(storage.resolve(p).is_file() for p in paths)
    assert not list((storage.data_dir() / ".staging").iterdir())


@pytest.fixture(scope="module")
def phantom_cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny synthetic cohort written once by ``lvt phantom --dicom`` (skips if absent)."""
    out = tmp_path_factory.mktemp("phantom") / "cohort"
    args = (
        "phantom",
        str(out),
        "--size",
        "tiny",
        "--dicom",
        "--patients",
        "2",
        "--timepoints",
        "2",
    )
    made = _run_cli(*args)
    if made.returncode == 2 and "No such command" in made.stderr:
        pytest.skip("`lvt phantom` is not available yet (lvt_core.phantom in progress)")
    assert made.returncode == 0, made.stderr
    return out


def test_phantom_dicom_cohort_and_its_measurements(migrated_db: str, phantom_cohort: Path) -> None:
    with (phantom_cohort / "manifest.csv").open() as handle:
        n_series = sum(1 for _ in csv.DictReader(handle))
    with (phantom_cohort / "measurements.csv").open() as handle:
        n_rows = sum(1 for _ in csv.DictReader(handle))
    code, out = _invoke("ingest", str(phantom_cohort), "--json")
    assert code == 0, out
    assert json.loads(out)["series_added"] == n_series
    code, out = _invoke(
        "measurements", "import", str(phantom_cohort / "measurements.csv"), "--json"
    )
    assert code == 0, out
    assert json.loads(out)["added"] == n_rows  # every row linked to an ingested study
    # the NIfTI copies named by the manifest are the same scans: nothing new, no conflict
    code, out = _invoke("ingest", "--manifest", str(phantom_cohort / "manifest.csv"), "--json")
    assert code == 0, out
    assert json.loads(out)["series_already_present"] == n_series


def test_phase_rules_defaults_timing_and_yaml(tmp_path: Path) -> None:
    from app.services.ingest.phase import detect_phase, load_rules

    assert detect_phase(["Late arterial 1.0 B30f"])[0] == "arterial"
    assert detect_phase(["PV 3mm"])[0] == "portal"
    assert detect_phase(["Nativ 5.0"])[0] == "noncontrast"
    assert detect_phase(["Delayed 3min"])[0] == "late"
    assert detect_phase(["Abdomen 3.0"]) == ("unknown", "no rule matched")
    assert detect_phase([None], "APPLIED", "100000", "100030")[0] == "arterial"
    assert detect_phase([None], "APPLIED", "100000.5", "100110")[0] == "portal"
    rules = tmp_path / "rules.yaml"
    rules.write_text('rules:\n  - {phase: late, pattern: "\\\\bphase ?3\\\\b"}\n')
    assert detect_phase(["Phase 3"], rules=load_rules(rules))[0] == "late"
    assert detect_phase(["portal"], rules=load_rules(rules))[0] == "unknown"
    rules.write_text("rules:\n  - {phase: hepatic, pattern: x}\n")
    with pytest.raises(UserError, match="unknown phase 'hepatic'"):
        load_rules(rules)


def test_copies_of_one_slice_are_a_single_slice_not_a_crash(tmp_path: Path) -> None:
    """Two files of one slice (same SOPInstanceUID and position) used to leave one slice after
    the duplicate was dropped and crash on an empty array of steps."""
    import shutil

    import pydicom

    from app.services.ingest.dicom import DicomSeries, Slice, check_series

    write_ct_series(tmp_path / "s", n_slices=1)
    (only,) = sorted((tmp_path / "s").iterdir())
    shutil.copy(only, tmp_path / "s" / "IM0000_copy.dcm")
    files = sorted((tmp_path / "s").iterdir())
    series = DicomSeries("1.2.3", [Slice(f, pydicom.dcmread(f, stop_before_pixels=True)) for f in files])
    check_series(series)
    assert series.errors == ["a single slice is not a 3D volume"]


def test_scouts_and_dose_screens_are_skipped_not_refused(migrated_db: str, tmp_path: Path) -> None:
    """An export's scout (one slice, or ImageType LOCALIZER) and dose screen (a secondary
    capture without ImagePositionPatient) used to refuse the whole ingest."""
    export = tmp_path / "export"
    study = write_ct_series(export / "portal", seed=1)["study_uid"]
    write_ct_series(export / "scout1", n_slices=1, study_uid=study, description="Topogram")
    write_ct_series(export / "scout2", n_slices=2, study_uid=study, description="Topogram")
    write_ct_series(export / "dose", n_slices=1, study_uid=study, description="Dose Report")

    def localizer(_: int, ds: Any) -> None:
        ds.ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER"]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 0, -1]

    def dose_screen(_: int, ds: Any) -> None:
        ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
        ds.ImageType = ["DERIVED", "SECONDARY", "OTHER"]
        del ds.ImagePositionPatient, ds.ImageOrientationPatient

    edit_dicom(export / "scout2", localizer)
    edit_dicom(export / "dose", dose_screen)
    report = ingest_paths([export], url=migrated_db)
    assert len(report.added) == 1 and "portal" in report.added[0]["source"]
    reasons = {Path(s["source"].split(" (series")[0]).name: s["reason"] for s in report.skipped}
    assert "single slice" in reasons["scout1"] and "LOCALIZER" in reasons["scout2"]
    assert "secondary capture" in reasons["dose"]
    # a real CT series without geometry is still an error
    write_ct_series(tmp_path / "broken", seed=2)
    edit_dicom(tmp_path / "broken", lambda _, ds: delattr(ds, "ImagePositionPatient"))
    with pytest.raises(UserError, match="no ImagePositionPatient"):
        ingest_paths([tmp_path / "broken"], url=migrated_db)
    assert _counts(migrated_db) == (1, 1, 1)


def test_reformats_and_projections_are_skipped_and_linked_folders_followed(
    migrated_db: str, tmp_path: Path
) -> None:
    """A coronal reformat became a second portal scan of the day, and a MIP a scan whose
    voxels are slab maxima; a study linked into the drop folder was not seen at all."""
    export = tmp_path / "export"
    study = write_ct_series(export / "portal", seed=1)["study_uid"]
    write_ct_series(export / "coronal", seed=2, study_uid=study, description="Cor MPR 3mm")
    write_ct_series(export / "mip", seed=3, study_uid=study, description="Axial MIP 10mm")
    write_ct_series(export / "thick", seed=4, study_uid=study, description="Abdomen arterial 5.0")

    def coronal(i: int, ds: Any) -> None:
        ds.ImageType = ["DERIVED", "SECONDARY", "REFORMATTED"]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 0, -1]
        ds.ImagePositionPatient = [0.0, 2.0 * i, 0.0]

    edit_dicom(export / "coronal", coronal)
    edit_dicom(export / "mip", lambda _, ds: setattr(ds, "ImageType", ["DERIVED", "SECONDARY", "MIP"]))
    edit_dicom(export / "thick", lambda _, ds: setattr(ds, "ImageType", ["DERIVED", "SECONDARY", "AXIAL"]))
    drop = tmp_path / "drop"
    drop.mkdir()
    (drop / "study").symlink_to(export, target_is_directory=True)
    (export / "loop").symlink_to(drop, target_is_directory=True)  # a link back up is walked once
    report = ingest_paths([drop], url=migrated_db)
    assert sorted(Path(a["source"].split(" (")[0]).name for a in report.added) == ["portal", "thick"]
    reasons = {Path(s["source"].split(" (series")[0]).name: s["reason"] for s in report.skipped}
    assert "coronal reformat" in reasons["coronal"] and "MIP" in reasons["mip"]
    assert _counts(migrated_db) == (1, 1, 2)


def test_a_patient_stored_with_shifted_dates_refuses_an_ingest_that_keeps_them(
    migrated_db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With LVT_DEID_SHIFT_DATES changed between two ingests, a patient's second study kept
    its date and the first was shifted: the interval between them was false."""
    from app.settings import get_settings

    write_ct_series(tmp_path / "first", seed=1, study_date="20240115")
    ingest_paths([tmp_path / "first"], url=migrated_db)
    with session_scope(migrated_db) as s:
        (patient,) = s.scalars(select(Patient))
        assert (patient.identity_removed, patient.dates_shifted) == (True, True)
    monkeypatch.setenv("LVT_DEID_SHIFT_DATES", "false")
    get_settings.cache_clear()
    write_ct_series(tmp_path / "second", seed=2, study_date="20240415")
    with pytest.raises(UserError, match=r"was ingested with dates shifted, but this ingest keeps them"):
        ingest_paths([tmp_path / "second"], url=migrated_db)
    assert _counts(migrated_db) == (1, 1, 1)
    write_ct_series(tmp_path / "other", seed=3, patient_id="PAT002")  # a new patient takes the new policy
    ingest_paths([tmp_path / "other"], url=migrated_db)
    with session_scope(migrated_db) as s:
        assert sorted(s.scalars(select(Patient.dates_shifted))) == [False, True]
        for patient in s.scalars(select(Patient)):  # as stored before revision 0008
            patient.identity_removed = patient.dates_shifted = None
    report = ingest_paths([tmp_path / "second"], url=migrated_db)
    assert len(report.added) == 1 and any("before LVT recorded its de-identification policy" in n
                                          for n in report.notes)


def test_a_stored_image_under_new_uids_and_another_patient_is_a_conflict(
    migrated_db: str, tmp_path: Path
) -> None:
    """The same pixels with new UIDs and another PatientID, or kept identifiers after a
    de-identified ingest, were filed silently as a second series."""
    from pydicom.uid import generate_uid

    write_ct_series(tmp_path / "s", seed=3)
    first = ingest_paths([tmp_path / "s"], url=migrated_db)
    stored_id = first.added[0]["series_id"]
    with pytest.raises(UserError, match=rf"already stored as series {stored_id} of patient"):
        ingest_paths([tmp_path / "s"], IngestOptions(deidentify=False), url=migrated_db)
    study, series = generate_uid(), generate_uid()

    def other_patient(_: int, ds: Any) -> None:
        ds.PatientID, ds.StudyInstanceUID, ds.SeriesInstanceUID = "OTHER-99", study, series

    edit_dicom(tmp_path / "s", other_patient)
    with pytest.raises(UserError, match=rf"already stored as series {stored_id} of patient"):
        ingest_paths([tmp_path / "s"], url=migrated_db)
    assert _counts(migrated_db) == (1, 1, 1)


def test_another_phase_for_a_stored_image_is_a_conflict(migrated_db: str, tmp_path: Path) -> None:
    """--phase arterial for a stored portal series, or one image given as two phases in a
    manifest, was ignored silently (the series stayed as it was, reported present)."""
    write_ct_series(tmp_path / "s", seed=3)
    ingest_paths([tmp_path / "s"], url=migrated_db)  # portal, from the description
    assert len(ingest_paths([tmp_path / "s"], IngestOptions(phase="portal"), url=migrated_db).already_present) == 1
    with pytest.raises(UserError, match=r"already stored as series \d+ with phase portal, not arterial"):
        ingest_paths([tmp_path / "s"], IngestOptions(phase="arterial"), url=migrated_db)
    manifest = _image_and_manifest(tmp_path, "patient_id,image,study_date,phase\nP1,a.nii.gz,2024-01-10,arterial\n"
                                             "P1,a.nii.gz,2024-01-10,portal\n")
    with pytest.raises(UserError, match="with phase arterial, not portal"):
        ingest_paths([], IngestOptions(manifest=manifest), url=migrated_db)
    assert _counts(migrated_db) == (1, 1, 1)


def test_patient_id_over_several_patient_ids_is_refused(migrated_db: str, tmp_path: Path) -> None:
    """--patient-id merged the series of different PatientIDs into one patient silently."""
    write_ct_series(tmp_path / "x" / "a", seed=1, patient_id="PAT-A")
    write_ct_series(tmp_path / "x" / "b", seed=2, patient_id="PAT-B")
    with pytest.raises(UserError) as info:
        ingest_paths([tmp_path / "x"], IngestOptions(patient_id="P9"), url=migrated_db)
    text = str(info.value)
    assert "2 different PatientIDs" in text and "'PAT-A' in " + str(tmp_path / "x" / "a") in text
    assert "'PAT-B' in " + str(tmp_path / "x" / "b") in text
    assert _counts(migrated_db) == (0, 0, 0)
    # one PatientID, or none, may still be given (or replaced) with --patient-id
    report = ingest_paths([tmp_path / "x" / "a"], IngestOptions(patient_id="P9"), url=migrated_db)
    assert len(report.added) == 1


def test_files_sharing_an_instance_uid_must_be_copies(migrated_db: str, tmp_path: Path) -> None:
    """Two files of one SOPInstanceUID and position with different pixels were resolved by
    file-name order with a warning; two slices at different positions sharing a
    SOPInstanceUID were accepted silently."""
    import shutil

    import pydicom

    write_ct_series(tmp_path / "copy", seed=1)
    files = sorted((tmp_path / "copy").iterdir())
    shutil.copy(files[2], tmp_path / "copy" / "IM0002_copy.dcm")
    report = ingest_paths([tmp_path / "copy"], url=migrated_db)  # an identical copy is dropped
    assert report.added[0]["size"][2] == 6 and "duplicate file" in report.warnings[0]["warning"]

    write_ct_series(tmp_path / "pixels", seed=2, patient_id="PAT2")
    files = sorted((tmp_path / "pixels").iterdir())
    ds = pydicom.dcmread(files[2])
    ds.PixelData = np.full((16, 16), 1000, dtype=np.int16).tobytes()
    ds.save_as(tmp_path / "pixels" / "IM0000_copy.dcm", enforce_file_format=True)
    with pytest.raises(UserError) as info:
        ingest_paths([tmp_path / "pixels"], url=migrated_db)
    assert "with different pixel data" in str(info.value)
    assert str(files[2]) in str(info.value) and "IM0000_copy.dcm" in str(info.value)

    write_ct_series(tmp_path / "moved", seed=3, patient_id="PAT3")
    files = edit_dicom(tmp_path / "moved", lambda _, ds: None)
    first = pydicom.dcmread(files[0])
    ds = pydicom.dcmread(files[1])
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = first.SOPInstanceUID
    ds.save_as(files[1], enforce_file_format=True)
    with pytest.raises(UserError) as info:
        ingest_paths([tmp_path / "moved"], url=migrated_db)
    assert f"{files[0]} and {files[1]} share SOPInstanceUID" in str(info.value)
    assert _counts(migrated_db) == (1, 1, 1)


def test_a_slice_of_another_size_or_orientation_is_named(migrated_db: str, tmp_path: Path) -> None:
    """One such slice under the series' UID was skipped at the ends (a shorter volume) or,
    mid-series, reported as 'missing slices'; a localizer slice there is still skipped."""

    def smaller(i: int, ds: Any) -> None:
        if i == 3:
            ds.Rows = ds.Columns = 8
            ds.PixelData = np.zeros((8, 8), dtype=np.int16).tobytes()

    def turned(i: int, ds: Any) -> None:
        if i == 5:
            ds.ImageOrientationPatient = [0.9998, 0.02, 0, -0.02, 0.9998, 0]

    for name, change, said in (("mid", smaller, "8x8 pixels"), ("end", turned, "16x16 pixels, orientation [1, 0.02")):
        write_ct_series(tmp_path / name, seed=1)
        files = edit_dicom(tmp_path / name, change)
        odd = files[3] if name == "mid" else files[5]
        with pytest.raises(UserError) as info:
            ingest_paths([tmp_path / name], url=migrated_db)
        text = " ".join(str(info.value).split())
        assert f"{odd}: {said}" in text and "other 5 slices have 16x16 pixels, orientation [1, 0, 0, 0, 1, 0]" in text
        assert "missing slices" not in text
    write_ct_series(tmp_path / "loc", seed=2, n_slices=7)

    def localizer(i: int, ds: Any) -> None:
        if i == 6:
            ds.ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER"]
            ds.ImageOrientationPatient = [1, 0, 0, 0, 0, -1]

    edit_dicom(tmp_path / "loc", localizer)
    report = ingest_paths([tmp_path / "loc"], url=migrated_db)
    assert report.added[0]["size"][2] == 6 and "1 localizer slice(s)" in report.skipped[0]["reason"]


def _error_text(path: Path, url: str) -> str:
    """The message of the UserError an ingest of ``path`` raises, on one line."""
    with pytest.raises(UserError) as info:
        ingest_paths([path], url=url)
    return " ".join(str(info.value).split())


def test_a_slice_of_another_pixel_spacing_or_moved_in_plane_is_named(
    migrated_db: str, tmp_path: Path
) -> None:
    """Slices of another PixelSpacing, or moved in-plane (reconstruction centre changed),
    under the series' UID were stacked onto the first slice's grid; the first and last
    positions alone showed no tilt. Rounding in the export is still accepted."""

    def wider(i: int, ds: Any) -> None:
        if i >= 3:
            ds.PixelSpacing = [1.0, 1.0]
        elif i == 1:
            ds.PixelSpacing = [0.8000004, 0.8]

    def moved(i: int, ds: Any) -> None:
        if i in (2, 3):
            ds.ImagePositionPatient = [5.0, 0.0, 2.0 * i]

    def rounded(i: int, ds: Any) -> None:  # under a tenth of a 0.8 mm pixel
        ds.ImagePositionPatient = [0.05 if i == 2 else 0.0, 0.0, 2.0 * i]

    write_ct_series(tmp_path / "spacing", seed=1)
    files = edit_dicom(tmp_path / "spacing", wider)
    text = _error_text(tmp_path / "spacing", migrated_db)
    for odd in files[3:]:
        assert (f"{odd}: 16x16 pixels, orientation [1, 0, 0, 0, 1, 0], pixel spacing 1 x 1 mm where the "
                "series' other 3 slices have 16x16 pixels, orientation [1, 0, 0, 0, 1, 0], pixel spacing "
                "0.8 x 0.8 mm") in text
    assert f"{files[1]}:" not in text
    write_ct_series(tmp_path / "shift", seed=2)
    files = edit_dicom(tmp_path / "shift", moved)
    text = _error_text(tmp_path / "shift", migrated_db)
    for odd in files[2:4]:
        assert f"{odd}: moved in-plane by 5.00 mm (+5.00 mm along the rows" in text
    assert not any(f"{f}:" in text for f in files[:2] + files[4:])
    assert _counts(migrated_db) == (0, 0, 0)
    write_ct_series(tmp_path / "rounded", seed=3)
    edit_dicom(tmp_path / "rounded", rounded)
    assert len(ingest_paths([tmp_path / "rounded"], url=migrated_db).added) == 1


def test_gaps_and_duplicate_positions_name_the_neighbouring_files(
    migrated_db: str, tmp_path: Path
) -> None:
    """The missing-slice and duplicate-position errors gave positions in mm only."""
    write_ct_series(tmp_path / "gap", z_positions=[0, 2, 4, 8, 10, 12])
    files = sorted((tmp_path / "gap").iterdir())
    text = _error_text(tmp_path / "gap", migrated_db)
    assert f"missing slices: about 1 slice(s) absent, first gap of 4.00 mm between {files[2]} (4.00 mm) and {files[3]} (8.00 mm)" in text
    write_ct_series(tmp_path / "dup", z_positions=[0, 2, 2, 4, 6, 8], seed=1)
    files = sorted((tmp_path / "dup").iterdir())
    text = _error_text(tmp_path / "dup", migrated_db)
    assert f"1 duplicate slice position(s): {files[1]} and {files[2]} at 2.00 mm" in text


def test_an_enhanced_multiframe_ct_is_a_volume_like_its_classic_series(
    migrated_db: str, tmp_path: Path
) -> None:
    """Enhanced CT (one file, positions in per-frame functional groups) was skipped as "a
    secondary capture" even beside a classic series of the export; it is decoded frame by
    frame with its functional groups' geometry and rescale (and pixel padding) and goes
    through the series checks, or is refused naming the file."""
    import pydicom

    write_ct_series(tmp_path / "classic", seed=1)
    files = sorted((tmp_path / "classic").iterdir())
    export = tmp_path / "export"
    write_ct_series(export / "axial", seed=2)
    write_enhanced_ct(files, export / "enhanced", order=[3, 0, 5, 1, 4, 2], padding=0)
    report = ingest_paths([export], url=migrated_db)
    assert sorted(Path(a["source"].split(" (")[0]).name for a in report.added) == ["axial", "enhanced"]
    added = next(a for a in report.added if a["source"].startswith(str(export / "enhanced")))
    stored = sitk.ReadImage(str(storage.resolve(added["image_path"])))
    source = read_image(tmp_path / "classic")
    expected = sitk.GetArrayFromImage(source)
    expected[:, 0, :] = -1024  # padding is air
    np.testing.assert_array_equal(sitk.GetArrayFromImage(stored), expected)
    assert stored.GetPixelID() == sitk.sitkInt16
    assert np.allclose(stored.GetOrigin(), source.GetOrigin()) and np.allclose(stored.GetSpacing(), source.GetSpacing())
    assert np.allclose(stored.GetDirection(), source.GetDirection())
    assert any("pixel padding (stored value 0" in w["warning"] for w in report.warnings)
    # frames go through the series checks, named by file and frame
    gap = write_enhanced_ct(files, tmp_path / "gap", order=[0, 1, 2, 4, 5])
    text = _error_text(tmp_path / "gap", migrated_db)
    assert f"missing slices: about 1 slice(s) absent, first gap of 4.00 mm between {gap} (frame 3)" in text
    # a frame without a position cannot be placed: refused, naming the file
    broken = write_enhanced_ct(files, tmp_path / "broken", order=list(range(6)))
    ds = pydicom.dcmread(broken)
    del ds.PerFrameFunctionalGroupsSequence[1].PlanePositionSequence
    ds.save_as(broken, enforce_file_format=True)
    text = _error_text(tmp_path / "broken", migrated_db)
    assert (f"{broken}: Enhanced multi-frame CT not supported because frame 2 has no ImagePositionPatient "
            "(no PlanePositionSequence in its functional groups)") in text
    assert _counts(migrated_db) == (1, 2, 2)


def test_pixel_padding_is_stored_as_air(migrated_db: str, tmp_path: Path) -> None:
    """Pixels equal to PixelPaddingValue (or up to PixelPaddingRangeLimit) were stored as HU:
    62512 for unsigned pixels (intercept −1024, padding 63536), −3024 for signed −2000."""

    def unsigned(_: int, ds: Any) -> None:
        raw = ds.pixel_array.astype(np.uint16)
        raw[:2, :] = 63536
        ds.PixelRepresentation = 0
        ds.add_new(0x00280120, "US", 63536)  # PixelPaddingValue
        ds.PixelData = raw.tobytes()

    def signed_range(_: int, ds: Any) -> None:
        raw = ds.pixel_array.copy()
        raw[0, :], raw[1, :] = -2000, -1600
        ds.add_new(0x00280120, "SS", -2000)  # PixelPaddingValue
        ds.add_new(0x00280121, "SS", -1500)  # PixelPaddingRangeLimit
        ds.PixelData = raw.tobytes()

    for name, change, shown in (("u", unsigned, "63536"), ("s", signed_range, "-2000 to -1500")):
        write_ct_series(tmp_path / name, seed=1 if name == "u" else 2, patient_id=f"PAT-{name}")
        expected = sitk.GetArrayFromImage(read_image(tmp_path / name))
        expected[:, :2, :] = -1024
        edit_dicom(tmp_path / name, change)
        report = ingest_paths([tmp_path / name], url=migrated_db)
        stored = sitk.ReadImage(str(storage.resolve(report.added[0]["image_path"])))
        np.testing.assert_array_equal(sitk.GetArrayFromImage(stored), expected)
        assert stored.GetPixelID() == sitk.sitkInt16
        assert report.warnings[0]["warning"] == (f"pixel padding (stored value {shown}, outside the "
                                                 "reconstructed field of view) is stored as air, -1024 HU "
                                                 f"({2 * 16 * 6} voxels)")
    # a padding value declared but held by no voxel changes nothing and is not reported
    write_ct_series(tmp_path / "unused", seed=3, patient_id="PAT-unused")
    edit_dicom(tmp_path / "unused", lambda _, ds: ds.add_new(0x00280120, "SS", -2000))
    report = ingest_paths([tmp_path / "unused"], url=migrated_db)
    assert report.added and not report.warnings


@pytest.mark.filterwarnings("ignore:Invalid value for VR DA")
def test_study_date_falls_back_and_stores_no_source_date_text(migrated_db: str, tmp_path: Path) -> None:
    """With de-identification on, series.warnings stored "unreadable StudyDate '2020.09.04'"
    (a source date) and the study had no date though SeriesDate held it; a series with no
    date at all was stored without a word."""
    from app.services.deid import Deidentifier

    write_ct_series(tmp_path / "dotted", seed=1, study_date="20200904")
    edit_dicom(tmp_path / "dotted", lambda _, ds: setattr(ds, "StudyDate", "2020.09.04"))
    write_ct_series(tmp_path / "acq", seed=2, patient_id="PAT2")

    def acquisition_only(_: int, ds: Any) -> None:
        ds.StudyDate, ds.AcquisitionDate = "2020-13-45", "20210305"
        del ds.SeriesDate

    edit_dicom(tmp_path / "acq", acquisition_only)
    write_ct_series(tmp_path / "none", seed=3, patient_id="PAT3")

    def no_date(_: int, ds: Any) -> None:
        del ds.StudyDate, ds.SeriesDate

    edit_dicom(tmp_path / "none", no_date)
    report = ingest_paths([tmp_path / "dotted", tmp_path / "acq", tmp_path / "none"], url=migrated_db)
    deid = Deidentifier.from_settings()
    dates = [a["study_date"] for a in report.added]
    assert dates[0] == deid.date("PAT001", dt.date(2020, 9, 4)).isoformat()  # type: ignore[union-attr]
    assert dates[1] == deid.date("PAT2", dt.date(2021, 3, 5)).isoformat()  # type: ignore[union-attr]
    assert dates[2] is None
    warnings = [w["warning"] for w in report.warnings]
    assert warnings[0] == "StudyDate unreadable; the study date is taken from SeriesDate"
    assert warnings[1] == "StudyDate unreadable; the study date is taken from AcquisitionDate"
    assert warnings[2].startswith("no readable StudyDate, SeriesDate or AcquisitionDate")
    with session_scope(migrated_db) as s:
        stored = " ".join(" ".join(w or []) for w in s.scalars(select(Series.warnings)))
    assert "2020" not in stored and "2021" not in stored and "13-45" not in stored


def test_a_dicom_study_date_before_ct_existed_is_refused(migrated_db: str, tmp_path: Path) -> None:
    """A manifest row dated before 1971-10-01 was refused, a DICOM series so dated accepted."""
    write_ct_series(tmp_path / "old", study_date="19600101")
    with pytest.raises(UserError, match=r"old \(series .*\): study date 1960-01-01 is before the first CT scan"):
        ingest_paths([tmp_path / "old"], url=migrated_db)
    assert _counts(migrated_db) == (0, 0, 0)
    write_ct_series(tmp_path / "new", seed=1, patient_id="PAT2")
    both = [tmp_path / "old", tmp_path / "new"]
    report = ingest_paths(both, IngestOptions(skip_invalid=True), url=migrated_db)
    assert "before the first CT scan" in report.skipped[0]["reason"] and len(report.added) == 1


def test_a_manifest_row_of_another_modality_is_refused(migrated_db: str, tmp_path: Path) -> None:
    """A row with modality MR was ingested (and stored as an MR series) although only CT is."""
    manifest = _image_and_manifest(tmp_path, "patient_id,image,study_date,modality\nP1,a.nii.gz,2024-01-10,ct\n"
                                             "P2,b.nii.gz,2024-01-10,MR\n", {"a": 7, "b": 9})
    with pytest.raises(UserError, match="row 3: modality 'MR' is not CT"):
        ingest_paths([], IngestOptions(manifest=manifest), url=migrated_db)
    assert _counts(migrated_db) == (0, 0, 0)


def test_zip_members_are_named_inside_the_archive(migrated_db: str, tmp_path: Path) -> None:
    """Messages and the JSON source named the deleted temporary extraction folder."""
    write_ct_series(tmp_path / "s", seed=5)
    archive = tmp_path / "export.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for f in sorted((tmp_path / "s").iterdir()):
            data = f.read_bytes()
            zf.writestr(f"case/{f.name}", data[:300] if f.name == "IM0002.dcm" else data)
    with pytest.raises(UserError) as info:
        ingest_paths([archive], url=migrated_db)
    assert f"{archive}:case/IM0002.dcm: corrupt or truncated" in str(info.value)
    assert "lvt-zip-" not in str(info.value)
    with zipfile.ZipFile(archive, "w") as zf:
        for f in sorted((tmp_path / "s").iterdir()):
            zf.write(f, f"case/{f.name}")
    report = ingest_paths([archive], url=migrated_db)
    uid = report.added[0]["series_instance_uid"]
    assert report.added[0]["source"].startswith(f"{archive}:case (series 1, ") and uid


def test_a_corrupt_jpeg2000_slice_gives_one_message_not_pydicom_tracebacks(
    migrated_db: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """pydicom's decoders logged a traceback per plugin (~60 lines on stderr) first."""
    import logging

    from pydicom.encaps import encapsulate
    from pydicom.uid import JPEG2000Lossless

    write_ct_series(tmp_path / "s", seed=1, size=64)  # J2K needs more than 16x16 pixels

    def compress(i: int, ds: Any) -> None:
        ds.compress(JPEG2000Lossless)
        if i == 2:
            ds.PixelData = encapsulate([b"\xff\x4f\xff\x51" + b"\x00" * 200])

    files = edit_dicom(tmp_path / "s", compress)
    caplog.set_level(logging.DEBUG)
    with pytest.raises(UserError, match=rf"{files[2]}: cannot decode pixel data"):
        ingest_paths([tmp_path / "s"], url=migrated_db)
    assert [r for r in caplog.records if r.name.startswith("pydicom")] == []
    assert logging.getLogger("pydicom").level != logging.CRITICAL + 1  # restored


def test_a_dry_run_without_a_store_creates_nothing(
    lvt_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`lvt ingest --dry-run` created lvt.db and secret.key in the store."""
    from app.settings import get_settings

    monkeypatch.delenv("LVT_SECRET_KEY")
    get_settings.cache_clear()
    write_ct_series(tmp_path / "s", seed=1)
    code, out = _invoke("ingest", str(tmp_path / "s"), "--dry-run", "--json")
    assert code == 0, out
    doc = json.loads(out)
    assert doc["dry_run"] and doc["series_added"] == 1 and doc["added"][0]["patient"].startswith("P-")
    assert any("provisional" in note for note in doc["notes"])
    assert not lvt_env.exists() or list(lvt_env.rglob("*")) == []


def test_a_refused_first_ingest_leaves_no_store(
    lvt_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A first ingest refused for a truncated slice left an empty lvt.db and a secret.key, so
    `lvt db current` no longer said there was no store."""
    from app.settings import get_settings

    monkeypatch.delenv("LVT_SECRET_KEY")
    get_settings.cache_clear()
    write_ct_series(tmp_path / "s", seed=1)
    victim = tmp_path / "s" / "IM0002.dcm"
    victim.write_bytes(victim.read_bytes()[:300])
    code, out = _invoke("ingest", str(tmp_path / "s"), "--json")
    assert code == 1 and "nothing was ingested" in out and str(victim) in out
    assert not lvt_env.exists() or list(lvt_env.rglob("*")) == []
    assert "no LVT store" in " ".join(_run_cli("db", "current").stderr.split())
    victim.unlink()  # the store is made once something is stored
    write_ct_series(tmp_path / "t", seed=2)
    assert _invoke("ingest", str(tmp_path / "t"), "--json")[0] == 0
    assert (lvt_env / "lvt.db").is_file() and (lvt_env / "secret.key").is_file()
    again = _invoke("ingest", str(tmp_path / "s"), "--json")  # now refused: a slice is missing
    assert again[0] == 1 and (lvt_env / "lvt.db").is_file() and (lvt_env / "secret.key").is_file()
    assert _counts(default_url())[0] == 1


def test_a_dry_run_on_a_store_behind_the_schema_says_to_upgrade(migrated_db: str, tmp_path: Path) -> None:
    """It skipped the migration (a dry run writes nothing) and failed on the old schema with a
    raw "no such column: patients.identity_removed"."""
    from db import migrate

    migrate.downgrade(migrated_db, "0005")
    write_ct_series(tmp_path / "s", seed=1)
    code, out = _invoke("ingest", str(tmp_path / "s"), "--dry-run", "--json")
    assert code == 1 and "at schema revision 0005" in out and "run `lvt db upgrade` first" in out, out
    assert migrate.current(migrated_db) == "0005" and _store_files() == set()


def test_a_manifest_value_longer_than_its_column_is_refused_on_every_backend(
    migrated_db: str, tmp_path: Path
) -> None:
    """SQLite stored it whole, PostgreSQL died with "value too long" mid-ingest."""
    manifest = _image_and_manifest(tmp_path, "patient_id,image,accession,series_description\n"
                                             f"P1,a.nii.gz,{'A' * 70},{'d' * 300}\n")
    with pytest.raises(UserError) as info:
        ingest_paths([], IngestOptions(manifest=manifest, deidentify=False), url=migrated_db)
    assert "row 2: accession is 70 characters long, at most 64 fit" in str(info.value)
    assert "series_description is 300 characters long, at most 256 fit" in str(info.value)
    assert _counts(migrated_db) == (0, 0, 0)


def test_a_manifest_row_dated_in_the_future_is_refused(migrated_db: str, tmp_path: Path) -> None:
    manifest = _image_and_manifest(tmp_path, "patient_id,image,study_date\nP1,a.nii.gz,2062-01-10\n")
    with pytest.raises(UserError, match=r"row 2: study_date: 2062-01-10 is in the future"):
        ingest_paths([], IngestOptions(manifest=manifest), url=migrated_db)
    assert _counts(migrated_db) == (0, 0, 0)


def _split(folder: Path, into: tuple[Path, Path]) -> None:
    """Move the first half of ``folder``'s files into ``into[0]``, the rest into ``into[1]``."""
    files = sorted(folder.iterdir())
    for i, f in enumerate(files):
        target = into[0] if i < len(files) // 2 else into[1]
        target.mkdir(parents=True, exist_ok=True)
        f.rename(target / f.name)


def test_a_series_split_over_folders_or_zips_is_ingested_whole(migrated_db: str, tmp_path: Path) -> None:
    """Each path and each zip was its own scan: the second half of a series split over two
    folders (or part1.zip, part2.zip of a web PACS) was refused as "already stored with
    different image content", and --skip-invalid stored the first half alone."""
    write_ct_series(tmp_path / "s", seed=3)
    _split(tmp_path / "s", (tmp_path / "a", tmp_path / "b"))
    report = ingest_paths([tmp_path / "a", tmp_path / "b"], url=migrated_db)
    assert [a["size"][2] for a in report.added] == [6] and report.skipped == []
    source = report.added[0]["source"]
    assert source.startswith(f"{tmp_path / 'a'} + {tmp_path / 'b'} (series 1, ")
    export = tmp_path / "export"
    export.mkdir()
    for part in ("a", "b"):
        with zipfile.ZipFile(export / f"{part}.zip", "w") as zf:
            for f in sorted((tmp_path / part).iterdir()):
                zf.write(f, f.name)
    again = ingest_paths([export], IngestOptions(skip_invalid=True), url=migrated_db)
    assert again.added == [] and again.skipped == [] and len(again.already_present) == 1
    assert again.already_present[0]["source"].startswith(f"{export / 'a.zip'} + {export / 'b.zip'} (")
    assert _counts(migrated_db) == (1, 1, 1)
    # a part alone, in a later ingest, is a conflict that says what may have happened
    with pytest.raises(UserError, match=r"of 6 slices, new .* of 3\); if its files are split"):
        ingest_paths([tmp_path / "a"], url=migrated_db)
    # a manifest row's folder is scanned with the row's own values: a part there is refused
    manifest = tmp_path / "rows.csv"
    manifest.write_text(f"patient_id,dicom_dir\nPAT001,{tmp_path / 'a'}\n")
    with pytest.raises(UserError, match="the series is split over"):
        ingest_paths([tmp_path / "b"], IngestOptions(manifest=manifest), url=migrated_db)
    assert _counts(migrated_db) == (1, 1, 1)


def test_a_half_series_stored_earlier_is_removed_and_the_whole_one_ingested(
    migrated_db: str, tmp_path: Path
) -> None:
    """Half a series, ingested before its other files arrived, stayed stored for good: the
    whole series was refused under its UID and no command removed the half."""
    from app.services.series_removal import remove_series

    write_ct_series(tmp_path / "s", seed=3)
    _split(tmp_path / "s", (tmp_path / "a", tmp_path / "b"))
    half = ingest_paths([tmp_path / "a"], url=migrated_db).added[0]
    assert half["size"][2] == 3
    half_files = _store_files()
    with pytest.raises(UserError, match=f"remove it first \\(`lvt studies remove-series {half['series_id']}`\\)"):
        ingest_paths([tmp_path / "a", tmp_path / "b"], url=migrated_db)
    report = remove_series(half["series_id"], actor="test", url=migrated_db)
    assert report["study_removed"] and report["patient_removed"] and report["segmentations_removed"] == 0
    assert len(report["files_removed"]) == 1 and _store_files() == set()
    assert _counts(migrated_db) == (0, 0, 0)
    whole = ingest_paths([tmp_path / "a", tmp_path / "b"], url=migrated_db)
    assert [a["size"][2] for a in whole.added] == [6] and _counts(migrated_db) == (1, 1, 1)
    assert whole.added[0]["patient"] == half["patient"] and len(_store_files()) == len(half_files)
    with pytest.raises(UserError, match="series 999999 is not in the store"):
        remove_series(999999, actor="test", url=migrated_db)


def test_a_damaged_end_slice_skips_its_whole_series(migrated_db: str, tmp_path: Path) -> None:
    """A truncated last slice was dropped before grouping; no gap showed, and --skip-invalid
    stored the series one slice short without a word."""
    write_ct_series(tmp_path / "x" / "good", seed=1, patient_id="PAT1")
    write_ct_series(tmp_path / "x" / "bad", seed=2, patient_id="PAT2")
    last = sorted((tmp_path / "x" / "bad").iterdir())[-1]
    intact = last.read_bytes()
    last.write_bytes(intact[:-100])
    with pytest.raises(UserError, match=rf"{last}: truncated DICOM file"):
        ingest_paths([tmp_path / "x"], url=migrated_db)
    report = ingest_paths([tmp_path / "x"], IngestOptions(skip_invalid=True), url=migrated_db)
    assert [a["source"].split(" (")[0] for a in report.added] == [str(tmp_path / "x" / "good")]
    (skipped,) = report.skipped
    assert skipped["source"].startswith(f"{tmp_path / 'x' / 'bad'} (series 1, ")
    assert f"unreadable, so it would be stored short: {last}: truncated" in skipped["reason"]
    assert _counts(migrated_db) == (1, 1, 1)
    last.write_bytes(intact)  # the repaired export is then ingested whole
    report = ingest_paths([tmp_path / "x"], url=migrated_db)
    assert [a["size"][2] for a in report.added] == [6] and _counts(migrated_db) == (2, 2, 2)


def test_dicom_without_file_meta_is_read_and_dicomdir_passed_over(
    migrated_db: str, tmp_path: Path
) -> None:
    """Files without the Part-10 preamble and file meta (older archives) were "not DICOM";
    a DICOMDIR was reported as not DICOM; every series of a folder had the same source."""
    import pydicom
    from pydicom.fileset import FileSet

    uids = [write_ct_series(tmp_path / "old", seed=1, prefix="A")["series_uid"],
            write_ct_series(tmp_path / "old", seed=2, prefix="B", description="arterial")["series_uid"]]
    for path in sorted((tmp_path / "old").iterdir()):
        ds = pydicom.dcmread(path)
        ds.preamble = None
        del ds.file_meta
        ds.save_as(path, implicit_vr=True, little_endian=True, enforce_file_format=False)
    assert not pydicom.misc.is_dicom(path)
    (tmp_path / "old" / "notes.txt").write_text("export readme")
    report = ingest_paths([tmp_path / "old"], url=migrated_db)
    sources = sorted(a["source"] for a in report.added)
    assert sources == sorted(f"{tmp_path / 'old'} (series 1, {uid}, 6 slices)" for uid in uids)
    assert report.skipped == [{"source": str(tmp_path / "old"),
                               "reason": f"1 file(s) are not DICOM: {tmp_path / 'old' / 'notes.txt'}"}]
    write_ct_series(tmp_path / "cd", seed=3)
    files = edit_dicom(tmp_path / "cd", lambda i, ds: ds.update({"StudyTime": "120000", "StudyID": "1"}))
    fileset = FileSet()
    for path in files:
        fileset.add(path)
    fileset.write(tmp_path / "media")  # a CD export: DICOMDIR beside the image files
    assert (tmp_path / "media" / "DICOMDIR").exists()
    media = ingest_paths([tmp_path / "media"], url=migrated_db)
    assert len(media.added) == 1 and media.skipped == []
    assert _counts(migrated_db) == (1, 3, 3)
