"""Stored volumes turned to the radiologist's axes, and CT slices as grey pictures, without Streamlit.

The page's viewer (:mod:`app.web.imaging`, which caches them) and the report's key images
(:mod:`app.web.key_images`, which also runs from the command line) read and window the same way.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import SimpleITK as sitk

from db import storage
from lvt_core.grids import lps_axial_index, reorient
from lvt_core.lesions import component_array

if TYPE_CHECKING:
    from app.web.queries import FollowUp


def read_stored(relative_path: str, data_dir: str | Path) -> sitk.Image:
    """A stored image, on its own axes."""
    return storage.read_stored(relative_path, Path(data_dir))


def read_for_display(relative_path: str, data_dir: str | Path) -> sitk.Image:
    """A stored image with its axes turned to LPS: rows run anterior to posterior and columns
    from the patient's right to left, as radiologists read an axial slice, whatever order the
    scanner stored them in (LiTS-like series run posterior to anterior and head to foot)."""
    return reorient(read_stored(relative_path, data_dir))


def stored_direction(relative_path: str, data_dir: str | Path) -> tuple[float, ...]:
    """A stored image's direction matrix, from its header alone (no voxels are read)."""
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(storage.resolve(relative_path, Path(data_dir))))
    reader.ReadImageInformation()
    return reader.GetDirection()


def reader_slice_numbers(info: FollowUp, data_dir: str | Path) -> list[int | None]:
    """Each radiologist measurement's slice as the viewer numbers it (from 1, foot to head on
    the LPS axes) in the tracked series of its day, in row order: a reader's ``slice_index``
    counts the stored slices, which run the other way in a series stored head first. None
    where no slice was given, it lies off the scan, or the day has no readable tracked series."""
    tracked = info.tracked_by_day()
    directions: dict[int, tuple[float, ...] | None] = {}
    numbers: list[int | None] = []
    for row in info.measurements.itertuples():
        series = tracked.get(row.study_date)
        if series is None or row.slice_index is None or row.slice_index != row.slice_index:  # NaN: none given
            numbers.append(None)
            continue
        if series.id not in directions:
            try:
                directions[series.id] = stored_direction(series.image_path, data_dir)
            except RuntimeError:  # a file gone from the store: its slices cannot be placed
                directions[series.id] = None
        direction = directions[series.id]
        shown = None if direction is None else lps_axial_index(direction, series.size[2], int(row.slice_index))
        numbers.append(None if shown is None else shown + 1)
    return numbers


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
