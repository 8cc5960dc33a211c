"""Stored volumes turned to the radiologist's axes, and CT slices as grey pictures, without Streamlit.

The page's viewer (:mod:`app.web.imaging`, which caches them) and the report's key images
(:mod:`app.web.key_images`, which also runs from the command line) read and window the same way.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk

from db import storage
from lvt_core.grids import reorient
from lvt_core.lesions import component_array


def read_stored(relative_path: str, data_dir: str | Path) -> sitk.Image:
    """A stored image, on its own axes."""
    return storage.read_stored(relative_path, Path(data_dir))


def read_for_display(relative_path: str, data_dir: str | Path) -> sitk.Image:
    """A stored image with its axes turned to LPS: rows run anterior to posterior and columns
    from the patient's right to left, as radiologists read an axial slice, whatever order the
    scanner stored them in (LiTS-like series run posterior to anterior and head to foot)."""
    return reorient(read_stored(relative_path, data_dir))


def components_for_display(labels: sitk.Image) -> np.ndarray:
    """Lesion index per voxel (the stored lesion numbering) on the LPS display axes: the
    numbering is the label map's as stored, so it is counted before the axes are turned."""
    components = sitk.GetImageFromArray(component_array(labels))
    components.CopyInformation(labels)
    return sitk.GetArrayFromImage(reorient(components))


def windowed(hu: np.ndarray, window: tuple[float, float]) -> np.ndarray:
    """HU mapped to grey 0–255 (float32) through a (width, level) window."""
    width, level = window
    return np.clip((hu.astype(np.float32) - (level - width / 2.0)) / width, 0.0, 1.0) * 255.0
