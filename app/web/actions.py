"""Clinician corrections of tracking: relink a lesion to another track, or mark it not a lesion.

Each correction is stored as a :class:`~db.models.TrackOverride` (which the analytics
service replays on every re-track), applied to the current tracks at once so the pages
show it, and written to the audit log. When ``app.services.analytics`` provides
``relink_lesion``/``mark_not_lesion`` those are used instead, so there is one code path.
"""

from __future__ import annotations

import importlib

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from app.services import audit, auth
from db.models import LesionTrack, LesionTrackMember, TrackOverride


def _service(name: str):  # type: ignore[no-untyped-def]
    try:
        module = importlib.import_module("app.services.analytics")
    except ImportError:
        return None
    return getattr(module, name, None)


def relink(session: Session, user: auth.CurrentUser, lesion_id: int, target_track_id: int, note: str = "") -> None:
    """Move ``lesion_id`` into track ``target_track_id`` (a clinician's match)."""
    service = _service("relink_lesion")
    if service is not None:
        number = session.get(LesionTrack, target_track_id).track_number  # type: ignore[union-attr]
        session.commit()  # release SQLite's reader before the service writes
        service(lesion_id, number, user_id=user.id, note=note or None, url=str(session.get_bind().url))
    else:
        session.add(TrackOverride(kind="relink", lesion_id=lesion_id, target_track_id=target_track_id,
                                  user_id=user.id, note=note or None))
        member = session.scalar(select(LesionTrackMember).where(LesionTrackMember.lesion_id == lesion_id))
        if member is None:
            raise ValueError(f"lesion {lesion_id} is not in any track")
        old_track = member.track_id
        member.track_id = target_track_id
        session.flush()
        _drop_if_empty(session, old_track)
    audit.record(session, audit.CORRECTION, actor=user.username, user_id=user.id,
                 target=f"lesion {lesion_id}", detail={"kind": "relink", "track_id": target_track_id})


def mark_not_lesion(session: Session, user: auth.CurrentUser, lesion_id: int, note: str = "") -> None:
    """Exclude ``lesion_id`` from tracking and response (a false positive)."""
    service = _service("mark_not_lesion")
    if service is not None:
        service(lesion_id, user_id=user.id, note=note or None, url=str(session.get_bind().url))
    else:
        session.add(TrackOverride(kind="not_lesion", lesion_id=lesion_id, user_id=user.id, note=note or None))
        member = session.scalar(select(LesionTrackMember).where(LesionTrackMember.lesion_id == lesion_id))
        if member is not None:
            old_track = member.track_id
            session.delete(member)
            session.flush()
            _drop_if_empty(session, old_track)
    audit.record(session, audit.CORRECTION, actor=user.username, user_id=user.id,
                 target=f"lesion {lesion_id}", detail={"kind": "not_lesion"})


def _drop_if_empty(session: Session, track_id: int) -> None:
    left = session.scalar(select(LesionTrackMember.id).where(LesionTrackMember.track_id == track_id).limit(1))
    if left is None:
        session.execute(delete(LesionTrack).where(LesionTrack.id == track_id))
