"""The test plugin's Alembic branch (found through the `payhook.migrations` entry point)."""
