"""Cohort (researchers): background batch runs with live progress, tables, downloads, charts."""

from __future__ import annotations

import importlib

import streamlit as st

from app.settings import get_settings
from app.web import charts, data, queries, session, theme

user = session.require("researcher")
st.title("Cohort")
st.caption(theme.DISCLAIMER)

# ----------------------------------------------------------------- batch runs
st.subheader("Batch inference")
try:
    batch = importlib.import_module("app.services.batch")
    start = getattr(batch, "start_batch_in_background", None)
except ImportError:
    start = None
if start is None:
    st.caption("The batch service is not installed in this build; use `lvt batch` on the server.")
elif st.button("Start batch on all unsegmented series", key="start_batch", icon=":material/play_arrow:"):
    try:
        settings = get_settings()  # the deployment's workers, e.g. compose's Dask cluster
        run_id = start(batch.BatchOptions(all=True, workers=settings.workers, scheduler=settings.dask_scheduler),
                       url=data.database_url())
        st.toast(f"Batch run {run_id} started in the background.")
    except Exception as exc:  # shown to the user, the page keeps working
        st.error(f"Could not start the batch: {exc}")


@st.fragment(run_every=3)
def _progress() -> None:
    """Refreshes itself every 3 s without rerunning (or blocking) the rest of the page."""
    runs = data.run(queries.batch_runs)
    if runs.empty:
        st.caption("No batch runs yet.")
        return
    for _, r in runs.head(3).iterrows():
        total = max(int(r["total"]), 1)
        label = f"Run {r['run']} · {r['status']} · {r['done']}/{r['total']} done, {r['failed']} failed"
        st.progress(min(int(r["done"]) + int(r["failed"]), total) / total, text=label)


_progress()

# ----------------------------------------------------------------- tables
response_counts, phases = data.cohort()
st.subheader("Cohort tables")
with st.container(border=True):
    f1, f2, f3 = st.columns(3)
    # nothing chosen means no restriction: every option pre-chosen filled a narrow window with chips
    phase_filter = f1.multiselect("Phase", phases, key="co_phase", placeholder="All phases")
    categories = ["CR", "PR", "SD", "PD", "NE"]
    response_filter = f2.multiselect("Latest model response", categories, key="co_resp",
                                     placeholder="All responses")
    min_d = f3.number_input("Min. diameter (mm)", 0.0, 500.0, 0.0, 1.0, key="co_min_d")
flt = queries.LesionFilter(
    phases=None if not phase_filter or set(phase_filter) == set(phases) else tuple(phase_filter),
    min_diameter_mm=float(min_d),
    categories=None if not response_filter or set(response_filter) == set(categories) else tuple(response_filter),
)
SHOWN = 1000
table, n_rows, n_patients = data.cohort_lesions(flt, SHOWN)
table = table.assign(found_by=table["found_by"].map(theme.found_by_label))  # downloads keep the codes
st.caption(f"{n_rows} lesion measurements of {n_patients} patients")
if n_rows > SHOWN:
    st.caption(f"Showing the first {SHOWN} rows; the downloads hold all {n_rows}.")
st.dataframe(table.round(2), hide_index=True, width="stretch", key="cohort_table", height=280,
             column_config={"study_id": "study id", "study_date": "study", "track_status": "track status",
                            "diameter_mm": "longest ⌀ (mm)", "short_axis_mm": "short axis (mm)",
                            "volume_ml": "volume (ml)", "x": "x (mm)", "y": "y (mm)", "z": "z (mm)",
                            "found_by": st.column_config.TextColumn("found by", help=theme.FOUND_BY_HELP)})
d1, d2, _ = st.columns([1, 1, 3])
d1.download_button("Download CSV", lambda: data.lesion_table_bytes(flt, "csv"), "lvt-cohort-lesions.csv",
                   mime="text/csv", key="dl_csv", width="stretch")
d2.download_button("Download Parquet", lambda: data.lesion_table_bytes(flt, "parquet"),
                   "lvt-cohort-lesions.parquet", mime="application/octet-stream", key="dl_parquet",
                   width="stretch")

# ----------------------------------------------------------------- charts
st.subheader("Cohort charts")
st.caption("Every patient of the store: the filters above shape the table and its downloads only.")
if response_counts.empty:
    st.caption("No responses yet.")
else:
    st.plotly_chart(charts.response_distribution(response_counts), width="stretch", key="co_resp_chart")
pairs = data.cohort_pairs()
if pairs.empty:
    st.caption("No radiologist measurement could be linked to a model lesion yet.")
else:
    left, right = st.columns(2)
    left.plotly_chart(charts.agreement_scatter(pairs), width="stretch", key="co_scatter")
    right.plotly_chart(charts.bland_altman(pairs), width="stretch", key="co_bland")
    st.caption(f"{len(pairs)} linked measurement pairs.")
