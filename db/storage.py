"""Content-addressed image store: ``<data_dir>/<sha[:2]>/<sha>.nii.gz``.

The hash covers the voxel bytes, pixel type and geometry (size, spacing, origin,
direction), not the gzip stream, so the same volume always lands at the same path no
matter which writer or compression level produced the file.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import tempfile
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

GEOMETRY_DECIMALS = 4
COMPRESSION_LEVEL = 1  # fast gzip: ingest time is dominated by compression otherwise


def data_dir() -> Path:
    """The configured store root (``LVT_DATA_DIR``, default ``var/data``)."""
    from app.settings import get_settings

    return get_settings().resolved_data_dir


def image_hash(image: sitk.Image) -> str:
    """SHA-256 of the voxels and geometry of ``image``.

    Geometry is rounded to 1e-4 (mm, or direction cosine): DICOM stores decimals as
    16-character strings, so the DICOM and NIfTI copies of one scan agree only to about
    that precision, and they should land on the same address.
    """
    digest = hashlib.sha256()
    geometry = (
        image.GetPixelIDTypeAsString(),
        image.GetNumberOfComponentsPerPixel(),
        tuple(image.GetSize()),
        tuple(round(v, GEOMETRY_DECIMALS) + 0.0 for v in image.GetSpacing()),
        tuple(round(v, GEOMETRY_DECIMALS) + 0.0 for v in image.GetOrigin()),
        tuple(round(v, GEOMETRY_DECIMALS) + 0.0 for v in image.GetDirection()),
    )
    digest.update(repr(geometry).encode())
    digest.update(np.ascontiguousarray(sitk.GetArrayViewFromImage(image)).tobytes())
    return digest.hexdigest()


def relative_path_for(sha256: str) -> str:
    """Store-relative path of the file holding the image with hash ``sha256``."""
    return f"{sha256[:2]}/{sha256}.nii.gz"


def resolve(relative_path: str, root: Path | None = None) -> Path:
    """Absolute path of a store-relative path."""
    return (root or data_dir()) / relative_path


class StoredImageError(RuntimeError):
    """A stored image that is missing or damaged; the message names it and what to do."""


def read_stored(relative_path: str, root: Path | None = None) -> sitk.Image:
    """The stored image at ``relative_path``, checked as every NIfTI LVT reads is
    (:mod:`lvt_core.nifti_integrity`): a file truncated on disk is refused, not read as zeros
    (which segmented as a 20-litre liver and a "new" lesion for every real one)."""
    from lvt_core.imageio import ImageReadError, read_image

    path = resolve(relative_path, root)
    if not path.is_file():
        raise StoredImageError(f"stored image {relative_path} is missing from the store ({path}); "
                               "ingest the series again")
    try:
        return read_image(path)
    except ImageReadError as exc:
        raise StoredImageError(f"stored image {relative_path} is damaged: {exc}; restore it from a "
                               "backup or ingest the series again") from None


def _gzip_nifti(image: sitk.Image, target: str) -> None:
    """Write ``image`` as .nii.gz: an uncompressed NIfTI from ITK, gzipped by ISA-L.

    ISA-L's igzip at level 1 is about ten times faster than zlib inside ITK, which keeps a
    300-slice series well inside the ingest time goal; the output is ordinary gzip.
    """
    try:
        from isal import igzip
    except ImportError:  # pragma: no cover - isal is a dependency; keep working without it
        sitk.WriteImage(image, target, True, COMPRESSION_LEVEL)
        return
    raw = target[: -len(".gz")]
    sitk.WriteImage(image, raw, False)
    try:
        with (
            open(raw, "rb") as src,
            igzip.open(target, "wb", compresslevel=COMPRESSION_LEVEL) as dst,
        ):
            shutil.copyfileobj(src, dst, 1 << 22)
    finally:
        os.unlink(raw)


def write_staged(
    image: sitk.Image, root: Path | None = None, sha256: str | None = None
) -> tuple[Path, str]:
    """Compress ``image`` to a temporary file inside the store; return it and the hash.

    Staging inside the store keeps the later :func:`publish` a same-filesystem rename.
    """
    root = root or data_dir()
    staging = root / ".staging"
    staging.mkdir(parents=True, exist_ok=True)
    if staging not in _swept:
        _swept.add(staging)
        sweep_staging(staging)
    sha = sha256 or image_hash(image)
    owner = f"{socket.gethostname()}.{os.getpid()}"
    fd, name = tempfile.mkstemp(prefix=f"{sha[:12]}_{owner}_", suffix=".nii.gz", dir=staging)
    os.close(fd)
    try:
        _gzip_nifti(image, name)
        os.chmod(name, 0o644)  # mkstemp makes 0600; store files are shared read-only data
    except BaseException:
        os.unlink(name)
        raise
    return Path(name), sha


_swept: set[Path] = set()
FOREIGN_STAGED_MAX_AGE_S = 24 * 3600
"""A staged file of another machine (a shared store) or of an unknown process is left this long."""
STAGED_SUFFIXES = (".nii.gz", ".nii")
"""What a writer leaves in ``.staging``: the compressed file and, until it is gzipped, the raw one."""


def sweep_staging(staging: Path, now: float | None = None) -> list[Path]:
    """Remove staged files that no running process will publish; return them.

    A killed ingest or batch worker (``kill -9``, a lost machine) never reaches its clean-up,
    and its compressed scans stayed in ``.staging`` for good, as did the uncompressed ``.nii``
    that :func:`_gzip_nifti` writes first (150 MB for a 300-slice scan). A file names the host
    and process that wrote it: this host's files of a process that is gone go at once, others
    after a day.
    """
    now = time.time() if now is None else now
    host = socket.gethostname()
    removed = []
    for path in sorted(f for f in staging.iterdir() if f.name.endswith(STAGED_SUFFIXES)):
        parts = path.name.split("_", 2)  # sha, host.pid, random part (host names hold no "_")
        owner = parts[1] if len(parts) == 3 else ""
        owner_host, _, pid = owner.rpartition(".")
        try:
            if owner_host == host and pid.isdigit():
                stale = not process_alive(int(pid))
            else:
                stale = now - path.stat().st_mtime > FOREIGN_STAGED_MAX_AGE_S
            if stale:
                path.unlink()
                removed.append(path)
        except FileNotFoundError:  # published or removed meanwhile
            continue
    return removed


def process_alive(pid: int) -> bool:
    """True while process ``pid`` of this host runs (it may be another user's)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def publish(staged: Path, sha256: str, root: Path | None = None) -> tuple[str, bool]:
    """Move a staged file to its content address; return (relative path, created).

    When the address already holds a file (same content), the staged copy is dropped.
    """
    root = root or data_dir()
    rel = relative_path_for(sha256)
    target = root / rel
    if target.exists():
        staged.unlink(missing_ok=True)
        return rel, False
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(staged, "rb") as handle:
        os.fsync(handle.fileno())
    os.replace(staged, target)
    return rel, True


def store_image(image: sitk.Image, root: Path | None = None) -> tuple[str, str]:
    """Write ``image`` atomically at its content address; return (relative path, sha256)."""
    staged, sha = write_staged(image, root)
    rel, _ = publish(staged, sha, root)
    return rel, sha


def same_content(a: sitk.Image, b: sitk.Image, tolerance_mm: float = 1e-3) -> bool:
    """Identical voxels and pixel type, geometry equal within ``tolerance_mm``.

    Used when two copies of one series hash differently only because one went through
    DICOM's limited decimal strings (a rounding boundary of :func:`image_hash`).
    """
    if a.GetSize() != b.GetSize() or a.GetPixelID() != b.GetPixelID():
        return False
    for get, tol in (
        ("GetSpacing", tolerance_mm),
        ("GetOrigin", tolerance_mm),
        ("GetDirection", 1e-4),
    ):
        if not np.allclose(getattr(a, get)(), getattr(b, get)(), rtol=0, atol=tol):
            return False
    return bool(np.array_equal(sitk.GetArrayViewFromImage(a), sitk.GetArrayViewFromImage(b)))
