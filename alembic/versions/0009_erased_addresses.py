"""erased_addresses: a digest of each erased contact's address

Erasing a contact (``DELETE /v1/contacts/{email}``, a HubSpot privacy deletion) forgot her
consent with everything else, so an address that came back (a queued event, an import, a
CRM sync) was a new, subscribed contact and got marketing email again. Each erasure now
keeps a digest of the address (``engine/erasure.py``) and why it was suppressed, if it was
(its plain suppression row goes), and a new contact whose address matches one starts
unsubscribed, her suppression put back. Nothing to fill in: erasures made
before this revision left nothing to remember them by.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-05 18:00:00

"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

import engine.db

revision: str = "0009"
down_revision: str | Sequence[str] | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "erased_addresses",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("digest", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("erased_at", engine.db.UTCDateTime(), nullable=False),
        sa.Column("suppressed_for", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("digest"),
    )


def downgrade() -> None:
    op.drop_table("erased_addresses")
