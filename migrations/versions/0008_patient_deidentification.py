"""patient de-identification policy

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-07 00:30:00

Each patient records the de-identification it was ingested under: whether its identifiers
were replaced by pseudonyms, and whether its dates were shifted. Exports write it as DICOM's
PatientIdentityRemoved and DeidentificationMethod, and an ingest under another policy is
refused for that patient (one study shifted and one not would put a false interval between
them). Patients from before this revision stay NULL: their policy was not recorded.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("patients") as batch:
        batch.add_column(sa.Column("identity_removed", sa.Boolean(), nullable=True))
        batch.add_column(sa.Column("dates_shifted", sa.Boolean(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("patients") as batch:
        batch.drop_column("dates_shifted")
        batch.drop_column("identity_removed")
