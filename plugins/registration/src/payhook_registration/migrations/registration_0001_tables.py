"""registration_order, registration_payment.

Revision ID: registration_0001
Revises:
"""

import sqlalchemy as sa
from alembic import op
from payhook import UTCDateTime

revision = "registration_0001"
down_revision = None
branch_labels = ("registration",)
depends_on = None  # no foreign keys into the core's tables: pruning events must stay possible


def upgrade() -> None:
    op.create_table(
        "registration_order",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("tenant", sa.String(length=64), nullable=False),
        sa.Column("reference", sa.String(length=100), nullable=False),
        sa.Column("status", sa.String(length=32), nullable=False),
        sa.Column("total", sa.Numeric(18, 3), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("hold_expires_at", UTCDateTime(), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("tenant", "reference", name="uq_registration_order_tenant_reference"),
    )
    op.create_index("ix_registration_order_tenant", "registration_order", ["tenant"])

    op.create_table(
        "registration_payment",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("order_id", sa.Integer(), nullable=False),
        sa.Column("method", sa.String(length=16), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("amount", sa.Numeric(18, 3), nullable=False),
        sa.Column("amount_refunded", sa.Numeric(18, 3), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("stripe_payment_intent_id", sa.String(length=255), nullable=True),
        sa.Column("stripe_charge_id", sa.String(length=255), nullable=True),
        sa.Column("failure_reason", sa.Text(), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(["order_id"], ["registration_order.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_registration_payment_order_id", "registration_payment", ["order_id"])
    op.create_index(
        "ix_registration_payment_stripe_payment_intent_id",
        "registration_payment",
        ["stripe_payment_intent_id"],
        unique=True,
    )
    op.create_index("ix_registration_payment_stripe_charge_id", "registration_payment", ["stripe_charge_id"])


def downgrade() -> None:
    op.drop_table("registration_payment")
    op.drop_table("registration_order")
