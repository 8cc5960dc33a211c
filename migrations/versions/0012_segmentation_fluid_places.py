"""fluid places a segmentation left out

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-07 15:00:00

Model 0.31.0's cross-phase reading makes a place drawn as tumor that reads as water in every
phase of the day background (the gallbladder, a cyst). A metastasis turned cystic under
treatment reads so too, and its track then read as gone with nothing to say why. Each
segmentation now records the places it left out as fluid (centre in mm, volume, densest median
HU), and tracking warns when a lesion disappears at one. Rows from before this revision stay
NULL (not recorded) until `lvt batch --all --outdated` redraws them (LVT 0.3.1 drew the first
rows that record it); an imported label map has none to record.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("segmentations") as batch:
        batch.add_column(sa.Column("fluid_places", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("segmentations") as batch:
        batch.drop_column("fluid_places")
