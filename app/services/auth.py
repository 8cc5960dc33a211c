"""Users, argon2 password hashes, throttled sign-in, session expiry and role gates.

Throttling counts failed sign-ins in the audit log (not in process memory), so it holds
across app restarts and several app processes sharing one database.
"""

from __future__ import annotations

import datetime as dt
import re
import unicodedata
from dataclasses import dataclass

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.cli.common import UserError
from app.services import audit
from db.models import ROLES, User, utcnow

MIN_PASSWORD_LENGTH = 8
MAX_FAILED_LOGINS = 5
"""Failed sign-ins per user name allowed within :data:`THROTTLE_WINDOW`."""
THROTTLE_WINDOW = dt.timedelta(minutes=15)
SESSION_TTL = dt.timedelta(hours=8)
"""A signed-in browser session ends after this long, whatever the activity."""
ROLE_RANK = {"clinician": 0, "researcher": 1, "admin": 2}

_hasher = PasswordHasher()

USERNAME_PATTERN = re.compile(r"[\w.@-]{1,64}")
COMMON_PASSWORDS = frozenset(
    [
        "password",
        "password1",
        "password12",
        "password123",
        "passw0rd",
        "p@ssw0rd",
        "p@ssword",
        "12345678",
        "123456789",
        "1234567890",
        "87654321",
        "qwertyui",
        "qwertyuiop",
        "qwerty123",
        "1q2w3e4r",
        "1qaz2wsx",
        "zaq12wsx",
        "iloveyou",
        "sunshine",
        "princess",
        "football",
        "baseball",
        "welcome1",
        "welcome123",
        "letmein1",
        "trustno1",
        "superman",
        "starwars",
        "dragon123",
        "monkey123",
        "abc12345",
        "abcd1234",
        "asdfghjk",
        "asdfasdf",
        "changeme",
        "changeme1",
        "administrator",
        "admin123",
        "admin1234",
        "clinician",
        "researcher",
        "hospital",
        "doctor123",
        "lvt-admin",
    ]
)
"""Passwords that top every leaked-password list, and this product's own words."""


@dataclass(frozen=True)
class CurrentUser:
    """The signed-in user as the app keeps it in the browser session."""

    id: int
    username: str
    role: str
    signed_in_at: dt.datetime

    def expired(self, now: dt.datetime | None = None) -> bool:
        """True once the session is older than :data:`SESSION_TTL`."""
        return (now or utcnow()) - self.signed_in_at > SESSION_TTL

    def has_role(self, needed: str) -> bool:
        """Roles are ordered: an admin can do what a researcher can, who can do what a clinician can."""
        return ROLE_RANK[self.role] >= ROLE_RANK[needed]


@dataclass(frozen=True)
class UserInfo:
    """A user row for listings (never carries the hash)."""

    id: int
    username: str
    role: str
    active: bool
    created_at: dt.datetime
    last_login: dt.datetime | None


class LoginThrottled(UserError):
    """Too many failed sign-ins for this user name; wait and retry."""


def hash_password(password: str) -> str:
    """An argon2id hash of ``password`` (the only form a password is stored in)."""
    return _hasher.hash(password)


def _check_password(password: str, username: str = "") -> None:
    """NIST SP 800-63B's rules: long enough, not a well-known or trivial one; no composition rules."""
    try:
        password.encode("utf-8")
    except UnicodeEncodeError:
        raise UserError("the password is not valid UTF-8 text") from None
    if len(password.strip()) < MIN_PASSWORD_LENGTH:
        raise UserError(
            f"password too short: use at least {MIN_PASSWORD_LENGTH} characters besides spaces"
        )
    folded = password.strip().lower()
    if (
        folded in COMMON_PASSWORDS
        or len(set(folded)) <= 2
        or folded in "0123456789012345678901234567890"
        or folded in "abcdefghijklmnopqrstuvwxyz"
        or folded == username.strip().lower()
    ):
        raise UserError(
            "password too easy to guess (a common one, a run of one or two characters, "
            "a plain sequence, or the user name): choose another"
        )


def _check_username(username: str) -> str:
    """The name stripped; letters, digits and ``. _ - @`` only, so names cannot pass for paths."""
    username = username.strip()
    if not username:
        raise UserError("user name is empty")
    if not USERNAME_PATTERN.fullmatch(username):
        raise UserError(
            f"user name {username!r}: use letters, digits and . _ - @ only (at most 64)"
        )
    return username


def _name_key(username: str) -> str:
    """What makes two user names the same one: case and compatibility forms aside, by Python's
    rules (SQLite's ``lower()`` folds ASCII only, so "Ärztin" and "ärztin" were two users there)."""
    return unicodedata.normalize("NFKC", username).casefold()


