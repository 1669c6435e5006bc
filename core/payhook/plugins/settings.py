"""Reading TOML tables into declared classes with pydantic; plugins' per-tenant settings.

A class's annotations are the schema and pydantic checks a table against them, the way a
TOML file needs: its scalars are taken as they are (no "5" for 5, no `true` for 1: pydantic's
strict mode), while its arrays fill tuples and sets, and its tables dataclasses (the lax
mode); an unknown key is a mistake, named with the keys expected; and every mistake is one
line, `<key>: <what is wrong>`, all of them at once.

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
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Annotated, Any, cast

from pydantic import BeforeValidator, PlainValidator, PydanticUserError, TypeAdapter, ValidationError
from pydantic_core import ErrorDetails, InitErrorDetails, PydanticCustomError, SchemaValidator

__all__ = [
    "EVENTS_KEY",
    "NOT_A_KEY",
    "InvalidSetting",
    "PluginSettings",
    "matches",
    "problem",
    "problems_of",
    "read_settings",
    "toml_validator",
    "without",
]

EVENTS_KEY = "events"
# A value shown in a message is cut short: it may be long, and it may be someone's secret.
SHOWN_LENGTH = 60
# Field metadata: set by whoever reads the table (a tenant's slug is its table's name), not
# by a key in it. A required one is "" until then.
NOT_A_KEY: Mapping[str, Any] = {"not_a_key": True}

_PROBLEM = "payhook"  # the error type of payhook's own checks: their message is said as is
_SCALARS = frozenset({"bool", "int", "float", "str", "bytes", "date", "datetime", "time", "timedelta"})
# What a value must be, by the kind of pydantic's error about it ("int_type": "int").
_NOUNS = {
    kind: noun
    for noun, kinds in {
        "int": "int int_from_float",
        "float": "float",
        "bool": "bool",
        "str": "string",
        "a date": "date",
        "a datetime": "datetime",
        "a time": "time",
        "a list": "list tuple set frozen_set",
        "a table": "dict dataclass dataclass_exact model model_attributes",
    }.items()
    for kind in kinds.split()
}
_BOUNDS = {
    "greater_than": ("gt", "greater than"),
    "greater_than_equal": ("ge", "at least"),
    "less_than": ("lt", "less than"),
    "less_than_equal": ("le", "at most"),
}


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


def problem(message: str) -> PydanticCustomError:
    """What a validator raises to report one problem, in these words (never the value)."""
    return PydanticCustomError(_PROBLEM, message)


@cache
def toml_validator(kind: Any) -> SchemaValidator:
    """pydantic's validator for `kind`, reading TOML as the module's docstring says."""
    return SchemaValidator(_for_toml(TypeAdapter(kind).core_schema))


def _for_toml(node: Any) -> Any:
    """pydantic's core schema, strict about scalars only, refusing unknown keys."""
    if isinstance(node, list):
        return [_for_toml(item) for item in node]
    if not isinstance(node, dict):
        return node
    node = {key: _for_toml(value) for key, value in node.items()}
    if node.get("type") in _SCALARS:
        node.setdefault("strict", True)
    if node.get("type") in ("dataclass", "model"):
        check = {"type": "no-info", "function": _refusing_unknown_keys(node["cls"])}
        wrapper = {"type": "function-wrap", "function": check, "schema": node}
        if "ref" in node:  # what other parts of the schema point to is the checked table
            wrapper["ref"] = node.pop("ref")
        return wrapper
    return node


def _refusing_unknown_keys(cls: Any) -> Callable[[Any, Callable[[Any], Any]], Any]:
    if dataclasses.is_dataclass(cls):
        declared = [item for item in dataclasses.fields(cls) if item.init]
        keys = [item.name for item in declared if not item.metadata.get("not_a_key")]
        filled = {item.name: "" for item in declared if item.name not in keys and _required(item)}
    else:
        keys, filled = list(cls.model_fields), {}
    expected = f"one of {', '.join(sorted(keys))}" if keys else "none: it has no settings"

    def validate(data: Any, handler: Callable[[Any], Any]) -> Any:
        if not isinstance(data, Mapping):
            return handler(data)
        unknown = sorted(key for key in data if key not in keys)
        known = {**filled, **{key: value for key, value in data.items() if key in keys}}
        if not unknown:
            return handler(known)
        # The known keys are checked all the same: every problem is reported at once.
        errors = [_details(f"unknown key; expected {expected}", (key,), input=key) for key in unknown]
        try:
            handler(known)
        except ValidationError as exc:
            errors += [_details(error["msg"], error["loc"], error) for error in exc.errors()]
        raise ValidationError.from_exception_data(cls.__name__, errors)

    return validate


