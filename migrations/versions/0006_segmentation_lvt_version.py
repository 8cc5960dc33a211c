"""segmentation lvt version

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-05 23:30:00

Each segmentation names the LVT version whose pipeline drew it. The inference around a
checkpoint changes between versions (0.2.0 pads a scan thinner than a patch by repeating its
edge slices), so the same model can draw different label maps; the version says which results
an upgrade would redraw (``lvt batch --outdated``). Rows from before this revision stay NULL:
the version that drew them was not recorded.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("segmentations") as batch:
        batch.add_column(sa.Column("lvt_version", sa.String(length=16), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("segmentations") as batch:
        batch.drop_column("lvt_version")
