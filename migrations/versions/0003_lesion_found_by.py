"""lesion found_by

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-03 23:55:00

Each lesion says who drew it: the network, or the faint-lesion search that runs after it
(``"network"``, ``"faint_search"``). Rows from before this revision, and lesions of imported
label maps, stay NULL: their origin is not known.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("lesions") as batch:
        batch.add_column(sa.Column("found_by", sa.String(length=16), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("lesions") as batch:
        batch.drop_column("found_by")
