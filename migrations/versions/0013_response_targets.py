"""response targets, nadir and new lesions

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-07 18:00:00

A stored response held its category and diameter sum only, so nobody could check it: which
lesions were the targets, how each measured at baseline and now, and which earlier sum was the
nadir a progression is measured from, or which lesion was new. Each response now records its
nadir sum, its targets (label, baseline and current diameter; none where a target was missed)
and the labels of its new lesions. Rows from before this
revision stay NULL until `lvt batch --all --refresh` recomputes them.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("responses") as batch:
        batch.add_column(sa.Column("nadir_sum_mm", sa.Float(), nullable=True))
        batch.add_column(sa.Column("targets", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("new_lesions", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("responses") as batch:
        batch.drop_column("new_lesions")
        batch.drop_column("targets")
        batch.drop_column("nadir_sum_mm")
