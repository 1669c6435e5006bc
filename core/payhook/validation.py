"""Reading TOML tables into declared classes with pydantic: payhook's configuration and
every plugin's settings go through this one validator.

A class's annotations are the schema and pydantic checks a table against them, the way a
TOML file needs: its scalars are taken as they are (no "5" for 5, no `true` for 1: pydantic's
strict mode), while its arrays fill tuples and sets, and its tables dataclasses (the lax
mode); an unknown key is a mistake, named with the keys expected; and every mistake is one
line, `<key>: <what is wrong>`, all of them at once, never showing a secret's value.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from functools import cache
from typing import Any, cast

from pydantic import TypeAdapter, ValidationError
from pydantic_core import ErrorDetails, InitErrorDetails, PydanticCustomError, SchemaValidator

__all__ = [
    "NOT_A_KEY",
    "InvalidSetting",
    "present",
    "problem",
    "problems_of",
    "shown",
    "toml_validator",
    "without",
]

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
    got = f", got {shown(first['input'])}"
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


def shown(value: Any) -> str:
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
