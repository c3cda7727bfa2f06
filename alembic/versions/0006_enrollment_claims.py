"""enrollment_claims: a scheduler pass claims a due enrollment in its own small table, not
by stamping ``enrollments.claimed_until``; the due index gains ``id``

Stamping the claim on the enrollment wrote the page of every due row: among 1,000,000
waiting enrollments with 10,000 due, ten thousand pages read and written, where the same
claim among 10,000 touched a hundred. A claim row per due enrollment keeps those writes in
a table as small as the work in flight, and with ``id`` in the due index PostgreSQL reads the
due rows from the index alone. Claims in flight at upgrade time are dropped: at worst a
wake-up is handed out again, and the wake job ignores one that has already run.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-05 03:00:00

"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import engine.db

revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "enrollment_claims",
        sa.Column("enrollment_id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("wake_at", engine.db.UTCDateTime(), nullable=False),
        sa.Column("until", engine.db.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("enrollment_id"),
    )
    with op.batch_alter_table("enrollment_claims", schema=None) as batch_op:
        batch_op.create_index("ix_enrollment_claims_until", ["until"], unique=False)
    with op.batch_alter_table("enrollments", schema=None) as batch_op:
        batch_op.drop_index("ix_enrollments_due")
        batch_op.create_index("ix_enrollments_due", ["status", "wake_at", "id"], unique=False)
        batch_op.drop_column("claimed_until")


def downgrade() -> None:
    with op.batch_alter_table("enrollments", schema=None) as batch_op:
        batch_op.add_column(sa.Column("claimed_until", engine.db.UTCDateTime(), nullable=True))
        batch_op.drop_index("ix_enrollments_due")
        batch_op.create_index("ix_enrollments_due", ["status", "wake_at"], unique=False)
    with op.batch_alter_table("enrollment_claims", schema=None) as batch_op:
        batch_op.drop_index("ix_enrollment_claims_until")
    op.drop_table("enrollment_claims")
