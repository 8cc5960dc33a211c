"""The sign-in cookie, set by the server with HttpOnly so no script in the page can read it.

Streamlit talks to the browser over a websocket and cannot set a response header, so the
token used to be written by a script (``document.cookie``), where any injected script could
read it too. Now the page gets a one-time ticket instead: its script posts the ticket to
:data:`ROUTE` (under the base URL path, if any), served beside Streamlit's own routes (:mod:`app.web.server`), and that answer
sets the cookie HttpOnly and SameSite=Strict (Secure over HTTPS). A ticket lives
:data:`TICKET_TTL_S` seconds and is spent on first use, so one read from the page later is
worth nothing. An empty token clears the cookie (sign-out).
"""

from __future__ import annotations

import json
import secrets
import threading
import time

import streamlit as st
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from app.services import auth

ROUTE = "/lvt/session-cookie"
"""Under Streamlit's ``server.baseUrlPath`` when one is set (an app behind a proxy's prefix)."""
TICKET_TTL_S = 60.0


def route_path() -> str:
    """Where the route is served: :data:`ROUTE` under the app's base URL path, as Streamlit's own routes are."""
    base = str(st.get_option("server.baseUrlPath") or "").strip("/")
    return f"/{base}{ROUTE}" if base else ROUTE


def cookie_name() -> str:
    """This served app's cookie: cookies are shared by every port of a host, so each app names its own."""
    return f"lvt_session_{int(st.get_option('server.port'))}"


class TicketBook:
    """One-time tickets for tokens, in the server process (the page and the route share it)."""

    def __init__(self, ttl_s: float = TICKET_TTL_S) -> None:
        self._ttl_s = ttl_s
        self._tickets: dict[str, tuple[str, float]] = {}
        self._lock = threading.Lock()

    def issue(self, token: str) -> str:
        """A new ticket for ``token`` ("" for a sign-out)."""
        ticket = secrets.token_urlsafe(24)
        now = time.monotonic()
        with self._lock:
            self._tickets = {t: kept for t, kept in self._tickets.items() if kept[1] > now}  # drop stale ones
            self._tickets[ticket] = (token, now + self._ttl_s)
        return ticket

    def redeem(self, ticket: str) -> str | None:
        """The token of a live ticket, once; None for an unknown, spent or expired one."""
        with self._lock:
            kept = self._tickets.pop(ticket, None)
        if kept is None or kept[1] <= time.monotonic():
            return None
        return kept[0]


TICKETS = TicketBook()


async def set_cookie(request: Request) -> Response:
    """Exchange a ticket for the HttpOnly cookie (or its removal)."""
    try:
        ticket = json.loads(await request.body())["ticket"]
    except (ValueError, KeyError, TypeError):
        return JSONResponse({"error": 'the body must be JSON {"ticket": "..."}'}, status_code=400)
    token = TICKETS.redeem(str(ticket))
    if token is None:
        return JSONResponse({"error": "unknown, spent or expired ticket"}, status_code=403)
    response = Response(status_code=204, headers={"Cache-Control": "no-store"})
    name, secure = cookie_name(), request.url.scheme == "https"
    if token:
        response.set_cookie(name, token, max_age=int(auth.SESSION_TTL.total_seconds()), path="/",
                            httponly=True, samesite="strict", secure=secure)
    else:
        response.delete_cookie(name, path="/", httponly=True, samesite="strict", secure=secure)
    return response


def routes() -> list[Route]:
    """The routes the server adds to Streamlit's."""
    return [Route(route_path(), set_cookie, methods=["POST"])]


def exchange_script(ticket: str) -> str:
    """The page's script that hands the ticket to the route (same origin, so the answer's
    cookie is kept; keepalive, so a navigation right after does not cancel it). The request is
    asynchronous: a reload in the instant before its answer asks to sign in again."""
    body = json.dumps(json.dumps({"ticket": ticket}))
    return (f"<script>fetch({json.dumps(route_path())}, {{method: 'POST', credentials: 'same-origin', keepalive: true, "
            f"headers: {{'Content-Type': 'application/json'}}, body: {body}}});</script>")
