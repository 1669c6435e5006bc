"""testplugin_effect

Revision ID: testplugin_0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "testplugin_0001"
down_revision = None
branch_labels = ("testplugin",)
depends_on = "0001_core"


def upgrade() -> None:
    op.create_table(
        "testplugin_effect",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("tenant", sa.String(length=64), nullable=False),
        sa.Column("stripe_event_id", sa.String(length=255), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
    )
    op.create_index("ix_testplugin_effect_stripe_event_id", "testplugin_effect", ["stripe_event_id"])


def downgrade() -> None:
    op.drop_table("testplugin_effect")
