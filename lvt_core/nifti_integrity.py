"""Checks a NIfTI file before SimpleITK reads it, for the damage ITK reads silently.

ITK's NIfTI reader fills a truncated file's missing voxels with zeros, turns NaN into 0 and
reads a voxel size of 0 as 1 mm. Each gives a volume that looks valid and numbers that are
wrong (a zero-filled slab of a CT is 0 HU, which the model draws as liver). nibabel reads the
header. Integer data whose gzip trailer records the length the header promises is whole; other
files are streamed once, in chunks, so a clinical CT is never held twice.
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import nibabel as nib
import numpy as np

_HEADER_CLASSES = {
    size.to_bytes(4, order): cls
    for size, cls in ((348, nib.Nifti1Header), (540, nib.Nifti2Header))
    for order in ("little", "big")
}
"""A NIfTI file opens with its header's size: 348 bytes for NIfTI-1, 540 for NIfTI-2."""

CHUNK_BYTES = 1 << 24
"""Bytes decompressed per step (16 MiB): bounded memory on any scan."""


def _gzip_trailer_size(path: Path) -> int | None:
    """The uncompressed length (mod 2³²) a gzip file records in its last four bytes.

    A truncated file ends mid-stream, so these bytes are data, not the record; a file of
    several gzip members records only its last one. Either way a mismatch sends the caller to
    the full decompression, which decides.
    """
    if not path.name.lower().endswith(".gz"):
        return None
    with open(path, "rb") as handle:
        handle.seek(0, 2)
        if handle.tell() < 4:
            return None
        handle.seek(-4, 2)
        return int.from_bytes(handle.read(4), "little")


def nifti_problem(path: Path) -> str | None:
    """What is wrong with the NIfTI file ``path`` (a sentence), or None when it is whole.

    Looks for: a header nibabel cannot parse, a voxel size of 0 or less with no sform to
    replace it, fewer data bytes than the header promises (a truncated or cut gzip stream),
    and non-finite values in floating-point data.
    """
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    try:
        with opener(path, "rb") as stream:  # the header as written: nib.load mends a zero voxel size
            sizeof_hdr = stream.read(4)
            stream.seek(0)
            header_class = _HEADER_CLASSES.get(sizeof_hdr)
            if header_class is None:
                return "not a NIfTI file (its first bytes are not a NIfTI-1 or NIfTI-2 header)"
            header = header_class.from_fileobj(stream, check=False)
    except Exception as exc:  # gzip and nibabel raise several types for a damaged header
        return f"not a readable NIfTI header ({exc})"
    shape = tuple(int(n) for n in header.get_data_shape())
    zooms = [float(z) for z in header["pixdim"][1 : 1 + min(len(shape), 3)]]
    if int(header["sform_code"]) == 0 and any(not z > 0 for z in zooms):
        return f"the voxel size in the header is {zooms} mm (0 or less) and no sform gives another"
    dtype = header.get_data_dtype()
    offset = int(header.get_data_offset())
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    floating = np.issubdtype(dtype, np.floating)
    if not floating and _gzip_trailer_size(path) == (offset + expected) % 2**32:
        return None  # the stream's own length record says whole: no need to decompress it
    read = 0
    non_finite = 0
    try:
        with opener(path, "rb") as stream:
            stream.read(offset)
            while read < expected:
                chunk = stream.read(min(CHUNK_BYTES, expected - read))
                if not chunk:
                    break
                if floating:
                    usable = len(chunk) - len(chunk) % dtype.itemsize
                    values = np.frombuffer(chunk[:usable], dtype=dtype)
                    non_finite += int(values.size - np.count_nonzero(np.isfinite(values)))
                read += len(chunk)
    except (EOFError, OSError, zlib.error) as exc:
        return f"the compressed data is cut or damaged ({exc}); the file is probably truncated"
    if read < expected:
        return f"the data holds {read} of the {expected} bytes its header promises; the file is truncated"
    if non_finite:
        return f"{non_finite} voxels are NaN or infinite"
    return None
