"""volumetry liver cut at

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-05 21:00:00

Each liver volume says at which ends of its scan, if any, the liver runs out of the scan
(``"head"``, ``"foot"``, ``"head,foot"``, or ``""`` when the scan holds the whole liver): such a
volume is a lower bound, and its deviation from the other phases of the day is the scan's, not
the model's. Rows from before this revision stay NULL: their coverage was not measured.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("volumetry_results") as batch:
        batch.add_column(sa.Column("liver_cut_at", sa.String(length=16), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("volumetry_results") as batch:
        batch.drop_column("liver_cut_at")
