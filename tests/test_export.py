"""Exports: cohort tables, DICOM SEG (validated, orientation checked in world space), meshes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pytest
import SimpleITK as sitk
from db_fixtures import write_ct_series
from sqlalchemy import select

from app.cli.common import UserError
from app.services.batch import import_label_map
from app.services.export import export_cohort, export_mesh, export_seg
from app.services.ingest.service import IngestOptions, ingest_paths
from db.engine import default_url, ensure_schema, make_session_factory
from db.models import Model, Series

LVT = Path(sys.executable).with_name("lvt")


def _labels_like(image: sitk.Image) -> sitk.Image:
    """Asymmetric labels (so a flip would show): liver block, vessel line, tumor corner."""
    size = image.GetSize()
    a = np.zeros(tuple(reversed(size)), np.uint8)
    a[1:-1, 2:12, 3:14] = 1
    a[2:5, 4:6, 4:12] = 2
    a[3:5, 8:11, 9:13] = 3
    out = sitk.GetImageFromArray(a)
    out.CopyInformation(image)
    return out


@pytest.fixture()
def store(lvt_env: Path, tmp_path: Path) -> dict:
    url = default_url()
    ensure_schema(url)
    write_ct_series(tmp_path / "dicom", n_slices=6, size=16, patient_id="PX")
    oblique = sitk.Image([16, 16, 6], sitk.sitkInt16) + 40
    rot = sitk.VersorTransform((0.2, 0.1, 0.9), 0.4).GetMatrix()
    oblique.SetDirection(rot)
    oblique.SetSpacing((0.9, 1.1, 2.5))
    oblique.SetOrigin((10.0, -20.0, 5.0))
    sitk.WriteImage(oblique, str(tmp_path / "oblique.nii.gz"))
    (tmp_path / "m.csv").write_text("patient_id,image,study_date\nPY,oblique.nii.gz,2024-02-01\n")
    ingest_paths([tmp_path / "dicom"], url=url)
    ingest_paths([], IngestOptions(manifest=tmp_path / "m.csv"), url=url)
    with make_session_factory(url)() as s:
        model = Model(name="truth", version="1", checksum="0" * 64)
        s.add(model)
        s.commit()
        rows = s.execute(select(Series.id, Series.image_path, Series.source_format)).all()
    from db import storage

    series = {}
    for sid, path, fmt in rows:
        image = sitk.ReadImage(str(storage.resolve(path)))
        import_label_map(sid, model.id, _labels_like(image), url=url)
        series[fmt] = sid
    return {"url": url, "series": series}


@pytest.mark.parametrize("source", ["dicom", "nifti"])
def test_dicom_seg_is_valid_and_correctly_placed(store: dict, tmp_path: Path, source: str) -> None:
    out = tmp_path / "out" / "seg.dcm"
    report = export_seg(store["series"][source], out)
    assert report["segments"] == ["liver parenchyma", "intrahepatic vessel", "tumor"]
    check = report["validation"]
    assert check["world_space_mismatched_pixels"] == 0
    assert check["highdicom_segments"] == 3
    if "skipped" not in check["dciodvfy"]:
        assert check["dciodvfy"]["errors"] == []
        assert check["ct_dciodvfy"]["errors"] == []  # ReferringPhysicianName, Laterality were missing
    ds = pydicom.dcmread(out)
    assert ds.Modality == "SEG" and ds.SegmentationType == "BINARY"
    codes = {s.SegmentedPropertyTypeCodeSequence[0].CodeValue for s in ds.SegmentSequence}
    assert codes == {"10200004", "59820001", "108369006"}
    ct = [pydicom.dcmread(p) for p in sorted(Path(report["ct_dir"]).glob("*.dcm"))]
    refs = {r.ReferencedSOPInstanceUID for r in ds.ReferencedSeriesSequence[0].ReferencedInstanceSequence}
    assert refs <= {c.SOPInstanceUID for c in ct} and ds.FrameOfReferenceUID == ct[0].FrameOfReferenceUID
    # The world-space check is sensitive: a label map flipped left-right does not match.
    from app.services.dicom_seg import check_against_labels
    from db import storage

    with make_session_factory(store["url"])() as s:
        image = sitk.ReadImage(str(storage.resolve(s.get(Series, store["series"][source]).image_path)))
    flipped = sitk.Flip(_labels_like(image), [True, False, False])
    flipped.CopyInformation(image)
    assert check_against_labels(out, flipped) > 0


def test_seg_and_its_ct_say_the_identity_was_removed(store: dict, tmp_path: Path) -> None:
    """Pseudonymised exports carried no PatientIdentityRemoved: a receiving archive could take
    the pseudonyms for real identifiers. A patient stored before the policy was recorded
    (revision 0008) gets no claim either way."""
    from db.models import Patient, Study

    report = export_seg(store["series"]["dicom"], tmp_path / "seg.dcm")
    seg = pydicom.dcmread(tmp_path / "seg.dcm")
    ct = pydicom.dcmread(sorted(Path(report["ct_dir"]).glob("*.dcm"))[0])
    for ds in (seg, ct):
        assert ds.PatientIdentityRemoved == "YES" and "pseudonyms" in "|".join(ds.DeidentificationMethod)
        assert [c.CodeValue for c in ds.DeidentificationMethodCodeSequence] == ["113100", "113107"]
    if "skipped" not in report["validation"]["dciodvfy"]:
        assert report["validation"]["dciodvfy"]["errors"] == report["validation"]["ct_dciodvfy"]["errors"] == []
    with make_session_factory(store["url"])() as s:
        series = s.get(Series, store["series"]["dicom"])
        patient = s.get(Patient, s.get(Study, series.study_id).patient_id)
        patient.identity_removed = patient.dates_shifted = None
        s.commit()
    export_seg(store["series"]["dicom"], tmp_path / "old.dcm")
    assert "PatientIdentityRemoved" not in pydicom.dcmread(tmp_path / "old.dcm")


def test_seg_export_writes_a_derived_ct_series_into_a_folder_of_its_own(
    store: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The CT went out under the stored Series UID (a PACS merged two differing copies), into
    any folder (another patient's slice stayed in it), and a SEG failing validation stayed."""
    from app.services import dicom_seg

    dicom, nifti = store["series"]["dicom"], store["series"]["nifti"]
    out = tmp_path / "seg.dcm"
    report = export_seg(dicom, out)
    ct = pydicom.dcmread(sorted(Path(report["ct_dir"]).glob("*.dcm"))[0])
    with make_session_factory(store["url"])() as s:
        stored_uid = s.get(Series, dicom).series_instance_uid
    assert ct.SeriesInstanceUID == dicom_seg.exported_series_uid(stored_uid) != stored_uid
    assert list(ct.ImageType)[:2] == ["DERIVED", "SECONDARY"]
    assert export_seg(dicom, out)["ct_slices"] == report["ct_slices"]  # its own earlier export: replaced
    with pytest.raises(UserError, match=r"seg_ct: holds 0001\.dcm, which is not this series' earlier export"):
        export_seg(nifti, out)  # another series into the same CT folder
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "readme.txt").write_text("x")
    with pytest.raises(UserError, match=r"holds readme\.txt"):
        export_seg(dicom, tmp_path / "b.dcm", ct_dir=tmp_path / "other")
    monkeypatch.setattr(dicom_seg, "check_against_labels", lambda *_: 7)  # a SEG placed wrongly
    with pytest.raises(UserError, match=r"c\.dcm: validation failed, no SEG written: 7 misplaced pixels"):
        export_seg(dicom, tmp_path / "c.dcm")
    assert not (tmp_path / "c.dcm").exists() and not list(tmp_path.glob(".c.dcm*"))