def _check_role(role: str) -> None:
    if role not in ROLES:
        raise UserError(f"unknown role {role!r}: choose one of {', '.join(ROLES)}")


def get_user(session: Session, username: str) -> User | None:
    """The user row named ``username``, if any."""
    return session.scalar(select(User).where(User.username == username))


def find_user(session: Session, username: str) -> User | None:
    """The user of this name in any case (:func:`_name_key`), as sign-in takes it."""
    exact = get_user(session, username)
    if exact is not None:
        return exact
    key = _name_key(username)
    return next((u for u in session.scalars(select(User)) if _name_key(u.username) == key), None)


def _require(session: Session, username: str) -> User:
    user = get_user(session, username)
    if user is None:
        raise UserError(f"no user named {username!r}")
    return user


def add_user(
    session: Session, username: str, role: str, password: str, actor: str | None = None
) -> User:
    """Create an active user; a taken name (in any case), an unknown role or a weak password is
    a UserError."""
    username = _check_username(username)
    _check_role(role)
    _check_password(password, username)
    taken = next((name for name in session.scalars(select(User.username))
                  if _name_key(name) == _name_key(username)), None)
    if taken is not None:
        raise UserError(
            f"user {username!r} already exists" + ("" if taken == username else f" as {taken!r}")
        )
    user = User(username=username, role=role, password_hash=hash_password(password), active=True)
    session.add(user)
    session.flush()
    audit.record(session, audit.USER_CHANGE, actor=actor, target=username, detail={"added": role})
    return user


def add_user_if_missing(session: Session, username: str, role: str, password: str) -> bool:
    """Create the user unless the name is taken; True when created. An existing account is left
    as it is: the demo used to re-enable it, change its role and reset its password to the
    public demo one, unaudited."""
    if get_user(session, username) is not None:
        return False
    add_user(session, username, role, password, actor="lvt demo")
    return True


def set_password(session: Session, username: str, password: str, actor: str | None = None) -> None:
    """Replace a user's password and end the browser sessions signed in with the old one."""
    from app.services import web_sessions  # it builds on this module's CurrentUser

    _check_password(password, username)
    user = _require(session, username)
    user.password_hash = hash_password(password)
    web_sessions.end_all(session, user.id)
    audit.record(session, audit.USER_CHANGE, actor=actor, target=username, detail={"passwd": True})


def set_active(session: Session, username: str, active: bool, actor: str | None = None) -> None:
    """Disable (or re-enable) a user; a disabled user cannot sign in."""
    from app.services import web_sessions  # it builds on this module's CurrentUser

    user = _require(session, username)
    user.active = active
    if not active:  # re-enabling must not bring the old browser sessions back
        web_sessions.end_all(session, user.id)
    audit.record(
        session, audit.USER_CHANGE, actor=actor, target=username, detail={"active": active}
    )


def list_users(session: Session) -> list[UserInfo]:
    """Every user, by name."""
    rows = session.scalars(select(User).order_by(User.username))
    return [UserInfo(u.id, u.username, u.role, u.active, u.created_at, u.last_login) for u in rows]


def verify_password(password_hash: str, password: str) -> bool:
    """True when ``password`` matches ``password_hash`` (a malformed hash never matches)."""
    try:
        return _hasher.verify(password_hash, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def authenticate(
    session: Session, username: str, password: str, now: dt.datetime | None = None
) -> CurrentUser | None:
    """Check a sign-in; None for a wrong name, password or disabled user.

    Raises :class:`LoginThrottled` after :data:`MAX_FAILED_LOGINS` failures within
    :data:`THROTTLE_WINDOW`, before even looking at the password, so guessing is slow.
    Both outcomes are audited.
    """
    now = now or utcnow()
    user = find_user(session, username.strip())
    # one name in any case (a phone keyboard's "Clinician" is clinician), throttled as one
    username = user.username if user is not None else username.strip()
    failures = audit.count_since(session, audit.LOGIN_FAILED, now - THROTTLE_WINDOW, username)
    if failures >= MAX_FAILED_LOGINS:
        minutes = int(THROTTLE_WINDOW.total_seconds() // 60)
        raise LoginThrottled(
            f"too many failed sign-ins for {username!r}; try again in {minutes} minutes"
        )
    ok = user is not None and user.active and verify_password(user.password_hash, password)
    if not ok or user is None:
        audit.record(session, audit.LOGIN_FAILED, actor=username)
        return None
    if _hasher.check_needs_rehash(user.password_hash):
        user.password_hash = hash_password(password)
    user.last_login = now
    audit.record(session, audit.LOGIN_OK, actor=username, user_id=user.id)
    return CurrentUser(user.id, user.username, user.role, now)
