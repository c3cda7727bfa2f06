"""actions.dispatch_lease_until: a row left ``sending`` is handed out once per lease

A worker that stops mid-send leaves its action ``sending`` with an expired lease, and the
expired lease is what tells the next claim that the send may have been cut short (re-send
through a connector that dedupes, otherwise ``unknown``). The sweeper kept that lease as it
was, so every pass (every 5 s) handed the row out again while no worker consumed: the queue
grew without bound. The sweeper's own lease on such a row now lives in this column, and
``lease_until`` keeps its meaning. Nothing to fill in: NULL is "never handed out again".

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-05 11:00:00

"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import engine.db

revision: str = "0007"
down_revision: str | Sequence[str] | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("actions", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("dispatch_lease_until", engine.db.UTCDateTime(), nullable=True)
        )


def downgrade() -> None:
    with op.batch_alter_table("actions", schema=None) as batch_op:
        batch_op.drop_column("dispatch_lease_until")
