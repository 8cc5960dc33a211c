"""Reading and writing CT volumes as SimpleITK images, with errors that name the input.

Accepts NIfTI (``.nii``/``.nii.gz``), NRRD (``.nrrd``/``.nhdr``), MetaImage (``.mha``/``.mhd``)
and a folder holding one DICOM series (compressed transfer syntaxes are decoded by
SimpleITK's GDCM, with pydicom + pylibjpeg as fallback).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk

from lvt_core.atomic_files import replaced_on_success
from lvt_core.nifti_integrity import nifti_problem

VOLUME_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd")


class ImageReadError(ValueError):
    """An input that is not a readable 3D image; the message names the path and the reason."""


def is_volume_file(path: Path) -> bool:
    """True when ``path`` has a suffix of a volume format LVT reads."""
    name = path.name.lower()
    return any(name.endswith(suffix) for suffix in VOLUME_SUFFIXES)


def read_image(path: str | Path) -> sitk.Image:
    """Read a 3D scalar image from a volume file or a DICOM series folder.

    Raises :class:`ImageReadError` naming ``path`` when it is missing, unreadable,
    not 3D, truncated, without a voxel size, or holds non-finite values.
    """
    path = Path(path)
    if not path.exists():
        raise ImageReadError(f"{path}: no such file or folder")
    if path.is_file() and path.name.lower().endswith((".nii", ".nii.gz")):
        problem = nifti_problem(path)
        if problem:
            raise ImageReadError(f"{path}: {problem}")
    try:
        image = _read_dicom_dir(path) if path.is_dir() else sitk.ReadImage(str(path))
    except ImageReadError:
        raise
    except RuntimeError as exc:
        first_line = str(exc).strip().splitlines()[-1] if str(exc).strip() else "unknown error"
        raise ImageReadError(f"{path}: not a readable image ({first_line})") from None
    if image.GetDimension() != 3:
        raise ImageReadError(
            f"{path}: expected a 3D volume, got a {image.GetDimension()}D image of size "
            f"{list(image.GetSize())}"
        )
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise ImageReadError(f"{path}: expected one value per voxel, got a multi-component image")
    if min(image.GetSize()) < 2:
        raise ImageReadError(f"{path}: a single slice is not a 3D volume (size {list(image.GetSize())})")
    array = sitk.GetArrayViewFromImage(image)
    if np.issubdtype(array.dtype, np.floating) and not np.isfinite(array).all():
        bad = int((~np.isfinite(array)).sum())
        raise ImageReadError(f"{path}: {bad} voxels are NaN or infinite")
    return image


def dicom_series_files(folder: str | Path) -> list[Path]:
    """The files of the DICOM series :func:`read_image` reads from ``folder`` (the largest found
    directly or recursively), in the order of the volume's slices: a DICOM SEG of the label map
    references them frame by frame."""
    return [Path(f) for f in _series_files(Path(folder))]


def _series_files(folder: Path) -> tuple[str, ...]:
    """The largest DICOM series directly or recursively in ``folder``, sorted by GDCM."""
    reader = sitk.ImageSeriesReader()
    series_ids: list[str] = list(reader.GetGDCMSeriesIDs(str(folder)) or [])
    search_root = folder
    if not series_ids:
        for sub in sorted(p for p in folder.rglob("*") if p.is_dir()):
            series_ids = list(reader.GetGDCMSeriesIDs(str(sub)) or [])
            if series_ids:
                search_root = sub
                break
    if not series_ids:
        raise ImageReadError(f"{folder}: no DICOM series found in this folder")
    best = max(series_ids, key=lambda sid: len(reader.GetGDCMSeriesFileNames(str(search_root), sid)))
    return tuple(reader.GetGDCMSeriesFileNames(str(search_root), best))


def _read_dicom_dir(folder: Path) -> sitk.Image:
    """Read the single (largest) DICOM series found directly or recursively in ``folder``."""
    files = _series_files(folder)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(files)
    reader.MetaDataDictionaryArrayUpdateOn()
    try:
        image = reader.Execute()
    except RuntimeError:
        return _read_dicom_with_pydicom([Path(f) for f in files], folder)
    _check_no_missing_slices(reader, files, folder)
    return image


GAP_FACTOR = 1.5
"""A gap between neighbouring slices this many times the usual step is a missing slice."""


def slice_gaps(z_mm: np.ndarray) -> tuple[np.ndarray, float]:
    """(indices ``i`` where a slice is missing between ``z_mm[i]`` and ``z_mm[i + 1]``, the
    usual step) for slice positions along the normal, in order; one rule for ingest and reads."""
    steps = np.abs(np.diff(z_mm))
    usual = float(np.median(steps)) if steps.size else 0.0
    if usual <= 0:
        return np.empty(0, dtype=np.int64), usual
    return np.nonzero(steps > GAP_FACTOR * usual)[0], usual


def _check_no_missing_slices(reader: sitk.ImageSeriesReader, files: tuple[str, ...], folder: Path) -> None:
    """Refuse a series with a slice missing: ITK fills the gap by interpolation (with only a
    "Non uniform sampling" warning), which draws anatomy that was never scanned."""
    if len(files) < 3:
        return
    try:
        positions = np.array([[float(v) for v in reader.GetMetaData(i, "0020|0032").split("\\")]
                              for i in range(len(files))])
        orientation = [float(v) for v in reader.GetMetaData(0, "0020|0037").split("\\")]
    except (RuntimeError, ValueError):  # no positions to check: the volume stands as read
        return
    z = positions @ np.cross(orientation[:3], orientation[3:])
    gaps, usual = slice_gaps(z)
    if gaps.size:
        i = int(gaps[0])
        raise ImageReadError(
            f"{folder}: missing slices: a gap of {abs(z[i + 1] - z[i]):.2f} mm where {usual:.2f} mm is usual, "
            f"between {Path(files[i]).name} and {Path(files[i + 1]).name}"
        )


def _read_dicom_with_pydicom(files: list[Path], folder: Path) -> sitk.Image:
    """Fallback for transfer syntaxes GDCM cannot decode: pydicom with pylibjpeg plugins."""
    import pydicom

    slices = []
    for file in files:
        try:
            ds = pydicom.dcmread(str(file))
            pixels = ds.pixel_array.astype(np.float32)
        except Exception as exc:  # any decoder failure is reported with the file
            raise ImageReadError(f"{file}: cannot decode DICOM pixel data ({exc})") from None
        slope = float(getattr(ds, "RescaleSlope", 1.0))
        intercept = float(getattr(ds, "RescaleIntercept", 0.0))
        slices.append((ds, pixels * slope + intercept))
    if len(slices) < 2:
        raise ImageReadError(f"{folder}: a DICOM series needs at least 2 slices")
    orientation = np.array(slices[0][0].ImageOrientationPatient, dtype=float)
    row, col = orientation[:3], orientation[3:]
    normal = np.cross(row, col)
    slices.sort(key=lambda item: float(np.dot(normal, item[0].ImagePositionPatient)))
    positions = [np.array(ds.ImagePositionPatient, dtype=float) for ds, _ in slices]
    dz = float(np.median(np.diff([np.dot(normal, p) for p in positions])))
    volume = np.stack([pixels for _, pixels in slices]).astype(np.int16)
    image = sitk.GetImageFromArray(volume)
    ps = [float(v) for v in slices[0][0].PixelSpacing]
    image.SetSpacing((ps[1], ps[0], abs(dz)))
    image.SetOrigin(tuple(positions[0]))
    image.SetDirection(tuple(np.column_stack([row, col, normal]).ravel()))
    return image


def write_image(image: sitk.Image, path: str | Path, compress: bool = True) -> Path:
    """Write ``image`` atomically (temporary file, then rename), creating parent folders."""
    path = Path(path)
    suffix = "".join(path.suffixes[-2:]) if path.name.endswith(".nii.gz") else path.suffix
    with replaced_on_success(path, suffix) as tmp:
        sitk.WriteImage(image, str(tmp), useCompression=compress)
    return path


def array_to_image(array: np.ndarray, reference: sitk.Image) -> sitk.Image:
    """Wrap a ``z, y, x`` array as an image with the geometry of ``reference``."""
    image = sitk.GetImageFromArray(array)
    image.CopyInformation(reference)
    return image
