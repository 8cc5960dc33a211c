"""Date orderings that agree on SQLite and PostgreSQL.

A study without a date sorts as the earliest one (as tracking reads it, ``date.min``).
Without an explicit rule SQLite puts NULL first in ascending order and PostgreSQL last, so the
same store listed patients, studies and the latest response in another order per backend.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.sql.elements import UnaryExpression


def oldest_first(column: Any) -> UnaryExpression[Any]:
    """Ascending, an undated row first."""
    return column.asc().nulls_first()


def newest_first(column: Any) -> UnaryExpression[Any]:
    """Descending, an undated row last."""
    return column.desc().nulls_last()
