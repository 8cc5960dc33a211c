"""3D scene: translucent liver, vessels, tumors coloured by track, distances, STL/GLB download."""

from __future__ import annotations

import plotly.graph_objects as go
import streamlit as st

from app.settings import get_settings
from app.web import charts, data, imaging, session, theme

session.require("clinician")
st.title("3D scene")
# the address decides (Back, a shared link); the session keeps it for the sidebar's links
patient = st.query_params.get("patient") or st.session_state.get("patient")
if not patient:
    st.info("Choose a patient on the Patients page first.")
    st.page_link("views/patients.py", label="Go to patients", icon=":material/group:")
    st.stop()
info = data.followup(str(patient))
if info is None or not info.label_maps:
    st.info(f"No segmentation for patient {patient} yet.")
    st.stop()
st.query_params["patient"] = st.session_state["patient"] = info.pseudo_id

st.caption(f"Patient {theme.short_id(info.pseudo_id)} (pseudonym {info.pseudo_id}) · {theme.DISCLAIMER}")
choices = [
    (st_.study_date, se.id, se.phase)
    for st_ in info.studies
    for se in st_.series
    if se.id in info.label_maps
]
labels = [f"{d} · {p}" for d, _i, p in choices]
tracked = [i for i, c in enumerate(choices) if c[1] in set(info.lesions["series_id"])]
default = tracked[-1] if tracked else len(choices) - 1  # the latest tracked (portal) series
labels = [f"{label} (tracked phase)" if i in tracked else label for i, label in enumerate(labels)]
pick = st.selectbox("Study and phase", range(len(choices)), index=default,
                    format_func=lambda i: labels[i], key="scene_series")
_date, series_id, _phase = choices[pick]
path = info.label_maps[series_id]
data_dir = str(get_settings().resolved_data_dir)
in_series = info.lesions[info.lesions["series_id"] == series_id]
colours = {int(r["lesion_index"]): theme.track_colour(int(r["track"])) for _, r in in_series.iterrows()}
track_of = {int(r["lesion_index"]): int(r["track"]) for _, r in in_series.iterrows()}
meshes = imaging.meshes(path, data_dir, colours)

fig = go.Figure()
for m in meshes:
    name = m.name
    if name.startswith("lesion "):
        index = int(name.split()[1])
        name = f"track {track_of[index]}" if index in track_of else f"untracked lesion {index}"
    fig.add_trace(
        go.Mesh3d(x=m.vertices[:, 0], y=m.vertices[:, 1], z=m.vertices[:, 2], i=m.faces[:, 0],
                  j=m.faces[:, 1], k=m.faces[:, 2], color=m.colour, opacity=m.opacity, name=name,
                  showlegend=True, flatshading=False, hoverinfo="name")
    )
scene, slab_mm = charts.scene_axes([m.vertices for m in meshes])
fig.update_layout(height=560, margin={"l": 0, "r": 0, "t": 10, "b": 0}, legend={"orientation": "h"},
                  scene=scene, paper_bgcolor="white")
if slab_mm is not None:
    st.info(f"This series covers only {slab_mm:.0f} mm from head to foot: the scene is a slab of the liver, "
            "not the whole organ.")
left, right = st.columns([3, 1], gap="large")
with left:
    st.plotly_chart(fig, width="stretch", key="scene_chart")
with right:
    st.markdown("**Tumor to vessel distance**")
    distances = imaging.lesion_distances(path, data_dir)
    rows = [
        {"track": track_of.get(i, "–"), "distance (mm)": None if d is None else round(d, 1)}
        for i, d in sorted(distances.items())
    ]
    if rows:
        st.dataframe(rows, hide_index=True, width="stretch", key="scene_distances")
    else:
        st.caption("No tumors in this series.")
    st.caption("Gap between the tumor and the nearest vessel, in mm (0: they touch).")
    st.download_button("Download GLB", imaging.mesh_file(path, data_dir, colours, "glb"), f"{info.pseudo_id}-{series_id}.glb",
                       mime="model/gltf-binary", key="dl_glb", width="stretch")
    st.download_button("Download STL", imaging.mesh_file(path, data_dir, colours, "stl"), f"{info.pseudo_id}-{series_id}.stl",
                       mime="model/stl", key="dl_stl", width="stretch")
