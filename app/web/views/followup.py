"""Patient follow-up: timeline, CT viewer with overlay, lesion tracks, trajectories, corrections."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from app.settings import get_settings
from app.web import (
    actions,
    analysis,
    charts,
    data,
    imaging,
    key_images,
    queries,
    report,
    report_pdf,
    report_scene,
    response_table,
    session,
    slices,
    theme,
)
from lvt_core.coverage import ends_phrase
from lvt_core.lesions import measured_axial_slice

user = session.require("clinician")
# the address decides (Back, a shared link); the session keeps it for the sidebar's links
patient = st.query_params.get("patient") or st.session_state.get("patient")
if not patient:
    st.title("Patient follow-up")
    st.info("Choose a patient on the Patients page first.")
    st.page_link("views/patients.py", label="Go to patients", icon=":material/group:")
    st.stop()

info = data.followup(str(patient))
if info is None:
    st.error(f"Patient {theme.literal(str(patient))} is not in the database.")
    st.stop()
if st.session_state.get("audited_patient") != info.pseudo_id:
    data.audit_open_patient(user, info.pseudo_id)
    st.session_state["audited_patient"] = info.pseudo_id
st.query_params["patient"] = st.session_state["patient"] = info.pseudo_id

st.title(f"Patient {theme.short_id(info.pseudo_id)}")
model_caption = data.model_caption()
st.caption(f"Pseudonym {info.pseudo_id} · results shown: {model_caption} · {theme.DISCLAIMER}")
if "ground truth" in model_caption:
    st.warning("These are the synthetic phantom's **ground-truth** label maps, not model output "
               "(no model file was found when the demo was built).", icon=":material/info:")

series_rows = pd.DataFrame(
    [
        {"study_id": st_.id, "study_date": st_.study_date, "series_id": se.id, "phase": se.phase,
         "image_path": se.image_path, "warnings": se.warnings,
         # a day's scans may be several studies; an undated study is a day of its own
         "day": str(st_.study_date) if st_.study_date else f"undated study {st_.id} (not tracked)"}
        for st_ in info.studies
        for se in st_.series
    ],
    columns=["study_id", "study_date", "series_id", "phase", "image_path", "warnings", "day"],
)
if series_rows.empty:
    st.info("This patient has no series yet.")
    st.stop()

lesions = info.lesions
min_diameter = st.sidebar.number_input(
    "Show tracks from (largest ⌀, mm)", min_value=0.0, max_value=100.0, step=1.0,
    value=float(get_settings().display_min_lesion_mm), key="fu_min_diameter",
    help="Display filter: tracks whose largest longest-diameter stays below this are hidden "
         "from the table, the trajectories and the track count. Nothing stored changes; 0 "
         "shows all. Lesions under ~5 mm are below the model's 2 mm resolution.",
)
shown_lesions = analysis.tracks_at_least(lesions, min_diameter)
badges = analysis.earlier_badges(info.pseudo_id, lesions, info.measurements, shown_lesions)
latest = info.responses[info.responses["source"] == "model"].tail(1)
metrics = st.columns(4)
metrics[0].metric("Study days", series_rows["day"].nunique(),
                  help=f"{len(info.studies)} studies: the phases of one day may be stored as separate studies.")
hidden_tracks = lesions["track"].nunique() - shown_lesions["track"].nunique() if not lesions.empty else 0
metrics[1].metric("Lesion tracks", int(shown_lesions["track"].nunique()) if not shown_lesions.empty else 0,
                  help=f"{hidden_tracks} smaller tracks hidden by the size filter" if hidden_tracks else None)
metrics[2].metric("Response (model, latest)", latest["category"].iloc[0] if not latest.empty else "–")
flagged_days = info.volumes.loc[info.volumes["flagged"].astype(bool), "study_date"].nunique() if not info.volumes.empty else 0
metrics[3].metric("Flagged volumetry days", int(flagged_days),
                  help="Days whose phases' liver volumes differ by more than 2 % (the Volumetry page lists them).")
for line in analysis.earlier_lines(badges, lesions):
    st.success(line, icon=":material/visibility:")
for line in analysis.warning_lines(info.tracking_warnings):
    st.warning(line, icon=":material/warning:")
if unlinked := analysis.unlinked_measurements_line(info.pseudo_id, lesions, info.measurements):
    st.warning(unlinked, icon=":material/search_off:")
if awaiting := response_table.awaiting_confirmation(latest):
    day = latest["study_date"].iloc[0]
    st.info(f"New at {day} and not yet counted in the model's response: {', '.join(awaiting)}. RECIST 1.1 "
            "counts a new lesion once it is unequivocal, so LVT counts one the model drew once a later study "
            f"shows it again (the progression is then dated back to {day}). Look at it on the images now.",
            icon=":material/pending:")


def _report_html() -> str:
    """The page's report, made when a download button is pressed, not on every rerun."""
    data_dir = get_settings().resolved_data_dir
    return report.followup_report(
        info, shown_lesions, analysis.earlier_lines(badges, lesions), model_caption, user.username, min_diameter,
        pictures=key_images.key_images(info, shown_lesions, data_dir), scene=report_scene.latest_scene(info, data_dir))


