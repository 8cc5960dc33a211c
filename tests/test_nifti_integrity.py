"""Damaged images are refused with the file named, not read as plausible volumes.

ITK alone reads a truncated ``.nii.gz`` with its missing slices as zeros, NaN as 0 and a
voxel size of 0 as 1 mm; each gave wrong volumes with exit status 0.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
import typer
from typer.testing import CliRunner

from app.cli.analysis import register
from lvt_core.imageio import ImageReadError, read_image, write_image
from lvt_core.nifti_integrity import nifti_problem


def _labels(path: Path) -> Path:
    """A 40×48×32 label map with a liver block and one tumour, 1.5 × 1.5 × 2.5 mm voxels."""
    array = np.zeros((32, 48, 40), np.uint8)
    array[4:28, 8:40, 6:34] = 1
    array[12:20, 18:28, 14:24] = 3
    image = sitk.GetImageFromArray(array)
    image.SetSpacing((1.5, 1.5, 2.5))
    return write_image(image, path)


def _truncated(source: Path, target: Path, fraction: float) -> Path:
    data = source.read_bytes()
    target.write_bytes(data[: int(len(data) * fraction)])
    return target


def test_whole_files_pass_in_both_encodings(tmp_path: Path) -> None:
    gz = _labels(tmp_path / "labels.nii.gz")
    raw = tmp_path / "labels.nii"
    raw.write_bytes(gzip.decompress(gz.read_bytes()))
    data = raw.read_bytes()
    members = tmp_path / "members.nii.gz"  # pigz/bgzip style: its trailer records the last member
    members.write_bytes(gzip.compress(data[:1000]) + gzip.compress(data[1000:]))
    for path in (gz, raw, members):
        assert nifti_problem(path) is None
        assert sitk.GetArrayViewFromImage(read_image(path)).sum() > 0


@pytest.mark.parametrize("name", ["labels.nii.gz", "labels.nii"])
def test_a_truncated_file_is_refused_with_its_name(tmp_path: Path, name: str) -> None:
    whole = _labels(tmp_path / "whole.nii.gz")
    if name.endswith(".nii"):
        plain = tmp_path / "whole.nii"
        plain.write_bytes(gzip.decompress(whole.read_bytes()))
        whole = plain
    cut = _truncated(whole, tmp_path / name, 0.6)
    with pytest.raises(ImageReadError, match="truncated") as caught:
        read_image(cut)
    assert str(cut) in str(caught.value)


def test_nan_in_float_data_is_refused(tmp_path: Path) -> None:
    array = np.zeros((20, 24, 16), np.float32)
    array[3, 4, 5] = np.nan
    array[6, 7, 8] = np.inf
    path = tmp_path / "ct.nii.gz"
    nib.save(nib.Nifti1Image(array, np.diag([1.0, 1.0, 2.0, 1.0])), path)
    with pytest.raises(ImageReadError, match="2 voxels are NaN or infinite"):
        read_image(path)


def test_a_zero_voxel_size_without_sform_is_refused(tmp_path: Path) -> None:
    raw = bytearray(gzip.decompress(_labels(tmp_path / "labels.nii.gz").read_bytes()))
    raw[80:92] = np.zeros(3, "<f4").tobytes()  # pixdim[1:4], as a broken writer leaves them
    raw[252:256] = np.zeros(2, "<i2").tobytes()  # qform_code, sform_code: no other geometry
    path = tmp_path / "nozoom.nii.gz"
    path.write_bytes(gzip.compress(bytes(raw)))
    with pytest.raises(ImageReadError, match="voxel size in the header is"):
        read_image(path)


def test_lesions_command_exits_1_on_a_truncated_label_map(tmp_path: Path) -> None:
    cut = _truncated(_labels(tmp_path / "whole.nii.gz"), tmp_path / "cut.nii.gz", 0.5)
    app = typer.Typer()
    register(app)
    result = CliRunner().invoke(app, ["lesions", str(cut)])
    assert result.exit_code == 1
    assert "cut.nii.gz" in result.output and "truncated" in result.output
    assert "Traceback" not in result.output


def test_a_dicom_series_with_a_missing_slice_is_refused_not_interpolated(tmp_path: Path) -> None:
    """ITK filled the gap by interpolation, with only a warning: anatomy that was never scanned.
    (`lvt segment` on a DICOM folder, and the IRCADb importer's per-slice masks, read this way.)"""
    from db_fixtures import write_ct_series

    write_ct_series(tmp_path / "whole", n_slices=6, z_positions=[0, 2, 4, 6, 8, 10])
    assert read_image(tmp_path / "whole").GetSize()[2] == 6
    write_ct_series(tmp_path / "gap", n_slices=6, z_positions=[0, 2, 4, 8, 10, 12])
    with pytest.raises(ImageReadError, match=r"gap.*missing slices: a gap of 4\.00 mm where 2\.00 mm is usual"):
        read_image(tmp_path / "gap")
