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
    )
    with context.begin_transaction():
        context.run_migrations()
    connection.commit()
