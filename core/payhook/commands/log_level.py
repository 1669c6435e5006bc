"""`--log-level` of the long-running commands (serve, worker), and their logging set-up."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import click
from click.core import ParameterSource

from payhook import logs
from payhook.commands.common import shorten
from payhook.config import Config

__all__ = ["LEVELS", "apply_logging", "log_level_given", "log_level_option", "start_logging"]

LEVELS = ("debug", "info", "warning", "error")


def _level(_ctx: click.Context, _param: click.Parameter, value: str) -> str:
    # Not click.Choice: its message would repeat a value of any length whole.
    if value.lower() not in LEVELS:
        raise click.BadParameter(f"{shorten(value, 40)!r} is not one of {', '.join(LEVELS)}")
    return value.lower()


def log_level_option() -> Callable[[Any], Any]:
    return click.option(
        "--log-level",
        default="info",
        show_default=True,
        callback=_level,
        metavar="[" + "|".join(LEVELS) + "]",
        help="debug, info, warning or error; when not given, [logging] level applies.",
    )


def start_logging(level: str) -> None:
    """Logging before the configuration is read: its problems and plugin discovery log."""
    logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def log_level_given() -> bool:
    """Whether --log-level was given: it then wins over [logging] level."""
    source = click.get_current_context().get_parameter_source("log_level")
    return source not in (ParameterSource.DEFAULT, ParameterSource.DEFAULT_MAP)


def apply_logging(config: Config, level: str) -> None:
    """[logging] of the configuration, with --log-level when given."""
    logs.configure(config.logging, level if log_level_given() else None)
