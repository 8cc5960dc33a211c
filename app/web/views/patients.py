"""Patients: searchable list with last study, tracked lesions, current response, volumetry flag."""

from __future__ import annotations

import streamlit as st

from app.web import data, session, theme

session.require("clinician")
st.title("Patients")
st.caption(f"Results shown: {data.model_caption()} · {theme.DISCLAIMER}")

search = st.text_input(
    "Search", placeholder="Pseudonymous patient id", key="patient_search", label_visibility="collapsed"
)
rows = data.patients(search)
total = data.patient_count()
if rows.empty:
    st.info("No patients match." if search else "No patients yet. An admin can run `lvt demo` or `lvt ingest`.")
    st.stop()

st.caption(f"{len(rows)} of {total} patients, most recent study first. Select a row to open it.")
event = st.dataframe(
    rows,
    hide_index=True,
    width="stretch",
    on_select="rerun",
    selection_mode="single-row",
    key="patients_table",
    column_config={
        "last study": st.column_config.DateColumn(format="YYYY-MM-DD"),
        "tracked lesions": st.column_config.NumberColumn(help="Lesion tracks of the shown model"),
        "response (model)": st.column_config.TextColumn(help="RECIST 1.1 at the latest study"),
        "volumetry": st.column_config.TextColumn(help="Same-day phase volumes differ by more than 2 %"),
        "unlinked measurements": st.column_config.NumberColumn(
            help="Radiologist measurements linked to no model lesion: possible misses of the model "
                 "(the follow-up page names them)"),
    },
)
chosen = None
selection = getattr(event, "selection", None)
if selection and selection.get("rows"):
    chosen = rows.iloc[selection["rows"][0]]["patient"]

left, right = st.columns([3, 1], vertical_alignment="bottom")
with left:
    ids = rows["patient"].tolist()
    picked = st.selectbox("Patient", ids, index=ids.index(chosen) if chosen in ids else 0, key="patient_pick")
with right:
    open_clicked = st.button("Open follow-up", type="primary", key="open_patient", width="stretch")
if open_clicked or chosen is not None:
    st.session_state["patient"] = chosen if chosen is not None else picked
    st.switch_page("views/followup.py", query_params={"patient": st.session_state["patient"]})
