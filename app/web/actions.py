"""Clinician corrections of tracking: relink a lesion to another track, or mark it not a lesion.

Both go through :mod:`app.services.analytics` (one code path with the CLI): the override is
stored as a :class:`~db.models.TrackOverride`, replayed on every re-track, and the patient
is re-tracked at once so the pages show it. The audit log gets the clinician's name.
"""

from __future__ import annotations

from sqlalchemy.orm import Session

from app.services import analytics, audit, auth
from db.models import LesionTrack


def _url(session: Session) -> str:
    """The session's database URL with its password (``str(url)`` masks it)."""
    return session.get_bind().url.render_as_string(hide_password=False)


def relink(session: Session, user: auth.CurrentUser, lesion_id: int, target_track_id: int, note: str = "") -> None:
    """Move ``lesion_id`` into track ``target_track_id`` (a clinician's match)."""
    track = session.get(LesionTrack, target_track_id)
    if track is None:
        raise ValueError(f"track {target_track_id} does not exist")
    number = track.track_number
    session.commit()  # release SQLite's reader before the service writes
    analytics.relink_lesion(lesion_id, number, user_id=user.id, note=note or None,
                            url=_url(session))
    audit.record(session, audit.CORRECTION, actor=user.username, user_id=user.id,
                 target=f"lesion {lesion_id}", detail={"kind": "relink", "track_id": target_track_id})


def mark_not_lesion(session: Session, user: auth.CurrentUser, lesion_id: int, note: str = "") -> None:
    """Exclude ``lesion_id`` from tracking and response (a false positive)."""
    session.commit()  # release SQLite's reader before the service writes
    analytics.mark_not_lesion(lesion_id, user_id=user.id, note=note or None,
                              url=_url(session))
    audit.record(session, audit.CORRECTION, actor=user.username, user_id=user.id,
                 target=f"lesion {lesion_id}", detail={"kind": "not_lesion"})
