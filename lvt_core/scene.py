"""3D scenes of a label map: surface meshes of liver, vessels and each tumor (paper Figure 4).

Each structure is cut out of the label map (cropped to its bounding box), contoured with VTK's
flying edges, smoothed with a windowed-sinc filter (Taubin) and decimated. Contouring a
voxel mask at 0.5 cuts its corners, and smoothing a mesh only a few voxels across shrinks it
further: a 6 mm lesion's mesh held 15 % less than its voxels. So the iso level is chosen, by
bisection, for the finished mesh to enclose the voxels' volume (within
``volume_tolerance``); a mesh and the lesion table then give the same volume. Points are in physical millimetres (LPS, as SimpleITK reports them), so meshes line
up with the CT in 3D Slicer. Meshes are cached on disk by a hash of the label map, its geometry
and the meshing parameters, in a folder the caller passes in.

Export writes one file per structure as STL, OBJ and VTP (Slicer loads these directly) and one
binary glTF scene (``scene.glb``) with the UI colours, written with trimesh so no OpenGL context
is needed. Rendering a preview needs one: it runs off screen (EGL by default).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from lvt_core.atomic_files import published_folder
from lvt_core.labels import LIVER, TUMOR, VESSEL
from lvt_core.lesions import component_array, index_to_physical_matrix

os.environ.setdefault("VTK_DEFAULT_OPENGL_WINDOW", "vtkEGLRenderWindow")

import pyvista as pv

pv.OFF_SCREEN = True

COLOURS: dict[str, tuple[float, float, float, float]] = {
    "liver": (0.65, 0.28, 0.22, 0.35),
    "vessels": (0.20, 0.40, 0.90, 1.0),
    "tumor": (0.85, 0.85, 0.15, 1.0),
}
SUPPORTED_FORMATS = ("stl", "obj", "vtp", "glb")
_CACHE_VERSION = 2


@dataclass(frozen=True)
class MeshingConfig:
    """Smoothing iterations, pass band, decimation target reduction, tumor minimum size, and
    how closely a mesh's volume must match its voxels' (0 contours at 0.5 as is)."""

    smoothing_iterations: int = 20
    pass_band: float = 0.1
    decimation: float = 0.5
    min_tumor_voxels: int = 10
    volume_tolerance: float = 0.01


@dataclass
class SceneMeshes:
    """Meshes of one label map; ``tumors`` is keyed by lesion id (``Lesion.id``)."""

    liver: pv.PolyData | None
    vessels: pv.PolyData | None
    tumors: dict[int, pv.PolyData] = field(default_factory=dict)

    def items(self) -> list[tuple[str, pv.PolyData]]:
        """``(name, mesh)`` pairs: ``liver``, ``vessels``, ``tumor_<id>`` (empty ones left out)."""
        out: list[tuple[str, pv.PolyData]] = []
        if self.liver is not None:
            out.append(("liver", self.liver))
        if self.vessels is not None:
            out.append(("vessels", self.vessels))
        out.extend((f"tumor_{i}", mesh) for i, mesh in sorted(self.tumors.items()))
        return out


def mask_to_mesh(
    mask: np.ndarray, reference: sitk.Image, config: MeshingConfig | None = None
) -> pv.PolyData | None:
    """Smoothed, decimated surface of a ``z, y, x`` boolean mask on ``reference``'s grid,
    enclosing the mask's volume (see the module docstring)."""
    config = config or MeshingConfig()
    if not mask.any():
        return None
    nz = [np.nonzero(mask.any(axis=axes))[0] for axes in ((1, 2), (0, 2), (0, 1))]
    crop = mask[nz[0][0] : nz[0][-1] + 1, nz[1][0] : nz[1][-1] + 1, nz[2][0] : nz[2][-1] + 1]
    start = [int(n[0]) - 1 for n in nz]  # index of the padded crop's first voxel (z, y, x)
    crop = np.pad(crop.astype(np.float32), 1)
    grid = pv.ImageData(dimensions=crop.shape[::-1], spacing=(1.0, 1.0, 1.0), origin=(0.0, 0.0, 0.0))
    grid.point_data["mask"] = crop.ravel(order="C")
    matrix, origin = index_to_physical_matrix(reference)
    offset = np.array(start[::-1], dtype=float)

    def smoothed_at(level: float) -> pv.PolyData | None:
        surface = grid.contour([level], scalars="mask", method="flying_edges")
        if surface.n_points == 0:
            return None
        # Index space (x, y, z) -> physical (LPS mm), so smoothing sees true proportions.
        surface.points = (surface.points + offset) @ matrix.T + origin
        surface = surface.triangulate()
        if config.smoothing_iterations > 0:
            surface = surface.smooth_taubin(n_iter=config.smoothing_iterations, pass_band=config.pass_band)
        return surface

    def decimated(surface: pv.PolyData) -> pv.PolyData:
        if config.decimation > 0 and surface.n_cells > 200:
            return surface.decimate(config.decimation)
        return surface

    def surface_at(level: float) -> pv.PolyData | None:
        surface = smoothed_at(level)
        return None if surface is None else decimated(surface)

    surface = smoothed_at(0.5)
    if surface is None:
        return None
    if config.volume_tolerance > 0:
        # Decimation took 70 % of the time when every bisection step decimated: the level is
        # bisected on the smoothed surface, and the one chosen decimated once, keeping its volume
        voxel_mm3 = float(np.prod(reference.GetSpacing())) * int(np.count_nonzero(mask))
        surface = decimated(_volume_matched(smoothed_at, surface, voxel_mm3, config.volume_tolerance))
        if abs(surface.volume - voxel_mm3) > config.volume_tolerance * voxel_mm3:  # rare: bisect as before
            surface = _volume_matched(surface_at, surface, voxel_mm3, config.volume_tolerance)
    else:
        surface = decimated(surface)
    return surface.compute_normals(auto_orient_normals=True, split_vertices=False)


