"""An admin's corrections of what ingest could not know: a series' contrast phase, and the
date of a study stored without one.

The phase comes from description/timing rules at ingest and can be wrong. It matters: the
day's volumetry check compares phases, and the segmentation reads the phases of a day
together (arterial-only rules in ``inference.cross_phase``). So the change is audited, the
patient's analytics are refreshed at once, and the day's segmentations, drawn with the old
phase, are marked outdated (their ``lvt_version`` cleared, as for results whose drawing
version is not recorded), so ``lvt batch --patient P --outdated`` redraws that day and no
other; they stay stored and shown until then. The day is every study of that date
(:mod:`app.services.timepoints`), not only the series' own study.

A study without a date is left out of tracking and response (it cannot be placed among the
days). Its date is given as the source says it and stored as ingest would have stored it:
shifted by the patient's offset when the patient's dates are shifted, which the source
patient id, checked against the stored pseudonym, allows.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.cli.common import UserError
from app.services import audit
from app.services.analytics import refresh_patient
from app.services.deid import Deidentifier, implausible_study_date
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
        drawn = mark_day_outdated(session, study, "contrast phase corrected")
        session.flush()
        for model_id in sorted({seg.model_id for seg in drawn}):
            refresh_patient(session, patient.id, model_id, data_root)
        session.commit()
    redo = f"lvt batch --patient {patient.pseudo_id} --outdated" if drawn else None
    return report | {"segmentations_to_redo": len(drawn), "redo": redo}


def models_drawn_for(session: Session, patient_id: int) -> list[int]:
    """The models with finished segmentations of this patient: each one's analytics change
    when the patient's studies do."""
    return sorted(session.scalars(
        select(Segmentation.model_id).join(Series, Series.id == Segmentation.series_id)
        .join(Study, Study.id == Series.study_id)
        .where(Study.patient_id == patient_id, Segmentation.status == "done").distinct()))


def mark_day_outdated(session: Session, study: Study, reason: str) -> list[Segmentation]:
    """Record why the finished segmentations of ``study``'s day must be redrawn, which ``lvt
    batch --outdated`` does: ``--force`` redrew every day of the patient, and a plain batch saw
    nothing pending. They stay ``done`` (still shown and tracked) until then, and keep the LVT
    version that drew them."""
    drawn = list(session.scalars(
        select(Segmentation).join(Series, Series.id == Segmentation.series_id)
        .join(Study, Study.id == Series.study_id)
        .where(same_day(study), Segmentation.status == "done")))
    for seg in drawn:
        seg.redraw_reason = reason
    return drawn


def set_study_date(
    study_id: int, source_date: dt.date, source_patient_id: str, actor: str,
    url: str | None = None, data_root: Path | None = None, dates_shifted: bool | None = None,
) -> dict[str, Any]:
    """Date an undated study (the source date, shifted as this patient's dates are); return what
    was stored and, when the study joins a day that already has scans, the redo command (that
    day's segmentations are marked outdated: they were drawn without the day's other phases).

    A patient stored before revision 0008 has no recorded policy: guessed from today's settings,
    a date came out 111 days off its neighbours. So ``dates_shifted`` must say how its dates
    were stored (then it is recorded); for other patients it must agree with the record.
    """
    if why := implausible_study_date(source_date):
        raise UserError(f"date {source_date}: {why}")
    with make_session_factory(url or default_url())() as session:
        study = session.get(Study, study_id)
        if study is None:
            raise UserError(f"study {study_id} is not in the store (see `lvt studies list PATIENT`)")
        if study.study_date is not None:
            raise UserError(f"study {study_id} is dated {study.study_date} already: only an undated study "
                            "is dated here")
        patient = session.get(Patient, study.patient_id)
        assert patient is not None
        pseudonymised = _identity_of(patient, source_patient_id)
        shifted = pseudonymised and _date_policy(patient, dates_shifted)  # kept ids: dates kept too
        policy = Deidentifier.from_settings(pseudonymised)
        policy = Deidentifier(policy.key, policy.enabled, shifted)
        study.study_date = policy.date(source_patient_id, source_date)
        patient.identity_removed, patient.dates_shifted = pseudonymised, shifted
        audit.record(session, "study_date_set", actor=actor, target=f"study {study_id}",
                     detail={"patient": patient.pseudo_id, "stored_date": study.study_date.isoformat(),
                             "dates_shifted": patient.dates_shifted})
        session.flush()
        same_day_scans = session.scalar(select(func.count(Series.id)).join(Study, Study.id == Series.study_id)
                                        .where(same_day(study), Study.id != study.id))
        drawn = mark_day_outdated(session, study, "a study dated into this day") if same_day_scans else []
        for model_id in models_drawn_for(session, patient.id):
            refresh_patient(session, patient.id, model_id, data_root)
        session.commit()
        stored = study.study_date
    redo = f"lvt batch --patient {patient.pseudo_id} --outdated" if drawn else None
    return {"study_id": study_id, "patient": patient.pseudo_id, "stored_date": stored.isoformat(),
            "dates_shifted": bool(patient.dates_shifted), "joins_a_day_with_scans": bool(same_day_scans),
            "redo": redo}


def _identity_of(patient: Patient, source_patient_id: str) -> bool:
    """Whether the patient's id is a pseudonym of ``source_patient_id`` (True) or that id kept
    as given (False, ``--keep-identifiers``); any other id is refused."""
    pseudonym = Deidentifier.from_settings(True).patient_id(source_patient_id)
    if patient.identity_removed is not False and pseudonym == patient.pseudo_id:
        return True
    if patient.identity_removed is not True and source_patient_id.strip() == patient.pseudo_id:
        return False
    raise UserError(f"source patient id {source_patient_id!r} is not patient {patient.pseudo_id} (neither "
                    "its pseudonym under this store's key nor the id kept as given): give the id the "
                    "study's files carry")


def _date_policy(patient: Patient, dates_shifted: bool | None) -> bool:
    """How the patient's dates are stored: as recorded, or as the admin says for a patient
    stored before the policy was recorded (revision 0008)."""
    if patient.dates_shifted is None and dates_shifted is None:
        raise UserError(f"patient {patient.pseudo_id} was stored before LVT recorded whether its dates are "
                        "shifted (migration 0008): say how they were stored with --dates-shifted or "
                        "--dates-kept (LVT_DEID_SHIFT_DATES when it was ingested)")
    if patient.dates_shifted is not None and dates_shifted is not None and dates_shifted != patient.dates_shifted:
        raise UserError(f"patient {patient.pseudo_id}'s dates are stored "
                        f"{'shifted' if patient.dates_shifted else 'as given'}, not as you say")
    return patient.dates_shifted if patient.dates_shifted is not None else bool(dates_shifted)
