"""The operator app's open sessions: payhook_operator_session.

Revision ID: 0005_operator_sessions
Revises: 0004_event_guards
"""

import sqlalchemy as sa
from alembic import op
from payhook.store.models import UTCDateTime

revision = "0005_operator_sessions"
down_revision = "0004_event_guards"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "payhook_operator_session",
        sa.Column("digest", sa.String(length=64), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("expires_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("digest"),
    )


def downgrade() -> None:
    op.drop_table("payhook_operator_session")