def test_a_long_patient_id_still_makes_a_valid_person_name(tmp_path: Path) -> None:
    from app.services.dicom_seg import write_source_series

    image = sitk.GetImageFromArray(np.zeros((2, 4, 4), np.int16))
    (first, _) = write_source_series(image, tmp_path, "P" * 64, "1.2.3", "1.2.3.4", None, None)
    name = str(pydicom.dcmread(first).PatientName)
    assert len(name) <= 64 and name.startswith("P" * 63)


def test_seg_of_unsegmented_series_is_a_user_error(store: dict, tmp_path: Path) -> None:
    env = {**os.environ, "LVT_DATABASE_URL": store["url"]}
    proc = subprocess.run([str(LVT), "export", "seg", "999", str(tmp_path / "x.dcm")],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 1 and "series 999" in proc.stderr


def test_an_output_path_that_cannot_be_written_is_refused_in_one_line(store: dict, tmp_path: Path) -> None:
    """These were tracebacks, some after the whole export, leaving temporary files behind."""
    env = {**os.environ, "LVT_DATABASE_URL": store["url"]}
    tmp_path = tmp_path / "outputs"
    tmp_path.mkdir()
    (tmp_path / "afile").write_text("taken")
    (tmp_path / "folder").mkdir()
    series = str(store["series"]["nifti"])
    for args, said in ((["seg", series, str(tmp_path / "folder")], "is a folder"),
                       (["seg", series, str(tmp_path / "afile" / "seg.dcm")], "is a file, not a folder"),
                       (["cohort", str(tmp_path / "afile")], "is a file, not a folder")):
        proc = subprocess.run([str(LVT), "export", *args], capture_output=True, text=True, env=env, timeout=120)
        assert proc.returncode == 1 and said in " ".join(proc.stderr.split()), proc.stderr
        assert "Traceback" not in proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile", "folder"]
    assert list((tmp_path / "folder").iterdir()) == []


def test_cohort_export_csv_and_parquet(store: dict, tmp_path: Path) -> None:
    csv = export_cohort(tmp_path / "csv", "csv")
    pq = export_cohort(tmp_path / "pq", "parquet")
    assert set(csv["tables"]) >= {"patients", "studies", "series", "lesions", "tracks",
                                  "measurements", "agreement", "volumetry", "response"}
    series = pd.read_csv(tmp_path / "csv" / "series.csv")
    assert len(series) == 2 and set(series["segmentation"]) == {"done"}
    assert series["lvt_version"].isna().all()  # imported label maps: no LVT pipeline drew them
    lesions = pd.read_parquet(tmp_path / "pq" / "lesions.parquet")
    assert len(lesions) == 2 and pq["tables"]["lesions"]["rows"] == 2
    assert (lesions["volume_ml"] > 0).all()
    assert lesions["found_by"].isna().all()  # who drew them is exported; imported maps: not known
    env = {**os.environ, "LVT_DATABASE_URL": store["url"]}
    proc = subprocess.run([str(LVT), "export", "cohort", str(tmp_path / "cli"), "--json"],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["tables"]["series"]["rows"] == 2
    (tmp_path / "cli" / "obsolete_table.csv").write_text("x\n")  # would read as part of the export
    with pytest.raises(UserError, match=r"obsolete_table\.csv"):
        export_cohort(tmp_path / "cli", "csv")
    with pytest.raises(UserError, match=r"lesions\.parquet"):  # another format's tables are stale too
        export_cohort(tmp_path / "pq", "csv")
    proc = subprocess.run([str(LVT), "export", "cohort", str(tmp_path / "xl"), "--format", "xlsx"],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 2 and "xlsx" in proc.stderr  # bad usage, as the CLI contract says
    assert not (tmp_path / "xl").exists()


def test_mesh_export(store: dict, tmp_path: Path) -> None:
    with make_session_factory(store["url"])() as s:
        from db.models import Patient, Study

        patient, study_id = s.execute(
            select(Patient.pseudo_id, Study.id).join(Study).join(Series)
            .where(Series.id == store["series"]["nifti"])
        ).one()
    summary = export_mesh(patient, str(study_id), tmp_path / "mesh", ("stl", "glb"))
    assert summary["structures"][0] == "liver" and "tumor_1" in summary["structures"]
    assert (tmp_path / "mesh" / "scene.glb").stat().st_size > 0
    assert (tmp_path / "mesh" / "liver.stl").is_file()
    again = export_mesh(patient, str(study_id), tmp_path / "mesh", ("stl", "glb"))  # the same export again
    assert again["files"] == summary["files"]
    (tmp_path / "mesh" / "tumor_9.stl").write_bytes(b"")  # another study's tumor: would read as this one's
    with pytest.raises(UserError, match=r"holds file\(s\) this export would not write \(tumor_9\.stl\)"):
        export_mesh(patient, str(study_id), tmp_path / "mesh", ("stl", "glb"))
    (tmp_path / "afile").write_text("x")
    with pytest.raises(UserError, match="afile is a file, not a folder"):
        export_mesh(patient, str(study_id), tmp_path / "afile", ("stl",))


def test_mesh_export_of_an_empty_segmentation_names_the_study_and_writes_nothing(store: dict, tmp_path: Path) -> None:
    """A segmentation without liver, vessels or tumors exited with trimesh's raw "Can't export
    empty scenes!" and left an empty output folder behind."""
    from db.models import Patient, Study

    sid = store["series"]["nifti"]
    with make_session_factory(store["url"])() as s:
        patient, study_id, date, image_path = s.execute(
            select(Patient.pseudo_id, Study.id, Study.study_date, Series.image_path)
            .select_from(Patient).join(Study).join(Series).where(Series.id == sid)
        ).one()
        model_id = s.scalar(select(Model.id))
    from db import storage

    ct = sitk.ReadImage(str(storage.resolve(image_path)))
    empty = sitk.Image(ct.GetSize(), sitk.sitkUInt8)
    empty.CopyInformation(ct)
    import_label_map(sid, model_id, empty, url=store["url"])
    expected = rf"study {study_id} \({date}\) of patient {patient}: .* holds no liver, vessels or tumors"
    with pytest.raises(UserError, match=expected):
        export_mesh(patient, str(study_id), tmp_path / "mesh")
    assert not (tmp_path / "mesh").exists()


def test_seg_uid_follows_the_label_map_and_names_the_pipeline(store: dict, tmp_path: Path) -> None:
    """Exporting one segmentation twice gives one instance; a redrawn one a new instance (not a
    second object under the old UID), whose SoftwareVersions names the LVT pipeline."""
    from sqlalchemy import update

    from db import storage
    from db.models import Segmentation
    from lvt_core import __version__ as lvt_version

    sid = store["series"]["dicom"]
    first = pydicom.dcmread(export_seg(sid, tmp_path / "a.dcm", validate=False)["seg"])
    again = pydicom.dcmread(export_seg(sid, tmp_path / "b.dcm", validate=False)["seg"])
    assert first.SOPInstanceUID == again.SOPInstanceUID and first.SoftwareVersions == "1"
    with make_session_factory(store["url"])() as s:
        model_id = s.scalar(select(Model.id).where(Model.name == "truth"))
        image = sitk.ReadImage(str(storage.resolve(s.get(Series, sid).image_path)))
    redrawn = _labels_like(image)
    redrawn[3, 3, 2] = 3  # one more tumor voxel
    import_label_map(sid, model_id, redrawn, url=store["url"])
    with make_session_factory(store["url"])() as s:  # as a batch of this version records it
        s.execute(update(Segmentation).where(Segmentation.series_id == sid).values(lvt_version=lvt_version))
        s.commit()
    report = export_seg(sid, tmp_path / "c.dcm", validate=False)
    third = pydicom.dcmread(report["seg"])
    assert third.SOPInstanceUID != first.SOPInstanceUID
    assert third.SeriesInstanceUID != first.SeriesInstanceUID
    assert list(third.SoftwareVersions) == ["1", f"LVT {lvt_version}"] and report["lvt_version"] == lvt_version


def test_ids_with_a_missing_link_are_written_as_whole_numbers() -> None:
    """An unlinked measurement made pandas write the column as floats ("1.0", "18.0")."""
    from app.services.analytics import _whole_number_ids

    table = _whole_number_ids(pd.DataFrame({"track_number": [1.0, None], "lesion_id": [18.0, None],
                                            "model_mm": [12.0, None], "radiologist_mm": [11.5, 9.0]}))
    assert table.to_csv(index=False).splitlines() == [
        "track_number,lesion_id,model_mm,radiologist_mm", "1,18,12.0,11.5", ",,,9.0"]


def test_an_undated_study_exports_empty_dates_not_1900(store: dict, tmp_path: Path) -> None:
    """The SEG and its CT said 19000101 for a study stored without a date: a date LVT's own
    ingest refuses (before the first CT), so the export could not come back in."""
    from db.models import Study

    with make_session_factory(store["url"])() as s:
        series = s.get(Series, store["series"]["nifti"])
        s.get(Study, series.study_id).study_date = None
        s.commit()
    report = export_seg(store["series"]["nifti"], tmp_path / "seg.dcm")
    ct = pydicom.dcmread(sorted(Path(report["ct_dir"]).glob("*.dcm"))[0])
    assert ct.StudyDate == "" and pydicom.dcmread(tmp_path / "seg.dcm").StudyDate == ""
    if "skipped" not in report["validation"]["dciodvfy"]:
        assert report["validation"]["dciodvfy"]["errors"] == report["validation"]["ct_dciodvfy"]["errors"] == []


def test_an_encapsulated_report_keeps_an_original_accession_and_leaves_out_a_pseudonym(tmp_path: Path) -> None:
    """Accession Number is SH, 16 characters: a store's pseudonym ("A-" and 16 hex digits) is
    longer and matches no PACS order, so it is left empty; an original one is kept. The PDF is
    wrapped whole, padded to the even length DICOM needs, and a non-PDF is refused."""
    import datetime as dt

    from app.services import dicom_seg, report_dicom

    pdf = b"%PDF-1.7 a minimal stand-in\n%%EOF"  # odd length
    now = dt.datetime(2026, 12, 7, 12, 0, tzinfo=dt.UTC)
    for accession, written in (("RAD123456", "RAD123456"), ("A-" + "0123456789abcdef", ""), (None, "")):
        study = report_dicom.ReportStudy("P-1", "2.25.1", dt.date(2024, 5, 1), accession, None)
        document = report_dicom.encapsulated_pdf(pdf, study, now)
        assert document.AccessionNumber == written
        path = tmp_path / "report.dcm"
        document.save_as(path, enforce_file_format=True)
        back = pydicom.dcmread(path)
        assert len(back.EncapsulatedDocument) % 2 == 0 and back.EncapsulatedDocumentLength == len(pdf)
        assert bytes(back.EncapsulatedDocument)[:len(pdf)] == pdf
        assert "PatientIdentityRemoved" not in back  # nothing said about de-identification when none is known
        check = dicom_seg.dciodvfy(path)
        assert check.get("errors", []) == []
    with pytest.raises(ValueError, match="not a PDF"):
        report_dicom.encapsulated_pdf(b"<html>", study, now)
