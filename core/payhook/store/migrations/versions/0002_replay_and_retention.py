"""Replay bookkeeping on handler runs; pruned events kept as a dedupe ledger.

Revision ID: 0002_replay_retention
Revises: 0001_core
"""

import sqlalchemy as sa
from alembic import op
from payhook.store.models import UTCDateTime

revision = "0002_replay_retention"
down_revision = "0001_core"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("payhook_handler_run") as batch:
        batch.add_column(sa.Column("replay_count", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("replayed_at", UTCDateTime(), nullable=True))
        batch.add_column(sa.Column("replayed_by", sa.String(length=255), nullable=True))
    with op.batch_alter_table("payhook_event") as batch:
        batch.add_column(sa.Column("pruned_at", UTCDateTime(), nullable=True))
    op.create_index("ix_payhook_event_tenant_created", "payhook_event", ["tenant", "created"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_payhook_event_tenant_created", table_name="payhook_event")
    with op.batch_alter_table("payhook_event") as batch:
        batch.drop_column("pruned_at")
    with op.batch_alter_table("payhook_handler_run") as batch:
        batch.drop_column("replayed_by")
        batch.drop_column("replayed_at")
        batch.drop_column("replay_count")
