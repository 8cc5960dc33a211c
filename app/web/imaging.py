"""Cached image work for the viewer and the 3D scene: volumes, slices, meshes, distances.

Volumes are read once per process (``st.cache_resource``, keyed by the store path, which
is content-addressed and so never goes stale); meshes are computed once per label map.
Reruns caused by the slice slider only index arrays that are already in memory.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk
import streamlit as st
from scipy import ndimage

from app.web import theme
from db import storage
from lvt_core.labels import LIVER, TUMOR, VESSEL
from lvt_core.lesions import component_array, extract_lesions
from lvt_core.transforms import reorient

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


def _read(path: str, data_dir: str) -> sitk.Image:
    """A stored image, on its own axes."""
    return storage.read_stored(path, _root(data_dir))


def _read_for_display(path: str, data_dir: str) -> sitk.Image:
    """A stored image with its axes turned to LPS: rows run anterior to posterior and columns
    from the patient's right to left, as radiologists read an axial slice, whatever order the
    scanner stored them in (LiTS-like series run posterior to anterior and head to foot)."""
    return reorient(_read(path, data_dir))


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
    return _volume(_read_for_display(relative_path, data_dir), np.int16)


@st.cache_resource(show_spinner="Loading segmentation…", max_entries=48)
def load_labels(relative_path: str, data_dir: str) -> Volume:
    """A label map from the store (uint8)."""
    return _volume(_read_for_display(relative_path, data_dir), np.uint8)


def _root(data_dir: str):  # type: ignore[no-untyped-def]
    from pathlib import Path

    return Path(data_dir)


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
    width, level = window
    lo = level - width / 2.0
    grey = np.clip((ct.array[z].astype(np.float32) - lo) / width, 0.0, 1.0) * 255.0
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
    image = _read(relative_path, data_dir)
    components = sitk.GetImageFromArray(component_array(image))
    components.CopyInformation(image)
    return sitk.GetArrayFromImage(reorient(components))


@st.cache_data(show_spinner=False, max_entries=48)
def lesion_distances(relative_path: str, data_dir: str) -> dict[int, float | None]:
    """Lesion index → shortest distance from the tumor surface to a vessel, in mm."""
    image = _read(relative_path, data_dir)
    return {les.id: les.distance_to_vessel_mm for les in extract_lesions(image)}


@dataclass(frozen=True)
class Mesh:
    """A triangle mesh in physical mm (LPS)."""

    name: str
    vertices: np.ndarray
    faces: np.ndarray
    colour: str
    opacity: float


@st.cache_data(show_spinner="Building 3D meshes…", max_entries=16)
def meshes(relative_path: str, data_dir: str, tumor_colours: dict[int, str]) -> list[Mesh]:
    """Liver, vessel and one mesh per lesion (marching cubes), cached per label map."""
    from skimage.measure import marching_cubes

    image = _read(relative_path, data_dir)
    array = sitk.GetArrayFromImage(image)
    spacing_zyx = tuple(reversed(image.GetSpacing()))
    origin = np.asarray(image.GetOrigin())
    direction = np.asarray(image.GetDirection()).reshape(3, 3)
    comps = component_array(image)
    out: list[Mesh] = []

    def add(name: str, mask: np.ndarray, colour: str, opacity: float, step: int) -> None:
        if mask.sum() < 8:
            return
        padded = np.pad(mask.astype(np.float32), 1)
        verts, faces, _n, _v = marching_cubes(padded, 0.5, spacing=spacing_zyx, step_size=step)
        verts = verts - np.asarray(spacing_zyx)  # undo the padding
        xyz = verts[:, ::-1]
        physical = origin + xyz @ direction.T
        out.append(Mesh(name, physical.astype(np.float32), faces.astype(np.int32), colour, opacity))

    liver_colour = "#{:02x}{:02x}{:02x}".format(*theme.LIVER_RGB)
    vessel_colour = "#{:02x}{:02x}{:02x}".format(*theme.VESSEL_RGB)
    add("liver", np.isin(array, (LIVER, VESSEL, TUMOR)), liver_colour, 0.18, 2)
    add("vessels", array == VESSEL, vessel_colour, 0.9, 1)
    for index in range(1, int(comps.max()) + 1):
        add(f"lesion {index}", comps == index, tumor_colours.get(index, theme.TRACK_COLOURS[0]), 1.0, 1)
    return out


def export_mesh(items: list[Mesh], file_type: str) -> bytes:
    """The scene as one STL or GLB file (trimesh), with colours where the format keeps them."""
    import trimesh

    scene = trimesh.Scene()
    for m in items:
        mesh = trimesh.Trimesh(m.vertices, m.faces, process=False)
        r, g, b = theme.hex_to_rgb(m.colour)
        mesh.visual.face_colors = [r, g, b, int(255 * m.opacity)]
        scene.add_geometry(mesh, node_name=m.name)
    buffer = io.BytesIO()
    if file_type == "stl":
        trimesh.util.concatenate(list(scene.geometry.values())).export(buffer, file_type="stl")
    else:
        scene.export(buffer, file_type="glb")
    return buffer.getvalue()


@st.cache_data(show_spinner=False, max_entries=16)
def mesh_file(relative_path: str, data_dir: str, tumor_colours: dict[int, str], file_type: str) -> bytes:
    """The STL/GLB bytes of a label map's scene, built once per label map and type."""
    return export_mesh(meshes(relative_path, data_dir, tumor_colours), file_type)
