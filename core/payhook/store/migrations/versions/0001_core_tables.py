"""Core tables: payhook_event, payhook_handler_run, payhook_run_failure.

Revision ID: 0001_core
Revises:
"""

import sqlalchemy as sa
from alembic import op
from payhook.store.models import UTCDateTime

revision = "0001_core"
down_revision = None
branch_labels = ("payhook",)
depends_on = None


def upgrade() -> None:
    op.create_table(
        "payhook_event",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("tenant", sa.String(length=64), nullable=False),
        sa.Column("stripe_event_id", sa.String(length=255), nullable=False),
        sa.Column("type", sa.String(length=255), nullable=False),
        sa.Column("livemode", sa.Boolean(), nullable=False),
        sa.Column("api_version", sa.String(length=64), nullable=True),
        sa.Column("account", sa.String(length=255), nullable=True),
        sa.Column("object_id", sa.String(length=255), nullable=True),
        sa.Column("created", UTCDateTime(), nullable=True),
        sa.Column("received_at", UTCDateTime(), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("secret_index", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("tenant", "stripe_event_id", name="uq_payhook_event_tenant_event"),
    )
    op.create_index("ix_payhook_event_received_at", "payhook_event", ["received_at"], unique=False)
    op.create_index("ix_payhook_event_tenant_object", "payhook_event", ["tenant", "object_id"], unique=False)
    op.create_index("ix_payhook_event_type", "payhook_event", ["type"], unique=False)

    op.create_table(
        "payhook_handler_run",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("event_id", sa.Integer(), nullable=False),
        sa.Column("plugin", sa.String(length=100), nullable=False),
        sa.Column("handler", sa.String(length=255), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("attempt_base", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", UTCDateTime(), nullable=True),
        sa.Column("lease_owner", sa.String(length=255), nullable=True),
        sa.Column("lease_token", sa.String(length=64), nullable=True),
        sa.Column("lease_expires_at", UTCDateTime(), nullable=True),
        sa.Column("last_error_type", sa.String(length=255), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("last_traceback", sa.Text(), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("started_at", UTCDateTime(), nullable=True),
        sa.Column("finished_at", UTCDateTime(), nullable=True),
        sa.Column("duration_ms", sa.Float(), nullable=True),
        sa.ForeignKeyConstraint(
            ["event_id"],
            ["payhook_event.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("event_id", "plugin", "handler", name="uq_payhook_handler_run_handler"),
    )
    op.create_index(
        "ix_payhook_handler_run_due",
        "payhook_handler_run",
        ["status", "next_attempt_at"],
        unique=False,
    )
    op.create_index("ix_payhook_handler_run_event_id", "payhook_handler_run", ["event_id"], unique=False)

    op.create_table(
        "payhook_run_failure",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("error_type", sa.String(length=255), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("traceback", sa.Text(), nullable=False),
        sa.Column("failed_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["run_id"],
            ["payhook_handler_run.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_payhook_run_failure_run_id", "payhook_run_failure", ["run_id"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_payhook_run_failure_run_id", table_name="payhook_run_failure")

    op.drop_table("payhook_run_failure")
    op.drop_index("ix_payhook_handler_run_event_id", table_name="payhook_handler_run")
    op.drop_index("ix_payhook_handler_run_due", table_name="payhook_handler_run")

    op.drop_table("payhook_handler_run")
    op.drop_index("ix_payhook_event_type", table_name="payhook_event")
    op.drop_index("ix_payhook_event_tenant_object", table_name="payhook_event")
    op.drop_index("ix_payhook_event_received_at", table_name="payhook_event")

    op.drop_table("payhook_event")
