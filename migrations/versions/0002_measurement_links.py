"""measurement links

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26 16:17:27.023008

Precomputed radiologist-measurement → model lesion/track links (with the diameter
difference), filled at analysis time so cohort pages aggregate them in SQL.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "measurement_links",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("measurement_id", sa.Integer(), nullable=False),
        sa.Column("model_id", sa.Integer(), nullable=False),
        sa.Column("patient_id", sa.Integer(), nullable=False),
        sa.Column("lesion_id", sa.Integer(), nullable=True),
        sa.Column("track_number", sa.Integer(), nullable=True),
        sa.Column("radiologist_mm", sa.Float(), nullable=False),
        sa.Column("model_mm", sa.Float(), nullable=True),
        sa.Column("diff_mm", sa.Float(), nullable=True),
        sa.Column("method", sa.String(length=32), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["lesion_id"],
            ["lesions.id"],
            name=op.f("fk_measurement_links_lesion_id_lesions"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["measurement_id"],
            ["measurements.id"],
            name=op.f("fk_measurement_links_measurement_id_measurements"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["model_id"],
            ["models.id"],
            name=op.f("fk_measurement_links_model_id_models"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["patient_id"],
            ["patients.id"],
            name=op.f("fk_measurement_links_patient_id_patients"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_measurement_links")),
        sa.UniqueConstraint(
            "measurement_id", "model_id", name="uq_measurement_links_measurement_model"
        ),
    )
    op.create_index(
        "ix_measurement_links_model_patient", "measurement_links", ["model_id", "patient_id"]
    )


def downgrade() -> None:
    op.drop_index("ix_measurement_links_model_patient", table_name="measurement_links")
    op.drop_table("measurement_links")
