"""Key images for the follow-up report: each tracked lesion at each study day, cropped around it.

A tumor board compares a lesion across days on the images, not in a table of numbers, and a
radiologist checks that the model drew the right thing before trusting its size. Each picture
is the axial slice where the lesion's longest diameter is measured (so the picture and the
reported size agree), in the liver window, centred on the lesion, with the lesion outlined in
its track's colour just outside its edge (its own border stays visible), other tumors outlined
thinly in their tracks' colours as the page's viewer colours them, and a 10 mm bar. Pictures are
small PNGs the report embeds. The report also pictures each place the radiologist measured that
no track links to, circled at the reader's diameter: the model's possible misses.
"""

from __future__ import annotations

import datetime as dt
import io
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import SimpleITK as sitk
from PIL import Image
from scipy import ndimage

from app.web import analysis, queries, slices, theme
from lvt_core.grids import lps_axial_index, reorient
from lvt_core.lesions import measured_axial_slice

KEY_WINDOW_NAME = "Liver (W150 L90)"
FIELD_MIN_MM = 50.0
"""The smallest field of view: a small lesion is shown with the liver around it."""
FIELD_PER_DIAMETER = 2.5
IMAGE_PX = 200
SCALE_BAR_MM = 10.0
OUTLINE_PX = 2
MAX_TRACKS = 12
"""Tracks pictured, largest first: a patient with forty small lesions still gets a readable report."""
CAPTION = (
    f"Each picture is the axial slice where the lesion's longest diameter is measured, in the phase the "
    f"tracks follow, in the window {KEY_WINDOW_NAME}, {FIELD_MIN_MM:.0f} mm or {FIELD_PER_DIAMETER:g} × the "
    f"lesion wide. The lesion is outlined in its track's colour just outside its edge, other tumors thinly "
    f"in theirs (untracked ones in yellow); the white bar is {SCALE_BAR_MM:.0f} mm. The outlines are the "
    f"model's: check them on the images."
)

MISSED_CAPTION = (
    "Each picture is the slice of the radiologist's measurement in the phase the tracks follow, centred on "
    "its position, with a white circle of the reader's diameter; the model's tumors there, if any, are "
    "outlined in their tracks' colours. A lesion here that the model did not draw is a miss to check. A "
    "measurement given by its slice alone shows the whole slice, without a circle."
)


@dataclass(frozen=True)
class KeyImage:
    """One lesion of a track at one study day, as a PNG."""

    track: int
    study_date: dt.date
    phase: str
    diameter_mm: float
    slice_number: int
    """The slice shown, counted from 1 as the page's viewer counts on the same axes."""
    slices: int
    png: bytes
    reader: str | None = None
    """The radiologist's measurement linked to this lesion on this day ("L4: 37.7 mm"), if any."""

    @property
    def caption_lines(self) -> list[str]:
        """Day and phase, the model's and the reader's diameter, and the slice to find it again."""
        reader = [f"reader {self.reader}"] if self.reader else []
        return [f"{self.study_date} · {self.phase}", f"model ⌀ {self.diameter_mm:.1f} mm", *reader,
                f"slice {self.slice_number}/{self.slices}"]


@dataclass(frozen=True)
class MissedImage:
    """A place the radiologist measured and no track links to, at its day, as a PNG."""

    lesion: str
    study_date: dt.date
    phase: str
    reader_mm: float
    slice_number: int
    slices: int
    png: bytes
    whole_slice: bool = False
    """The reader gave a slice and no position: the whole slice is shown, without a circle."""

    @property
    def caption_lines(self) -> list[str]:
        where = ["slice given, no position: whole slice"] if self.whole_slice else []
        return [f"{self.study_date} · {self.phase}", f"reader {self.lesion}: {self.reader_mm:.1f} mm",
                "no linked model lesion", *where, f"slice {self.slice_number}/{self.slices}"]


@dataclass(frozen=True)
class KeyImages:
    """The report's pictures, and what it could not picture (said in the report, not hidden)."""

    images: list[KeyImage] = field(default_factory=list)
    tracks_left_out: list[int] = field(default_factory=list)
    """Smaller tracks over :data:`MAX_TRACKS`."""
    unreadable: list[str] = field(default_factory=list)
    """Scans whose CT or label map could not be read, or lesions their label map lacks, each with why."""
    missed: list[MissedImage] = field(default_factory=list)
    """Places the radiologist measured that no track links to (with the report's pictures only)."""


