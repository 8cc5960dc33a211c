"""The audit log: who did what to which target, and when.

Every sign-in, patient opening, clinician correction and user change goes through
:func:`record`, so the admin page and compliance reviews read one table.
"""

from __future__ import annotations

import datetime as dt
import getpass
import os
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from db.models import AuditEvent, utcnow

LOGIN_OK = "login"
LOGIN_FAILED = "login_failed"
LOGOUT = "logout"
OPEN_PATIENT = "open_patient"
DOWNLOAD_REPORT = "download_report"
CORRECTION = "track_correction"
USER_CHANGE = "user_change"


@dataclass(frozen=True)
class AuditRow:
    """One audit event as the admin page lists it."""

    at: dt.datetime
    actor: str | None
    action: str
    target: str | None
    detail: dict[str, Any] | None


def command_line_actor(command: str = "cli") -> str:
    """Who acts from the command line: the command and the operating-system account running it
    (the log said only "cli", so two admins' ingests could not be told apart)."""
    try:
        account = getpass.getuser()
    except (KeyError, OSError):  # no name for this uid (a bare container)
        account = f"uid {os.getuid()}"
    return f"{command} ({account})"


def record(
    session: Session,
    action: str,
    *,
    actor: str | None = None,
    user_id: int | None = None,
    target: str | None = None,
    detail: dict[str, Any] | None = None,
) -> None:
    """Add one event to the session (committed with the caller's transaction)."""
    session.add(
        AuditEvent(
            user_id=user_id, actor=actor, action=action, target=target, detail=detail, at=utcnow()
        )
    )


def recent(session: Session, limit: int = 200, action: str | None = None) -> list[AuditRow]:
    """The newest events first, optionally of one action."""
    stmt = select(AuditEvent).order_by(AuditEvent.at.desc(), AuditEvent.id.desc()).limit(limit)
    if action:
        stmt = stmt.where(AuditEvent.action == action)
    return [
        AuditRow(e.at, e.actor, e.action, e.target, e.detail) for e in session.scalars(stmt)
    ]


def count_since(session: Session, action: str, since: dt.datetime, actor: str | None = None) -> int:
    """How many ``action`` events (by ``actor``, if given) happened at or after ``since``."""
    stmt = select(func.count(AuditEvent.id)).where(
        AuditEvent.action == action, AuditEvent.at >= since
    )
    if actor is not None:
        stmt = stmt.where(AuditEvent.actor == actor)
    return int(session.scalar(stmt) or 0)
