"""Alembic branch "registration": payhook runs it with the core's (`payhook db upgrade`)."""
