"""Alembic driven from code, so ``lvt db upgrade`` works from any working directory."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"


def alembic_config(url: str) -> Config:
    """An Alembic config whose script location is the ``migrations`` package."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    config.attributes["lvt_url"] = url
    return config


RESULTS_REDONE_AT = "0013"
"""The newest revision that came with new analytics rules or results (0009-0010: new-lesion
flags, missed targets NE, days across studies, responses per model; 0011: lesions cut by the
scan edge, tracking warnings; 0013: each response's targets, nadir and new lesions, the model's
new lesions counted once seen again): stored results from before it follow the old rules, or lack
what is new, until `lvt batch --all --refresh` redoes them."""


def results_predate_rules(before: str | None, after: str | None) -> bool:
    """Whether an upgrade from ``before`` to ``after`` left results computed under older rules
    (revisions are zero-padded numbers, so they compare as text)."""
    return before is not None and after is not None and before < RESULTS_REDONE_AT <= after


def upgrade(url: str, revision: str = "head") -> str:
    """Upgrade to ``revision`` and return the revision the database is at afterwards."""
    command.upgrade(alembic_config(url), revision)
    return current(url) or ""


def downgrade(url: str, revision: str = "-1") -> str | None:
    """Downgrade to ``revision`` (``base`` removes every table); return the new revision."""
    command.downgrade(alembic_config(url), revision)
    return current(url)


def downgrade_lands_at(url: str, revision: str) -> str | None:
    """The revision ``downgrade(url, revision)`` would leave the database at (None: base, every
    table dropped), so a relative step back that reaches base can be confirmed first."""
    if revision == "base":
        return None
    if not (revision.startswith("-") and revision[1:].isdigit()):
        return revision
    script = ScriptDirectory.from_config(alembic_config(url))
    landing = current(url)
    for _ in range(int(revision[1:])):
        if landing is None:
            break
        landing = _one_below(script, landing)
    return landing


def _one_below(script: ScriptDirectory, revision: str) -> str | None:
    """The revision ``revision`` was made on (None: base); the first parent of a merge."""
    down = script.get_revision(revision).down_revision
    return down if isinstance(down, str) or down is None else down[0]


def undone_by_downgrade(url: str, revision: str) -> list[tuple[str, str]]:
    """(revision, what it added) for each revision ``downgrade(url, revision)`` would undo,
    newest first: a downgrade drops the columns and tables those revisions added, with their
    data, and a later upgrade does not bring the data back."""
    script = ScriptDirectory.from_config(alembic_config(url))
    landing = downgrade_lands_at(url, revision)
    undone, at = [], current(url)
    while at is not None and at != landing:
        doc = (script.get_revision(at).doc or "").strip()
        undone.append((at, doc.splitlines()[0] if doc else ""))
        at = _one_below(script, at)
    return undone if at == landing else []  # not below the current one: the downgrade itself says why


def current(url: str) -> str | None:
    """The revision the database is at, or None when it has never been migrated."""
    from db.engine import get_engine

    with get_engine(url).connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def head() -> str:
    """The newest revision shipped with this code."""
    script = ScriptDirectory.from_config(alembic_config("sqlite://"))
    return str(script.get_current_head())
