"""Correct the contrast phase of a stored series (an admin's fix for a wrong or unknown phase).

The phase comes from description/timing rules at ingest and can be wrong. It matters: the
day's volumetry check compares phases, and the segmentation reads the phases of a day
together (arterial-only rules in ``inference.cross_phase``). So the change is audited, the
patient's analytics are refreshed at once, and the day's segmentations, drawn with the old
phase, are named for re-segmenting; they stay stored until then. The day is every study of
that date (:mod:`app.services.timepoints`), not only the series' own study.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import select

from app.cli.common import UserError
from app.services import audit
from app.services.analytics import refresh_patient
from app.services.timepoints import same_day
from db.engine import default_url, make_session_factory
from db.models import PHASES, Patient, Segmentation, Series, Study


def set_series_phase(
    series_id: int, phase: str, actor: str, url: str | None = None, data_root: Path | None = None,
) -> dict[str, Any]:
    """Set ``series_id``'s phase; return what changed and the day's segmentations to redo."""
    if phase not in PHASES:
        raise UserError(f"phase {phase!r} is not one of {', '.join(PHASES)}")
    with make_session_factory(url or default_url())() as session:
        series = session.get(Series, series_id)
        if series is None:
            raise UserError(f"series {series_id} is not in the store (see `lvt studies list PATIENT`)")
        study = session.get(Study, series.study_id)
        assert study is not None
        patient = session.get(Patient, study.patient_id)
        assert patient is not None
        before = series.phase
        report: dict[str, Any] = {"series_id": series_id, "patient": patient.pseudo_id,
                                  "study_date": study.study_date.isoformat() if study.study_date else None,
                                  "from": before, "to": phase, "changed": before != phase}
        if before == phase:
            return report | {"segmentations_to_redo": 0, "redo": None}
        series.phase = phase
        audit.record(session, "series_phase_set", actor=actor, target=f"series {series_id}",
                     detail={"from": before, "to": phase, "patient": patient.pseudo_id})
        drawn = session.execute(
            select(Segmentation.model_id).join(Series, Series.id == Segmentation.series_id)
            .join(Study, Study.id == Series.study_id)
            .where(same_day(study), Segmentation.status == "done")
        ).scalars().all()
        session.flush()
        for model_id in sorted(set(drawn)):
            refresh_patient(session, patient.id, model_id, data_root)
        session.commit()
    redo = f"lvt batch --patient {patient.pseudo_id} --force" if drawn else None
    return report | {"segmentations_to_redo": len(drawn), "redo": redo}
