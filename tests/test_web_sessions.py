"""Browser sign-ins kept in the store, so a reload does not sign a clinician out."""

from __future__ import annotations

import datetime as dt
import hashlib

from sqlalchemy import select

from app.services import auth, web_sessions
from db.engine import session_scope
from db.models import User, WebSession


def _sign_in(url: str, username: str = "dr.b", password: str = "correct-horse") -> tuple[auth.CurrentUser, str]:
    with session_scope(url) as s:
        user = auth.authenticate(s, username, password)
        assert user is not None
        return user, web_sessions.start(s, user)


def test_a_token_signs_the_same_user_in_again_until_it_ends(migrated_db: str) -> None:
    with session_scope(migrated_db) as s:
        auth.add_user(s, "dr.b", "researcher", "correct-horse")
    user, token = _sign_in(migrated_db)
    with session_scope(migrated_db) as s:
        again = web_sessions.resume(s, token)
        assert again is not None and (again.id, again.username, again.role) == (user.id, "dr.b", "researcher")
        assert again.signed_in_at == user.signed_in_at  # the 8 hours count from the sign-in
        stored = s.scalars(select(WebSession.token_sha256)).all()
        assert stored == [hashlib.sha256(token.encode()).hexdigest()] and token not in stored
        assert web_sessions.resume(s, token + "x") is None
        assert web_sessions.resume(s, "") is None and web_sessions.resume(s, None) is None
    with session_scope(migrated_db) as s:
        web_sessions.end(s, token)
    with session_scope(migrated_db) as s:
        assert web_sessions.resume(s, token) is None


def test_expiry_disabling_and_a_new_password_end_sessions(migrated_db: str) -> None:
    with session_scope(migrated_db) as s:
        auth.add_user(s, "dr.b", "clinician", "correct-horse")
    user, token = _sign_in(migrated_db)
    after_ttl = user.signed_in_at + auth.SESSION_TTL + dt.timedelta(seconds=1)
    with session_scope(migrated_db) as s:
        assert web_sessions.resume(s, token, now=after_ttl - dt.timedelta(seconds=2)) is not None
        assert web_sessions.resume(s, token, now=after_ttl) is None
        auth.set_active(s, "dr.b", False)
    with session_scope(migrated_db) as s:
        assert web_sessions.resume(s, token) is None
        auth.set_active(s, "dr.b", True)
    with session_scope(migrated_db) as s:
        assert web_sessions.resume(s, token) is None  # re-enabling does not revive old sessions
    _, second = _sign_in(migrated_db)
    with session_scope(migrated_db) as s:
        auth.set_password(s, "dr.b", "battery-staple-9")
    with session_scope(migrated_db) as s:
        assert web_sessions.resume(s, token) is None and web_sessions.resume(s, second) is None


def test_deleting_a_user_deletes_their_sessions(migrated_db: str) -> None:
    with session_scope(migrated_db) as s:
        auth.add_user(s, "dr.b", "clinician", "correct-horse")
    _sign_in(migrated_db)
    with session_scope(migrated_db) as s:
        s.delete(s.scalar(select(User).where(User.username == "dr.b")))
    with session_scope(migrated_db) as s:
        assert s.scalars(select(WebSession)).all() == []
