"""LVT web app entry point (``lvt app`` runs ``streamlit run`` on this file).

Anonymous visitors get only the login page. Signed-in users get the pages of their role:
clinicians the patient pages, researchers also the cohort, admins everything.
"""

from __future__ import annotations

import streamlit as st

from app.web import data, session, theme

st.set_page_config(page_title="LVT follow-up", page_icon="🩻", layout="wide")
data.ready()

PAGES = {
    "login": st.Page("pages/login.py", title="Sign in", icon=":material/login:", visibility="hidden"),
    "patients": st.Page("pages/patients.py", title="Patients", icon=":material/group:", default=True),
    "followup": st.Page("pages/followup.py", title="Patient follow-up", icon=":material/timeline:"),
    "volumetry": st.Page("pages/volumetry.py", title="Volumetry", icon=":material/water_drop:"),
    "scene": st.Page("pages/scene.py", title="3D scene", icon=":material/view_in_ar:"),
    "cohort": st.Page("pages/cohort.py", title="Cohort", icon=":material/query_stats:"),
    "admin": st.Page("pages/admin.py", title="Admin", icon=":material/admin_panel_settings:"),
}
ROLE_PAGES = {
    "clinician": ["patients", "followup", "volumetry", "scene"],
    "researcher": ["patients", "followup", "volumetry", "scene", "cohort"],
    "admin": ["patients", "followup", "volumetry", "scene", "cohort", "admin"],
}

user = session.current_user()
if user is None and session.oidc_configured():
    user = session.oidc_user()
    if user is not None:
        st.session_state[session.USER_KEY] = user

if user is None:
    page = st.navigation([PAGES["login"]], position="hidden")
else:
    # the hidden login page stays registered so the browser can land on the patients page
    page = st.navigation([PAGES[name] for name in ROLE_PAGES[user.role]] + [PAGES["login"]])
    with st.sidebar:
        st.markdown(f"**{user.username}** · {user.role}")
        if st.button("Sign out", key="sign_out", icon=":material/logout:"):
            session.sign_out()
            st.rerun()
        st.caption(theme.DISCLAIMER)
page.run()
