"""Where an event came from: a webhook delivery or `payhook reconcile`.

Revision ID: 0003_event_source
Revises: 0002_replay_retention
"""

import sqlalchemy as sa
from alembic import op

revision = "0003_event_source"
down_revision = "0002_replay_retention"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("payhook_event") as batch:
        # Every event stored before this revision was delivered by Stripe.
        batch.add_column(sa.Column("source", sa.String(length=16), nullable=False, server_default="webhook"))


def downgrade() -> None:
    with op.batch_alter_table("payhook_event") as batch:
        batch.drop_column("source")