_REPORT_HELP = ("The page's tables, notes and key images: studies, response with its targets, lesion tracks "
                "with a picture of each lesion per day, liver volumes, measurements, warnings.")
_pdf_problem = report_pdf.unavailable_reason()  # None where PDF can be made
report_buttons = st.container(horizontal=True)
report_buttons.download_button(
    "Download report (HTML)", _report_html, f"lvt-followup-{info.pseudo_id}.html", "text/html",
    key="fu_report", icon=":material/description:", on_click=lambda: data.audit_report(user, info.pseudo_id, "html"),
    help=_REPORT_HELP + " One HTML file that opens anywhere and prints on A4.")
report_buttons.download_button(
    "Download report (PDF)", lambda: report_pdf.report_pdf(_report_html()), f"lvt-followup-{info.pseudo_id}.pdf",
    "application/pdf", key="fu_report_pdf", icon=":material/picture_as_pdf:",
    on_click=lambda: data.audit_report(user, info.pseudo_id, "pdf"), disabled=_pdf_problem is not None,
    help=_pdf_problem or _REPORT_HELP + " An A4 PDF/A document (fonts embedded) for the patient's record "
                                        "or an archive.")

st.subheader("Timeline")
st.plotly_chart(charts.timeline(series_rows), width="stretch", key="timeline_chart",
                config={"displayModeBar": False})

# ----------------------------------------------------------------- viewer and lesion table
GALLERY_PER_ROW = 5  # "Lesion across days": pictures per row, each about a viewer slice's quarter wide
# Narrow headers: the table shares the row with the viewer, and every column must stay readable.
_LESION_COLUMNS = {
    "track": st.column_config.NumberColumn("track", width="small"),
    "diameter_mm": st.column_config.NumberColumn("⌀ (mm)", width="small", help="longest axial diameter"),
    "short_axis_mm": st.column_config.NumberColumn("short (mm)", width="small",
                                                   help="short axis, perpendicular to the longest diameter"),
    "volume_ml": st.column_config.NumberColumn("ml", width="small", help="lesion volume"),
    "found_by": st.column_config.TextColumn("found by", help=theme.FOUND_BY_HELP),
    "edge": st.column_config.TextColumn("edge", width="small", help=theme.SCAN_EDGE_HELP),
}

st.subheader("Images and lesions")
dates = list(dict.fromkeys(series_rows["day"]))
viewer, table = st.columns([4, 3], gap="medium")  # the table shows every column at 1400 px
with table:
    study_date = st.selectbox("Study", dates, index=len(dates) - 1, key="fu_study")
    in_study = series_rows[series_rows["day"] == study_date]
    phase_order = sorted(in_study["phase"].tolist(), key=lambda p: (p != "portal", p))  # portal first
    phase = st.radio("Phase", phase_order, horizontal=True, key="fu_phase")
    chosen = in_study[in_study["phase"] == phase].iloc[0]
    if chosen["warnings"]:  # stored at ingest, shown nowhere before: how this scan was made
        st.caption("Ingest notes on this scan: " + "; ".join(chosen["warnings"]) + ".")
    # tracks follow one phase per day, whichever study of the day holds it
    study_lesions = shown_lesions[shown_lesions["study_id"].isin(in_study["study_id"])]
    tracked_phases = sorted(set(study_lesions["phase"]))
    if study_lesions.empty:
        st.caption("No tracked lesions on this day.")
    elif phase not in tracked_phases:  # say which phase the tracks follow
        st.caption(f"Tracks follow the {' and '.join(tracked_phases)} phase of each day; the "
                   f"table lists its lesions. The {phase} image shows its tumors without track "
                   "colours, and a jump goes to the same place in it.")
    if not study_lesions.empty:
        shown = study_lesions[["track", "diameter_mm", "short_axis_mm", "volume_ml"]].round(1)
        shown["found_by"] = study_lesions["found_by"].map(theme.found_by_label)
        if study_lesions["cut_by_scan_edge"].fillna(False).astype(bool).any():
            shown["edge"] = study_lesions["cut_by_scan_edge"].map(theme.SCAN_EDGE_LABELS).fillna("unknown")
        st.dataframe(shown, hide_index=True, width="stretch", key="fu_lesions",
                     column_config=_LESION_COLUMNS)

