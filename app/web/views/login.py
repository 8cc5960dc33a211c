"""Sign-in form; the only thing an anonymous visitor sees."""

from __future__ import annotations

import streamlit as st

from app.web import session, theme

if session.current_user() is not None:  # signed in (or just signed in): the page asked for
    session.open_requested_page()

# an anonymous page has nothing in the sidebar; after a sign-out it stayed open and empty
st.html("<style>[data-testid='stSidebar'], [data-testid='stSidebarCollapsedControl'] {display: none}</style>")
_, middle, _ = st.columns([1, 1.2, 1])
with middle:
    st.title("LVT follow-up")
    st.caption("Liver, vessel and tumor segmentation and longitudinal follow-up of CT.")
    if st.session_state.pop("expired_notice", False):
        st.info("Your session ended (it expired, was signed out, or the account changed). "
                "Please sign in again.")
    with st.form("login", border=True):
        username = st.text_input("User name", key="login_user")
        password = st.text_input("Password", type="password", key="login_password")
        submitted = st.form_submit_button("Sign in", type="primary", width="stretch")
    if submitted:
        error = session.sign_in(username, password)
        if error:
            st.error(error)
        else:
            st.rerun()
    if session.oidc_configured():
        st.button("Sign in with your organisation", on_click=st.login)
    st.warning(theme.DISCLAIMER, icon=":material/info:")
