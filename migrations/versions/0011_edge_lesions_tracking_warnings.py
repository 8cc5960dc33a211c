"""lesions cut by the scan edge, the tracking warnings of a patient, segmentations to redraw

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-07 04:00:00

A lesion the scan's edge cuts has sizes that are lower bounds and is never a RECIST target;
the flag was computed at tracking time but not stored, so pages showed such a lesion's size as
if it were whole. A registration that fell back to the scanner frame (livers too different, a
series too short) was logged and then lost, so a clinician reading the tracks could not know
they were matched without registration. Lesions stored before this revision get the flag from
their stored box and their series' size (a box touching a face of the grid); one without a box
stays NULL (not known). There are no warnings until the patient's next refresh
(`lvt batch --all --refresh`). A segmentation a correction made stale (its day's contrast phase
corrected, a study dated into its day) records why it must be redrawn; `lvt batch --outdated`
redraws it. Before, the correction erased the LVT version that drew it to get the same effect.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("lesions") as batch:
        batch.add_column(sa.Column("cut_by_scan_edge", sa.Boolean(), nullable=True))
    _flag_stored_lesions()
    with op.batch_alter_table("segmentations") as batch:
        batch.add_column(sa.Column("redraw_reason", sa.String(64), nullable=True))
    op.create_table(
        "tracking_warnings",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("patient_id", sa.Integer(), sa.ForeignKey("patients.id", ondelete="CASCADE"), nullable=False),
        sa.Column("model_id", sa.Integer(), sa.ForeignKey("models.id", ondelete="CASCADE"), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_tracking_warnings_patient_model", "tracking_warnings", ["patient_id", "model_id"])


def _flag_stored_lesions() -> None:
    """A lesion is cut when its box (x0, y0, z0, x1, y1, z1, inclusive) reaches a face of its
    series' grid, as :func:`lvt_core.lesions.extract_lesions` decides on the label map."""
    bind = op.get_bind()
    rows = bind.execute(sa.text(
        "SELECT l.id, l.bbox, s.size_x, s.size_y, s.size_z FROM lesions l "
        "JOIN segmentations g ON g.id = l.segmentation_id JOIN series s ON s.id = g.series_id")).all()
    flags = [{"id": lesion_id, "cut": _cut(box, (nx, ny, nz))} for lesion_id, box, nx, ny, nz in rows]
    flags = [f for f in flags if f["cut"] is not None]
    if flags:
        bind.execute(sa.text("UPDATE lesions SET cut_by_scan_edge = :cut WHERE id = :id"), flags)


def _cut(box: Any, size: tuple[int, int, int]) -> bool | None:
    box = json.loads(box) if isinstance(box, str) else box
    if not box or len(box) != 6:
        return None
    return any(box[a] <= 0 or box[a + 3] >= n - 1 for a, n in enumerate(size))


def downgrade() -> None:
    op.drop_index("ix_tracking_warnings_patient_model", table_name="tracking_warnings")
    op.drop_table("tracking_warnings")
    with op.batch_alter_table("segmentations") as batch:
        batch.drop_column("redraw_reason")
    with op.batch_alter_table("lesions") as batch:
        batch.drop_column("cut_by_scan_edge")
