"""events.attributes_before: what recording an event replaced in its contact's attributes

An event's ``attributes`` are merged into its contact when it is recorded, before the
pipeline applies it, so the pipeline's "before this event" already saw the new values and a
condition on an attribute (``on_condition(attribute(...))``, a segment, a goal or an exit)
never turned true. Each event now keeps the previous values of the keys it changed
(``{"was": {...}, "absent": [...]}``, engine/attribute_changes.py). Nothing to fill in: NULL
is "changed nothing", which is what the pipeline assumed of every event so far.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-06 10:00:00

"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | Sequence[str] | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.add_column(sa.Column("attributes_before", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.drop_column("attributes_before")
