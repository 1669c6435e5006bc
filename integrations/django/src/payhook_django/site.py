"""Django set up on demand, and what payhook reads from its settings."""

from __future__ import annotations

import os
from pathlib import Path

import django
from django.apps import apps
from django.conf import settings

__all__ = ["CONFIG_SETTING", "config_path", "django_configured", "ensure_django"]

# The setting that names payhook's TOML file.
CONFIG_SETTING = "PAYHOOK_CONFIG"


class DjangoNotConfigured(RuntimeError):
    """payhook needs Django's settings, and none were given."""


def django_configured() -> bool:
    """Whether this process has Django settings (configured, or named by the environment)."""
    return settings.configured or bool(os.environ.get("DJANGO_SETTINGS_MODULE"))


def ensure_django() -> None:
    """Set Django up unless it is already (a `payhook worker` started without manage.py)."""
    if apps.ready:
        return
    if not django_configured():
        raise DjangoNotConfigured(
            "payhook's [database] url = \"django\" needs Django's settings: set "
            "DJANGO_SETTINGS_MODULE, or run the command as `manage.py payhook ...`"
        )
    django.setup()


def config_path() -> str:
    """payhook's TOML file, from settings.PAYHOOK_CONFIG."""
    value = getattr(settings, CONFIG_SETTING, None)
    if not value:
        raise DjangoNotConfigured(f"set {CONFIG_SETTING} in Django's settings to payhook's TOML file")
    return str(Path(value))
