"""Alembic environment: payhook passes its engine in; there is no alembic.ini."""

from __future__ import annotations

from alembic import context
from sqlmodel import SQLModel

from payhook.store import models  # noqa: F401 - registers the core tables
from payhook.store.migrations import VERSION_TABLE

engine = context.config.attributes["engine"]

with engine.connect() as connection:
    context.configure(
        connection=connection,
        target_metadata=SQLModel.metadata,
        version_table=VERSION_TABLE,
        render_as_batch=engine.dialect.name == "sqlite",
        # upgrade() records each revision as it is applied, to name them in that order.
        on_version_apply=context.config.attributes.get("on_version_apply"),
    )
    with context.begin_transaction():
        context.run_migrations()
    connection.commit()
