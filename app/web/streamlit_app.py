"""LVT web app entry point (``lvt app`` runs ``streamlit run`` on this file).

The page scripts live in ``views/``, not ``pages/``: Streamlit would serve a ``pages/`` folder
beside this file as pages of their own, running a page by its address without this script
(so without this navigation and its sign-in redirect).

Anonymous visitors get only the login page, whatever address they open (that page opens after
signing in). Signed-in users get the pages of their role:
clinicians the patient pages, researchers also the cohort, admins everything.
"""

from __future__ import annotations

import streamlit as st

from app.web import data, session, theme

st.set_page_config(page_title="LVT follow-up", page_icon="🩻", layout="wide")
data.ready()

PAGES = {
    "login": st.Page("views/login.py", title="Sign in", icon=":material/login:", visibility="hidden"),
    "patients": st.Page("views/patients.py", title="Patients", icon=":material/group:", default=True,
                        url_path="home"),  # served at "/"; the name is only reserved
    # the default page is served at "/" only; /patients (a bookmark, a typed address) opened a
    # blocking "Page not found" dialog
    "patients_address": st.Page("views/patients.py", title="Patients", url_path="patients", visibility="hidden"),
    "followup": st.Page("views/followup.py", title="Patient follow-up", icon=":material/timeline:"),
    "volumetry": st.Page("views/volumetry.py", title="Volumetry", icon=":material/water_drop:"),
    "scene": st.Page("views/scene.py", title="3D scene", icon=":material/view_in_ar:"),
    "cohort": st.Page("views/cohort.py", title="Cohort", icon=":material/query_stats:"),
    "admin": st.Page("views/admin.py", title="Admin", icon=":material/admin_panel_settings:"),
}
ROLE_PAGES = {
    "clinician": ["patients", "patients_address", "followup", "volumetry", "scene"],
    "researcher": ["patients", "patients_address", "followup", "volumetry", "scene", "cohort"],
    "admin": ["patients", "patients_address", "followup", "volumetry", "scene", "cohort", "admin"],
}

user = session.current_user()
if user is None and session.oidc_configured():
    user = session.oidc_user()
    if user is not None:
        st.session_state[session.USER_KEY] = user

if user is None:
    # Every address stays known, so a shared or reloaded link asks to sign in (and opens after
    # it) instead of "Page not found"; any page but the login form sends the visitor there.
    page = st.navigation(list(PAGES.values()), position="hidden")
    if page is not PAGES["login"]:
        name = next(name for name, known in PAGES.items() if known is page)  # files are named as keys
        script = "views/patients.py" if name == "patients_address" else f"views/{name}.py"
        session.remember_requested_page(script, st.query_params.to_dict())
        st.switch_page(PAGES["login"])
else:
    # the hidden login page stays registered so the browser can land on the patients page
    page = st.navigation([PAGES[name] for name in ROLE_PAGES[user.role]] + [PAGES["login"]])
    with st.sidebar:
        st.markdown(f"**{user.username}** · {user.role}")
        if st.button("Sign out", key="sign_out", icon=":material/logout:"):
            session.sign_out()
            st.switch_page(PAGES["login"])  # not this page: the next user would land on it
        st.caption(theme.DISCLAIMER)
if user is None or page is not PAGES["login"]:  # a signed-in login page switches away at once
    session.write_cookie()
page.run()
