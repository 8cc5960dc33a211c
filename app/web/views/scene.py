"""3D scene: translucent liver, vessels, tumors coloured by track, distances, GLB and STL downloads.

The meshes and files are :mod:`lvt_core.scene`'s, the ones ``lvt export mesh`` writes."""

from __future__ import annotations

import plotly.graph_objects as go
import streamlit as st

from app.settings import get_settings
from app.web import charts, data, imaging, scene3d, session, theme
from lvt_core.scene import triangles

# narrow columns: the table shares the row with the scene, and the distance must stay readable
_COLUMNS = {
    "lesion": st.column_config.NumberColumn("lesion", width="small", help="the number the legend gives"),
    "track": st.column_config.NumberColumn("track", width="small"),
    "⌀ (mm)": st.column_config.NumberColumn("⌀ mm", width="small", help="longest axial diameter"),
    "distance (mm)": st.column_config.NumberColumn("gap mm", width="small",
                                                   help="gap to the nearest vessel, 0 where they touch"),
}

user = session.require("clinician")
st.title("3D scene")
# the address decides (Back, a shared link); the session keeps it for the sidebar's links
patient = st.query_params.get("patient") or st.session_state.get("patient")
if not patient:
    st.info("Choose a patient on the Patients page first.")
    st.page_link("views/patients.py", label="Go to patients", icon=":material/group:")
    st.stop()
info = data.followup(str(patient))
if info is None:
    st.error(f"Patient {theme.literal(str(patient))} is not in the database.")
    st.stop()
if st.session_state.get("audited_patient") != info.pseudo_id:  # every opening of a patient, as on follow-up
    data.audit_open_patient(user, info.pseudo_id)
    st.session_state["audited_patient"] = info.pseudo_id
if not info.label_maps:
    st.info(f"No segmentation for patient {theme.literal(info.pseudo_id)} yet.")
    st.stop()
st.query_params["patient"] = st.session_state["patient"] = info.pseudo_id

st.caption(f"Patient {theme.short_id(info.pseudo_id)} (pseudonym {info.pseudo_id}) · {theme.DISCLAIMER}")
choices = scene3d.series_choices(info.studies, info.label_maps, info.tracked_series)
pick = st.selectbox("Study and phase", range(len(choices)), index=scene3d.default_choice(choices),
                    format_func=lambda i: choices[i].label, key="scene_series")
chosen = choices[pick]
series_id = chosen.series_id
path = info.label_maps[series_id]
data_dir = str(get_settings().resolved_data_dir)
in_series = info.lesions[info.lesions["series_id"] == series_id]
track_of = {int(r["lesion_index"]): int(r["track"]) for _, r in in_series.iterrows()}
meshes = imaging.scene_meshes(path, data_dir).items()
if not meshes:  # an empty segmentation: say so, where trimesh's "Can't export empty scenes!" was shown
    st.info(f"Nothing was found in this series ({chosen.study_date}, {chosen.phase} phase): its segmentation "
            "holds no liver, vessels or tumors, so there is no 3D scene to show or download.")
    st.stop()
structures = scene3d.structures([key for key, _mesh in meshes], track_of)
arrays = [triangles(mesh) for _key, mesh in meshes]  # LPS mm points, triangle vertex indices

fig = go.Figure()
for part, (points, faces) in zip(structures, arrays, strict=True):
    fig.add_trace(
        go.Mesh3d(x=points[:, 0], y=points[:, 1], z=points[:, 2], i=faces[:, 0], j=faces[:, 1], k=faces[:, 2],
                  color=part.colour, opacity=part.opacity, name=part.legend, showlegend=True, flatshading=False,
                  hoverinfo="name")
    )
scene, slab_mm = charts.scene_axes([points for points, _faces in arrays])
fig.update_layout(height=560, margin={"l": 0, "r": 0, "t": 10, "b": 0}, legend={"orientation": "h"},
                  scene=scene, paper_bgcolor="white")
if slab_mm is not None:
    st.info(f"This series covers only {slab_mm:.0f} mm from head to foot: the scene is a slab of the liver, "
            "not the whole organ.")
tracked = scene3d.tracked_choice(choices, chosen)
if tracked is not None and tracked != chosen:
    st.caption(f"Tracks follow the {tracked.phase} phase of this study: the {chosen.phase} phase's tumors are "
               "numbered as lesions of this series, in the legend and in the table alike.")
left, right = st.columns([5, 3], gap="large")  # room for four table columns, the gap included
with left:
    st.plotly_chart(fig, width="stretch", key="scene_chart")
with right:
    st.markdown("**Tumor to vessel distance**")
    rows = scene3d.lesion_rows(imaging.lesion_facts(path, data_dir), track_of)
    if rows:
        st.dataframe(rows, hide_index=True, width="stretch", key="scene_distances", column_config=_COLUMNS)
    else:
        st.caption("No tumors in this series.")
    st.caption("gap: between the tumor and the nearest vessel, in mm (0: they touch); ⌀: the longest axial "
               "diameter.")
    names = tuple((part.key, part.file_name) for part in structures)
    stem = f"{info.pseudo_id}-{series_id}"
    st.download_button("Download GLB", imaging.glb_file(path, data_dir, names), f"{stem}.glb",
                       mime="model/gltf-binary", key="dl_glb", width="stretch",
                       help="The whole scene for a glTF viewer: metres, head up, the liver translucent.")
    st.download_button("Download STL (ZIP)", imaging.stl_zip(path, data_dir, names), f"{stem}-stl.zip",
                       mime="application/zip", key="dl_stl", width="stretch",
                       help="One STL per structure in LPS millimetres, for 3D Slicer or a printer.")
