"""Alembic environment: runs revisions against the URL handed over by :mod:`db.migrate`."""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext

from alembic import context
from filelock import FileLock
from sqlalchemy import Connection, text

from db.engine import get_engine
from db.models import Base

config = context.config
url = config.attributes.get("lvt_url") or config.get_main_option("sqlalchemy.url")
target_metadata = Base.metadata


MIGRATION_LOCK_KEY = 0x4C56545F  # "LVT_": PostgreSQL advisory lock shared by every LVT process


def run_migrations_online() -> None:
    """Run with a live connection; batch mode lets SQLite alter tables by copying them.

    One process migrates at a time (two starting on a fresh store raced to create the tables),
    and on SQLite foreign keys are off meanwhile: batch mode drops and recreates a parent table,
    which with them on cascaded into its children (a downgrade emptied ``lesions``).
    """
    engine = get_engine(url)
    if engine.dialect.name == "sqlite":
        with _sqlite_migration_lock(engine.url.database), engine.connect() as connection:
            connection.exec_driver_sql("PRAGMA foreign_keys=OFF")  # outside a transaction, or ignored
            try:
                _migrate(connection, render_as_batch=True)
                broken = connection.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
                if broken:
                    raise RuntimeError(f"migration left {len(broken)} row(s) with broken references: {broken[:3]}")
            finally:
                connection.exec_driver_sql("PRAGMA foreign_keys=ON")
        return
    with engine.connect() as connection:
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
        _migrate(connection, render_as_batch=False)


def _migrate(connection: Connection, render_as_batch: bool) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=render_as_batch,
        compare_type=True,
    )
    with context.begin_transaction():
        if render_as_batch:  # SQLite: Python's driver runs DDL outside any transaction unless told
            connection.exec_driver_sql("BEGIN")  # so a failed or killed run leaves the store as it was
        context.run_migrations()
    connection.commit()


def _sqlite_migration_lock(database: str | None) -> AbstractContextManager[object]:
    """A lock file beside the database file (none for an in-memory database)."""
    if not database or database == ":memory:":
        return nullcontext()
    return FileLock(f"{database}.migrate.lock")


def run_migrations_offline() -> None:
    """Emit SQL for ``--sql`` use without a database."""
    context.configure(url=url, target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