settings = get_settings()
data_dir = str(settings.resolved_data_dir)
label_path = info.label_maps.get(int(chosen["series_id"]))
ct = imaging.load_ct(str(chosen["image_path"]), data_dir)
labels = imaging.load_labels(label_path, data_dir) if label_path else None
nz = ct.array.shape[0]
slice_key = f"fu_slice_{chosen['series_id']}"
if slice_key not in st.session_state:  # slices are counted from 1 on screen, as in the caption
    st.session_state[slice_key] = nz // 2 + 1


lesion_key = f"fu_lesion_{chosen['series_id']}"  # per series: a jump works again after a phase switch


def _jump() -> None:
    """Move the slice slider to the selected lesion: to the slice its longest diameter is
    measured on (as the table's ⌀ and the key images), or, in another phase than the tracked
    one, to the slice of its centre."""
    track = st.session_state.get(lesion_key)
    row = study_lesions[study_lesions["track"] == track]
    if row.empty:
        return
    z = None
    if label_path and int(row["series_id"].iloc[0]) == int(chosen["series_id"]):
        components = imaging.lesion_components(label_path, data_dir)
        z = measured_axial_slice(components == int(row["lesion_index"].iloc[0]), ct.spacing)
    if z is None:
        z = ct.index_of((row["x"].iloc[0], row["y"].iloc[0], row["z"].iloc[0]))[2]
    st.session_state[slice_key] = int(min(max(z, 0), nz - 1)) + 1


with table:
    if not study_lesions.empty:
        st.selectbox("Jump to lesion (track)", study_lesions["track"].tolist(), index=None,
                     key=lesion_key, on_change=_jump, placeholder="Choose a track")
with viewer:
    controls = st.columns([2, 2])
    window_name = controls[0].selectbox("Window", list(theme.WINDOWS), key="fu_window")
    opacity = controls[1].slider("Overlay opacity", 0.0, 1.0, 0.6, 0.05, key="fu_opacity")
    z = st.slider("Slice", 1, nz, key=slice_key) - 1
    components = imaging.lesion_components(label_path, data_dir) if label_path else None
    colours = {
        int(r["lesion_index"]): theme.track_colour(int(r["track"]))
        for _, r in lesions[lesions["series_id"] == chosen["series_id"]].iterrows()
    }
    rgb = imaging.render_slice(ct, labels, z, theme.WINDOWS[window_name], opacity, colours, components)
    st.image(imaging.upscale(rgb, ct.spacing[:2]), width="stretch",
             caption=f"{study_date} · {phase} · slice {z + 1}/{nz} · "
                     f"{ct.spacing[0]:.2f} × {ct.spacing[1]:.2f} × {ct.spacing[2]:.2f} mm voxels")
    here = lesions[lesions["series_id"] == chosen["series_id"]]["track"]
    st.html(theme.overlay_legend_html(sorted({int(t) for t in here})))
    if labels is None:
        st.caption("No segmentation for this series yet.")

# ----------------------------------------------------------------- trajectories
st.subheader("Trajectories")
if shown_lesions.empty:
    st.info("No lesion tracks for this patient" + (" at this size filter." if hidden_tracks else "."))
else:
    st.plotly_chart(charts.trajectory(shown_lesions, info.measurements, info.responses, series_rows["study_date"]),
                    width="stretch", key="trajectory_chart")
    sizes = key_images.tracks_by_size(shown_lesions)
    targets = response_table.model_target_tracks(info.responses)
    # chosen, not preset: picturing reads every day's CT, which the page's first render must not wait for
    gallery_track = st.selectbox(
        "Lesion across days", sizes.index.tolist(), index=None, key="fu_gallery_track",
        format_func=lambda t: f"track {t}{' · RECIST target' if t in targets else ''} (largest ⌀ {sizes[t]:.1f} mm)",
        placeholder="Choose a track",
        help="One track's lesion on each day, side by side, as the downloaded report pictures it.")
    if gallery_track is not None:
        pictures = imaging.track_pictures(info, shown_lesions, info.pseudo_id, int(gallery_track), min_diameter,
                                          data.version(), data_dir)
        for start in range(0, len(pictures.images), GALLERY_PER_ROW):
            row = pictures.images[start:start + GALLERY_PER_ROW]
            for column, picture in zip(st.columns(GALLERY_PER_ROW), row, strict=False):
                column.image(picture.png, width="stretch", caption=" · ".join(picture.caption_lines))
        for why in pictures.unreadable:
            st.warning(f"Not pictured: {why}.", icon=":material/broken_image:")
        st.caption(key_images.CAPTION)
