"""The sign-in cookie is set by the server, HttpOnly, in exchange for a one-time ticket.

The token used to be written by a page script (``document.cookie``), where any script injected
into the page could read it. These drive the cookie route as the ASGI server does.
"""

from __future__ import annotations

import asyncio
import json

import streamlit as st
from starlette.applications import Starlette

from app.services import auth
from app.web import session_cookie


def _post(body: bytes, scheme: str = "http") -> tuple[int, dict[str, str], bytes]:
    """POST ``body`` to the cookie route of an app serving only it; status, headers, body."""
    app = Starlette(routes=session_cookie.routes())
    sent: list[dict] = []

    async def receive() -> dict:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": session_cookie.ROUTE, "raw_path": session_cookie.ROUTE.encode(),
             "scheme": scheme, "query_string": b"", "root_path": "", "http_version": "1.1",
             "headers": [(b"host", b"127.0.0.1"), (b"content-type", b"application/json")],
             "server": ("127.0.0.1", 443 if scheme == "https" else 80), "client": ("127.0.0.1", 50000)}
    asyncio.run(app(scope, receive, send))
    start = next(m for m in sent if m["type"] == "http.response.start")
    headers = {k.decode().lower(): v.decode() for k, v in start["headers"]}
    return start["status"], headers, b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")


def _ticket_body(ticket: str) -> bytes:
    return json.dumps({"ticket": ticket}).encode()


def test_a_ticket_sets_the_token_httponly_once() -> None:
    ticket = session_cookie.TICKETS.issue("the-token")
    status, headers, _ = _post(_ticket_body(ticket))
    assert status == 204 and headers["cache-control"] == "no-store"
    cookie = headers["set-cookie"]
    name = f"lvt_session_{st.get_option('server.port')}"  # each served port names its own
    assert cookie.startswith(f"{name}=the-token;")
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/" in cookie
    assert f"Max-Age={int(auth.SESSION_TTL.total_seconds())}" in cookie and "Secure" not in cookie
    again, headers, body = _post(_ticket_body(ticket))  # spent: a copy read from the page is worth nothing
    assert again == 403 and "set-cookie" not in headers and b"spent" in body


def test_over_https_the_cookie_is_secure_and_a_sign_out_ticket_clears_it() -> None:
    _, headers, _ = _post(_ticket_body(session_cookie.TICKETS.issue("t")), scheme="https")
    assert "Secure" in headers["set-cookie"]
    status, headers, _ = _post(_ticket_body(session_cookie.TICKETS.issue("")))
    assert status == 204 and "Max-Age=0" in headers["set-cookie"] and "HttpOnly" in headers["set-cookie"]


def test_unknown_expired_and_malformed_tickets_are_refused() -> None:
    assert _post(_ticket_body("never-issued"))[0] == 403
    stale = session_cookie.TicketBook(ttl_s=0.0)
    assert stale.redeem(stale.issue("t")) is None
    status, headers, body = _post(b"ticket=abc")
    assert status == 400 and "set-cookie" not in headers and b"JSON" in body
    assert _post(b'{"no": "ticket"}')[0] == 400


def test_the_page_script_posts_its_ticket_to_the_route_and_holds_no_token() -> None:
    ticket = session_cookie.TICKETS.issue("secret-token")
    script = session_cookie.exchange_script(ticket)
    assert session_cookie.ROUTE in script and ticket in script and "secret-token" not in script
    assert "document.cookie" not in script


def test_behind_a_base_url_path_the_route_and_the_script_take_its_prefix() -> None:
    """An app served under a proxy's prefix (``server.baseUrlPath``) has Streamlit's routes there."""
    from streamlit import config

    config.set_option("server.baseUrlPath", "/lvt-app/")
    try:
        assert [r.path for r in session_cookie.routes()] == ["/lvt-app/lvt/session-cookie"]
        assert '"/lvt-app/lvt/session-cookie"' in session_cookie.exchange_script("t")
    finally:
        config.set_option("server.baseUrlPath", "")
    assert session_cookie.route_path() == session_cookie.ROUTE

