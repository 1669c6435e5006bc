"""Plugins' per-tenant settings: declared as a dataclass, read and checked at start.

A plugin's `plugin_settings` hook returns a class; each tenant's
`[tenants.<slug>.plugin_config.<plugin>]` table is read into an instance of it when payhook
loads its configuration, and every problem is reported with its full key at once, before
any event arrives. The annotations are the schema: str, int, float, bool, Literal[...],
lists, tuples and sets of those, dict[str, X], nested dataclasses, X | None, and TOML's
dates and times. A pydantic model works too (payhook calls its `model_validate`), for a
plugin that already uses pydantic; payhook itself does not need it.

One key belongs to payhook in every plugin's table: `events`, the event types (or fnmatch
patterns) the tenant wants this plugin to get runs for. A settings class may declare an
`events` field to read it as well; its default is then the filter when the key is absent.
"""

from __future__ import annotations

import dataclasses
import datetime
import fnmatch
import types
from collections.abc import Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

__all__ = ["EVENTS_KEY", "InvalidSetting", "PluginSettings", "matches", "read_settings"]

EVENTS_KEY = "events"
# A value shown in a message is cut short: it may be long, and it may be someone's secret.
SHOWN_LENGTH = 60


class InvalidSetting(ValueError):
    """Raise from a settings class's `__post_init__` to reject a value, naming its key.

    ``raise InvalidSetting("url", "must be an https URL")`` is reported at start as
    ``<file>: tenants.<slug>.plugin_config.<plugin>.url: must be an https URL``.
    """

    def __init__(self, key: str, message: str) -> None:
        self.key = key
        self.message = message
        super().__init__(f"{key}: {message}")


@dataclass(frozen=True)
class PluginSettings:
    """One plugin's table for one tenant, read.

    `value` is the settings object (None when the plugin declares no settings, or the table
    is invalid); `events` the tenant's filter (None: every type the plugin handles);
    `problems` one line per mistake, each starting with its key.
    """

    value: Any
    events: tuple[str, ...] | None
    problems: tuple[str, ...]


def matches(event_type: str, patterns: Sequence[str]) -> bool:
    """True when `event_type` is one of `patterns` or matches one (`"charge.dispute.*"`)."""
    return any(pattern == event_type or fnmatch.fnmatchcase(event_type, pattern) for pattern in patterns)


def read_settings(cls: type | None, table: Mapping[str, Any], where: str) -> PluginSettings:
    """Read `table` (found at the key `where`) into `cls`, and the core's `events` key."""
    reader = _Reader()
    events = reader.events(table.get(EVENTS_KEY, _ABSENT), f"{where}.{EVENTS_KEY}")
    if cls is None:
        return PluginSettings(None, events, tuple(reader.problems))
    # The class sees `events` only if it declares it, and not once payhook refused it.
    declares_events = EVENTS_KEY in _field_names(cls)
    passes_events = declares_events and not reader.problems
    own = dict(table) if passes_events else {k: v for k, v in table.items() if k != EVENTS_KEY}
    value = reader.settings(cls, own, where)
    if value is _INVALID or value is _UNRESOLVED:
        return PluginSettings(None, events, tuple(reader.problems))
    if declares_events and events is None:
        events = _declared_events(getattr(value, EVENTS_KEY, None))
    return PluginSettings(value, events, tuple(reader.problems))


def _declared_events(value: Any) -> tuple[str, ...] | None:
    if isinstance(value, (list, tuple, frozenset, set)) and all(isinstance(item, str) for item in value):
        return tuple(value)
    return None


def _field_names(cls: type) -> list[str]:
    if dataclasses.is_dataclass(cls):
        return [item.name for item in dataclasses.fields(cls) if item.init]
    return list(getattr(cls, "model_fields", {}))


class _Absent:
    def __repr__(self) -> str:
        return "<absent>"


_ABSENT: Any = _Absent()
_INVALID: Any = object()  # a value already reported as a problem
# A value that is None: a `{ "$env" = ... }` left unset by a command that loads the file
# without secrets (`payhook db upgrade`). TOML has no null, so nothing else is None. What
# holds one is checked as far as it can be, and not built.
_UNRESOLVED: Any = object()


