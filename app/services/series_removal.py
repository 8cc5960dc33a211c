"""An admin's removal of a series stored by mistake: half a series (its other files came
later and ingest refuses them as different content under the same UID), the wrong patient's
scan, a scout or a test series.

Ingest never replaces a stored series silently, so before this there was no way out. The
removal is audited and all or nothing: the series, its segmentations and lesions go in one
transaction (the database cascades), its study goes with it when nothing else is left there
(a study that still holds radiologist measurements is kept), and its patient too when no
study is left. The patient's volumetry, tracks and responses are refreshed in the same
transaction, and the day's other segmentations, which were drawn reading the removed phase
beside them, are marked to redraw. Files go only after the commit, and only those no other row
still names (the store is content-addressed, so two rows can share one file).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from app.cli.common import UserError
from app.services import audit
from app.services.analytics import refresh_patient
from app.services.batch import run_segmenting
from app.services.corrections import mark_day_outdated, models_drawn_for
from db import storage
from db.engine import default_url, make_session_factory
from db.models import Lesion, Measurement, Patient, Segmentation, Series, Study


def remove_series(series_id: int, actor: str, url: str | None = None,
                  data_root: Path | None = None) -> dict[str, Any]:
    """Remove ``series_id`` and what was drawn from it; return what went and what to redo."""
    root = data_root or storage.data_dir()
    with make_session_factory(url or default_url())() as session:
        series = session.get(Series, series_id)
        if series is None:
            raise UserError(f"series {series_id} is not in the store (see `lvt studies list PATIENT`)")
        _refuse_while_segmented(session, series_id)
        study = session.get(Study, series.study_id)
        assert study is not None
        patient = session.get(Patient, study.patient_id)
        assert patient is not None
        segmentations = list(session.scalars(select(Segmentation).where(Segmentation.series_id == series_id)))
        files = {series.image_path} | {s.label_map_path for s in segmentations if s.label_map_path}
        lesions = session.scalar(select(func.count(Lesion.id)).where(
            Lesion.segmentation_id.in_([s.id for s in segmentations]))) or 0
        models = models_drawn_for(session, patient.id)
        report: dict[str, Any] = {
            "series_id": series_id, "series_instance_uid": series.series_instance_uid,
            "phase": series.phase, "patient": patient.pseudo_id, "study_id": study.id,
            "study_date": study.study_date.isoformat() if study.study_date else None,
            "segmentations_removed": len(segmentations), "lesions_removed": lesions,
        }
        others = [s for s in mark_day_outdated(session, study, "a phase of its day was removed")
                  if s.series_id != series_id]
        session.flush()
        session.execute(delete(Series).where(Series.id == series_id))
        session.expire_all()  # the cascade removed rows the session may hold
        study_removed = _remove_if_empty(session, study.id)
        patient_removed = study_removed and _remove_patient_if_empty(session, patient.id)
        audit.record(session, "series_removed", actor=actor, target=f"series {series_id}",
                     detail={k: report[k] for k in ("series_instance_uid", "patient", "study_id", "phase",
                                                    "segmentations_removed", "lesions_removed")}
                     | {"study_removed": study_removed, "patient_removed": patient_removed})
        session.flush()
        if not patient_removed:
            for model_id in models:
                refresh_patient(session, patient.id, model_id, root)
        session.commit()
        removed_files = _remove_unreferenced(session, files, root)
    redo = f"lvt batch --patient {report['patient']} --outdated" if others else None
    return report | {"study_removed": study_removed, "patient_removed": patient_removed,
                     "files_removed": removed_files, "segmentations_to_redo": len(others), "redo": redo}


def _refuse_while_segmented(session: Session, series_id: int) -> None:
    """A batch worker writing a result for a series that is gone would fail half way."""
    if (run := run_segmenting(session, series_id)) is not None:
        raise UserError(f"series {series_id} is being segmented by batch run {run}: remove it once that "
                        "run has ended")


def _remove_if_empty(session: Session, study_id: int) -> bool:
    """Remove the study when no series and no radiologist measurement is left in it."""
    if session.scalar(select(func.count(Series.id)).where(Series.study_id == study_id)):
        return False
    if session.scalar(select(func.count(Measurement.id)).where(Measurement.study_id == study_id)):
        return False
    session.execute(delete(Study).where(Study.id == study_id))
    return True


def _remove_patient_if_empty(session: Session, patient_id: int) -> bool:
    """Remove the patient when no study is left (its measurements went with its studies)."""
    if session.scalar(select(func.count(Study.id)).where(Study.patient_id == patient_id)):
        return False
    session.execute(delete(Patient).where(Patient.id == patient_id))
    return True


def _remove_unreferenced(session: Session, files: set[str], root: Path) -> list[str]:
    """Delete the stored files of ``files`` that no series or segmentation names any more."""
    named = set(session.scalars(select(Series.image_path).where(Series.image_path.in_(files))))
    named |= set(session.scalars(select(Segmentation.label_map_path)
                                 .where(Segmentation.label_map_path.in_(files))))
    removed = []
    for relative in sorted(files - named):
        path = storage.resolve(relative, root)
        if path.is_file():
            path.unlink()
            removed.append(relative)
    return removed