def _sample_grid(centre: float, spacing: float, field_mm: float) -> np.ndarray:
    """Voxel indices (nearest) of :data:`IMAGE_PX` samples across ``field_mm`` around ``centre``."""
    offsets_mm = (np.arange(IMAGE_PX) + 0.5) * (field_mm / IMAGE_PX) - field_mm / 2.0
    return np.floor(centre + offsets_mm / spacing + 0.5).astype(int)


def _crop(plane: np.ndarray, rows: np.ndarray, cols: np.ndarray, fill: float) -> np.ndarray:
    """``plane`` sampled at the grid of ``rows`` × ``cols``; samples off the scan take ``fill``."""
    inside = ((rows >= 0) & (rows < plane.shape[0]))[:, None] & ((cols >= 0) & (cols < plane.shape[1]))[None, :]
    picked = plane[np.clip(rows, 0, plane.shape[0] - 1)][:, np.clip(cols, 0, plane.shape[1] - 1)]
    return np.where(inside, picked, fill)


def _outline(mask: np.ndarray, width_px: int) -> np.ndarray:
    """A band ``width_px`` wide just outside ``mask``."""
    return ndimage.binary_dilation(mask, iterations=width_px) & ~mask


def _picture(
    ct_plane: np.ndarray, components_plane: np.ndarray, centre_yx: tuple[float, float],
    spacing: tuple[float, float, float], field_mm: float, colours: dict[int, str], lesion_index: int | None,
) -> np.ndarray:
    """One slice around ``centre_yx`` (voxels) as RGB floats: tumors outlined thinly in their
    tracks' colours (the tumor colour if untracked), ``lesion_index`` thickly, and the scale bar."""
    rows = _sample_grid(centre_yx[0], spacing[1], field_mm)
    cols = _sample_grid(centre_yx[1], spacing[0], field_mm)
    grey = slices.windowed(_crop(ct_plane, rows, cols, fill=-1024.0), theme.WINDOWS[KEY_WINDOW_NAME])
    rgb = np.repeat(grey[..., None], 3, axis=2)

    def colour(index: int) -> tuple[int, int, int]:
        return theme.hex_to_rgb(colours[index]) if index in colours else theme.TUMOR_RGB

    shown = _crop(components_plane, rows, cols, fill=0)
    lesion = shown == lesion_index
    for other in np.unique(shown[(shown > 0) & ~lesion]):
        rgb[_outline(shown == other, 1) & ~lesion] = colour(int(other))
    if lesion_index is not None:
        rgb[_outline(lesion, OUTLINE_PX)] = colour(lesion_index)
    bar_px = round(SCALE_BAR_MM / (field_mm / IMAGE_PX))
    rgb[IMAGE_PX - 10:IMAGE_PX - 7, 8:8 + bar_px] = 255.0
    return rgb


def _field_mm(diameter_mm: float) -> float:
    return max(FIELD_MIN_MM, FIELD_PER_DIAMETER * diameter_mm)


def key_picture(
    ct: np.ndarray, components: np.ndarray, lesion_index: int, spacing: tuple[float, float, float],
    diameter_mm: float, colours: dict[int, str],
) -> tuple[np.ndarray, int] | None:
    """The RGB picture of lesion ``lesion_index`` of ``components`` (``z, y, x``, LPS, like
    ``ct``) and the slice it shows, or None where the label map no longer holds the lesion.
    ``colours`` gives the tracked lesions' track colours (by lesion index): the lesion is
    outlined thick in its own, other tumors thin in theirs, or in the tumor colour if untracked."""
    mask = components == lesion_index
    z = measured_axial_slice(mask, spacing)
    if z is None:
        return None
    ys, xs = np.nonzero(mask[z])
    centre = ((ys.min() + ys.max()) / 2.0, (xs.min() + xs.max()) / 2.0)
    rgb = _picture(ct[z], components[z], centre, spacing, _field_mm(diameter_mm), colours, lesion_index)
    return rgb.astype(np.uint8), z


