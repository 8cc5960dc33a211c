"""Text fields checked against the lengths of the columns that store them.

PostgreSQL refuses a value longer than its ``VARCHAR(n)`` (a traceback mid-ingest) while
SQLite stores it whole, so the same CSV row was fine on one backend and fatal on the other, and
a SQLite store holding such rows could not move to PostgreSQL. Rows are checked before anything
is written, and the limits come from the models themselves.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def column_length(column: Any) -> int | None:
    """The declared length of a model's string column (``Study.accession``), if any."""
    return getattr(column.property.columns[0].type, "length", None)


def too_long(record: Mapping[str, str | None], columns: Mapping[str, Any]) -> list[str]:
    """One problem per field of ``record`` longer than the column it goes to."""
    problems = []
    for key, column in columns.items():
        value, limit = record.get(key) or "", column_length(column)
        if limit is not None and len(value) > limit:
            problems.append(f"{key} is {len(value)} characters long, at most {limit} fit")
    return problems
