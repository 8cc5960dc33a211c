"""Volumetry: relative deviation of liver volume per phase for every multi-phase study (Fig. 5)."""

from __future__ import annotations

import streamlit as st

from app.web import charts, data, session, theme

session.require("clinician")
st.title("Volumetry")
st.caption(
    "Total liver volume (liver + vessels + tumors) of each phase, compared with the mean of the "
    f"same-day phases. Studies beyond ±2 % are flagged for review. {theme.DISCLAIMER}"
)
st.caption(
    "On held-out phantoms whose livers agree within 0.15 %, the shipped model alone strays by up to "
    "2.5 % between phases (it draws arterial-phase livers larger; model card, Known limits): a flag "
    "just past 2 % may be the model's, so look at the arterial phase first."
)
rows, studies = data.volumetry()
if rows.empty:
    st.info("No multi-phase studies with volumetry yet.")
    st.stop()
cols = st.columns(4)
cols[0].metric("Multi-phase studies", len(studies))
cols[1].metric("Flagged studies", int(studies["flagged"].sum()))
cols[2].metric("Median |deviation|", f"{rows['deviation_pct'].abs().median():.2f} %")
cols[3].metric("Phases cut off", int(studies["phases_cut"].sum()),
               help="Phases whose scan stops inside the liver: their volume is a lower bound.")
cut = studies[studies["phases_cut"] > 0]
if not cut.empty:
    st.warning(
        f"In {len(cut)} {'study' if len(cut) == 1 else 'studies'} a phase's scan stops inside the "
        "liver (the liver runs into the scan's head or foot end): that phase's volume is a lower "
        "bound, and where the phases of a day cover different lengths of liver their deviation "
        "comes from the scans, not the model. They are marked in the table of all phases "
        "(\"liver cut at\")."
    )
st.plotly_chart(charts.volumetry_deviation(rows), width="stretch", key="volumetry_chart")
st.subheader("Flagged studies")
flagged = studies[studies["flagged"]]
if flagged.empty:
    st.success("No study is outside the ±2 % band.")
else:
    st.dataframe(flagged.round(2), hide_index=True, width="stretch", key="volumetry_flagged",
                 column_config={"mean_total_ml": "total liver (ml, mean of phases)",
                                "max_abs_deviation_pct": "largest |deviation| (%)",
                                "phases_cut": "phases cut off"})
with st.expander("All phases"):
    SHOWN = 1000
    if len(rows) > SHOWN:
        st.caption(f"Newest {SHOWN} of {len(rows)} phase rows; the CSV holds all.")
    st.dataframe(rows.head(SHOWN).round(2), hide_index=True, width="stretch",
                 column_config={"total_ml": "total liver (ml)", "functional_ml": "functional liver (ml)",
                                "deviation_pct": "deviation (%)", "liver_cut_at": "liver cut at"})
    st.download_button("Download CSV", lambda: data.table_bytes(rows.round(3), "csv"), "lvt-volumetry.csv",
                       mime="text/csv", key="vol_csv")
