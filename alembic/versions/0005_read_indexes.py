"""indexes for the reads that grow with history: actions by (contact_id, kind, status) and
enrollments by (contact_id, status) in place of (contact_id), events by (contact_id, type,
occurred_at)

The guard rails read a batch of contacts' email actions by status; with only a contact_id
index beside (status, lease_until), SQLite's planner (no statistics before ANALYZE) read
every sent action of the table for each batch. The new index leads with contact_id, so it
also serves the foreign key as the old one did. Conditions (did_event, opened, clicked)
read a contact's events of a type since a time; the contact's (status, id) index made
that a walk through every event the contact ever had. A batch of contacts' live enrollments
was read through the (status, wake_at) index: every live enrollment of the table.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-04 21:45:00

"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("actions", schema=None) as batch_op:
        batch_op.create_index(
            "ix_actions_contact_kind_status", ["contact_id", "kind", "status"], unique=False
        )
        batch_op.drop_index("ix_actions_contact_id")
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.create_index(
            "ix_events_contact_type", ["contact_id", "type", "occurred_at"], unique=False
        )
    with op.batch_alter_table("enrollments", schema=None) as batch_op:
        batch_op.create_index(
            "ix_enrollments_contact_status", ["contact_id", "status"], unique=False
        )
        batch_op.drop_index("ix_enrollments_contact_id")


def downgrade() -> None:
    with op.batch_alter_table("enrollments", schema=None) as batch_op:
        batch_op.create_index("ix_enrollments_contact_id", ["contact_id"], unique=False)
        batch_op.drop_index("ix_enrollments_contact_status")
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.drop_index("ix_events_contact_type")
    with op.batch_alter_table("actions", schema=None) as batch_op:
        batch_op.create_index("ix_actions_contact_id", ["contact_id"], unique=False)
        batch_op.drop_index("ix_actions_contact_kind_status")
