"""segmentation precision

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-05 12:30:00

Each segmentation names the arithmetic its network ran in (``"fp32"``, ``"bf16"`` or
``"fp16"``), since inference now picks bfloat16 by default on CPUs that have it and the same
checkpoint draws slightly different label maps in each. Rows from before this revision stay
NULL: their precision was not recorded.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("segmentations") as batch:
        batch.add_column(sa.Column("precision", sa.String(length=8), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("segmentations") as batch:
        batch.drop_column("precision")
