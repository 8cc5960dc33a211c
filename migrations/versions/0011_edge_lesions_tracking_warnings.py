"""lesions cut by the scan edge, and the tracking warnings of a patient

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-07 04:00:00

A lesion the scan's edge cuts has sizes that are lower bounds and is never a RECIST target;
the flag was computed at tracking time but not stored, so pages showed such a lesion's size as
if it were whole. A registration that fell back to the scanner frame (livers too different, a
series too short) was logged and then lost, so a clinician reading the tracks could not know
they were matched without registration. Rows from before this revision stay NULL (not known)
and there are no warnings until the patient's next refresh (`lvt batch --all --refresh`).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("lesions") as batch:
        batch.add_column(sa.Column("cut_by_scan_edge", sa.Boolean(), nullable=True))
    op.create_table(
        "tracking_warnings",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("patient_id", sa.Integer(), sa.ForeignKey("patients.id", ondelete="CASCADE"), nullable=False),
        sa.Column("model_id", sa.Integer(), sa.ForeignKey("models.id", ondelete="CASCADE"), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_tracking_warnings_patient_model", "tracking_warnings", ["patient_id", "model_id"])


def downgrade() -> None:
    op.drop_index("ix_tracking_warnings_patient_model", table_name="tracking_warnings")
    op.drop_table("tracking_warnings")
    with op.batch_alter_table("lesions") as batch:
        batch.drop_column("cut_by_scan_edge")
