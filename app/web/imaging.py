"""Cached image work for the viewer and the 3D scene: volumes, slices, meshes, distances.

Volumes are read once per process (``st.cache_resource``, keyed by the store path, which
is content-addressed and so never goes stale); meshes are :mod:`lvt_core.scene`'s, computed
once per label map and shared with ``lvt export mesh`` through its disk cache.
Reruns caused by the slice slider only index arrays that are already in memory.
"""

from __future__ import annotations

import io
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import SimpleITK as sitk
import streamlit as st
from scipy import ndimage

from app.web import key_images, queries, scene3d, slices, theme
from lvt_core.labels import LIVER, TUMOR, VESSEL

if TYPE_CHECKING:  # VTK loads only when a 3D scene is drawn, not for the slice viewer
    import pyvista as pv

    from lvt_core.scene import SceneMeshes

OVERLAY_ALPHA = {LIVER: 0.25, VESSEL: 0.7, TUMOR: 0.8}


@dataclass(frozen=True)
class Volume:
    """A CT (or label map) as a z, y, x array with its geometry."""

    array: np.ndarray
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]
    direction: tuple[float, ...]

    def index_of(self, point_mm: tuple[float, float, float]) -> tuple[int, int, int]:
        """(x, y, z) voxel index nearest to a physical point (LPS mm)."""
        image = sitk.Image([1, 1, 1], sitk.sitkUInt8)
        image.SetSpacing(self.spacing)
        image.SetOrigin(self.origin)
        image.SetDirection(self.direction)
        return image.TransformPhysicalPointToIndex(tuple(float(v) for v in point_mm))


def _volume(image: sitk.Image, dtype: type) -> Volume:
    return Volume(
        np.ascontiguousarray(sitk.GetArrayFromImage(image).astype(dtype)),
        tuple(image.GetSpacing()),  # type: ignore[arg-type]
        tuple(image.GetOrigin()),  # type: ignore[arg-type]
        tuple(image.GetDirection()),
    )


@st.cache_resource(show_spinner="Loading volume…", max_entries=24)
def load_ct(relative_path: str, data_dir: str) -> Volume:
    """The CT of a series from the store (int16 HU)."""
    return _volume(slices.read_for_display(relative_path, data_dir), np.int16)


@st.cache_resource(show_spinner="Loading segmentation…", max_entries=48)
def load_labels(relative_path: str, data_dir: str) -> Volume:
    """A label map from the store (uint8)."""
    return _volume(slices.read_for_display(relative_path, data_dir), np.uint8)


def render_slice(
    ct: Volume,
    labels: Volume | None,
    z: int,
    window: tuple[float, float],
    opacity: float,
    track_colours: dict[int, str] | None = None,
    components: np.ndarray | None = None,
) -> np.ndarray:
    """One axial slice as RGB uint8: windowed CT with the label overlay blended in.

    Tumor voxels take their track's colour when ``components`` (lesion index per voxel)
    and ``track_colours`` (lesion index → colour) are given.
    """
    grey = slices.windowed(ct.array[z], window)
    rgb = np.repeat(grey[..., None], 3, axis=2)
    if labels is not None and opacity > 0 and labels.array.shape == ct.array.shape:
        lab = labels.array[z]
        for value, colour in ((LIVER, theme.LIVER_RGB), (VESSEL, theme.VESSEL_RGB), (TUMOR, theme.TUMOR_RGB)):
            mask = lab == value
            if mask.any():
                a = opacity * OVERLAY_ALPHA[value]
                rgb[mask] = (1 - a) * rgb[mask] + a * np.asarray(colour, np.float32)
        organ = lab > 0  # the liver's outline, drawn strongly: the translucent fill alone is faint
        edge = organ & ~ndimage.binary_erosion(organ)
        if edge.any():
            a = min(1.0, 1.5 * opacity)
            rgb[edge] = (1 - a) * rgb[edge] + a * np.asarray(theme.LIVER_RGB, np.float32)
        if components is not None and track_colours:
            comp = components[z]
            for index, colour in track_colours.items():
                mask = comp == index
                if mask.any():
                    a = opacity * OVERLAY_ALPHA[TUMOR]
                    rgb[mask] = (1 - a) * grey[mask][:, None] + a * np.asarray(theme.hex_to_rgb(colour), np.float32)
    return rgb.astype(np.uint8)