class _Reader:
    def __init__(self) -> None:
        self.problems: list[str] = []

    def problem(self, key: str, message: str) -> Any:
        self.problems.append(f"{key}: {message}")
        return _INVALID

    def events(self, raw: Any, key: str) -> tuple[str, ...] | None:
        if raw is _ABSENT or raw is None:
            return None
        if not isinstance(raw, list):
            example = '["charge.dispute.*"]'
            return self._no_events(key, f"must be a list of event types, e.g. {example}, got {_shown(raw)}")
        if None in raw:
            return None
        for index, item in enumerate(raw):
            if not isinstance(item, str) or not item.strip():
                return self._no_events(f"{key}[{index}]", f"must be an event type, got {_shown(item)}")
        return tuple(raw)

    def _no_events(self, key: str, message: str) -> tuple[str, ...] | None:
        self.problem(key, message)
        return None

    def settings(self, cls: type, table: Mapping[str, Any], where: str) -> Any:
        if dataclasses.is_dataclass(cls):
            return self.dataclass_(cls, table, where)
        if hasattr(cls, "model_validate"):
            return self.model(cls, table, where)
        return self.problem(where, f"the plugin's settings class {cls.__qualname__} is not a dataclass")

    def dataclass_(self, cls: type, table: Any, where: str) -> Any:
        if not isinstance(table, Mapping):
            return self.problem(where, f"must be a table, got {_shown(table)}")
        hints = get_type_hints(cls)
        declared = {item.name: item for item in dataclasses.fields(cls) if item.init}
        unknown = sorted(set(table) - set(declared))
        for name in unknown:
            expected = f"one of {', '.join(sorted(declared))}" if declared else "none: it has no settings"
            self.problem(f"{where}.{name}", f"unknown key; expected {expected}")
        values: dict[str, Any] = {}
        invalid = unresolved = False
        for name, item in declared.items():
            key = f"{where}.{name}"
            if name not in table:
                required = item.default is dataclasses.MISSING and item.default_factory is dataclasses.MISSING
                if required:
                    invalid = True
                    self.problem(key, "missing; this setting has no default")
                continue
            value = self.value(hints[name], table[name], key)
            invalid = invalid or value is _INVALID
            unresolved = unresolved or value is _UNRESOLVED
            values[name] = value
        if invalid:
            return _INVALID
        if unresolved:
            return _UNRESOLVED
        # Built even beside an unknown key, so that its own checks are reported too.
        built = self.construct(cls, values, where)
        return _INVALID if unknown else built

    def construct(self, cls: type, values: dict[str, Any], where: str) -> Any:
        try:
            return cls(**values)
        except InvalidSetting as exc:
            return self.problem(f"{where}.{exc.key}", exc.message)
        except (ValueError, TypeError) as exc:
            return self.problem(where, str(exc))

    def model(self, cls: Any, table: Mapping[str, Any], where: str) -> Any:
        """A pydantic model: unknown keys are refused here, the rest is pydantic's to check."""
        known = set(cls.model_fields)
        unknown = sorted(set(table) - known)
        for name in unknown:
            self.problem(f"{where}.{name}", f"unknown key; expected one of {', '.join(sorted(known))}")
        if unknown:
            return _INVALID
        if _holds_none(table):
            return _UNRESOLVED
        try:
            return cls.model_validate(dict(table))
        except InvalidSetting as exc:
            return self.problem(f"{where}.{exc.key}", exc.message)
        except ValueError as exc:  # pydantic's ValidationError is a ValueError
            errors = getattr(exc, "errors", None)
            if not callable(errors):
                return self.problem(where, str(exc))
            for error in errors():
                path = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in error["loc"])
                self.problem(f"{where}{path}", str(error["msg"]))
            return _INVALID

    def value(self, hint: Any, raw: Any, key: str) -> Any:
        """`raw` read as `hint`, or _INVALID once reported (_UNRESOLVED for None)."""
        if raw is None:
            return _UNRESOLVED
        if hint is Any or hint is object:
            return raw
        origin = get_origin(hint)
        if origin in (Union, types.UnionType):
            return self.union(hint, raw, key)
        if origin is Literal:
            choices = get_args(hint)
            if any(raw == choice and type(raw) is type(choice) for choice in choices):
                return raw
            return self.problem(key, f"must be {_either(choices)}, got {_shown(raw)}")
        if origin is not None and isinstance(origin, type):
            if issubclass(origin, Mapping):
                return self.mapping(hint, raw, key)
            if issubclass(origin, (Sequence, AbstractSet)) and not issubclass(origin, str):
                return self.collection(origin, get_args(hint), raw, key)
        if isinstance(hint, type) and dataclasses.is_dataclass(hint):
            return self.dataclass_(hint, raw, key)
        if isinstance(hint, type):
            return self.scalar(hint, raw, key)
        return self.problem(key, f"payhook cannot read a setting of type {hint!r}; the plugin must change it")

    def union(self, hint: Any, raw: Any, key: str) -> Any:
        # TOML has no null: None in `X | None` only means "may be left out".
        options = [option for option in get_args(hint) if option is not type(None)]
        if len(options) == 1:
            return self.value(options[0], raw, key)
        for option in options:
            trial = _Reader()
            value = trial.value(option, raw, key)
            if value is not _INVALID:
                return value
        return self.problem(key, f"must be {' or '.join(_describe(o) for o in options)}, got {_shown(raw)}")

    def scalar(self, kind: type, raw: Any, key: str) -> Any:
        # bool is an int in Python, but `retries = true` is a typo, not a number.
        if kind is float and isinstance(raw, int) and not isinstance(raw, bool):
            return float(raw)
        if isinstance(raw, bool) != (kind is bool) or not isinstance(raw, kind):
            return self.problem(key, f"must be {_describe(kind)}, got {_shown(raw)}")
        if kind is datetime.date and isinstance(raw, datetime.datetime):
            return self.problem(key, f"must be a date, got {_shown(raw)}")
        return raw

    def mapping(self, hint: Any, raw: Any, key: str) -> Any:
        if not isinstance(raw, Mapping):
            return self.problem(key, f"must be a table, got {_shown(raw)}")
        args = get_args(hint)
        item_hint = args[1] if len(args) == 2 else Any
        values = {name: self.value(item_hint, item, f"{key}.{name}") for name, item in raw.items()}
        return _worst(list(values.values())) or values

    def collection(self, origin: type, args: tuple[Any, ...], raw: Any, key: str) -> Any:
        if not isinstance(raw, list):
            return self.problem(key, f"must be a list, got {_shown(raw)}")
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(raw) != len(args):
                return self.problem(key, f"must be a list of {len(args)} items, got {len(raw)}")
            hints = list(args)
        else:
            hints = [args[0] if args else Any] * len(raw)
        items = [
            self.value(hint, item, f"{key}[{index}]")
            for index, (hint, item) in enumerate(zip(hints, raw, strict=True))
        ]
        if _worst(items):
            return _worst(items)
        if origin is set:
            return set(items)
        if issubclass(origin, AbstractSet):
            return frozenset(items)
        return items if origin is list else tuple(items)


def _worst(values: list[Any]) -> Any:
    """_INVALID if any of `values` is, else _UNRESOLVED if any is, else None."""
    if any(value is _INVALID for value in values):
        return _INVALID
    if any(value is _UNRESOLVED for value in values):
        return _UNRESOLVED
    return None


def _holds_none(value: Any) -> bool:
    if isinstance(value, Mapping):
        return any(_holds_none(item) for item in value.values())
    if isinstance(value, list):
        return any(_holds_none(item) for item in value)
    return value is None


def _describe(hint: Any) -> str:
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return "a table"
    if get_origin(hint) is Literal:
        return _either(get_args(hint))
    return hint.__name__ if isinstance(hint, type) else str(hint)


def _either(choices: tuple[Any, ...]) -> str:
    shown = [repr(choice) if not isinstance(choice, str) else f'"{choice}"' for choice in choices]
    return shown[0] if len(shown) == 1 else ", ".join(shown[:-1]) + f" or {shown[-1]}"


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= SHOWN_LENGTH else text[: SHOWN_LENGTH - 1] + "…"
