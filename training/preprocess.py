"""Preprocessing with a cache: reorient to LPS and resample once, then memory-map for training.

Each case becomes ``<cache>/<key>/image.npy`` (int16 HU, ``z, y, x``) and ``labels.npy``
(uint8 LVT values) plus ``meta.json``; the key hashes the inputs' identity and the target
spacing, so a changed file or spacing is preprocessed again and nothing else is.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from lvt_core.atomic_files import published_folder
from lvt_core.grids import reorient, resample_to_spacing
from training.datasets import Case

CACHE_VERSION = 1
DEFAULT_CACHE = Path(".cache") / "lvt-preprocessed"


@dataclass
class Prepared:
    """A preprocessed case: memory-mapped arrays in ``z, y, x`` order at ``spacing_mm`` (x y z)."""

    case_id: str
    source: str
    annotated: tuple[str, ...]
    image: np.ndarray
    labels: np.ndarray
    spacing_mm: tuple[float, float, float]
    sampling_group: str = ""  # Case.sampling_group: whose configured weight draws this case


def cache_key(case: Case, spacing: tuple[float, ...], antialiased: bool = False) -> str:
    """Stable key for ``case`` resampled to ``spacing`` (with or without anti-aliasing)."""
    text = f"v{CACHE_VERSION}|{case.fingerprint()}|{tuple(round(s, 4) for s in spacing)}"
    if antialiased:  # suffix only when set: caches made before the option keep their keys
        text += "|antialiased"
    return hashlib.sha1(text.encode()).hexdigest()[:16]


def prepare_images(image: sitk.Image, labels: sitk.Image, spacing: tuple[float, ...],
                   antialiased: bool = False) -> tuple[sitk.Image, sitk.Image]:
    """LPS orientation, then ``spacing`` (linear for HU, after a low-pass if ``antialiased``,
    as inference does for such a model; nearest for labels)."""
    image = resample_to_spacing(reorient(image), spacing, sitk.sitkLinear, -1024.0, antialiased)
    labels = sitk.Resample(
        reorient(labels), image, sitk.Transform(), sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8
    )
    return image, labels


def cache_folder(case: Case, spacing: tuple[float, ...], cache_dir: str | Path | None = None,
                 antialiased: bool = False) -> Path:
    """Where the preprocessed arrays of ``case`` live (``meta.json`` there once complete)."""
    return (Path(cache_dir) if cache_dir else DEFAULT_CACHE) / cache_key(case, spacing, antialiased)


def preprocess(case: Case, spacing: tuple[float, ...], cache_dir: str | Path | None = None,
               antialiased: bool = False) -> Prepared:
    """The cached, resampled arrays of ``case`` (computed on first use)."""
    folder = cache_folder(case, spacing, cache_dir, antialiased)
    if not (folder / "meta.json").is_file():
        image, labels = prepare_images(*case.load(), spacing, antialiased)
        with published_folder(folder) as tmp:
            hu = sitk.GetArrayFromImage(image)
            np.save(tmp / "image.npy", np.clip(np.round(hu), -32768, 32767).astype(np.int16))
            np.save(tmp / "labels.npy", sitk.GetArrayFromImage(labels).astype(np.uint8))
            meta = {"case_id": case.case_id, "source": case.source, "annotated": list(case.annotated),
                    "spacing_mm": list(spacing), "origin": list(image.GetOrigin())}
            (tmp / "meta.json").write_text(json.dumps(meta))
    return Prepared(
        case.case_id,
        case.source,
        tuple(case.annotated),
        np.load(folder / "image.npy", mmap_mode="r"),
        np.load(folder / "labels.npy", mmap_mode="r"),
        tuple(float(s) for s in spacing),  # type: ignore[arg-type]
        case.sampling_group,
    )
