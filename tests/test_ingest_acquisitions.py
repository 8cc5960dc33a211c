"""Several acquisitions under one SeriesInstanceUID (a multiphase series, or an enhanced CT
with several stacks) are ingested as one scan each, phased by their own contrast timing.

Every test runs on SQLite and, with LVT_TEST_POSTGRES_URL, on PostgreSQL (``db_url``).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import SimpleITK as sitk
from db_fixtures import edit_dicom, write_ct_series, write_enhanced_ct

from app.cli.common import UserError
from app.services.ingest import IngestOptions, ingest_paths
from db import storage
from lvt_core.imageio import read_image

CONTRAST_START = "101500"
ACQUIRED = {1: "101535", 2: "101610"}  # 35 s (arterial) and 70 s (portal) after the bolus


def _retag(folder: Path, **values: Any) -> list[Path]:
    """Set DICOM keywords on every file of ``folder``; return the files in name order."""
    return edit_dicom(folder, lambda _, ds: [setattr(ds, keyword, value) for keyword, value in values.items()])


def _number_each(folder: Path) -> None:
    """Give each file of ``folder`` its own AcquisitionNumber, as some scanners do."""
    edit_dicom(folder, lambda i, ds: setattr(ds, "AcquisitionNumber", i + 1))


def _two_phases_in_one_series(tmp_path: Path, **second: Any) -> tuple[Path, dict[int, np.ndarray]]:
    """Two acquisitions of the same slice positions filed under one SeriesInstanceUID (as a
    scanner's "multiphase" series), told apart by AcquisitionNumber; return the folder and
    each acquisition's expected HU volume."""
    uids = write_ct_series(tmp_path / "a1", seed=1)
    write_ct_series(tmp_path / "a2", seed=2, study_uid=uids["study_uid"], series_uid=uids["series_uid"],
                    prefix="PH2_", **second)
    mixed = tmp_path / "multiphase"
    mixed.mkdir()
    expected = {}
    for number in (1, 2):
        part = tmp_path / f"a{number}"
        files = _retag(part, AcquisitionNumber=number, ContrastBolusAgent="Iomeprol",
                       ContrastBolusStartTime=CONTRAST_START, AcquisitionTime=ACQUIRED[number])
        expected[number] = sitk.GetArrayFromImage(read_image(part))
        for f in files:
            shutil.copy(f, mixed / f.name)
    return mixed, expected


def _stored(added: dict[str, Any]) -> np.ndarray:
    return sitk.GetArrayFromImage(sitk.ReadImage(str(storage.resolve(added["image_path"]))))


def test_a_multiphase_series_is_one_scan_per_acquisition(migrated_db: str, tmp_path: Path) -> None:
    """Its slices repeat every position, which refused the series as "duplicate slice
    positions"; each acquisition is now its own scan, phased by its timing (the shared
    description says "portal venous" for both) and named by its AcquisitionNumber."""
    folder, expected = _two_phases_in_one_series(tmp_path)
    report = ingest_paths([folder], url=migrated_db)
    added = sorted(report.added, key=lambda a: a["source"])
    assert [a["phase"] for a in added] == ["arterial", "portal"]
    assert "AcquisitionNumber 1, 6 slices)" in added[0]["source"]
    assert "AcquisitionNumber 2, 6 slices)" in added[1]["source"]
    for number, item in zip((1, 2), added, strict=True):
        np.testing.assert_array_equal(_stored(item), expected[number])
    warned = [w["warning"] for w in report.warnings]
    assert warned.count("one of 2 acquisitions under one SeriesInstanceUID (told apart by "
                        "AcquisitionNumber), stored as a scan of its own") == 2
    # each acquisition keeps its own identity: ingesting the folder again adds nothing
    again = ingest_paths([folder], url=migrated_db)
    assert again.added == [] and len(again.already_present) == 2


def test_acquisitions_of_another_field_of_view_are_split_too(migrated_db: str, tmp_path: Path) -> None:
    """A second acquisition reconstructed with another pixel spacing was refused as "a slice
    of another pixel spacing" even when its positions lie elsewhere."""
    folder, _ = _two_phases_in_one_series(tmp_path, z_positions=[20, 22, 24, 26, 28, 30])
    edit_dicom(folder, lambda _, ds: setattr(ds, "PixelSpacing", [0.7, 0.7]) if ds.AcquisitionNumber == 2 else None)
    report = ingest_paths([folder], url=migrated_db)
    assert sorted(a["phase"] for a in report.added) == ["arterial", "portal"]


def test_without_a_telling_tag_repeated_positions_stay_an_error(migrated_db: str, tmp_path: Path) -> None:
    """Nothing tells the acquisitions apart (one AcquisitionNumber, or one per slice): the
    series is refused as before and nothing is stored."""
    folder, _ = _two_phases_in_one_series(tmp_path)
    _retag(folder, AcquisitionNumber=1)
    with pytest.raises(UserError, match=r"duplicate slice position.*several acquisitions under one "
                       r"SeriesInstanceUID\?"):
        ingest_paths([folder], url=migrated_db)
    _number_each(folder)
    with pytest.raises(UserError, match="duplicate slice position"):
        ingest_paths([folder], url=migrated_db)
    assert not storage.data_dir().exists() or not any(storage.data_dir().rglob("*.nii.gz"))


def test_a_numbered_slice_each_is_still_one_volume(migrated_db: str, tmp_path: Path) -> None:
    """Some scanners number every slice's acquisition: that is one volume, not six."""
    write_ct_series(tmp_path / "s", seed=3)
    _number_each(tmp_path / "s")
    report = ingest_paths([tmp_path / "s"], url=migrated_db)
    assert len(report.added) == 1 and "AcquisitionNumber" not in report.added[0]["source"]


def test_an_enhanced_ct_with_two_stacks_is_two_scans(migrated_db: str, tmp_path: Path) -> None:
    """An Enhanced CT file whose frames hold two stacks of the same positions (StackID and
    FrameAcquisitionDateTime in each frame's FrameContentSequence) was refused; each stack
    is a scan, phased by its frames' acquisition time."""
    folder, expected = _two_phases_in_one_series(tmp_path)
    files = sorted(folder.iterdir())  # IM* (acquisition 1) sort before PH2_* (acquisition 2)
    content = [
        {"StackID": str(stack), "InStackPositionNumber": k + 1,
         "FrameAcquisitionDateTime": f"20240115{ACQUIRED[stack]}.000000"}
        for stack in (1, 2) for k in range(6)
    ]
    enhanced = write_enhanced_ct(files, tmp_path / "enhanced", order=list(range(12)), frame_content=content)
    report = ingest_paths([enhanced.parent], url=migrated_db)
    added = sorted(report.added, key=lambda a: a["source"])
    assert [a["phase"] for a in added] == ["arterial", "portal"]
    assert [a["phase_reason"] for a in added] == ["35 s after contrast start", "70 s after contrast start"]
    assert "StackID 1, 6 slices)" in added[0]["source"] and "StackID 2, 6 slices)" in added[1]["source"]
    for number, item in zip((1, 2), added, strict=True):
        np.testing.assert_array_equal(_stored(item), expected[number])


def test_one_phase_given_for_several_acquisitions_is_refused(migrated_db: str, tmp_path: Path) -> None:
    """--phase (or a manifest row's phase) would give both acquisitions one phase, and the
    day's arterial scan would be read as portal: refused, saying what to do, nothing stored."""
    folder, _ = _two_phases_in_one_series(tmp_path)
    with pytest.raises(UserError, match="phase portal was given for all of it, but it holds several acquisitions"):
        ingest_paths([folder], IngestOptions(phase="portal"), url=migrated_db)
    manifest = tmp_path / "manifest.csv"
    manifest.write_text(f"patient_id,dicom_dir,phase\nPAT001,{folder},portal\n")
    with pytest.raises(UserError, match="lvt studies set-phase SERIES PHASE"):
        ingest_paths([], IngestOptions(manifest=manifest), url=migrated_db)
    assert not storage.data_dir().exists() or not any(storage.data_dir().rglob("*.nii.gz"))


def test_a_real_series_filed_twice_as_two_acquisitions_is_two_scans(migrated_db: str, real_data: Path,
                                                                     tmp_path: Path) -> None:
    """On a real scanner's headers (LiTS volume 0, 75 slices of 512²): the series and a second
    acquisition of it (30 HU brighter, its own instances) under the one SeriesInstanceUID."""
    import pydicom
    from pydicom.uid import generate_uid

    source = sorted((real_data / "lits-volume-0-dicom").iterdir())
    folder = tmp_path / "multiphase"
    folder.mkdir()
    for number in (1, 2):
        for path in source:
            ds = pydicom.dcmread(path)
            ds.AcquisitionNumber, ds.AcquisitionTime = number, ACQUIRED[number]
            ds.ContrastBolusAgent, ds.ContrastBolusStartTime = "Iopromide", CONTRAST_START
            if number == 2:
                ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
                ds.PixelData = np.clip(ds.pixel_array.astype(np.int32) + 30, -32768, 32767).astype(np.int16).tobytes()
            ds.save_as(folder / f"acq{number}_{path.name}", enforce_file_format=True)
    report = ingest_paths([folder], url=migrated_db)
    added = sorted(report.added, key=lambda a: a["source"])
    assert [a["phase"] for a in added] == ["arterial", "portal"] and all(a["size"] == [512, 512, 75] for a in added)
    first, second = (_stored(a).astype(np.int32) for a in added)
    brighter = second - first
    assert np.median(brighter) == 30 and np.array_equal(first, sitk.GetArrayFromImage(read_image(real_data / "lits-volume-0-dicom")))
