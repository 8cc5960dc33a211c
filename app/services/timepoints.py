"""A patient's timepoint is a calendar day, not a study row.

Many sites give the arterial and portal scans of one visit separate StudyInstanceUIDs or
accessions, so ingest stores them as separate studies. Tracking, RECIST, the cross-phase
reading and the volumetry check must still read them as one day: the studies of one patient
with equal, known ``study_date`` are one timepoint. A study without a date cannot be placed
on any day and stays its own timepoint.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import and_

from db.models import Study

DayKey = tuple[int, dt.date | None, int | None]


def day_key(patient_id: int, study_id: int, study_date: dt.date | None) -> DayKey:
    """Equal for the studies of one patient's day; an undated study keys on its own id."""
    return (patient_id, study_date, None if study_date is not None else study_id)


def same_day(study: Study) -> Any:
    """SQL condition on ``Study``: the studies of ``study``'s day (only itself when undated)."""
    if study.study_date is None:
        return Study.id == study.id
    return and_(Study.patient_id == study.patient_id, Study.study_date == study.study_date)