def _required(item: dataclasses.Field[Any]) -> bool:
    return item.default is dataclasses.MISSING and item.default_factory is dataclasses.MISSING


def _details(
    message: str, loc: tuple[int | str, ...], error: ErrorDetails | None = None, input: Any = None
) -> InitErrorDetails:
    """An error to raise again among others: its type, context and value are kept."""
    if error is None:
        return InitErrorDetails(type=problem(message), loc=loc, input=input)
    kind = PydanticCustomError(error["type"], message, error.get("ctx"))
    return InitErrorDetails(type=kind, loc=loc, input=error["input"])


def problems_of(
    errors: list[ErrorDetails], data: Any, where: str = "", missing: Mapping[str, str] | None = None
) -> list[str]:
    """One line per mistake pydantic found in `data` (read at the key `where`).

    `missing` says what to do about a required key that is absent, by its name.
    """
    found: dict[str, list[ErrorDetails]] = {}
    for error in errors:
        path = present(error["loc"], data)
        cause = (error.get("ctx") or {}).get("error")
        if isinstance(cause, InvalidSetting) and path[-1:] != [cause.key]:  # not from its field's validator
            path.append(cause.key)
        elif error["type"] == "missing":
            path.append(error["loc"][-1])
        key = where + "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in path)
        # A union's members each report the value: one line says what it must be instead.
        found.setdefault(key.removeprefix("."), []).append(error)
    return [f"{key}: {_said(errors, missing or {})}" for key, errors in found.items()]


def _said(errors: list[ErrorDetails], missing: Mapping[str, str]) -> str:
    first, kind = errors[0], errors[0]["type"]
    context = first.get("ctx") or {}
    got = f", got {_shown(first['input'])}"
    if kind == "value_error":
        cause = context["error"]
        return cause.message if isinstance(cause, InvalidSetting) else str(cause)
    if kind == "missing":
        return f"missing; {missing.get(str(first['loc'][-1]), 'this setting has no default')}"
    if kind == "literal_error":
        expected = str(context["expected"]).replace("'", '"')
        return f"must be {expected}{got}"
    if kind in _BOUNDS:
        name, words = _BOUNDS[kind]
        return f"must be {words} {context[name]}{got}"
    nouns = [_NOUNS.get(error["type"].removesuffix("_type").removesuffix("_parsing")) for error in errors]
    if kind != _PROBLEM and all(nouns):
        return f"must be {' or '.join(dict.fromkeys(str(noun) for noun in nouns))}{got}"
    return first["msg"]  # payhook's own words, or pydantic's: never the value


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= SHOWN_LENGTH else text[: SHOWN_LENGTH - 1] + "…"


def present(loc: tuple[int | str, ...], data: Any) -> list[int | str]:
    """The parts of pydantic's `loc` that are keys or indexes in `data`: not the names it
    gives a union's members, nor `[key]`."""
    path: list[int | str] = []
    node: Any = data
    for part in loc:
        if (isinstance(node, Mapping) and part in node) or (isinstance(node, list) and isinstance(part, int)):
            path.append(part)
            node = cast(Any, node)[part]
    return path


def without(data: Any, locs: list[tuple[int | str, ...]]) -> Any:
    """`data` without what is at each of `locs` (the table holding a missing key goes)."""
    gone = object()

    def remove(node: Any, path: list[int | str]) -> Any:
        if not path:
            return gone
        head, *rest = path
        if isinstance(node, dict):
            return {key: remove(value, rest) if key == head else value for key, value in node.items()}
        return [remove(value, rest) if index == head else value for index, value in enumerate(node)]

    def pruned(node: Any) -> Any:
        if isinstance(node, dict):
            return {key: pruned(value) for key, value in node.items() if value is not gone}
        if isinstance(node, list):
            return [pruned(value) for value in node if value is not gone]
        return node

    for loc in locs:
        data = remove(data, present(loc, data))
    return pruned(data)


def _event_type(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise problem(f"must be an event type, got {_shown(value)}")
    return value


def _event_types(value: Any) -> Any:
    if not isinstance(value, list):
        raise problem(f'must be a list of event types, e.g. ["charge.dispute.*"], got {_shown(value)}')
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
