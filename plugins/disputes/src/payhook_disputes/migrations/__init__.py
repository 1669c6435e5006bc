"""Alembic branch "disputes": payhook runs it with the core's (`payhook db upgrade`)."""
