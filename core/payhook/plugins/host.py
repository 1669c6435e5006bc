"""Find plugins, collect their handlers and settings, and scope their hooks to tenants."""

from __future__ import annotations

import dataclasses
import difflib
import logging
from collections.abc import Callable, Iterable, Mapping
from functools import lru_cache
from importlib.metadata import entry_points
from typing import Any

import pluggy

from payhook.config import DISABLED_ENV, Config, ConfigError, TenantConfig, disabled_from_env
from payhook.plugins import hookspecs
from payhook.plugins.context import HandlerContext
from payhook.plugins.hookspecs import hookimpl
from payhook.plugins.settings import PluginSettings, matches, read_settings
from payhook.plugins.types import EventT, Handler
from payhook.stripe_api.events import Event

__all__ = ["ENTRY_POINT_GROUP", "PluginHost"]

ENTRY_POINT_GROUP = "payhook"
# Hosts that provide plugins without packaging (payhook-django: a Django app's
# `payhook_handlers.py`): each entry point is a callable returning {name: plugin}.
PLUGIN_SOURCES_GROUP = "payhook.plugin_sources"
CORE = "payhook.core"

log = logging.getLogger("payhook.plugins")


class _CoreHooks:
    @hookimpl(trylast=True)
    def run_handler(self, handler: Handler, event: Event, ctx: HandlerContext) -> Any:
        result = handler(event, ctx)
        # firstresult stops at the first non-None answer; the core's must always count.
        return True if result is None else result