def _volume_matched(
    surface_at: Callable[[float], pv.PolyData | None],
    surface: pv.PolyData,
    target_mm3: float,
    tolerance: float,
    steps: int = 12,
) -> pv.PolyData:
    """The surface whose enclosed volume is nearest ``target_mm3``, by bisecting the iso level
    (a lower level moves every vertex outwards, so the volume falls as the level rises)."""
    best, best_error = surface, abs(surface.volume - target_mm3) / target_mm3
    low, high = (0.02, 0.5) if surface.volume < target_mm3 else (0.5, 0.98)
    for _ in range(steps):
        if best_error <= tolerance:
            break
        level = (low + high) / 2
        candidate = surface_at(level)
        if candidate is None:
            high = level
            continue
        error = abs(candidate.volume - target_mm3) / target_mm3
        if error < best_error:
            best, best_error = candidate, error
        if candidate.volume < target_mm3:
            high = level
        else:
            low = level
    return best


def _cache_key(labels: np.ndarray, components: np.ndarray, reference: sitk.Image, config: MeshingConfig) -> str:
    digest = hashlib.sha256()
    digest.update(np.ascontiguousarray(labels).tobytes())
    digest.update(np.ascontiguousarray(components).tobytes())
    geometry = (labels.shape, reference.GetSpacing(), reference.GetOrigin(), reference.GetDirection())
    digest.update(repr((geometry, config, _CACHE_VERSION)).encode())
    return digest.hexdigest()[:32]


def build_scene_meshes(
    labels: sitk.Image,
    component_map: sitk.Image | None = None,
    cache_dir: Path | None = None,
    config: MeshingConfig | None = None,
) -> SceneMeshes:
    """Meshes of the liver (labels 1-3), vessels (2) and each tumor, cached under ``cache_dir``.

    Tumor ids come from ``component_map`` when given, else from 26-connected components with
    ``config.min_tumor_voxels`` (the same ids :func:`lvt_core.lesions.extract_lesions` gives).
    """
    config = config or MeshingConfig()
    array = sitk.GetArrayFromImage(labels)
    components = (
        sitk.GetArrayFromImage(component_map).astype(np.uint32)
        if component_map is not None
        else component_array(labels, config.min_tumor_voxels)
    )
    folder = None
    if cache_dir is not None:
        folder = Path(cache_dir) / _cache_key(array, components, labels, config)
        cached = _load_cached(folder)
        if cached is not None:
            return cached
    liver = mask_to_mesh(np.isin(array, (LIVER, VESSEL, TUMOR)), labels, config)
    vessels = mask_to_mesh(array == VESSEL, labels, config)
    tumors: dict[int, pv.PolyData] = {}
    for lesion_id in (int(i) for i in np.unique(components) if i > 0):
        mesh = mask_to_mesh(components == lesion_id, labels, config)
        if mesh is not None:
            tumors[lesion_id] = mesh
    meshes = SceneMeshes(liver, vessels, tumors)
    if folder is not None:
        _save_cached(folder, meshes)
    return meshes


def _save_cached(folder: Path, meshes: SceneMeshes) -> None:
    with published_folder(folder) as tmp:
        for name, mesh in meshes.items():
            mesh.save(str(tmp / f"{name}.vtp"))
        manifest = {"names": [name for name, _ in meshes.items()]}
        (tmp / "manifest.json").write_text(json.dumps(manifest))