def upscale(rgb: np.ndarray, spacing_xy: tuple[float, float], target_px: int = 720) -> np.ndarray:
    """Nearest-neighbour enlargement to about ``target_px`` wide, with square pixels in mm.

    Voxels stay crisp (no browser blur of a 96-px slice), and an anisotropic in-plane
    spacing is shown with the right aspect ratio.
    """
    sx, sy = spacing_xy
    cols = rgb.shape[1]
    fx = max(1, round(target_px / cols))
    fy = max(1, round(fx * sy / sx))
    return np.repeat(np.repeat(rgb, fy, axis=0), fx, axis=1)


@st.cache_resource(show_spinner=False, max_entries=48)
def lesion_components(relative_path: str, data_dir: str) -> np.ndarray:
    """Lesion index per voxel (the same numbering as the stored lesions), on the viewer's
    LPS axes (the numbering is the stored label map's, read on its own axes)."""
    return slices.components_for_display(slices.read_stored(relative_path, data_dir))


@st.cache_data(show_spinner="Picturing the lesion on each day…", max_entries=64)
def track_pictures(
    _info: queries.FollowUp, _lesions: pd.DataFrame, pseudo_id: str, track: int,
    shown_from_mm: float, version: tuple[object, ...], data_dir: str,
) -> key_images.KeyImages:
    """The key images of one track (:mod:`app.web.key_images`) among the tracks ``_lesions``
    holds (those from ``shown_from_mm``), cached by patient, track, size filter and data version."""
    del pseudo_id, shown_from_mm, version  # cache key only
    return key_images.key_images(_info, _lesions, data_dir, tracks=[track])


@st.cache_data(show_spinner=False, max_entries=48)
def lesion_facts(relative_path: str, data_dir: str) -> list[scene3d.LesionFacts]:
    """The lesions of a stored label map, numbered as stored (:func:`app.web.scene3d.lesion_facts`)."""
    return scene3d.lesion_facts(slices.read_stored(relative_path, data_dir))


@st.cache_resource(show_spinner="Building 3D meshes…", max_entries=16)
def scene_meshes(relative_path: str, data_dir: str) -> SceneMeshes:
    """Liver, vessel and per-tumor meshes of a label map, built by :mod:`lvt_core.scene` and cached
    on disk where ``lvt export mesh`` caches them: the page draws and serves what the CLI writes."""
    from lvt_core.scene import build_scene_meshes

    return build_scene_meshes(slices.read_stored(relative_path, data_dir), cache_dir=Path(data_dir) / "meshes")


def _renamed(relative_path: str, data_dir: str, names: tuple[tuple[str, str], ...]) -> list[tuple[str, pv.PolyData]]:
    """The scene's meshes under the page's file names (``names``: structure → file name)."""
    rename = dict(names)
    return [(rename.get(key, key), mesh) for key, mesh in scene_meshes(relative_path, data_dir).items()]


@st.cache_data(show_spinner=False, max_entries=16)
def glb_file(relative_path: str, data_dir: str, names: tuple[tuple[str, str], ...]) -> bytes:
    """The ``scene.glb`` of ``lvt export mesh`` (glTF metres, +Y up, the liver translucent), its
    nodes named as the page names them (a tumor by its track)."""
    from lvt_core.scene import glb_bytes

    return glb_bytes(_renamed(relative_path, data_dir, names))


@st.cache_data(show_spinner=False, max_entries=16)
def stl_zip(relative_path: str, data_dir: str, names: tuple[tuple[str, str], ...]) -> bytes:
    """One STL per structure (LPS mm, as ``lvt export mesh`` writes them), zipped: merged into one
    body, tumors were shells inside the liver that no slicer or printer could take apart."""
    from lvt_core.scene import write_structures

    buffer = io.BytesIO()
    with tempfile.TemporaryDirectory() as tmp, zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in write_structures(_renamed(relative_path, data_dir, names), Path(tmp), ("stl",)):
            archive.write(path, path.name)
    return buffer.getvalue()
