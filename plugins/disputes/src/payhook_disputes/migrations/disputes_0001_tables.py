"""disputes_dispute.

Revision ID: disputes_0001
Revises:
"""

import sqlalchemy as sa
from alembic import op
from payhook import UTCDateTime

revision = "disputes_0001"
down_revision = None
branch_labels = ("disputes",)
depends_on = None  # no foreign keys into other branches: works with or without registration


def upgrade() -> None:
    op.create_table(
        "disputes_dispute",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("tenant", sa.String(length=64), nullable=False),
        sa.Column("stripe_dispute_id", sa.String(length=255), nullable=False),
        sa.Column("charge_id", sa.String(length=255), nullable=False),
        sa.Column("payment_intent_id", sa.String(length=255), nullable=True),
        sa.Column("amount", sa.Numeric(18, 3), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("reason", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=64), nullable=False),
        sa.Column("evidence_due_by", UTCDateTime(), nullable=True),
        sa.Column("order_id", sa.Integer(), nullable=True),
        sa.Column("order_reference", sa.String(length=100), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("tenant", "stripe_dispute_id", name="uq_disputes_dispute_tenant_id"),
    )
    op.create_index("ix_disputes_dispute_tenant", "disputes_dispute", ["tenant"])
    op.create_index("ix_disputes_dispute_charge_id", "disputes_dispute", ["charge_id"])
    op.create_index("ix_disputes_dispute_order_id", "disputes_dispute", ["order_id"])


def downgrade() -> None:
    op.drop_table("disputes_dispute")
