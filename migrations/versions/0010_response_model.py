"""responses name their model

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-07 01:30:00

A model's RECIST responses come from that model's tracks. Without the model on the row, a
refresh under one model overwrote another's responses, and a page showing model A's lesions
showed model B's response beside them. The radiologist's responses have no model (NULL).
An existing model response is given the model that drew its study when exactly one did;
any other stays NULL, is not shown, and goes at the patient's next refresh. One radiologist
response per study stays enforced by a partial unique index (its rows have no model).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("responses") as batch:
        batch.add_column(sa.Column("model_id", sa.Integer(), nullable=True))
        batch.create_foreign_key("fk_responses_model_id_models", "models", ["model_id"], ["id"],
                                 ondelete="CASCADE")
        batch.drop_constraint("uq_responses_study_source", type_="unique")
        batch.create_unique_constraint("uq_responses_study_source_model", ["study_id", "source", "model_id"])
    # one radiologist response per study, as the dropped key ensured (its rows have no model)
    op.create_index("uq_responses_radiologist_study", "responses", ["study_id"], unique=True,
                    sqlite_where=sa.text("source = 'radiologist'"),
                    postgresql_where=sa.text("source = 'radiologist'"))
    op.execute(sa.text(
        "UPDATE responses SET model_id = (SELECT MIN(g.model_id) FROM segmentations g "
        "JOIN series s ON s.id = g.series_id WHERE s.study_id = responses.study_id AND g.status = 'done' "
        "HAVING COUNT(DISTINCT g.model_id) = 1) WHERE source = 'model'"
    ))


def downgrade() -> None:
    op.drop_index("uq_responses_radiologist_study", table_name="responses")
    # one row per study and source again: the newest of each (other models' responses go)
    op.execute(sa.text("DELETE FROM responses WHERE id NOT IN ("
                       "SELECT keep FROM (SELECT MAX(id) AS keep FROM responses GROUP BY study_id, source) AS kept)"))
    with op.batch_alter_table("responses") as batch:
        batch.drop_constraint("uq_responses_study_source_model", type_="unique")
        batch.create_unique_constraint("uq_responses_study_source", ["study_id", "source"])
        batch.drop_constraint("fk_responses_model_id_models", type_="foreignkey")
        batch.drop_column("model_id")
