"""3D scenes: mesh geometry in physical space, cache, tumor-vessel distance, export, preview."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import pyvista as pv
import SimpleITK as sitk

from lvt_core.labels import LIVER, TUMOR, VESSEL
from lvt_core.lesions import lesion_component_map
from lvt_core.scene import (
    build_scene_meshes,
    export_scene,
    min_tumor_vessel_distance_mm,
    render_preview,
)


def phantom(gap_mm: float = 5.0) -> sitk.Image:
    """Liver box, a vessel along x (radius 4 mm, y=z=0), a sphere (r 6 mm) ``gap_mm`` beside it."""
    spacing = (1.0, 1.0, 1.0)
    size = (80, 60, 50)
    z, y, x = np.meshgrid(*(np.arange(n) * s for n, s in zip(size[::-1], spacing[::-1], strict=True)), indexing="ij")
    x, y, z = x - 40.0, y - 20.0, z - 25.0
    labels = np.zeros(size[::-1], dtype=np.uint8)
    labels[(np.abs(x) < 35) & (y > -15) & (y < 35) & (np.abs(z) < 20)] = LIVER
    labels[(labels == LIVER) & (y**2 + z**2 <= 16.0)] = VESSEL
    centre_y = 4.0 + gap_mm + 6.0
    labels[x**2 + (y - centre_y) ** 2 + z**2 <= 36.0] = TUMOR
    image = sitk.GetImageFromArray(labels)
    image.SetSpacing(spacing)
    # A rotated patient frame: meshes must follow the image's direction and origin.
    angle = np.deg2rad(30.0)
    direction = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    image.SetDirection(tuple(direction.ravel()))
    image.SetOrigin((-12.0, 30.0, 100.0))
    return image


def test_meshes_sit_in_physical_space_with_the_right_volume(tmp_path: Path) -> None:
    labels = phantom()
    meshes = build_scene_meshes(labels, lesion_component_map(labels, 10), tmp_path)
    assert meshes.liver is not None and meshes.vessels is not None
    assert list(meshes.tumors) == [1]
    tumor = meshes.tumors[1]
    centre_index = (40.0, 20.0 + 15.0, 25.0)
    expected = np.array(labels.TransformContinuousIndexToPhysicalPoint(centre_index))
    np.testing.assert_allclose(np.asarray(tumor.points).mean(axis=0), expected, atol=1.0)
    assert tumor.volume == pytest.approx(4 / 3 * np.pi * 6.0**3, rel=0.12)
    assert tumor.is_manifold


@pytest.mark.parametrize("radius_mm", [3.0, 4.0, 6.0])
@pytest.mark.parametrize("spacing", [(1.5, 1.5, 1.5), (0.8, 0.8, 5.0)])
def test_small_lesion_and_thin_vessel_meshes_hold_their_voxels_volume(
    radius_mm: float, spacing: tuple[float, float, float]
) -> None:
    """Contoured at 0.5 and smoothed, a 3 mm lesion's mesh held 15-18 % less than its voxels."""
    half = [int(3 * radius_mm / s) + 3 for s in spacing[::-1]]  # z, y, x; odd sizes, centred
    dz, dy, dx = np.meshgrid(*(np.arange(-h, h + 1) * s for h, s in zip(half, spacing[::-1], strict=True)),
                             indexing="ij")
    labels = np.full(dz.shape, LIVER, dtype=np.uint8)
    labels[dx**2 + dy**2 + dz**2 <= radius_mm**2] = TUMOR
    labels[((dy - 2.2 * radius_mm) ** 2 + dz**2 <= (radius_mm / 2) ** 2)] = VESSEL  # a tube along x
    image = sitk.GetImageFromArray(labels)
    image.SetSpacing(spacing)
    meshes = build_scene_meshes(image)
    voxel_mm3 = float(np.prod(spacing))
    (tumor,) = meshes.tumors.values()
    assert tumor.volume == pytest.approx(np.count_nonzero(labels == TUMOR) * voxel_mm3, rel=0.02)
    assert meshes.vessels is not None
    assert meshes.vessels.volume == pytest.approx(np.count_nonzero(labels == VESSEL) * voxel_mm3, rel=0.02)
    assert tumor.is_manifold


def test_cache_is_reused_and_keyed_by_content(tmp_path: Path) -> None:
    labels = phantom()
    build_scene_meshes(labels, None, tmp_path)
    folders = list(tmp_path.iterdir())
    assert len(folders) == 1 and (folders[0] / "manifest.json").is_file()
    stamp = (folders[0] / "tumor_1.vtp").stat().st_mtime_ns
    again = build_scene_meshes(labels, None, tmp_path)
    assert (folders[0] / "tumor_1.vtp").stat().st_mtime_ns == stamp
    assert sorted(again.tumors) == [1]
    build_scene_meshes(phantom(gap_mm=8.0), None, tmp_path)
    assert len(list(tmp_path.iterdir())) == 2


@pytest.mark.parametrize("gap", [3.0, 8.0])
def test_tumor_vessel_distance(gap: float) -> None:
    meshes = build_scene_meshes(phantom(gap_mm=gap))
    (distance,) = min_tumor_vessel_distance_mm(meshes).values()
    assert distance == pytest.approx(gap, abs=1.5)


def test_touching_tumor_is_zero_and_no_vessels_is_none() -> None:
    labels = phantom(gap_mm=-2.0)
    assert list(min_tumor_vessel_distance_mm(build_scene_meshes(labels)).values()) == [0.0]
    array = sitk.GetArrayFromImage(labels)
    array[array == VESSEL] = LIVER
    no_vessel = sitk.GetImageFromArray(array)
    no_vessel.CopyInformation(labels)
    assert min_tumor_vessel_distance_mm(build_scene_meshes(no_vessel)) == {1: None}


