"""Key images for the follow-up report: each tracked lesion at each study day, cropped around it.

A tumor board compares a lesion across days on the images, not in a table of numbers, and a
radiologist checks that the model drew the right thing before trusting its size. Each picture
is the axial slice where the lesion's longest diameter is measured (so the picture and the
reported size agree), in the liver window, centred on the lesion, with the lesion outlined in
its track's colour just outside its edge (its own border stays visible), other tumors outlined
thinly in their tracks' colours as the page's viewer colours them, and a 10 mm bar. Pictures are
small PNGs the report embeds.
"""

from __future__ import annotations

import datetime as dt
import io
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import SimpleITK as sitk
from PIL import Image
from scipy import ndimage

from app.web import analysis, queries, slices, theme
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
class KeyImages:
    """The report's pictures, and what it could not picture (said in the report, not hidden)."""

    images: list[KeyImage] = field(default_factory=list)
    tracks_left_out: list[int] = field(default_factory=list)
    """Smaller tracks over :data:`MAX_TRACKS`."""
    unreadable: list[str] = field(default_factory=list)
    """Scans whose CT or label map could not be read, or lesions their label map lacks, each with why."""


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
    field_mm = max(FIELD_MIN_MM, FIELD_PER_DIAMETER * diameter_mm)
    rows = _sample_grid((ys.min() + ys.max()) / 2.0, spacing[1], field_mm)
    cols = _sample_grid((xs.min() + xs.max()) / 2.0, spacing[0], field_mm)
    grey = slices.windowed(_crop(ct[z], rows, cols, fill=-1024.0), theme.WINDOWS[KEY_WINDOW_NAME])
    rgb = np.repeat(grey[..., None], 3, axis=2)
    def colour(index: int) -> tuple[int, int, int]:
        return theme.hex_to_rgb(colours[index]) if index in colours else theme.TUMOR_RGB

    shown = _crop(components[z], rows, cols, fill=0)
    lesion = shown == lesion_index
    for other in np.unique(shown[(shown > 0) & ~lesion]):
        rgb[_outline(shown == other, 1) & ~lesion] = colour(int(other))
    rgb[_outline(lesion, OUTLINE_PX)] = colour(lesion_index)
    bar_px = round(SCALE_BAR_MM / (field_mm / IMAGE_PX))
    rgb[IMAGE_PX - 10:IMAGE_PX - 7, 8:8 + bar_px] = 255.0
    return rgb.astype(np.uint8), z


def _png(rgb: np.ndarray) -> bytes:
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


def _readings(info: queries.FollowUp) -> dict[tuple[int, dt.date], str]:
    """The radiologist's measurements by (linked track, day), as the page links them."""
    tracks = analysis.measurement_tracks(info.pseudo_id, info.lesions, info.measurements)
    return {(track, row.study_date): f"{row.lesion}: {row.diameter_mm:.1f} mm"
            for track, row in zip(tracks, info.measurements.itertuples(), strict=True) if track is not None}


def key_images(info: queries.FollowUp, lesions: pd.DataFrame, data_dir: str | Path,
               max_tracks: int = MAX_TRACKS, tracks: Collection[int] | None = None) -> KeyImages:
    """The key images of the tracked ``lesions`` (the rows the page shows) of one patient,
    read from the store under ``data_dir``: one per lesion of ``tracks``, or of the
    ``max_tracks`` largest tracks. Other lesions are outlined in their tracks' colours."""
    chosen, left_out = (sorted(tracks), []) if tracks is not None else _pictured_tracks(lesions, max_tracks)
    image_paths = {se.id: se.image_path for study in info.studies for se in study.series}
    images: list[KeyImage] = []
    unreadable: list[str] = []
    readings = _readings(info)
    for series_id, rows in lesions[lesions["track"].isin(chosen)].groupby("series_id"):
        first = rows.iloc[0]
        scan = f"{first['study_date']} {first['phase']}"
        label_path = info.label_maps.get(int(series_id))
        if label_path is None:
            unreadable.append(f"{scan}: no segmentation of the shown model")
            continue
        try:
            ct_image = slices.read_for_display(image_paths[int(series_id)], data_dir)
            components = slices.components_for_display(slices.read_stored(label_path, data_dir))
        except (OSError, RuntimeError, KeyError) as exc:  # a store moved or a file damaged: say so, go on
            unreadable.append(f"{scan}: {exc}")
            continue
        ct = sitk.GetArrayViewFromImage(ct_image)
        if ct.shape != components.shape:
            unreadable.append(f"{scan}: the CT and its label map have different grids")
            continue
        spacing = tuple(float(s) for s in ct_image.GetSpacing())
        in_scan = lesions[lesions["series_id"] == series_id]
        colours = {int(i): theme.track_colour(int(t)) for i, t in zip(in_scan["lesion_index"], in_scan["track"],
                                                                      strict=True)}
        for row in rows.itertuples():
            picture = key_picture(ct, components, int(row.lesion_index), spacing,  # type: ignore[arg-type]
                                  float(row.diameter_mm), colours)
            if picture is None:
                unreadable.append(f"{scan}: track {row.track}'s lesion {row.lesion_index} is not in the label map")
            else:
                images.append(KeyImage(int(row.track), row.study_date, str(row.phase), float(row.diameter_mm),
                                       picture[1] + 1, ct.shape[0], _png(picture[0]),
                                       readings.get((int(row.track), row.study_date))))
    images.sort(key=lambda image: (image.track, image.study_date))
    return KeyImages(images, left_out, unreadable)
