"""new-lesion flags on responses and measurements

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-07 01:00:00

A response records whether a new lesion appeared at its study (RECIST: progression whatever the
sums say), so pages can show why a study is PD and apply the same rule to the volumetric
response. A radiologist measurement can say the lesion is new (the CSV's ``new_lesion``
column): without it a radiologist's RECIST could never reach PD through a new lesion. Rows
from before this revision stay NULL (not recorded).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("responses") as batch:
        batch.add_column(sa.Column("new_lesion", sa.Boolean(), nullable=True))
    with op.batch_alter_table("measurements") as batch:
        batch.add_column(sa.Column("new_lesion", sa.Boolean(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("measurements") as batch:
        batch.drop_column("new_lesion")
    with op.batch_alter_table("responses") as batch:
        batch.drop_column("new_lesion")
