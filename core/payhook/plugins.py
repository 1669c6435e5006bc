"""Find plugins, collect their handlers, and scope their hooks to tenants."""

from __future__ import annotations

import fnmatch
import logging
import os
from collections.abc import Iterable, Mapping
from functools import lru_cache
from importlib.metadata import entry_points
from typing import Any

import pluggy

from . import hookspecs
from .config import Config, ConfigError, TenantConfig
from .context import HandlerContext
from .events import Event
from .hookspecs import hookimpl
from .types import Handler, HandlerFunc

__all__ = ["ENTRY_POINT_GROUP", "PluginHost", "disabled_from_env"]

ENTRY_POINT_GROUP = "payhook"
DISABLED_ENV = "PAYHOOK_DISABLED_PLUGINS"
CORE = "payhook.core"

log = logging.getLogger("payhook.plugins")


def disabled_from_env(environ: Mapping[str, str] | None = None) -> frozenset[str]:
    """Plugin names listed (comma-separated) in PAYHOOK_DISABLED_PLUGINS."""
    value = (os.environ if environ is None else environ).get(DISABLED_ENV, "")
    return frozenset(name.strip() for name in value.split(",") if name.strip())


class _CoreHooks:
    @hookimpl(trylast=True)
    def run_handler(self, handler: Handler, event: Event, ctx: HandlerContext) -> Any:
        result = handler(event, ctx)
        # firstresult stops at the first non-None answer; the core's must always count.
        return True if result is None else result


class PluginHost:
    """The pluggy manager plus the handler table built from `register_handlers`."""

    def __init__(
        self,
        plugins: Mapping[str, object] | None = None,
        *,
        disabled: Iterable[str] | None = None,
    ) -> None:
        self.pm = pluggy.PluginManager("payhook")
        self.pm.add_hookspecs(hookspecs)
        self.pm.register(_CoreHooks(), name=CORE)
        self.disabled = frozenset(disabled_from_env() if disabled is None else disabled)
        self.load_errors: dict[str, str] = {}
        self.names: list[str] = []
        if plugins is None:
            self._discover()
        else:
            for name, plugin in plugins.items():
                if name in self.disabled:
                    self.pm.set_blocked(name)
                else:
                    self._register(name, plugin)
        self.handlers = self._collect_handlers()
        self._hook_relays: dict[tuple[str, ...], _ScopedHooks] = {}
        self.handlers_for = lru_cache(maxsize=4096)(self._handlers_for)

    @property
    def hook(self) -> pluggy.HookRelay:
        return self.pm.hook

    def add_hookspecs(self, module_or_class: Any) -> None:
        """Let a plugin declare hooks of its own for other plugins to implement.

        Declaring hooks that already have specs (a runtime started twice) is a no-op.
        """
        names = [name for name in dir(module_or_class) if self.pm.parse_hookspec_opts(module_or_class, name)]
        declared = [name for name in names if getattr(getattr(self.pm.hook, name, None), "spec", None)]
        if names and len(declared) == len(names):
            return  # declared before: a runtime started twice, or the module reloaded
        self.pm.add_hookspecs(module_or_class)

    def _discover(self) -> None:
        for entry_point in entry_points(group=ENTRY_POINT_GROUP):
            name = entry_point.name
            if name in self.disabled:
                # Blocked before import: a disabled plugin's module never runs.
                self.pm.set_blocked(name)
                continue
            try:
                plugin = entry_point.load()
            except Exception as exc:  # a broken plugin must not take the others down
                self.load_errors[name] = f"{type(exc).__name__}: {exc}"
                log.error("plugin %r failed to import: %s", name, self.load_errors[name])
                continue
            self._register(name, plugin)

    def _register(self, name: str, plugin: object) -> None:
        if name in self.names:
            raise ValueError(f"two plugins are named {name!r}")
        self.pm.register(plugin, name=name)
        self.names.append(name)

    def _collect_handlers(self) -> dict[str, list[Handler]]:
        handlers: dict[str, list[Handler]] = {name: [] for name in self.names}
        for impl in self.pm.hook.register_handlers.get_hookimpls():
            plugin = impl.plugin_name
            if plugin == CORE:
                continue

            def register(
                event_type: str,
                handler: HandlerFunc,
                *,
                name: str | None = None,
                _plugin: str = plugin,
            ) -> None:
                if not callable(handler):
                    raise TypeError(f"plugin {_plugin!r} registered a non-callable for {event_type!r}")
                label = name or f"{handler.__module__}.{handler.__qualname__}"
                for existing in handlers[_plugin]:
                    if existing.name == label and existing.event_type == event_type:
                        raise ValueError(f"plugin {_plugin!r} registered {label} twice for {event_type!r}")
                handlers[_plugin].append(Handler(_plugin, label, event_type, handler))

            impl.function(register=register)
        return handlers

    def _handlers_for(self, event_type: str, plugins: tuple[str, ...]) -> tuple[Handler, ...]:
        found: dict[tuple[str, str], Handler] = {}
        for plugin in plugins:
            for handler in self.handlers.get(plugin, ()):
                pattern = handler.event_type
                if pattern == event_type or ("*" in pattern and fnmatch.fnmatchcase(event_type, pattern)):
                    # One run per (plugin, handler) even if several patterns match.
                    found.setdefault((plugin, handler.name), handler)
        return tuple(found.values())

    def handler(self, plugin: str, name: str) -> Handler | None:
        for handler in self.handlers.get(plugin, ()):
            if handler.name == name:
                return handler
        return None

    def hooks_for(self, tenant: TenantConfig) -> _ScopedHooks:
        """Hook callers that reach only the plugins this tenant enabled (and the core)."""
        key = tenant.plugins
        relay = self._hook_relays.get(key)
        if relay is None:
            relay = self._hook_relays[key] = _ScopedHooks(self.pm, set(tenant.plugins))
        return relay

    def check_config(self, config: Config) -> None:
        """Fail with one line per tenant that needs a plugin that is not usable."""
        problems = []
        for tenant in config.tenants.values():
            for index, name in enumerate(tenant.plugins):
                if name in self.names:
                    continue
                key = f"{config.source}: tenants.{tenant.slug}.plugins[{index}]"
                if name in self.load_errors:
                    problems.append(
                        f"{key}: plugin {name!r} failed to import ({self.load_errors[name]}); "
                        "fix or reinstall it, or remove it from this tenant"
                    )
                elif name in self.disabled:
                    problems.append(
                        f"{key}: plugin {name!r} is disabled by {DISABLED_ENV}; "
                        "re-enable it or remove it from this tenant"
                    )
                else:
                    installed = ", ".join(sorted(self.names)) or "none"
                    problems.append(
                        f"{key}: unknown plugin {name!r} (installed: {installed}); "
                        f"pip install payhook-{name} or remove it from this tenant"
                    )
        if problems:
            raise ConfigError(problems)


class _ScopedHooks:
    """Like `pm.hook`, minus the plugins a tenant did not enable."""

    def __init__(self, pm: pluggy.PluginManager, enabled: set[str]) -> None:
        self._pm = pm
        self._enabled = enabled
        self._callers: dict[str, Any] = {}

    def __getattr__(self, name: str) -> Any:
        caller = self._callers.get(name)
        if caller is None:
            excluded = [
                plugin
                for plugin_name, plugin in self._pm.list_name_plugin()
                if plugin_name not in self._enabled and plugin_name != CORE
            ]
            caller = self._pm.subset_hook_caller(name, remove_plugins=excluded)
            self._callers[name] = caller
        return caller