def marked_picture(
    ct: np.ndarray, components: np.ndarray, point_zyx: tuple[int, int, int], spacing: tuple[float, float, float],
    diameter_mm: float, colours: dict[int, str],
) -> np.ndarray:
    """The RGB picture of a place the radiologist measured (``point_zyx``, voxels), with a white
    circle of the reader's diameter around it and the model's tumors outlined as in
    :func:`key_picture`: what the model drew there, if anything."""
    z, y, x = point_zyx
    field_mm = _field_mm(diameter_mm)
    rgb = _picture(ct[z], components[z], (float(y), float(x)), spacing, field_mm, colours, None)
    mm_per_px = field_mm / IMAGE_PX
    offsets = (np.arange(IMAGE_PX) + 0.5) * mm_per_px - field_mm / 2.0
    radius = np.hypot(offsets[:, None], offsets[None, :])
    rgb[np.abs(radius - diameter_mm / 2.0) <= mm_per_px] = 255.0
    return rgb.astype(np.uint8)


def whole_slice_picture(ct: np.ndarray, components: np.ndarray, z: int, spacing: tuple[float, float, float],
                        colours: dict[int, str]) -> np.ndarray:
    """The RGB picture of all of axial slice ``z``, the model's tumors outlined as in
    :func:`key_picture`: where a reader gave a slice but no position, what the model drew on it."""
    rows, cols = ct.shape[1:]
    field_mm = max(rows * spacing[1], cols * spacing[0])
    centre = ((rows - 1) / 2.0, (cols - 1) / 2.0)
    return _picture(ct[z], components[z], centre, spacing, field_mm, colours, None).astype(np.uint8)


def png_bytes(rgb: np.ndarray) -> bytes:
    """An RGB ``uint8`` picture as a small PNG, as the report embeds its pictures."""
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def tracks_by_size(lesions: pd.DataFrame) -> pd.Series:
    """Each track's largest longest diameter (mm), the largest track first."""
    return lesions.groupby("track")["diameter_mm"].max().sort_values(ascending=False, kind="stable")


def _pictured_tracks(lesions: pd.DataFrame, max_tracks: int = MAX_TRACKS) -> tuple[list[int], list[int]]:
    """The tracks to picture (the largest ``max_tracks`` by their largest diameter) and those left out."""
    tracks = [int(t) for t in tracks_by_size(lesions).index]
    return sorted(tracks[:max_tracks]), sorted(tracks[max_tracks:])


def _readings(info: queries.FollowUp) -> tuple[dict[tuple[int, dt.date], str], list[Any]]:
    """The radiologist's measurements by (linked track, day), as the page links them, and the
    measurements no track links to."""
    tracks = analysis.measurement_tracks(info.pseudo_id, info.lesions, info.measurements)
    rows = list(info.measurements.itertuples())
    linked = {(track, row.study_date): f"{row.lesion}: {row.diameter_mm:.1f} mm"
              for track, row in zip(tracks, rows, strict=True) if track is not None}
    return linked, [row for track, row in zip(tracks, rows, strict=True) if track is None]


@dataclass(frozen=True)
class _Scan:
    """A tracked series read for pictures: its CT and lesion numbering on the display axes."""

    image: sitk.Image
    ct: np.ndarray
    components: np.ndarray
    spacing: tuple[float, float, float]
    colours: dict[int, str]
    stored_direction: tuple[float, ...]
    """The stored volume's axes, to place a reader's stored slice index on the display axes."""


def _scan_reader(info: queries.FollowUp, lesions: pd.DataFrame, data_dir: str | Path,
                 unreadable: list[str]) -> Callable[[int, str], _Scan | None]:
    """A reader of tracked series, each read once; what cannot be read is noted in ``unreadable``."""
    image_paths = {se.id: se.image_path for study in info.studies for se in study.series}
    read: dict[int, _Scan | None] = {}

    def scan(series_id: int, name: str) -> _Scan | None:
        if series_id not in read:
            read[series_id] = None
            label_path = info.label_maps.get(series_id)
            if label_path is None:
                unreadable.append(f"{name}: no segmentation of the shown model")
                return None
            try:
                stored = slices.read_stored(image_paths[series_id], data_dir)
                image = reorient(stored)
                components = slices.components_for_display(slices.read_stored(label_path, data_dir))
            except (OSError, RuntimeError, KeyError) as exc:  # a store moved or a file damaged: say so, go on
                unreadable.append(f"{name}: {exc}")
                return None
            ct = sitk.GetArrayViewFromImage(image)
            if ct.shape != components.shape:
                unreadable.append(f"{name}: the CT and its label map have different grids")
                return None
            in_scan = lesions[lesions["series_id"] == series_id]
            colours = {int(i): theme.track_colour(int(t))
                       for i, t in zip(in_scan["lesion_index"], in_scan["track"], strict=True)}
            read[series_id] = _Scan(image, ct, components, tuple(float(v) for v in image.GetSpacing()),  # type: ignore[arg-type]
                                    colours, stored.GetDirection())
        return read[series_id]

    return scan


