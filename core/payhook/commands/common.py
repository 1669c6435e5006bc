"""What the commands share: --config and its loader, the store, tables, times, progress.

Exit statuses, as `grep` and `kubectl` use them: 0 when the command did its job and found
nothing wrong, 1 when it ran and found a problem (failures, a missing plugin, an unreadable
store), 2 for a usage or configuration error (click's own usage errors are 2 as well).
"""

from __future__ import annotations

import json
import logging
import math
import re
import sys
import unicodedata
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import click
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

from payhook.config import Config, ConfigError, load_config
from payhook.store.engine import Store, StoreUnavailable, describe

if TYPE_CHECKING:
    from payhook.plugins.host import PluginHost

__all__ = [
    "EXIT_PROBLEM",
    "EXIT_USAGE",
    "LIMIT_MAX",
    "FiniteFloat",
    "Progress",
    "config_errors",
    "config_option",
    "days_option",
    "discover_plugins",
    "echo_json",
    "echo_lines",
    "fail",
    "json_option",
    "limit_option",
    "load",
    "open_store",
    "parse_since",
    "printable",
    "progress_bar",
    "quiet_discovery",
    "read_config",
    "shorten",
    "since_option",
    "table",
    "until_option",
    "when",
]

EXIT_PROBLEM = 1
EXIT_USAGE = 2

Progress = Callable[[int, int], None]

CONFIG_HELP = "The TOML configuration file (or $PAYHOOK_CONFIG)."


def config_option(*, required: bool = True, help: str = CONFIG_HELP) -> Callable[[Any], Any]:
    """`--config FILE` (or $PAYHOOK_CONFIG), as every command takes it; read it with `load`."""
    return click.option(
        "--config",
        "config_path",
        required=required,
        type=click.Path(dir_okay=False),
        envvar="PAYHOOK_CONFIG",
        help=help,
    )


json_option = click.option(
    "--json", "as_json", is_flag=True, help="Print JSON for scripts instead of a table for people."
)

# ASCII digits only: `\d` would also take other scripts' digits.
RELATIVE = re.compile(r"^([0-9]+)([smhdw])$")
UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
WHEN_FORMS = "ISO 8601 (2027-05-01, 2027-05-01T12:00) or relative (3d, 12h, 30m)"

# `events list --limit` and the like: a bound far above any page a person reads, and far
# below what SQLite and PostgreSQL take as a LIMIT (a 64-bit integer).
LIMIT_MAX = 100_000


def parse_since(value: str, now: datetime | None = None) -> datetime:
    """`3d`, `12h`, `30m`, `45s`, `2w` ago, or an ISO 8601 date or time (UTC unless it says).

    The answer is in UTC. A time that cannot be one (an age reaching back before the year 1,
    an offset taking the instant out of the years 1 to 9999) is a `click.BadParameter`.
    """
    text = value.strip()
    match = RELATIVE.match(text)
    if match:
        amount, unit = match.groups()
        try:
            return (now or datetime.now(UTC)) - timedelta(**{UNITS[unit]: int(amount)})
        except (OverflowError, ValueError):  # ValueError: more digits than int() takes
            raise click.BadParameter(f"{shorten(text, 40)!r} reaches back before the year 1") from None
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise click.BadParameter(f"{value!r} is neither {WHEN_FORMS}") from None
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=UTC)
    try:
        return parsed.astimezone(UTC)
    except OverflowError:
        raise click.BadParameter(f"{value!r} in UTC is outside the years 1 to 9999") from None


def _when_option(_ctx: click.Context, _param: click.Parameter, value: str | None) -> datetime | None:
    # click names the option in the message of a BadParameter raised here.
    return None if value is None else parse_since(value)


def since_option(help: str) -> Callable[[Any], Any]:
    """`--since WHEN`, parsed by `parse_since`: every command's --since takes the same forms."""
    return click.option("--since", callback=_when_option, metavar="WHEN", help=help)


def until_option(help: str) -> Callable[[Any], Any]:
    """`--until WHEN`, the same forms and bounds as `since_option`."""
    return click.option("--until", callback=_when_option, metavar="WHEN", help=help)


def limit_option(default: int, help: str) -> Callable[[Any], Any]:
    """`--limit N`, a whole number from 1 to LIMIT_MAX."""
    return click.option(
        "--limit",
        default=default,
        show_default=True,
        type=click.IntRange(min=1, max=LIMIT_MAX),
        help=help,
    )


class FiniteFloat(click.FloatRange):
    """A FloatRange that also refuses nan and inf (nan passes every range check)."""

    name = "finite float"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return number


def _days(_ctx: click.Context, _param: click.Parameter, value: float | None) -> float | None:
    if value is not None:
        try:
            datetime.now(UTC) - timedelta(days=value)
        except OverflowError:
            raise click.BadParameter(f"{value:g} days ago is before the year 1") from None
    return value


