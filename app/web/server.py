"""What ``lvt app`` serves: Streamlit's pages (:mod:`app.web.streamlit_app`) plus the one route
Streamlit cannot serve itself, the HttpOnly sign-in cookie (:mod:`app.web.session_cookie`).

``streamlit run`` finds ``app`` here and serves it with uvicorn.
"""

import contextlib
import logging
import threading
from collections.abc import AsyncIterator

import streamlit as st

from app.web import session_cookie

logger = logging.getLogger(__name__)


def warm_up() -> None:
    """What a first 3D page or report would otherwise wait for: VTK's import and the off-screen
    rendering probe (a child process, :func:`lvt_core.scene.offscreen_rendering_available`);
    an admin reads on the console whether reports get their 3D view and PDF here."""
    from app.web import report_pdf
    from lvt_core import scene

    rendering = scene.offscreen_rendering_available()
    pdf_problem = report_pdf.unavailable_reason()
    logger.warning("LVT ready: reports' 3D views %s; PDF reports %s",  # on the console whatever the log level
                   "rendered off screen" if rendering else "not drawn (no EGL or OSMesa here)",
                   "available" if pdf_problem is None else f"unavailable ({pdf_problem})")


@contextlib.asynccontextmanager
async def _lifespan(_app: st.App) -> AsyncIterator[None]:
    """Warm up in the background as the server starts; serving does not wait for it."""
    threading.Thread(target=warm_up, name="lvt-warm-up", daemon=True).start()
    yield


app = st.App("streamlit_app.py", routes=session_cookie.routes(), lifespan=_lifespan)
