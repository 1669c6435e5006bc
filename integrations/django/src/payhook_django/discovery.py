"""Site-local plugins: each installed Django app's `payhook_handlers.py`, named after the
app's label, found without any packaging (payhook's `payhook.plugin_sources` entry point)."""

from __future__ import annotations

from importlib import import_module
from types import ModuleType
from typing import Any

__all__ = ["HANDLERS_MODULE", "SitePlugin", "site_plugins"]

HANDLERS_MODULE = "payhook_handlers"
# pluggy marks a hook implementation with the attribute `<project>_impl`.
HOOKIMPL_MARK = "payhook_impl"


class SitePlugin:
    """An app's `payhook_handlers` module as payhook registers it: the module's hook
    implementations, and the applied-marker around its handlers (payhook_django.applied)."""

    def __init__(self, label: str, module: ModuleType) -> None:
        from payhook_django.applied import applied_marker

        self.label = label
        self.module = module
        for name in dir(module):
            value = getattr(module, name)
            if callable(value) and hasattr(value, HOOKIMPL_MARK):
                setattr(self, name, value)
        self.payhook_django_applied_marker: Any = applied_marker(label)

    def __repr__(self) -> str:
        return f"<site plugin {self.label!r} ({self.module.__name__})>"


def site_plugins() -> dict[str, SitePlugin]:
    """{app label: its payhook_handlers plugin}; nothing when this process has no Django."""
    from payhook_django.site import django_configured, ensure_django

    if not django_configured():
        return {}
    ensure_django()
    from django.apps import apps
    from django.utils.module_loading import module_has_submodule

    found = {}
    for app in apps.get_app_configs():
        if module_has_submodule(app.module, HANDLERS_MODULE):
            module = import_module(f"{app.name}.{HANDLERS_MODULE}")
            found[app.label] = SitePlugin(app.label, module)
    return found