def days_option(name: str, help: str, **kwargs: Any) -> Callable[[Any], Any]:
    """An age in days (fractions allowed): not negative, and not before the year 1."""
    return click.option(name, type=FiniteFloat(min=0), callback=_days, metavar="N", help=help, **kwargs)


def fail(message: str, status: int = EXIT_PROBLEM) -> NoReturn:
    click.echo(f"error: {message}", err=True)
    sys.exit(status)


def read_config(path: str, *, require_secrets: bool = False, plugins: PluginHost | None = None) -> Config:
    """The configuration; a ConfigError lists every problem of the file.

    `plugins`: also check the tenants' plugins and their settings against this host (as
    `serve` does), on a file with problems too, so that every problem shows at once.
    """
    check = plugins.check_config if plugins is not None else None
    config = load_config(path, require_secrets=require_secrets, check=check)
    if plugins is not None:
        try:
            plugins.check_config(config)
        except ConfigError as exc:
            raise ConfigError(exc.problems, config) from None
    return config


def load(path: str, *, require_secrets: bool = False, plugins: PluginHost | None = None) -> Config:
    """`read_config`, or exit 2 with one line per problem.

    Only the commands that sign or verify deliveries pass `require_secrets=True`: the
    others run on hosts that hold no secrets.
    """
    with config_errors():
        return read_config(path, require_secrets=require_secrets, plugins=plugins)
    raise AssertionError("unreachable")  # for type checkers: config_errors exits


@contextmanager
def config_errors() -> Iterator[None]:
    """A ConfigError raised in the block exits 2, one `error:` line per problem."""
    try:
        yield
    except ConfigError as exc:
        for problem in exc.problems:
            click.echo(f"error: {problem}", err=True)
        sys.exit(EXIT_USAGE)


@contextmanager
def open_store(config: Config) -> Iterator[Store]:
    """The store, for reading; exit 1 with the reason when it cannot be read."""
    # Only a SQLite URL is parsed here: a host's store (`url = "django"`) is no SQLAlchemy URL.
    url = make_url(config.database.url) if config.database.is_sqlite else None
    sqlite_file = url.database if url is not None else None
    if sqlite_file not in (None, "", ":memory:") and not Path(str(sqlite_file)).exists():
        # Connecting would create an empty file; say what is wrong instead.
        fail(f"no database at {sqlite_file}; check [database] url, or run `payhook db upgrade`")
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
    # Split on "\n" only: str.splitlines() also splits on control characters (\x1c, \x85),
    # which would drop what follows them instead of showing them escaped.
    line = (text or "").strip().split("\n")[0].rstrip("\r")
    return line if len(line) <= width else line[: width - 1] + "…"


# Control characters (C0, DEL, C1), format characters (bidi overrides such as U+202E,
# zero-width spaces), lone surrogates, and the line and paragraph separators.
UNPRINTABLE = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})
NAMED_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def printable(value: object) -> str:
    """`str(value)` with every control character escaped (`\\x1b`, `\\n`, `\\u202e`).

    For text people read on a terminal: stored values come from deliveries, and a raw escape
    sequence could retitle the window, clear the screen or reorder what is shown. Escaped,
    not dropped, so an operator sees that something odd is there; `--json` keeps it exact.
    """
    text = str(value)
    if text.isprintable():  # the common case; isprintable() is stricter than UNPRINTABLE
        return text
    return "".join(_escaped(char) if unicodedata.category(char) in UNPRINTABLE else char for char in text)


def _escaped(char: str) -> str:
    if char in NAMED_ESCAPES:
        return NAMED_ESCAPES[char]
    code = ord(char)
    if code <= 0xFF:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"


def echo_lines(lines: Iterable[str], *, err: bool = False) -> None:
    """Print text for people, one entry of `lines` per line, each through `printable`.

    A line break inside an entry is shown as `\\n`, so no value can forge a line of its own.
    """
    click.echo("\n".join(printable(line) for line in lines), err=err)


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Columns aligned with two spaces between them, headers in capitals (as kubectl does).

    Each cell goes through `printable`, so a table is safe to print whatever it holds.
    """
    cells = [[printable(cell) for cell in row] for row in rows]
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


def discover_plugins() -> PluginHost:
    """The installed plugins, found without log lines: a broken plugin a tenant needs is one
    of the configuration's problems, and the runtime logs the others when it starts."""
    from payhook.plugins.host import PluginHost

    with quiet_discovery():
        return PluginHost()


@contextmanager
def quiet_discovery() -> Iterator[None]:
    """Plugin discovery without its log lines: the command reports broken plugins itself."""
    logger = logging.getLogger("payhook.plugins")
    disabled, logger.disabled = logger.disabled, True
    try:
        yield
    finally:
        logger.disabled = disabled
