"""Site-local plugins: each installed Django app's `payhook_handlers.py`, named after the
app's label, found without any packaging (payhook's `payhook.plugin_sources` entry point)."""

from __future__ import annotations

from importlib import import_module
from types import ModuleType

__all__ = ["HANDLERS_MODULE", "site_plugins"]

HANDLERS_MODULE = "payhook_handlers"


def site_plugins() -> dict[str, ModuleType]:
    """{app label: its payhook_handlers module}; nothing when this process has no Django."""
    from payhook_django.site import django_configured, ensure_django

    if not django_configured():
        return {}
    ensure_django()
    from django.apps import apps
    from django.utils.module_loading import module_has_submodule

    found = {}
    for app in apps.get_app_configs():
        if module_has_submodule(app.module, HANDLERS_MODULE):
            found[app.label] = import_module(f"{app.name}.{HANDLERS_MODULE}")
    return found
