"""Stable error type names: payhook.<Name> for failures recorded under older names.

Failures recorded under a module path (`payhook.sqlite.WriteConflict`) or a bare name
(`LeaseExpired`) are renamed `payhook.<Name>`, as payhook records them now, so that
`payhook failures` groups them with those recorded since.

Revision ID: 0006_stable_error_types
Revises: 0005_operator_sessions
"""

import sqlalchemy as sa
from alembic import op

revision = "0006_stable_error_types"
down_revision = "0005_operator_sessions"
branch_labels = None
depends_on = None

# (table, column) holding an error type name.
COLUMNS = (("payhook_run_failure", "error_type"), ("payhook_handler_run", "last_error_type"))
# Failures with no exception behind them were recorded by a bare name before.
BARE = {"LeaseExpired": "payhook.LeaseExpired", "WorkerStopped": "payhook.WorkerStopped"}


def stable(name: str) -> str:
    if name in BARE:
        return BARE[name]
    module, _, qualname = name.rpartition(".")
    if module.startswith("payhook."):  # payhook.<module path>.<Name>
        return f"payhook.{qualname}"
    return name


def upgrade() -> None:
    conn = op.get_bind()
    for table, column in COLUMNS:
        query = (
            f"SELECT DISTINCT {column} FROM {table} WHERE {column} LIKE 'payhook.%.%' OR {column} IN :bare"
        )
        names = conn.execute(
            sa.text(query).bindparams(sa.bindparam("bare", expanding=True)), {"bare": list(BARE)}
        ).scalars()
        for old in list(names):
            new = stable(old)
            if new != old:
                conn.execute(
                    sa.text(f"UPDATE {table} SET {column} = :new WHERE {column} = :old"),
                    {"new": new, "old": old},
                )


def downgrade() -> None:
    # The module each name came from is not recorded anywhere: the new names stay.
    pass