def test_export_every_format_loads_back(tmp_path: Path) -> None:
    import trimesh

    meshes = build_scene_meshes(phantom())
    written = export_scene(meshes, tmp_path)
    names = {p.name for p in written}
    for structure in ("liver", "vessels", "tumor_1"):
        for fmt in ("stl", "obj", "vtp"):
            assert f"{structure}.{fmt}" in names
            loaded = pv.read(str(tmp_path / f"{structure}.{fmt}"))
            assert loaded.n_cells > 0
    scene = trimesh.load(tmp_path / "scene.glb")
    assert set(scene.geometry) == {"liver", "vessels", "tumor_1"}
    tumor = scene.geometry["tumor_1"]
    # glTF: metres, +Y up (the patient's head), facing +Z (anterior, LPS -y), right toward -X
    lps = np.asarray(meshes.tumors[1].points).mean(axis=0)
    np.testing.assert_allclose(tumor.vertices.mean(axis=0), [lps[0] / 1000, lps[2] / 1000, -lps[1] / 1000], atol=1e-6)
    liver = scene.geometry["liver"].visual.material  # translucent in a viewer, not drawn opaque
    assert liver.alphaMode == "BLEND" and liver.baseColorFactor[3] < 255
    assert tumor.visual.material.alphaMode == "OPAQUE"
    with pytest.raises(ValueError, match="unknown mesh format"):
        export_scene(meshes, tmp_path, formats=("fbx",))


def test_an_empty_scene_is_refused_plainly_and_leaves_no_folder(tmp_path: Path) -> None:
    """A label map with nothing in it failed with trimesh's "Can't export empty scenes!" after
    the output folder was made, leaving it behind empty."""
    empty = sitk.Image(phantom().GetSize(), sitk.sitkUInt8)
    meshes = build_scene_meshes(empty)
    assert meshes.items() == []
    with pytest.raises(ValueError, match="holds no liver, vessels or tumors"):
        export_scene(meshes, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_preview_png(tmp_path: Path) -> None:
    meshes = build_scene_meshes(phantom())
    try:
        png = render_preview(meshes, tmp_path / "preview.png", window_size=(320, 240))
    except RuntimeError as exc:  # no OpenGL (EGL/OSMesa) on this machine
        pytest.skip(f"off-screen rendering unavailable: {exc}")
    from PIL import Image

    pixels = np.asarray(Image.open(png).convert("RGB"))
    assert pixels.shape == (240, 320, 3)
    assert (pixels < 250).any(axis=2).mean() > 0.05  # something other than the white background


def test_a_rendered_view_shows_the_patient_as_a_radiologist_expects(tmp_path: Path) -> None:
    """The report pictures the scene from the front and from the right: from the front the
    patient's right (LPS x < 0) lies on the picture's left, from the right the front (y < 0)
    lies on the picture's right, and the head (z > 0) is up in both."""
    from lvt_core.scene import ScenePart, render_view

    red = ScenePart(pv.Sphere(radius=10, center=(-40.0, -30.0, 0.0)), (1.0, 0.0, 0.0), 1.0)  # right, anterior
    blue = ScenePart(pv.Sphere(radius=10, center=(40.0, 30.0, 60.0)), (0.0, 0.0, 1.0), 1.0)  # left, posterior, higher

    def centre_of(pixels: np.ndarray, channel: int) -> tuple[float, float]:
        others = [c for c in range(3) if c != channel]
        mask = (pixels[..., channel] > 120) & (pixels[..., others].max(axis=-1) < 90)
        rows, cols = np.nonzero(mask)
        assert len(rows) > 50
        return rows.mean(), cols.mean()

    try:
        front = render_view([red, blue], "front", window_size=(200, 200))
    except RuntimeError as exc:  # no OpenGL (EGL/OSMesa) on this machine
        pytest.skip(f"off-screen rendering unavailable: {exc}")
    right = render_view([red, blue], "right", window_size=(200, 200))
    assert front.shape == right.shape == (200, 200, 3) and front.dtype == np.uint8
    (red_row, red_col), (blue_row, blue_col) = centre_of(front, 0), centre_of(front, 2)
    assert red_col < 100 < blue_col and blue_row < red_row  # the patient's right on the left; head up
    (red_row, red_col), (blue_row, blue_col) = centre_of(right, 0), centre_of(right, 2)
    assert blue_col < 100 < red_col and blue_row < red_row  # anterior on the right; head up


def test_off_screen_rendering_is_tried_in_a_child_process_first(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without an OpenGL context VTK crashes the process that renders: a web server drawing a
    report's 3D view would die. The probe runs in a child, so here it only answers False."""
    import ctypes.util

    from lvt_core import scene

    if ctypes.util.find_library("OSMesa"):
        pytest.skip("OSMesa renders without EGL on this machine")
    scene.offscreen_rendering_available.cache_clear()
    try:
        assert scene.offscreen_rendering_available() is True  # this machine's EGL
        scene.offscreen_rendering_available.cache_clear()
        monkeypatch.setenv("__EGL_VENDOR_LIBRARY_FILENAMES", "/nonexistent/egl_vendor.json")  # no EGL driver
        assert scene.offscreen_rendering_available() is False
    finally:
        scene.offscreen_rendering_available.cache_clear()
