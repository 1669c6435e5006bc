"""What the operator commands share: options, loading, the store, tables, times, progress.

Exit statuses, as `grep` and `kubectl` use them: 0 when the command did its job and found
nothing wrong, 1 when it ran and found a problem (failures, a missing plugin, an unreadable
store), 2 for a usage or configuration error (click's own usage errors are 2 as well).
"""

from __future__ import annotations

import json
import logging
import re
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, NoReturn

import click
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

from ..config import Config, ConfigError, load_config
from ..store import Store, StoreUnavailable, describe

__all__ = [
    "EXIT_PROBLEM",
    "EXIT_USAGE",
    "Progress",
    "config_option",
    "echo_json",
    "fail",
    "json_option",
    "load",
    "open_store",
    "parse_since",
    "progress_bar",
    "quiet_discovery",
    "shorten",
    "since_option",
    "table",
    "when",
]

EXIT_PROBLEM = 1
EXIT_USAGE = 2

Progress = Callable[[int, int], None]

config_option = click.option(
    "--config",
    "config_path",
    required=True,
    type=click.Path(dir_okay=False),
    envvar="PAYHOOK_CONFIG",
    help="The TOML configuration file (or $PAYHOOK_CONFIG).",
)
json_option = click.option(
    "--json", "as_json", is_flag=True, help="Print JSON for scripts instead of a table for people."
)

RELATIVE = re.compile(r"^(\d+)([smhdw])$")
UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_since(value: str, now: datetime | None = None) -> datetime:
    """`3d`, `12h`, `30m`, `45s`, `2w` ago, or an ISO 8601 date or time (UTC unless it says)."""
    match = RELATIVE.match(value.strip())
    if match:
        amount, unit = match.groups()
        return (now or datetime.now(UTC)) - timedelta(**{UNITS[unit]: int(amount)})
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        raise click.BadParameter(
            f"{value!r} is neither ISO 8601 (2027-05-01, 2027-05-01T12:00) nor relative (3d, 12h, 30m)"
        ) from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _since(_ctx: click.Context, _param: click.Parameter, value: str | None) -> datetime | None:
    return None if value is None else parse_since(value)


def since_option(help: str) -> Callable[[Any], Any]:
    return click.option("--since", callback=_since, metavar="WHEN", help=help)


def fail(message: str, status: int = EXIT_PROBLEM) -> NoReturn:
    click.echo(f"error: {message}", err=True)
    sys.exit(status)


def load(path: str, *, require_secrets: bool = False) -> Config:
    """The configuration, or exit 2 with one line per problem.

    Operator commands never verify a signature, so by default they do not need the
    secrets in the environment.
    """
    try:
        return load_config(path, require_secrets=require_secrets)
    except ConfigError as exc:
        for problem in exc.problems:
            click.echo(f"error: {problem}", err=True)
        sys.exit(EXIT_USAGE)


@contextmanager
def open_store(config: Config) -> Iterator[Store]:
    """The store, for reading; exit 1 with the reason when it cannot be read."""
    url = make_url(config.database.url)
    sqlite_file = config.database.is_sqlite and url.database not in (None, "", ":memory:")
    if sqlite_file and not Path(str(url.database)).exists():
        # Connecting would create an empty file; say what is wrong instead.
        fail(f"no database at {url.database}; check [database] url, or run `payhook db upgrade`")
    store = Store(config.database)
    try:
        yield store
    except (DBAPIError, StoreUnavailable) as exc:
        reason = str(exc) if isinstance(exc, StoreUnavailable) else describe(exc)
        fail(f"could not read the store ({reason}); is it reachable, and up to date (`payhook db upgrade`)?")
    finally:
        store.dispose()


def echo_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2))


def when(value: datetime | None) -> str:
    """A time for a table: UTC, to the second."""
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S") if value is not None else "-"


def shorten(text: str | None, width: int) -> str:
    """The first line of `text`, cut to `width` characters."""
    line = (text or "").strip().splitlines()[0] if (text or "").strip() else ""
    return line if len(line) <= width else line[: width - 1] + "…"


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Columns aligned with two spaces between them, headers in capitals (as kubectl does)."""
    cells = [[str(cell) for cell in row] for row in rows]
    widths = [max([len(header), *(len(row[i]) for row in cells)]) for i, header in enumerate(headers)]
    lines = [[header.upper() for header in headers], *cells]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        for line in lines
    )


@contextmanager
def progress_bar(label: str) -> Iterator[Progress | None]:
    """A `progress(done, total)` that draws a bar on stderr, or None when stderr is no terminal."""
    if not sys.stderr.isatty():
        yield None
        return
    bar: Any = None

    def progress(done: int, total: int) -> None:
        nonlocal bar
        if bar is None:
            bar = click.progressbar(length=max(total, 1), label=label, file=sys.stderr)
            bar.__enter__()
        bar.length = max(total, 1)
        bar.update(done - bar.pos)

    try:
        yield progress
    finally:
        if bar is not None:
            bar.__exit__(None, None, None)


@contextmanager
def quiet_discovery() -> Iterator[None]:
    """Plugin discovery without its log lines: the command reports broken plugins itself."""
    logger = logging.getLogger("payhook.plugins")
    disabled, logger.disabled = logger.disabled, True
    try:
        yield
    finally:
        logger.disabled = disabled
