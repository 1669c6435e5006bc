"""payhook's configuration, store and migrations, as the Django settings name them."""

from __future__ import annotations

from payhook.config import Config, load_config
from payhook.store import migrations
from payhook.store.engine import Store

from payhook_django.site import CONFIG_SETTING, config_path
from payhook_django.store import alias_of

__all__ = ["load", "pending_migrations", "store_alias", "upgrade"]


def load(*, require_secrets: bool = True) -> Config:
    """payhook's configuration from settings.PAYHOOK_CONFIG."""
    return load_config(config_path(), require_secrets=require_secrets)


def store_alias() -> str | None:
    """The Django database payhook's store is on (`url = "django..."`), or None."""
    from django.conf import settings

    if not getattr(settings, CONFIG_SETTING, None):
        return None
    url = load(require_secrets=False).database.url
    return alias_of(url) if url == "django" or url.startswith("django:") else None


def upgrade() -> list[str]:
    """Apply payhook's and the installed plugins' migrations; the revisions applied."""
    store = Store(load(require_secrets=False).database, timeout=None)
    try:
        return [script.revision for script in migrations.upgrade(store.engine) or []]
    finally:
        store.dispose()


def pending_migrations() -> list[str]:
    """Heads of payhook's (and plugins') migration branches the database has not reached."""
    store = Store(load(require_secrets=False).database, timeout=None)
    try:
        return sorted(migrations.missing_heads(store.engine))
    finally:
        store.dispose()
