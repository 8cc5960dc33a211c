"""The report's 3D view: the latest day's liver, vessels and tumors, seen from the front and the right.

A surgeon planning a resection, and a tumor board discussing one, ask where the tumors lie
against the vessels; the 3D page answers in the browser, and a printed report had no picture
of it. The report shows the latest day's tracked phase as the 3D page draws it (the liver
translucent, the vessels blue, each tumor in its track's colour, :mod:`app.web.scene3d`),
rendered off screen by :func:`lvt_core.scene.render_view` from the meshes the page and
``lvt export mesh`` share.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path

from app.web import key_images, queries, scene3d, slices, theme

VIEW_PX = 480
VIEW_CAPTIONS = {
    "front": "from the front (the patient's right on the left)",
    "right": "from the patient's right (the front on the right)",
}
CAPTION = ("The liver is translucent, the vessels blue and each tumor in its track's colour (untracked ones "
           "in yellow), as the 3D page draws them; a parallel view, so sizes compare across the picture. The "
           "surfaces are the model's segmentation: check them on the images.")

DISTANCE_CAPTION = ("The gap is between the tumor's voxels and the nearest vessel's (0 where they touch); a "
                    "tumor is named by its track where it has one, else by its lesion number; ⌀ is the longest "
                    "axial diameter.")


@dataclass(frozen=True)
class SceneView:
    """The latest day's scene as PNGs, one per view, or why it could not be drawn."""

    study_date: dt.date | None
    phase: str
    pictures: list[tuple[str, bytes]]
    """(caption, PNG) per view of :data:`VIEW_CAPTIONS`; empty when ``not_drawn`` says why."""
    not_drawn: str | None = None
    distances: list[dict[str, object]] = field(default_factory=list)
    """Each tumor's gap to the nearest vessel, as the 3D page's table lists it."""


def latest_scene(info: queries.FollowUp, data_dir: str | Path) -> SceneView | None:
    """The scene of the latest day's tracked series (None when no series is segmented): its
    pictures where they can be drawn, and its tumor-to-vessel gaps in any case."""
    from lvt_core import scene  # VTK: loaded for a report only

    choices = scene3d.series_choices(info.studies, info.label_maps, info.tracked_series)
    if not choices:
        return None
    chosen = choices[scene3d.default_choice(choices)]
    in_series = info.lesions[info.lesions["series_id"] == chosen.series_id]
    track_of = {int(i): int(t) for i, t in zip(in_series["lesion_index"], in_series["track"], strict=True)}
    try:
        labels = slices.read_stored(info.label_maps[chosen.series_id], data_dir)
    except (OSError, RuntimeError) as exc:  # a file gone from the store: said, not fatal
        return SceneView(chosen.study_date, chosen.phase, [], str(exc))
    distances = scene3d.lesion_rows(scene3d.lesion_facts(labels), track_of)

    def not_drawn(why: str) -> SceneView:
        return SceneView(chosen.study_date, chosen.phase, [], why, distances)

    if not scene.offscreen_rendering_available():
        return not_drawn("off-screen 3D rendering (EGL or OSMesa) is not available on this machine; the 3D "
                         "page shows the scene in the browser")
    try:
        meshes = scene.build_scene_meshes(labels, cache_dir=Path(data_dir) / "meshes").items()
    except OSError as exc:  # a mesh cache that cannot be written: said, not fatal
        return not_drawn(str(exc))
    if not meshes:
        return not_drawn("its segmentation holds no liver, vessels or tumors")
    parts = [scene.ScenePart(mesh, tuple(c / 255.0 for c in theme.hex_to_rgb(part.colour)), part.opacity)  # type: ignore[arg-type]
             for part, (_key, mesh) in zip(scene3d.structures([k for k, _ in meshes], track_of), meshes, strict=True)]
    pictures = [(caption, key_images.png_bytes(scene.render_view(parts, view, (VIEW_PX, VIEW_PX))))
                for view, caption in VIEW_CAPTIONS.items()]
    return SceneView(chosen.study_date, chosen.phase, pictures, distances=distances)
