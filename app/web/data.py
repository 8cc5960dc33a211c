"""Cached data access for the pages: each call is one short session and one query module call.

Heavy reads are cached for a short TTL, keyed by database URL, arguments and the data
version (:func:`app.web.queries.data_version`, one cheap query), so widget reruns never hit
the database twice and new results (a batch, an import, a correction) show at once.
Writes from the app also clear the caches.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import pandas as pd
import streamlit as st

from app.services import analytics, audit, auth
from app.settings import get_settings
from app.web import queries
from db.engine import ensure_schema, session_scope

T = TypeVar("T")
TTL_S = 10
HEAVY_TTL_S = 120
"""Cohort-wide reads: keyed on the data version, so a long TTL never shows stale rows."""


def database_url() -> str:
    """The configured database URL (read per call: tests switch it between apps)."""
    return get_settings().resolved_database_url


@st.cache_resource(show_spinner=False)
def _schema_ready(url: str) -> str:
    return ensure_schema(url)


def ready() -> None:
    """Migrate the database once per process and URL (a fresh checkout needs no manual step)."""
    _schema_ready(database_url())


def run(fn: Callable[..., T], *args: Any) -> T:
    """Call ``fn(session, *args)`` in one committed session."""
    with session_scope(database_url()) as session:
        return fn(session, *args)


@st.cache_data(ttl=2, show_spinner=False)
def _version(url: str) -> tuple[object, ...]:
    with session_scope(url) as session:
        return queries.data_version(session)


def version() -> tuple[object, ...]:
    """The current data version (cached 2 s so one page render asks once)."""
    return _version(database_url())


@st.cache_data(ttl=TTL_S, show_spinner=False)
def _patients(url: str, search: str, limit: int) -> pd.DataFrame:
    with session_scope(url) as session:
        return queries.patient_rows(session, search, limit)


def patients(search: str = "", limit: int = 500) -> pd.DataFrame:
    """The patients list (see :func:`app.web.queries.patient_rows`)."""
    return _patients(database_url(), search, limit)


@st.cache_data(ttl=TTL_S, show_spinner=False)
def _count(url: str) -> int:
    with session_scope(url) as session:
        return queries.count_patients(session)


def patient_count() -> int:
    """How many patients the store holds."""
    return _count(database_url())


@st.cache_data(ttl=TTL_S, show_spinner=False)
def _followup(url: str, pseudo_id: str) -> queries.FollowUp | None:
    with session_scope(url) as session:
        return queries.followup(session, pseudo_id)


def followup(pseudo_id: str) -> queries.FollowUp | None:
    """Everything the follow-up page shows for one patient."""
    return _followup(database_url(), pseudo_id)


@st.cache_data(ttl=HEAVY_TTL_S, show_spinner=False)
def _volumetry(url: str, version: tuple[object, ...]) -> tuple[pd.DataFrame, pd.DataFrame]:
    del version  # cache key only
    with session_scope(url) as session:
        return queries.volumetry_rows(session), analytics.volumetry_overview(url=url)


def volumetry() -> tuple[pd.DataFrame, pd.DataFrame]:
    """(every phase row of the multi-phase days, one row per such day with its warnings)."""
    return _volumetry(database_url(), version())


@st.cache_data(ttl=HEAVY_TTL_S, show_spinner=False)
def _cohort(url: str, version: tuple[object, ...]) -> tuple[pd.DataFrame, list[str]]:
    del version  # cache key only
    with session_scope(url) as session:
        return queries.response_counts(session), queries.tracked_phases(session)


def cohort() -> tuple[pd.DataFrame, list[str]]:
    """(RECIST assessment counts per source and category, phases with tracked lesions)."""
    return _cohort(database_url(), version())


@st.cache_data(ttl=HEAVY_TTL_S, show_spinner=False)
def _lesions(url: str, version: tuple[object, ...], flt: queries.LesionFilter,
             limit: int) -> tuple[pd.DataFrame, int, int]:
    del version  # cache key only
    with session_scope(url) as session:
        return (queries.cohort_lesion_rows(session, flt, limit), *queries.cohort_lesion_counts(session, flt))


def cohort_lesions(flt: queries.LesionFilter, limit: int) -> tuple[pd.DataFrame, int, int]:
    """(the first ``limit`` matching lesion rows, matching rows, matching patients)."""
    return _lesions(database_url(), version(), flt, limit)


def lesion_table_bytes(flt: queries.LesionFilter, kind: str) -> bytes:
    """Every matching lesion row as CSV or Parquet (built when the download is clicked)."""
    with session_scope(database_url()) as session:
        frame = queries.cohort_lesion_rows(session, flt)
    return table_bytes(frame, kind)


@st.cache_data(ttl=HEAVY_TTL_S, show_spinner=False)
def _pairs(url: str, version: tuple[object, ...]) -> pd.DataFrame:
    del version  # cache key only
    with session_scope(url) as session:
        return queries.cohort_pair_rows(session)


def cohort_pairs() -> pd.DataFrame:
    """Linked (radiologist, model) diameter pairs of the cohort (precomputed links)."""
    return _pairs(database_url(), version())


@st.cache_data(ttl=TTL_S, show_spinner=False)
def table_bytes(frame: pd.DataFrame, kind: str) -> bytes:
    """CSV or Parquet bytes of a table (cached, so reruns do not re-encode)."""
    if kind == "csv":
        return frame.to_csv(index=False).encode()
    import io

    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    return buffer.getvalue()


def model_caption() -> str:
    """Which model's results the pages show."""
    return run(lambda s: queries.model_label(s, queries.current_model_id(s)))


def clear() -> None:
    """Drop cached query results (after a write)."""
    for fn in (_version, _patients, _followup, _volumetry, _cohort, _lesions, _count, _pairs):
        fn.clear()


def audit_report(user: auth.CurrentUser, pseudo_id: str, file_format: str) -> None:
    """Write that ``user`` downloaded ``pseudo_id``'s follow-up report (``html`` or ``pdf``): it
    leaves the app."""
    run(lambda session: audit.record(session, audit.DOWNLOAD_REPORT, actor=user.username, user_id=user.id,
                                     target=pseudo_id, detail={"format": file_format}))


def audit_open_patient(user: auth.CurrentUser, pseudo_id: str) -> None:
    """Write that ``user`` opened ``pseudo_id`` (called once per opening, not per rerun)."""

    def write(session: Any) -> None:
        audit.record(session, audit.OPEN_PATIENT, actor=user.username, user_id=user.id, target=pseudo_id)

    run(write)