class PluginHost:
    """The pluggy manager, the handler table built from `register_handlers`, and each
    plugin's settings class from `plugin_settings`."""

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
        self.settings_classes, self.settings_errors = self._collect_settings()
        self._hook_relays: dict[tuple[str, ...], _ScopedHooks] = {}
        # What each tenant's tables say, read once per TenantConfig (kept alive by the entry,
        # so that its id is never reused).
        self._tenant_settings: dict[int, tuple[TenantConfig, dict[str, PluginSettings]]] = {}
        self._matching = lru_cache(maxsize=4096)(self._handlers_matching)

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
        for source in entry_points(group=PLUGIN_SOURCES_GROUP):
            try:
                found = source.load()()
            except Exception as exc:
                log.error("plugin source %r failed: %s: %s", source.name, type(exc).__name__, exc)
                continue
            for name, plugin in found.items():
                if name in self.disabled:
                    self.pm.set_blocked(name)
                elif name not in self.names:
                    self._register(name, plugin)
                else:
                    log.error(
                        "site plugin %r is also an installed plugin's name; the installed one is used", name
                    )

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
                handler: Callable[[EventT, HandlerContext], object],
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

    def _collect_settings(self) -> tuple[dict[str, type | None], dict[str, str]]:
        """Each plugin's settings class (None: it declares none), and what is wrong with any."""
        classes: dict[str, type | None] = dict.fromkeys(self.names)
        errors: dict[str, str] = {}
        for impl in self.pm.hook.plugin_settings.get_hookimpls():
            plugin = impl.plugin_name
            try:
                declared = impl.function()
            except Exception as exc:  # a broken plugin must not take the others down
                errors[plugin] = f"its plugin_settings hook raised {type(exc).__name__}: {exc}"
                continue
            usable = dataclasses.is_dataclass(declared) or hasattr(declared, "model_validate")
            if declared is None or (isinstance(declared, type) and usable):
                classes[plugin] = declared
            else:
                errors[plugin] = (
                    f"its plugin_settings hook returned {declared!r}, not a dataclass type (or None)"
                )
        return classes, errors

    def handlers_for(self, event_type: str, tenant: TenantConfig) -> tuple[Handler, ...]:
        """The handlers that get a run for this tenant's event of `event_type`.

        Those of the tenant's plugins registered for the type, narrowed by each plugin's
        `events` setting for the tenant.
        """
        return self._matching(event_type, self._event_filters(tenant))

    def _event_filters(self, tenant: TenantConfig) -> tuple[tuple[str, tuple[str, ...] | None], ...]:
        settings = self._settings_of(tenant)
        return tuple(
            (plugin, settings[plugin].events if plugin in settings else None) for plugin in tenant.plugins
        )

    def _handlers_matching(
        self, event_type: str, filters: tuple[tuple[str, tuple[str, ...] | None], ...]
    ) -> tuple[Handler, ...]:
        found: dict[tuple[str, str], Handler] = {}
        for plugin, wanted in filters:
            if wanted is not None and not matches(event_type, wanted):
                continue
            for handler in self.handlers.get(plugin, ()):
                if matches(event_type, (handler.event_type,)):
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
            relay = self._hook_relays[key] = _ScopedHooks(self, set(tenant.plugins))
        return relay

    def settings_for(self, tenant: TenantConfig, plugin: str) -> Any:
        """The plugin's settings object for the tenant (None when it declares none).

        Raises ConfigError when the tenant's table is invalid (`check_config` reports that
        at start, so a running payhook never gets here with one).
        """
        read = self._settings_of(tenant).get(plugin)
        if read is None:
            return None
        if read.problems:
            raise ConfigError(list(read.problems))
        return read.value

    def _settings_of(self, tenant: TenantConfig) -> dict[str, PluginSettings]:
        cached = self._tenant_settings.get(id(tenant))
        if cached is not None and cached[0] is tenant:
            return cached[1]
        read = {
            plugin: read_settings(
                self.settings_classes.get(plugin),
                tenant.config_for(plugin),
                f"tenants.{tenant.slug}.plugin_config.{plugin}",
            )
            for plugin in tenant.plugins
            if plugin in self.names
        }
        self._tenant_settings[id(tenant)] = (tenant, read)
        return read

    def check_config(self, config: Config) -> None:
        """Fail with every problem at once, one line each, naming the file and the key:
        plugins a tenant enables that are not usable, and plugin settings that are not what
        the plugin declares."""
        problems = []
        for tenant in config.tenants.values():
            problems += self._unusable_plugins(tenant)
            for plugin, read in self._settings_of(tenant).items():
                problems += [*read.problems, *self._unhandled(tenant, plugin, read)]
        if problems:
            raise ConfigError([f"{config.source}: {problem}" for problem in problems])

    def _unusable_plugins(self, tenant: TenantConfig) -> list[str]:
        problems = []
        for index, name in enumerate(tenant.plugins):
            key = f"tenants.{tenant.slug}.plugins[{index}]"
            if name in self.settings_errors:
                problems.append(f"{key}: plugin {name!r} is broken: {self.settings_errors[name]}")
            elif name in self.names:
                continue
            elif name in self.load_errors:
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
                # Never a package name made from the typo: that one may be a squatter's.
                close = difflib.get_close_matches(name, self.names, n=1)
                fix = f"did you mean {close[0]!r}? Fix it" if close else "Install the plugin"
                problems.append(
                    f"{key}: unknown plugin {name!r} (installed: {installed}); "
                    f"{fix} or remove it from this tenant"
                )
        return problems

    def _unhandled(self, tenant: TenantConfig, plugin: str, read: PluginSettings) -> list[str]:
        """An exact event type in `events` that none of the plugin's handlers takes is a
        mistake (a typo, or a type the plugin does not support): no run would ever come."""
        patterns = [handler.event_type for handler in self.handlers.get(plugin, ())]
        problems = []
        for index, wanted in enumerate(read.events or ()):
            if "*" in wanted or "?" in wanted or "[" in wanted or matches(wanted, patterns):
                continue
            handled = ", ".join(sorted(set(patterns))) or "none"
            problems.append(
                f"tenants.{tenant.slug}.plugin_config.{plugin}.events[{index}]: plugin {plugin!r} "
                f"has no handler for {wanted!r}; it handles {handled}"
            )
        return problems


class _ScopedHooks:
    """Like `pm.hook`, minus the plugins a tenant did not enable."""

    def __init__(self, host: PluginHost, enabled: set[str]) -> None:
        self._pm = host.pm
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
