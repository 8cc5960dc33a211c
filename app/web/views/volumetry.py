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
DAY_COLUMNS = {"study_id": "study id", "study_date": "day", "mean_total_ml": "total liver (ml, mean of phases)",
               "max_abs_deviation_pct": "largest |deviation| (%)", "phases_cut": "phases cut off",
               "phases_without_liver": "phases without liver"}
rows, studies = data.volumetry()
if rows.empty:
    st.info("No multi-phase studies with volumetry yet.")
    st.stop()
compared = rows.dropna(subset=["deviation_pct"])
cols = st.columns(4)
cols[0].metric("Multi-phase days", len(studies))
cols[1].metric("Flagged days", int(studies["flagged"].sum()))
cols[2].metric("Median |deviation|", f"{rows['deviation_pct'].abs().median():.2f} %" if len(compared) else "—")
cols[3].metric("Phases cut off", int(studies["phases_cut"].sum()),
               help="Phases whose scan stops inside the liver: their volume is a lower bound.")
unchecked = studies[studies["phases_without_liver"] > 0]
if not unchecked.empty:
    st.error(
        f"In {len(unchecked)} {'day' if len(unchecked) == 1 else 'days'} a phase's scan holds no liver "
        "(under 5 ml): it is left out of the comparison, and where fewer than two phases remain the "
        "day is not checked at all. Look at that scan (it may not cover the liver, or the model failed "
        "on it): " + "; ".join(f"{r.patient} {r.study_date}: {r.warning}" for r in unchecked.itertuples()),
        icon=":material/error:",
    )
warned = studies[studies["warning"].notna() & (studies["phases_without_liver"] == 0)]
cut = studies[studies["phases_cut"] > 0]
if not cut.empty:
    st.warning(
        f"In {len(cut)} {'study' if len(cut) == 1 else 'studies'} a phase's scan stops inside the "
        "liver (the liver runs into the scan's head or foot end or the side of its field of view): that phase's volume is a lower "
        "bound, and where the phases of a day cover different lengths of liver their deviation "
        "comes from the scans, not the model. They are marked in the table of all phases "
        "(\"liver cut at\")."
    )
st.plotly_chart(charts.volumetry_deviation(compared), width="stretch", key="volumetry_chart")
st.subheader("Flagged days")
flagged = studies[studies["flagged"]]
if flagged.empty:
    st.success("No day is outside the ±2 % band.")
else:
    st.dataframe(flagged.drop(columns=["threshold_pct"]).round(2), hide_index=True, width="stretch",
                 key="volumetry_flagged", column_config=DAY_COLUMNS)
if not warned.empty:
    with st.expander(f"Days with warnings ({len(warned)}): differing slice thickness, a liver cut off"):
        st.dataframe(warned.drop(columns=["threshold_pct"]).round(2), hide_index=True, width="stretch",
                     key="volumetry_warned", column_config=DAY_COLUMNS)
with st.expander("All phases"):
    SHOWN = 1000
    if len(rows) > SHOWN:
        st.caption(f"Newest {SHOWN} of {len(rows)} phase rows; the CSV holds all.")
    st.dataframe(rows.head(SHOWN).round(2), hide_index=True, width="stretch",
                 column_config={"total_ml": "total liver (ml)", "functional_ml": "functional liver (ml)",
                                "deviation_pct": "deviation (%)", "liver_cut_at": "liver cut at"})
    st.download_button("Download CSV", lambda: data.table_bytes(rows.round(3), "csv"), "lvt-volumetry.csv",
                       mime="text/csv", key="vol_csv")
