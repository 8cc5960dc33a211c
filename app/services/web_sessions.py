"""Browser sign-ins that survive a reload: a random token in a cookie, its hash in the store.

Streamlit forgets its session state when the page reloads, so the sign-in is kept server-side
(:class:`db.models.WebSession`) and found again from the browser's cookie. The store keeps only
the token's SHA-256; the 8-hour limit (:data:`app.services.auth.SESSION_TTL`) counts from the
sign-in, not from the last reload. A sign-out ends that browser's session (every tab of it); a
disabled account or a changed password ends every session of the user.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from app.services.auth import SESSION_TTL, CurrentUser
from db.models import User, WebSession, utcnow

TOKEN_BYTES = 32


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def start(session: Session, user: CurrentUser) -> str:
    """Record a new sign-in and return the token for the browser's cookie."""
    token = secrets.token_urlsafe(TOKEN_BYTES)
    session.add(WebSession(token_sha256=_digest(token), user_id=user.id, signed_in_at=user.signed_in_at))
    return token


def resume(session: Session, token: str | None, now: dt.datetime | None = None) -> CurrentUser | None:
    """The user a cookie's token still signs in, or None (unknown, ended, expired, disabled)."""
    if not token:
        return None
    now = now or utcnow()
    row = session.execute(
        select(WebSession, User)
        .join(User, User.id == WebSession.user_id)
        .where(WebSession.token_sha256 == _digest(token))
    ).one_or_none()
    if row is None:
        return None
    web_session, user = row
    signed_in_at = web_session.signed_in_at
    if web_session.ended_at is not None or not user.active or now - signed_in_at > SESSION_TTL:
        return None
    return CurrentUser(user.id, user.username, user.role, signed_in_at)


def end(session: Session, token: str | None, now: dt.datetime | None = None) -> None:
    """End the sign-in a token holds (sign-out)."""
    if token:
        session.execute(
            update(WebSession)
            .where(WebSession.token_sha256 == _digest(token), WebSession.ended_at.is_(None))
            .values(ended_at=now or utcnow())
        )


def end_all(session: Session, user_id: int, now: dt.datetime | None = None) -> int:
    """End every open sign-in of a user (a password change, a disabled account); how many."""
    result = session.execute(
        update(WebSession)
        .where(WebSession.user_id == user_id, WebSession.ended_at.is_(None))
        .values(ended_at=now or utcnow())
    )
    return int(result.rowcount or 0)
