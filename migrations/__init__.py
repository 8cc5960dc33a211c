"""Alembic revisions of the LVT store."""
