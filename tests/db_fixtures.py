"""Database fixtures shared by every database test (a pytest plugin module).

``db_url`` runs each test against SQLite and, when ``LVT_TEST_POSTGRES_URL`` is set,
against PostgreSQL in a fresh database ``lvt_test_<random>`` that is dropped afterwards.
``write_ct_series`` writes small synthetic CT DICOM series with pydicom, and
``write_enhanced_ct`` packs such slices into one Enhanced CT file.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid


def _admin_url(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def _create_pg_database(server_url: str) -> str:
    import psycopg
    from sqlalchemy.engine import make_url

    name = f"lvt_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(_admin_url(server_url), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return make_url(server_url).set(database=name).render_as_string(hide_password=False)


def _drop_pg_database(server_url: str, test_url: str) -> None:
    import psycopg
    from sqlalchemy.engine import make_url

    name = make_url(test_url).database
    with psycopg.connect(_admin_url(server_url), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(
    request: pytest.FixtureRequest, lvt_env: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[str]:
    """An empty database URL (set as ``LVT_DATABASE_URL``) on each backend."""

    if request.param == "sqlite":
        server = None
    else:
        server = os.environ.get("LVT_TEST_POSTGRES_URL") or None
        if server is None:
            pytest.skip("PostgreSQL tests need LVT_TEST_POSTGRES_URL (set by .ci/run)")
    with use_database(server, lvt_env / "lvt.db", monkeypatch) as url:
        yield url


@contextmanager
def use_database(
    server: str | None, sqlite_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[str]:
    """Point ``LVT_DATABASE_URL`` at a fresh database: a new one on the PostgreSQL ``server``,
    else SQLite at ``sqlite_path``; dispose of engines and drop it afterwards."""
    from app.settings import get_settings
    from db.engine import get_engine

    url = _create_pg_database(server) if server else f"sqlite:///{sqlite_path}"
    monkeypatch.setenv("LVT_DATABASE_URL", url)
    get_settings.cache_clear()
    try:
        yield url
    finally:
        get_engine(url).dispose()
        get_engine.cache_clear()
        get_settings.cache_clear()
        if server is not None:
            _drop_pg_database(server, url)


@pytest.fixture()
def migrated_db(db_url: str) -> str:
    """``db_url`` upgraded to the newest revision."""
    from db.engine import ensure_schema

    ensure_schema(db_url)
    return db_url


def write_ct_series(
    folder: Path,
    n_slices: int = 6,
    size: int = 16,
    patient_id: str = "PAT001",
    study_uid: str | None = None,
    series_uid: str | None = None,
    study_date: str = "20240115",
    accession: str = "ACC001",
    description: str = "Abdomen portal venous 2.0",
    modality: str = "CT",
    spacing: float = 2.0,
    z_positions: Sequence[float] | None = None,
    tilt_mm_per_slice: float = 0.0,
    seed: int = 0,
    prefix: str = "IM",
) -> dict[str, str]:
    """Write one small CT series (int16, rescale −1024) and return its UIDs."""
    folder.mkdir(parents=True, exist_ok=True)
    study_uid = study_uid or generate_uid()
    series_uid = series_uid or generate_uid()
    frame_uid = generate_uid()
    rng = np.random.default_rng(seed)
    zs = list(z_positions) if z_positions is not None else [i * spacing for i in range(n_slices)]
    for i, z in enumerate(zs):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
        ds.PatientName = "Doe^Jane"
        ds.PatientID = patient_id
        ds.PatientBirthDate = "19600101"
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = series_uid
        ds.FrameOfReferenceUID = frame_uid
        ds.StudyDate = study_date
        ds.SeriesDate = study_date
        ds.AccessionNumber = accession
        ds.StudyDescription = "CT abdomen"
        ds.SeriesDescription = description
        ds.Modality = modality
        ds.SeriesNumber = 1
        ds.InstanceNumber = i + 1
        ds.ImagePositionPatient = [0.0, tilt_mm_per_slice * i, float(z)]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.PixelSpacing = [0.8, 0.8]
        ds.SliceThickness = spacing
        ds.Rows = size
        ds.Columns = size
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated = 16
        ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = 1
        ds.RescaleIntercept = -1024
        ds.RescaleSlope = 1
        pixels = rng.integers(0, 1400, size=(size, size), dtype=np.int16)
        ds.PixelData = pixels.tobytes()
        ds.save_as(folder / f"{prefix}{i:04d}.dcm", enforce_file_format=True)
    return {"study_uid": study_uid, "series_uid": series_uid, "study_date": study_date}


ENHANCED_CT = "1.2.840.10008.5.1.4.1.1.2.1"


def write_enhanced_ct(
    files: list[Path],
    out: Path,
    order: list[int],
    padding: int | None = None,
    frame_content: list[dict[str, object]] | None = None,
) -> Path:
    """One Enhanced CT Image Storage file of the classic slices ``files``, frames in ``order``:
    positions in the per-frame functional groups; orientation, pixel measures and a rescale
    other than the slices' (unsigned, intercept −2048) in the shared ones. With ``padding``,
    each frame's first row is that PixelPaddingValue. ``frame_content`` gives each frame's
    FrameContentSequence item (StackID, FrameAcquisitionDateTime, ...)."""
    import pydicom

    slices = [pydicom.dcmread(f) for f in files]
    ds = pydicom.dcmread(files[0])
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = ENHANCED_CT
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    for keyword in ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "SliceThickness",
                    "RescaleIntercept", "RescaleSlope"):
        delattr(ds, keyword)
    ds.NumberOfFrames = len(order)
    orientation, measures, rescale = Dataset(), Dataset(), Dataset()
    orientation.ImageOrientationPatient = slices[0].ImageOrientationPatient
    measures.PixelSpacing, measures.SliceThickness = slices[0].PixelSpacing, slices[0].SliceThickness
    rescale.RescaleIntercept, rescale.RescaleSlope, rescale.RescaleType = -2048, 1, "HU"
    shared = Dataset()
    shared.PlaneOrientationSequence = [orientation]
    shared.PixelMeasuresSequence = [measures]
    shared.PixelValueTransformationSequence = [rescale]
    ds.SharedFunctionalGroupsSequence = [shared]
    ds.PerFrameFunctionalGroupsSequence = []
    frames = []
    for k in order:
        position, item = Dataset(), Dataset()
        position.ImagePositionPatient = slices[k].ImagePositionPatient
        item.PlanePositionSequence = [position]
        if frame_content is not None:
            content = Dataset()
            for keyword, value in frame_content[len(frames)].items():
                setattr(content, keyword, value)
            item.FrameContentSequence = [content]
        ds.PerFrameFunctionalGroupsSequence.append(item)
        hu = slices[k].pixel_array.astype(np.int32) - 1024
        frames.append(hu + 2048)
    pixels = np.stack(frames).astype(np.uint16)
    ds.PixelRepresentation = 0
    if padding is not None:
        pixels[:, 0, :] = padding
        ds.add_new(0x00280120, "US", padding)  # PixelPaddingValue
    ds.PixelData = pixels.tobytes()
    out.mkdir(parents=True, exist_ok=True)
    ds.save_as(out / "enhanced.dcm", enforce_file_format=True)
    return out / "enhanced.dcm"


def edit_dicom(folder: Path, change: Callable[[int, Any], None]) -> list[Path]:
    """Rewrite every file of ``folder`` (in name order) after ``change(index, dataset)``."""
    import pydicom

    files = sorted(p for p in folder.iterdir() if p.is_file())
    for i, path in enumerate(files):
        ds = pydicom.dcmread(path)
        change(i, ds)
        ds.save_as(path, enforce_file_format=True)
    return files
