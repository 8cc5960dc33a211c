"""Engines and sessions for SQLite (embedded default) and PostgreSQL (``LVT_DATABASE_URL``).

SQLite connections get WAL journalling, enforced foreign keys and a generous busy timeout,
so concurrent readers never block and a second writer waits instead of failing.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, update
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.orm import Session, sessionmaker

SQLITE_BUSY_TIMEOUT_MS = 60_000


def default_url() -> str:
    """The configured database URL (``LVT_DATABASE_URL`` or SQLite under ``LVT_VAR_DIR``)."""
    from app.settings import get_settings

    return get_settings().resolved_database_url


class DatabaseURLError(ValueError):
    """A database URL SQLAlchemy cannot use (malformed, or a dialect it does not know)."""


def parse_url(url: str) -> URL:
    """``url`` parsed, its dialect known: ``postgres://`` (Heroku's spelling) and typos failed
    deep inside SQLAlchemy with a traceback (NoSuchModuleError) instead of a message."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise DatabaseURLError(f"database URL {url.split('@')[-1]!r} (LVT_DATABASE_URL) cannot be parsed: "
                               "expected e.g. postgresql+psycopg://USER:PASSWORD@HOST:5432/DB "
                               "or sqlite:///PATH") from None
    try:
        parsed.get_dialect()
    except ArgumentError:  # NoSuchModuleError included
        shown = parsed.render_as_string(hide_password=True)
        hint = ("for PostgreSQL use postgresql+psycopg://" if parsed.drivername.split("+")[0] == "postgres"
                else "expected postgresql+psycopg:// or sqlite:///")
        raise DatabaseURLError(f"database URL {shown} (LVT_DATABASE_URL): SQLAlchemy has no dialect "
                               f"{parsed.drivername!r}; {hint}") from None
    return parsed


def store_exists(url: str) -> bool:
    """Whether the database at ``url`` exists: a SQLite file (connecting would create it; an
    in-memory one starts empty), while a server's database is taken to exist, as it is created
    outside LVT."""
    parsed = parse_url(url)
    if parsed.get_backend_name() != "sqlite":
        return True
    return parsed.database not in (None, "", ":memory:") and Path(parsed.database).is_file()


def _on_sqlite_connect(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def make_engine(url: str | None = None) -> Engine:
    """Create an engine for ``url`` (default: the configured one), creating SQLite's folder."""
    url = url or default_url()
    parsed = parse_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000}, future=True
        )
        event.listen(engine, "connect", _on_sqlite_connect)
        return engine
    return create_engine(url, pool_pre_ping=True, future=True)


@lru_cache(maxsize=8)
def get_engine(url: str) -> Engine:
    """One shared engine per URL in this process."""
    return make_engine(url)


def make_session_factory(url: str | None = None) -> sessionmaker[Session]:
    """A typed session factory bound to the (cached) engine of ``url``."""
    return sessionmaker(bind=get_engine(url or default_url()), expire_on_commit=False)


@contextmanager
def session_scope(url: str | None = None) -> Iterator[Session]:
    """A session that commits on success and rolls back on any exception."""
    session = make_session_factory(url)()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def ensure_schema(url: str | None = None) -> str:
    """Bring the database at ``url`` to the newest revision; return that revision.

    The demo and the app call this at start-up, so a fresh checkout needs no manual step.
    """
    from db.migrate import upgrade

    return upgrade(url or default_url())


def acquire_lock(session: Session, name: str) -> None:
    """Hold the named writer lock until the session's transaction ends.

    An UPDATE of the lock row takes a row lock on PostgreSQL and the database write lock
    on SQLite, so concurrent ingests serialise on both without engine-specific SQL.
    """
    from db.models import StoreLock, utcnow

    take = update(StoreLock).where(StoreLock.name == name).values(acquired_at=utcnow())
    if session.execute(take).rowcount == 0:  # type: ignore[attr-defined]
        # a lock no one took yet: two writers may both create its row, so the second waits for
        # the first's row instead of failing on its key (PostgreSQL's "duplicate key ... pk_store_locks")
        dialect = session.get_bind().dialect.name
        insert = postgresql_insert if dialect == "postgresql" else sqlite_insert
        session.execute(insert(StoreLock).values(name=name, acquired_at=utcnow()).on_conflict_do_nothing())
        session.execute(take)
