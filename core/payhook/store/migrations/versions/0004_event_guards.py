"""Why an event got no runs (a livemode the tenant does not take), and an API version flag.

Revision ID: 0004_event_guards
Revises: 0003_event_source
"""

import sqlalchemy as sa
from alembic import op

revision = "0004_event_guards"
down_revision = "0003_event_source"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("payhook_event") as batch:
        batch.add_column(sa.Column("ignored_reason", sa.String(length=255), nullable=True))
        batch.add_column(
            sa.Column("api_version_mismatch", sa.Boolean(), nullable=False, server_default=sa.false())
        )


def downgrade() -> None:
    with op.batch_alter_table("payhook_event") as batch:
        batch.drop_column("api_version_mismatch")
        batch.drop_column("ignored_reason")
