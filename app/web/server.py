"""What ``lvt app`` serves: Streamlit's pages (:mod:`app.web.streamlit_app`) plus the one route
Streamlit cannot serve itself, the HttpOnly sign-in cookie (:mod:`app.web.session_cookie`).

``streamlit run`` finds ``app`` here and serves it with uvicorn.
"""

import streamlit as st

from app.web import session_cookie

app = st.App("streamlit_app.py", routes=session_cookie.routes())
