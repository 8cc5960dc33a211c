"""Who is signed in: the browser session's user, expiry, sign-in and sign-out.

The user lives in ``st.session_state["user"]`` as an :class:`~app.services.auth.CurrentUser`.
Streamlit forgets that on a reload or in a new tab, so a sign-in also leaves a token in a
cookie (:mod:`app.services.web_sessions`) from which the user is found again. An expired
session is cleared on the next rerun, which sends the visitor back to login.
"""

from __future__ import annotations

import streamlit as st
from streamlit.errors import StreamlitPageNotFoundError

from app.services import audit, auth, web_sessions
from app.web import data, session_cookie

USER_KEY = "user"
TOKEN_KEY = "session_token"
ENDED_TOKEN_KEY = "ended_session_token"  # the browser may send it until its cookie is cleared
COOKIE_TO_WRITE_KEY = "cookie_to_write"
REQUESTED_PAGE_KEY = "requested_page"
PATIENTS_PAGE = "views/patients.py"


def remember_requested_page(script: str, query_params: dict[str, str]) -> None:
    """Keep the page an anonymous visitor asked for (a shared link, a reload) for after sign-in."""
    st.session_state[REQUESTED_PAGE_KEY] = (script, query_params)


def open_requested_page() -> None:
    """Go to the page asked for before signing in, with its query (e.g. ``?patient=``); to
    Patients when there was none or the user's role does not reach it."""
    script, query_params = st.session_state.pop(REQUESTED_PAGE_KEY, (PATIENTS_PAGE, {}))
    try:
        st.switch_page(script, query_params=query_params)
    except StreamlitPageNotFoundError:  # not among the pages of this role
        st.switch_page(PATIENTS_PAGE)


def _resume_from_cookie() -> auth.CurrentUser | None:
    """The user the browser's cookie still signs in (after a reload, in a new tab), or None."""
    token = st.context.cookies.get(session_cookie.cookie_name())
    if not isinstance(token, str) or not token:  # no cookie (or no browser: Streamlit's AppTest)
        return None
    if token == st.session_state.get(ENDED_TOKEN_KEY):
        return None
    def resume(s):  # type: ignore[no-untyped-def]
        user = web_sessions.resume(s, token)
        if user is not None:  # a reused cookie is a sign-in too: say so in the audit log
            audit.record(s, audit.LOGIN_OK, actor=user.username, user_id=user.id, detail={"resumed": True})
        return user

    user = data.run(resume)
    if user is None:  # expired, signed out, or the account changed since
        _forget(token)
        return None
    st.session_state[USER_KEY] = user
    st.session_state[TOKEN_KEY] = token
    return user


def write_cookie() -> None:
    """Have the browser fetch the cookie a sign-in or sign-out left to write (once).

    Streamlit cannot set cookies itself, so a one-line script posts a one-time ticket to the
    server's cookie route (:mod:`app.web.session_cookie`), whose answer sets it HttpOnly, on the
    page rendered after the sign-in (a page switch would drop an element rendered before it).
    """
    token = st.session_state.pop(COOKIE_TO_WRITE_KEY, None)
    if token is None:
        return
    st.html(session_cookie.exchange_script(session_cookie.TICKETS.issue(token)), unsafe_allow_javascript=True)


def current_user() -> auth.CurrentUser | None:
    """The signed-in user, or None (also when the session just expired)."""
    user = st.session_state.get(USER_KEY)
    if not isinstance(user, auth.CurrentUser):
        return _resume_from_cookie()
    token = st.session_state.get(TOKEN_KEY)
    # checked on every rerun: a tab left open kept working (and writing) after a sign-out in
    # another tab, a disabled account or a new password
    if user.expired() or (token and data.run(web_sessions.resume, token) is None):
        _forget(token)
        return None
    return user


def _forget(token: str | None, notice: bool = True) -> None:
    """Drop the signed-in user and have the browser forget the token (with a notice on the
    login form, unless the user signed out themselves)."""
    for key in (USER_KEY, TOKEN_KEY):
        st.session_state.pop(key, None)
    st.session_state[ENDED_TOKEN_KEY] = token
    st.session_state[COOKIE_TO_WRITE_KEY] = ""
    if notice:
        st.session_state["expired_notice"] = True


def sign_in(username: str, password: str) -> str | None:
    """Try to sign in; return an error message for the form, or None on success."""
    try:
        user = data.run(auth.authenticate, username, password)
    except auth.LoginThrottled as exc:
        return str(exc).capitalize() + "."
    if user is None:
        return "Unknown user name or wrong password (or the account is disabled)."
    token = data.run(web_sessions.start, user)
    st.session_state[USER_KEY] = user
    st.session_state[TOKEN_KEY] = token
    st.session_state[COOKIE_TO_WRITE_KEY] = token
    st.session_state.pop("expired_notice", None)
    return None


def sign_out() -> None:
    """End the session (audited)."""
    user = current_user()
    token = st.session_state.get(TOKEN_KEY)
    if user is not None:
        def record(s):  # type: ignore[no-untyped-def]
            web_sessions.end(s, token)
            audit.record(s, audit.LOGOUT, actor=user.username, user_id=user.id)

        data.run(record)
    for key in list(st.session_state.keys()):
        del st.session_state[key]
    _forget(token, notice=False)


def oidc_configured() -> bool:
    """True when ``.streamlit/secrets.toml`` has an ``[auth]`` section for ``st.login``."""
    try:
        return "auth" in st.secrets
    except Exception:  # no secrets file at all
        return False


def oidc_user() -> auth.CurrentUser | None:
    """Map an OIDC identity (``st.user``) to an active local user of the same name or email."""
    info = getattr(st, "user", None)
    if info is None or not getattr(info, "is_logged_in", False):
        return None
    name = str(info.get("email") or info.get("name") or "")

    def lookup(session):  # type: ignore[no-untyped-def]
        row = auth.get_user(session, name)
        if row is None or not row.active:
            return None
        audit.record(session, audit.LOGIN_OK, actor=name, user_id=row.id, detail={"oidc": True})
        from db.models import utcnow

        return auth.CurrentUser(row.id, row.username, row.role, utcnow())

    return data.run(lookup) if name else None


def require(role: str = "clinician") -> auth.CurrentUser:
    """The signed-in user if their role allows ``role``'s pages; otherwise stop the page.

    Navigation already hides pages a role may not see; this second check keeps a page
    closed even when it is reached directly.
    """
    user = current_user()
    if user is None:
        st.warning("Please sign in.")
        st.stop()
    if not user.has_role(role):
        st.error(f"This page is for the {role} role and above.")
        st.stop()
    return user