def _load_cached(folder: Path) -> SceneMeshes | None:
    manifest = folder / "manifest.json"
    if not manifest.is_file():
        return None
    names = json.loads(manifest.read_text(encoding="utf-8"))["names"]
    loaded = {name: pv.read(str(folder / f"{name}.vtp")) for name in names}
    tumors = {int(n.split("_", 1)[1]): m for n, m in loaded.items() if n.startswith("tumor_")}
    return SceneMeshes(loaded.get("liver"), loaded.get("vessels"), tumors)


def min_tumor_vessel_distance_mm(meshes: SceneMeshes) -> dict[int, float | None]:
    """Smallest surface distance from each tumor to the vessel tree, in mm (0 when they touch).

    Distances are from the tumor's mesh vertices to the vessel surface (exact point-to-triangle),
    signed by VTK's implicit distance so a tumor reaching into a vessel reports 0.
    """
    if meshes.vessels is None:
        return {i: None for i in meshes.tumors}
    import vtk

    implicit = vtk.vtkImplicitPolyDataDistance()
    implicit.SetInput(meshes.vessels)
    out: dict[int, float | None] = {}
    for lesion_id, tumor in meshes.tumors.items():
        distances = np.array([implicit.EvaluateFunction(p) for p in np.asarray(tumor.points)])
        out[lesion_id] = float(max(distances.min(), 0.0))
    return out


def _rgba(name: str) -> tuple[float, float, float, float]:
    return COLOURS["tumor" if name.startswith("tumor_") else name]


def scene_file_names(names: Sequence[str], formats: Sequence[str] = SUPPORTED_FORMATS) -> set[str]:
    """The files :func:`export_scene` writes for structures ``names``."""
    files = {f"{name}.{fmt}" for name in names for fmt in ("stl", "obj", "vtp") if fmt in formats}
    return files | ({"scene.glb"} if "glb" in formats else set())


def export_scene(
    meshes: SceneMeshes, out_dir: Path, formats: Sequence[str] = SUPPORTED_FORMATS
) -> list[Path]:
    """Write each structure as STL/OBJ/VTP and the whole scene as ``scene.glb``; return paths."""
    return write_structures(meshes.items(), out_dir, formats)


def write_structures(
    named_meshes: Sequence[tuple[str, pv.PolyData]], out_dir: Path, formats: Sequence[str] = SUPPORTED_FORMATS
) -> list[Path]:
    """:func:`export_scene` for meshes under names of the caller's choosing (the web app names
    tumors by track). Refuses, before creating ``out_dir``, formats it does not know and a scene
    with nothing in it (no empty folder is left behind)."""
    unknown = sorted(set(formats) - set(SUPPORTED_FORMATS))
    if unknown:
        raise ValueError(f"unknown mesh format(s) {unknown}; choose from {list(SUPPORTED_FORMATS)}")
    _require_structures(named_meshes)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for name, mesh in named_meshes:
        for fmt in ("stl", "obj", "vtp"):
            if fmt in formats:
                path = out_dir / f"{name}.{fmt}"
                mesh.save(str(path))
                written.append(path)
    if "glb" in formats:
        written.append(write_glb(named_meshes, out_dir / "scene.glb"))
    return written


EMPTY_SCENE = "the label map holds no liver, vessels or tumors: there is no 3D scene to write"


def _require_structures(named_meshes: Sequence[tuple[str, pv.PolyData]]) -> None:
    """A plain error for an empty scene, where trimesh said only "Can't export empty scenes!"."""
    if not named_meshes:
        raise ValueError(EMPTY_SCENE)


def triangles(mesh: pv.PolyData) -> tuple[np.ndarray, np.ndarray]:
    """``(points, faces)`` of a mesh as arrays: LPS mm ``(n, 3)`` and vertex indices ``(m, 3)``."""
    tri = mesh.triangulate()
    return np.asarray(tri.points, dtype=float), np.asarray(tri.faces).reshape(-1, 4)[:, 1:]


LPS_MM_TO_GLTF = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]]) / 1000.0
"""Patient LPS millimetres to glTF metres, +Y up (see :func:`glb_bytes`)."""


def write_glb(named_meshes: Sequence[tuple[str, pv.PolyData]], path: Path) -> Path:
    """Write :func:`glb_bytes` of the meshes to ``path``."""
    data = glb_bytes(named_meshes)
    path = Path(path)
    path.write_bytes(data)
    return path


