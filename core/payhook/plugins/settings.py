"""Plugins' per-tenant settings, read with payhook.validation.

A plugin's `plugin_settings` hook returns a dataclass (or a pydantic model); each tenant's
`[tenants.<slug>.plugin_config.<plugin>]` table is read into an instance of it when payhook
loads its configuration, before any event arrives. One key belongs to payhook in every
plugin's table: `events`, the event types (or fnmatch patterns) the tenant wants this plugin
to get runs for. A settings class may declare an `events` field to read it as well; its
default is then the filter when the key is absent.
"""

from __future__ import annotations

import dataclasses
import fnmatch
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import BeforeValidator, PlainValidator, PydanticUserError, ValidationError

from payhook.validation import InvalidSetting, problem, problems_of, shown, toml_validator

__all__ = [
    "EVENTS_KEY",
    "InvalidSetting",
    "PluginSettings",
    "matches",
    "read_settings",
]


EVENTS_KEY = "events"


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


def _event_type(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise problem(f"must be an event type, got {shown(value)}")
    return value


def _event_types(value: Any) -> Any:
    if not isinstance(value, list):
        raise problem(f'must be a list of event types, e.g. ["charge.dispute.*"], got {shown(value)}')
    return value


_EVENT_TYPES = Annotated[
    tuple[Annotated[str, PlainValidator(_event_type)], ...], BeforeValidator(_event_types)
]


def read_settings(cls: type | None, table: Mapping[str, Any], where: str) -> PluginSettings:
    """Read `table` (found at the key `where`) into `cls`, and the core's `events` key."""
    events, problems = None, list[str]()
    if EVENTS_KEY in table:
        events, problems = _read(_EVENT_TYPES, table[EVENTS_KEY], f"{where}.{EVENTS_KEY}")
    if cls is None:
        return PluginSettings(None, events, tuple(problems))
    # The class sees `events` only if it declares it, and not once payhook refused it.
    declares_events = EVENTS_KEY in _field_names(cls)
    passes_events = declares_events and not problems
    own = dict(table) if passes_events else {k: v for k, v in table.items() if k != EVENTS_KEY}
    value, more = _read(cls, own, where)
    if declares_events and events is None and value is not None:
        events = _declared_events(getattr(value, EVENTS_KEY, None))
    return PluginSettings(value, events, tuple(problems + more))


def _read(kind: Any, value: Any, where: str) -> tuple[Any, list[str]]:
    """(`value` read as `kind`, or None; its problems).

    A None is a `{ "$env" = ... }` left unset by a command that loads the file without
    secrets (`payhook db upgrade`): TOML has no null. What holds one is checked as far as
    it can be, and not built.
    """
    try:
        read = toml_validator(kind).validate_python(value)
    except ValidationError as exc:
        errors = [error for error in exc.errors() if error["input"] is not None]
        return None, problems_of(errors, value, where)
    except TypeError as exc:  # from a __post_init__
        return None, [f"{where}: {exc}"]
    except PydanticUserError as exc:  # an annotation pydantic cannot read
        reason = str(exc).splitlines()[0]
        return None, [f"{where}: payhook cannot read the plugin's settings class: {reason}"]
    return (None if _holds_none(value) else read), []


def _field_names(cls: type) -> list[str]:
    if dataclasses.is_dataclass(cls):
        return [item.name for item in dataclasses.fields(cls) if item.init]
    return list(getattr(cls, "model_fields", {}))


def _declared_events(value: Any) -> tuple[str, ...] | None:
    if isinstance(value, (list, tuple, frozenset, set)) and all(isinstance(item, str) for item in value):
        return tuple(value)
    return None


def _holds_none(value: Any) -> bool:
    if isinstance(value, Mapping):
        return any(_holds_none(item) for item in value.values())
    if isinstance(value, list):
        return any(_holds_none(item) for item in value)
    return value is None