def _missed_images(info: queries.FollowUp, missed: list[Any],
                   scan: Callable[[int, str], _Scan | None], unreadable: list[str]) -> list[MissedImage]:
    """Pictures of the places the radiologist measured and no track links to, in the tracked
    phase of their day."""
    tracked = info.tracked_by_day()
    images = []
    for row in missed:
        name = f"reader {row.lesion} on {row.study_date}"
        location = row.location_mm if isinstance(row.location_mm, list | tuple) else None
        stored_slice = None if pd.isna(row.slice_index) else int(row.slice_index)
        if row.study_date not in tracked or (location is None and stored_slice is None):
            unreadable.append(f"{name}: " + ("no tracked scan of that day" if row.study_date not in tracked
                                             else "no position or slice was recorded"))
            continue
        series_id, phase = tracked[row.study_date].id, tracked[row.study_date].phase
        read = scan(series_id, f"{row.study_date} {phase}")
        if read is None:
            continue
        if location is None:
            shown = lps_axial_index(read.stored_direction, read.ct.shape[0], stored_slice)  # type: ignore[arg-type]
            if shown is None:
                unreadable.append(f"{name}: its slice {stored_slice} lies outside the scan's axial slices")
                continue
            rgb = whole_slice_picture(read.ct, read.components, shown, read.spacing, read.colours)
            images.append(MissedImage(str(row.lesion), row.study_date, phase, float(row.diameter_mm), shown + 1,
                                      read.ct.shape[0], png_bytes(rgb), whole_slice=True))
            continue
        x, y, z = read.image.TransformPhysicalPointToIndex([float(v) for v in location])
        if not all(0 <= i < n for i, n in zip((z, y, x), read.ct.shape, strict=True)):
            unreadable.append(f"{name}: its position lies outside the scan")
            continue
        rgb = marked_picture(read.ct, read.components, (z, y, x), read.spacing, float(row.diameter_mm), read.colours)
        images.append(MissedImage(str(row.lesion), row.study_date, phase, float(row.diameter_mm), z + 1,
                                  read.ct.shape[0], png_bytes(rgb)))
    return images


def key_images(info: queries.FollowUp, lesions: pd.DataFrame, data_dir: str | Path,
               max_tracks: int = MAX_TRACKS, tracks: Collection[int] | None = None) -> KeyImages:
    """The key images of the tracked ``lesions`` (the rows the page shows) of one patient,
    read from the store under ``data_dir``: one per lesion of ``tracks``, or of the
    ``max_tracks`` largest tracks and then each place the radiologist measured that no track
    links to. Other lesions are outlined in their tracks' colours."""
    chosen, left_out = (sorted(tracks), []) if tracks is not None else _pictured_tracks(lesions, max_tracks)
    images: list[KeyImage] = []
    unreadable: list[str] = []
    readings, missed = _readings(info)
    scan = _scan_reader(info, lesions, data_dir, unreadable)
    for series_id, rows in lesions[lesions["track"].isin(chosen)].groupby("series_id"):
        first = rows.iloc[0]
        name = f"{first['study_date']} {first['phase']}"
        read = scan(int(series_id), name)
        if read is None:
            continue
        for row in rows.itertuples():
            picture = key_picture(read.ct, read.components, int(row.lesion_index), read.spacing,
                                  float(row.diameter_mm), read.colours)
            if picture is None:
                unreadable.append(f"{name}: track {row.track}'s lesion {row.lesion_index} is not in the label map")
            else:
                images.append(KeyImage(int(row.track), row.study_date, str(row.phase), float(row.diameter_mm),
                                       picture[1] + 1, read.ct.shape[0], png_bytes(picture[0]),
                                       readings.get((int(row.track), row.study_date))))
    images.sort(key=lambda image: (image.track, image.study_date))
    missed_images = _missed_images(info, missed, scan, unreadable) if tracks is None else []
    return KeyImages(images, left_out, unreadable, missed_images)