def glb_bytes(named_meshes: Sequence[tuple[str, pv.PolyData]]) -> bytes:
    """A binary glTF scene, one translucent or opaque material per structure.

    glTF's units are metres, +Y is up and an asset faces +Z with its right toward -X, so the
    patient's LPS millimetres (x, y, z) become (x, z, -y) / 1000 (a rotation, no mirror): a
    viewer shows the patient upright, at true size, facing the viewer. STL/OBJ/VTP keep LPS
    millimetres for 3D Slicer.
    Each structure gets a PBR material whose alpha (the liver's 0.35) a viewer honours
    (``alphaMode`` BLEND); vertex colours alone were drawn opaque, hiding what lies inside.
    Bytes, so the web app serves the very file ``lvt export mesh`` writes.
    """
    import trimesh

    _require_structures(named_meshes)
    scene = trimesh.Scene()
    for name, mesh in named_meshes:
        points, faces = triangles(mesh)
        rgba = _rgba(name)
        material = trimesh.visual.material.PBRMaterial(
            name=name, baseColorFactor=[float(v) for v in rgba], metallicFactor=0.0, roughnessFactor=0.8,
            alphaMode="BLEND" if rgba[3] < 1.0 else "OPAQUE", doubleSided=rgba[3] < 1.0,
        )
        tm = trimesh.Trimesh(vertices=points @ LPS_MM_TO_GLTF.T, faces=faces, process=False,
                             visual=trimesh.visual.TextureVisuals(material=material))
        scene.add_geometry(tm, node_name=name, geom_name=name)
    return scene.export(file_type="glb")


def render_preview(
    meshes: SceneMeshes, png_path: Path, window_size: tuple[int, int] = (900, 700)
) -> Path:
    """Render the scene from the front (:func:`render_view`) to a PNG, in the export's colours
    (liver translucent, vessels blue, tumors yellow)."""
    from PIL import Image

    parts = [ScenePart(mesh, _rgba(name)[:3], _rgba(name)[3]) for name, mesh in meshes.items()]
    Image.fromarray(render_view(parts, "front", window_size)).save(png_path)
    return Path(png_path)


VIEWS: dict[str, tuple[tuple[float, float, float], tuple[float, float, float]]] = {
    "front": ((0.0, -1.0, 0.0), (0.0, 0.0, 1.0)),
    "right": ((-1.0, 0.0, 0.0), (0.0, 0.0, 1.0)),
}
"""Where the camera stands from the scene's centre, and which way is up, in LPS: ``front``
from anterior (the patient's right on the picture's left, as a coronal image shows it),
``right`` from the patient's right (anterior on the picture's right); head up in both."""

_PROBE = ("import pyvista as pv; plotter = pv.Plotter(off_screen=True, window_size=[16, 16]); "
          "plotter.add_mesh(pv.Sphere()); plotter.screenshot(return_img=True); plotter.close()")


@functools.cache
def offscreen_rendering_available() -> bool:
    """Whether VTK can render off screen here, tried once per process in a child process:
    without an OpenGL context (no EGL driver, no OSMesa) VTK does not raise, it crashes the
    process, and a web server must not die because one report asked for a picture."""
    try:
        probe = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, timeout=120, env=os.environ.copy())
    except (OSError, subprocess.TimeoutExpired):
        return False
    return probe.returncode == 0


_RENDER_LOCK = threading.Lock()
"""VTK's render windows are not thread-safe, and a web server renders from several threads."""


@dataclass(frozen=True)
class ScenePart:
    """A mesh and how to draw it."""

    mesh: pv.PolyData
    rgb: tuple[float, float, float]
    opacity: float


def render_view(parts: Sequence[ScenePart], view: str, window_size: tuple[int, int] = (600, 600)) -> np.ndarray:
    """The parts seen from ``view`` (:data:`VIEWS`) off screen, as RGB ``uint8`` rows × columns:
    a parallel projection, so sizes compare across the picture. Depth peeling drew no
    translucent surface at all under EGL, so VTK's default blending draws a faint part (the
    liver) with its back faces culled, which leaves fewer crossing streaks. Call it only where
    :func:`offscreen_rendering_available`: without OpenGL, VTK crashes the process."""
    direction, up = VIEWS[view]
    with _RENDER_LOCK:
        plotter = pv.Plotter(off_screen=True, window_size=list(window_size))
        try:
            plotter.set_background("white")
            for part in parts:
                plotter.add_mesh(part.mesh, color=part.rgb, opacity=part.opacity, smooth_shading=True,
                                 culling="back" if part.opacity < 0.5 else None)
            plotter.enable_parallel_projection()
            centre = np.array(plotter.center)
            plotter.camera_position = [tuple(centre + np.array(direction)), tuple(centre), up]
            plotter.reset_camera()  # fits the scene's bounding sphere, keeping the direction
            plotter.camera.zoom(1.25)  # to its box: the sphere leaves a wide margin
            return np.asarray(plotter.screenshot(return_img=True))[..., :3].copy()
        finally:
            plotter.close()
