"""Admin: users, ingest status, batch jobs and the audit log."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from app.cli.common import UserError
from app.services import audit, auth
from app.web import data, queries, session
from lvt_core import __version__ as lvt_version

user = session.require("admin")
st.title("Admin")
users_tab, store_tab, jobs_tab, audit_tab = st.tabs(["Users", "Ingest status", "Jobs", "Audit log"])

with users_tab:
    users = pd.DataFrame([vars(u) for u in data.run(auth.list_users)])
    st.dataframe(users.drop(columns=["id"]), hide_index=True, width="stretch", key="admin_users")
    with st.form("add_user", clear_on_submit=True):
        c1, c2, c3 = st.columns(3)
        name = c1.text_input("User name")
        role = c2.selectbox("Role", list(auth.ROLE_RANK))
        password = c3.text_input("Initial password", type="password")
        if st.form_submit_button("Add user"):
            try:
                data.run(auth.add_user, name, role, password, user.username)
                st.toast(f"Added {name}.")
                st.rerun()
            except UserError as exc:
                st.error(str(exc).capitalize())
    names = users["username"].tolist() if not users.empty else []
    c1, c2 = st.columns([2, 1], vertical_alignment="bottom")
    target = c1.selectbox("Account", names, key="admin_target")
    # the button offers what the account's state allows: a disabled one could not be enabled here
    active = bool(users.loc[users["username"] == target, "active"].iloc[0]) if target else True
    if c2.button("Disable" if active else "Enable", key="admin_toggle_active") and target:
        if target == user.username:
            st.error("You cannot disable your own account.")
        else:
            data.run(auth.set_active, target, not active, user.username)
            st.toast(f"{'Disabled' if active else 'Enabled'} {target}"
                     + (": their open sessions are signed out." if active else "."))
            st.rerun()

with store_tab:
    counts = data.run(queries.store_counts)
    cols = st.columns(4)
    for i, (label, value) in enumerate(counts.items()):
        cols[i % 4].metric(label.capitalize(), value)

with jobs_tab:
    runs = data.run(queries.batch_runs)
    if runs.empty:
        st.caption("No batch runs yet.")
    else:
        st.dataframe(runs, hide_index=True, width="stretch", key="admin_runs")
    versions = data.run(queries.segmentations_by_version)
    if not versions.empty:
        st.markdown(f"**Results by LVT software version** (installed LVT: {lvt_version}; the model's own "
                    "version is shown with its name)")
        st.dataframe(versions, hide_index=True, width="stretch", key="admin_versions")
        outdated = int(versions.loc[versions["outdated"], "segmentations"].sum())
        if outdated:
            st.warning(f"{outdated} result(s) were drawn by another LVT version's pipeline: "
                       "`lvt batch --all --outdated` redraws them with the installed one.")
    stale = data.run(queries.segmentations_to_redraw)
    if not stale.empty:
        st.warning(f"{int(stale['segmentations'].sum())} result(s) were made stale by a correction and are "
                   "shown until redrawn: `lvt batch --patient P --outdated` redraws them.")
        st.dataframe(stale, hide_index=True, width="stretch", key="admin_redraw")

with audit_tab:
    events = pd.DataFrame([vars(e) for e in data.run(audit.recent, 300)])
    if not events.empty:
        events["detail"] = events["detail"].map(lambda d: "" if d is None else str(d))
        events = events.fillna({"target": "", "actor": ""})
    st.caption("Times are UTC.")
    st.dataframe(events, hide_index=True, width="stretch", key="admin_audit")
