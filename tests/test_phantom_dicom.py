"""DICOM CT series writing: round trips through SimpleITK and pydicom give the NIfTI back."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from pydicom.uid import UID, CTImageStorage, generate_uid

from lvt_core.dicom_series import SeriesInfo, write_ct_series
from lvt_core.imageio import read_image, write_image
from lvt_core.phantom import phantom_scan


def _info(tag: str, phase: str = "portal") -> SeriesInfo:
    study = generate_uid(entropy_srcs=["test", tag, "study"])
    return SeriesInfo(
        patient_id="LVT-0001", study_uid=study,
        series_uid=generate_uid(entropy_srcs=["test", tag, phase]),
        frame_of_reference_uid=generate_uid(entropy_srcs=["test", tag, "for"]),
        study_date=dt.date(2021, 3, 4), series_description=f"{phase} phase",
        accession="A0001T00", uid_entropy=["test", tag, phase])


@pytest.fixture(scope="module")
def scan_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    out = tmp_path_factory.mktemp("dicom")
    scan = phantom_scan(5, "tiny", "portal", 0, 0)
    nifti = write_image(scan.image, out / "image.nii.gz")
    write_ct_series(scan.image, out / "dicom", _info("scan"))
    return nifti, out / "dicom"


def test_simpleitk_round_trip_gives_geometry_and_values(scan_files: tuple[Path, Path]) -> None:
    nifti, folder = scan_files
    reference = sitk.ReadImage(str(nifti))
    back = read_image(folder)  # SimpleITK / GDCM series reader
    assert back.GetSize() == reference.GetSize()
    assert np.allclose(back.GetSpacing(), reference.GetSpacing(), atol=1e-4)
    assert np.allclose(back.GetOrigin(), reference.GetOrigin(), atol=1e-3)
    assert np.allclose(back.GetDirection(), reference.GetDirection(), atol=1e-6)
    assert np.array_equal(sitk.GetArrayFromImage(back).astype(np.int16),
                          sitk.GetArrayFromImage(reference))


def test_pydicom_round_trip_and_tags(scan_files: tuple[Path, Path]) -> None:
    nifti, folder = scan_files
    reference = sitk.ReadImage(str(nifti))
    datasets = [pydicom.dcmread(path) for path in sorted(folder.glob("*.dcm"))]
    assert len(datasets) == reference.GetSize()[2]
    datasets.sort(key=lambda ds: float(ds.ImagePositionPatient[2]))
    volume = np.stack([ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
                       for ds in datasets])
    assert np.array_equal(volume, sitk.GetArrayFromImage(reference))
    first = datasets[0]
    assert first.SOPClassUID == CTImageStorage and first.Modality == "CT"
    assert first.file_meta.MediaStorageSOPClassUID == CTImageStorage
    assert [float(v) for v in first.ImageOrientationPatient] == [1, 0, 0, 0, 1, 0]
    assert np.allclose([float(v) for v in first.ImagePositionPatient], reference.GetOrigin(),
                       atol=1e-3)
    sx, sy, sz = reference.GetSpacing()
    assert np.allclose([float(v) for v in first.PixelSpacing], [sy, sx], atol=1e-4)
    steps = np.diff([float(ds.ImagePositionPatient[2]) for ds in datasets])
    assert np.allclose(steps, sz, atol=1e-3)
    assert first.PatientID == "LVT-0001" and first.StudyDate == "20210304"
    assert "portal" in first.SeriesDescription
    sops = {ds.SOPInstanceUID for ds in datasets}
    assert len(sops) == len(datasets)
    for uid in (*sops, first.StudyInstanceUID, first.SeriesInstanceUID, first.FrameOfReferenceUID):
        assert UID(uid).is_valid
    assert {ds.SeriesInstanceUID for ds in datasets} == {first.SeriesInstanceUID}
    assert [int(ds.InstanceNumber) for ds in datasets] == list(range(1, len(datasets) + 1))


def test_oblique_geometry_round_trips(tmp_path: Path) -> None:
    array = (np.arange(5 * 6 * 7).reshape(5, 6, 7) - 100).astype(np.int16)
    image = sitk.GetImageFromArray(array)
    image.SetSpacing((0.8, 0.9, 2.5))
    image.SetOrigin((-10.0, 20.0, -30.0))
    angle = np.deg2rad(10)
    direction = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0],
                          [0, 0, 1]])
    image.SetDirection(tuple(direction.ravel()))
    write_ct_series(image, tmp_path / "dicom", _info("oblique"))
    back = read_image(tmp_path / "dicom")
    assert np.allclose(back.GetDirection(), image.GetDirection(), atol=1e-5)
    assert np.allclose(back.GetOrigin(), image.GetOrigin(), atol=1e-3)
    assert np.allclose(back.GetSpacing(), image.GetSpacing(), atol=1e-4)
    assert np.array_equal(sitk.GetArrayFromImage(back), array)


def test_same_inputs_same_bytes(tmp_path: Path) -> None:
    image = sitk.GetImageFromArray(np.full((3, 4, 4), 40, np.int16))
    first = write_ct_series(image, tmp_path / "a", _info("bytes"))
    second = write_ct_series(image, tmp_path / "b", _info("bytes"))
    assert [p.read_bytes() for p in first] == [p.read_bytes() for p in second]
    other = write_ct_series(image, tmp_path / "c", _info("other"))
    assert first[0].read_bytes() != other[0].read_bytes()


def test_rejects_values_outside_int16(tmp_path: Path) -> None:
    image = sitk.GetImageFromArray(np.full((2, 3, 3), 40000, np.int32))
    with pytest.raises(ValueError, match="int16"):
        write_ct_series(image, tmp_path / "bad", _info("bad"))