if not (shown_lesions.empty and info.volumes.empty):  # the liver volume, with or without lesions
    st.plotly_chart(charts.volume_trajectory(shown_lesions, info.volumes, series_rows["study_date"]), width="stretch",
                    key="volume_chart")
    cut = info.volumes[info.volumes["liver_cut_at"].fillna("") != ""] if not info.volumes.empty else info.volumes
    if not cut.empty:
        st.caption("⚠ The scan stops inside the liver in " + ", ".join(
            f"{row.study_date} {row.phase} ({ends_phrase(row.liver_cut_at)})"
            for row in cut.itertuples()) + ": the liver volume of those phases is a lower bound.")

st.subheader("Response (RECIST 1.1)")
if info.responses.empty:
    st.caption("No response yet: it needs a baseline and a follow-up day with results (the model), "
               "or measurements at two studies (the radiologist).")
else:
    st.dataframe(response_table.response_table(info.responses), hide_index=True, width="stretch",
                 key="fu_responses", column_config={
                     "targets (mm)": st.column_config.TextColumn(width="medium", help=theme.TARGETS_HELP),
                     "vs nadir": st.column_config.TextColumn(help=theme.NADIR_HELP),
                     "new lesion": st.column_config.TextColumn(width="large", help=theme.NEW_LESION_HELP),
                 })
    st.caption(theme.RECIST_RULES)
    if response_table.any_unrecorded(info.responses):
        st.caption(response_table.REFRESH_HINT)

with st.expander("Radiologist measurements"):
    if info.measurements.empty:
        st.caption("None imported.")
    else:
        shown = info.measurements.drop(columns=["location_mm", "study_id"]).copy()
        shown["slice_index"] = pd.array(slices.reader_slice_numbers(info, get_settings().resolved_data_dir),
                                        dtype="Int64")  # the viewer's numbering: from 1, foot to head
        shown["linked track"] = pd.array(
            analysis.measurement_tracks(info.pseudo_id, lesions, info.measurements), dtype="Int64")
        st.dataframe(shown, hide_index=True, width="stretch", column_config={
            "study_date": st.column_config.DateColumn("study"),
            "diameter_mm": st.column_config.NumberColumn("⌀ (mm)", help="longest axial diameter"),
            "short_axis_mm": st.column_config.NumberColumn("short (mm)", help="short axis"),
            "slice_index": st.column_config.NumberColumn(
                "slice", help="the reported slice as the viewer numbers it in the tracked phase (from 1, foot "
                              "to head; the reader's slice_index counts the stored slices from 0)"),
            "linked track": st.column_config.NumberColumn(
                help="the model's track this measurement was linked to; empty where none fits"),
        })

# ----------------------------------------------------------------- corrections
with st.expander("Correct the tracking"):
    if lesions.empty:
        st.caption("Nothing to correct.")
    else:
        options = {
            int(r["lesion_id"]): f"{r['study_date']} · track {r['track']} · {r['diameter_mm']:.1f} mm"
            for _, r in lesions.iterrows()
        }
        lesion_id = st.selectbox("Lesion", list(options), format_func=options.get, key="fix_lesion")
        tracks = data.run(queries.track_choices, info.pseudo_id, info.model_id)
        own_track = lesions.loc[lesions["lesion_id"] == lesion_id, "track_id"].iloc[0]
        numbers = {tid: f"track {num}" for tid, num in tracks if tid != own_track}  # a move, not a no-op
        left, right = st.columns(2)
        with left:
            target = st.selectbox("Relink to", list(numbers), format_func=numbers.get, key="fix_target",
                                  placeholder="no other track")
            if st.button("Relink", key="fix_relink", disabled=target is None):
                data.run(actions.relink, user, lesion_id, target)
                data.clear()
                st.toast("Saved: the lesion now belongs to the chosen track.")
                st.rerun()
        with right:
            st.write("")
            if st.button("Mark as not a lesion", key="fix_not_lesion"):
                data.run(actions.mark_not_lesion, user, lesion_id)
                data.clear()
                st.toast("Saved: the lesion is excluded from tracking and response.")
                st.rerun()
        st.caption("Corrections are saved with your name and kept when the analysis is re-run.")
