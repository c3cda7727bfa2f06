"""contacts.hubspot_id: the linked HubSpot object, indexed

Every HubSpot webhook event finds its contact by the HubSpot object id, which lived only in
the JSON ``external_ids``: a scan of every contact per event (100 events a batch, and HubSpot
gives a webhook 5 s before it retries). The id now also has a column of its own, indexed,
filled in from ``external_ids`` here; ``engine/inbound_crm.py`` keeps the two together.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-05 18:40:00

"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0010"
down_revision: str | Sequence[str] | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("contacts", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("hubspot_id", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True)
        )
        batch_op.create_index(batch_op.f("ix_contacts_hubspot_id"), ["hubspot_id"], unique=False)
    if op.get_bind().dialect.name == "postgresql":
        linked = "external_ids ->> 'hubspot'"
    else:
        linked = "CAST(json_extract(external_ids, '$.hubspot') AS TEXT)"
    op.execute(f"UPDATE contacts SET hubspot_id = {linked} WHERE {linked} IS NOT NULL")


def downgrade() -> None:
    with op.batch_alter_table("contacts", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_contacts_hubspot_id"))
        batch_op.drop_column("hubspot_id")
