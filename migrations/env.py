"""Alembic environment: runs revisions against the URL handed over by :mod:`db.migrate`."""

from __future__ import annotations

from alembic import context

from db.engine import get_engine
from db.models import Base

config = context.config
url = config.attributes.get("lvt_url") or config.get_main_option("sqlalchemy.url")
target_metadata = Base.metadata


def run_migrations_online() -> None:
    """Run with a live connection; batch mode lets SQLite alter tables by copying them."""
    engine = get_engine(url)
    with engine.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            render_as_batch=connection.dialect.name == "sqlite",
            compare_type=True,
        )
        with context.begin_transaction():
            context.run_migrations()
        connection.commit()


def run_migrations_offline() -> None:
    """Emit SQL for ``--sql`` use without a database."""
    context.configure(url=url, target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
