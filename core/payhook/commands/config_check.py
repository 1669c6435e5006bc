"""`payhook config check`: every problem of a configuration file at once, plugins included."""

from __future__ import annotations

import logging
import sys

import click

from payhook.commands.common import (
    EXIT_PROBLEM,
    config_option,
    discover_plugins,
    echo_json,
    json_option,
    read_config,
)
from payhook.config import Config, ConfigError

__all__ = ["config_group"]


class _Collect(logging.Handler):
    """Keeps the warnings loading a file gives (a secret that is not whsec_..., say)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def check(path: str, *, require_secrets: bool = True) -> tuple[Config | None, list[str], list[str]]:
    """(the configuration as far as it could be read, its problems, its warnings)."""
    collected = _Collect()
    logger = logging.getLogger("payhook.config")
    logger.addHandler(collected)
    propagate, logger.propagate = logger.propagate, False
    try:
        config: Config | None = read_config(path, require_secrets=require_secrets, plugins=discover_plugins())
        problems: list[str] = []
    except ConfigError as exc:
        config, problems = exc.config, list(exc.problems)
    finally:
        logger.removeHandler(collected)
        logger.propagate = propagate
    return config, problems, collected.messages


@click.group("config")
def config_group() -> None:
    """The configuration file."""


@config_group.command("check")
@config_option(help="The TOML configuration file to check (or $PAYHOOK_CONFIG).")
@click.option(
    "--allow-missing-env",
    is_flag=True,
    help='Do not report unset { "$env" = ... } variables: check a file where the secrets are '
    "not exported (in CI, say).",
)
@json_option
def check_config(config_path: str, allow_missing_env: bool, as_json: bool) -> None:
    """Validate a configuration file and report every problem at once; exit 1 if there are any.

    Checks every key and value, the secrets (unless --allow-missing-env) and that each
    tenant's plugins are installed, importable and not disabled.
    """
    config, problems, warnings = check(config_path, require_secrets=not allow_missing_env)
    if as_json:
        echo_json({"ok": not problems, "problems": problems, "warnings": warnings})
    else:
        for warning in warnings:
            click.echo(f"warning: {warning}", err=True)
        for problem in problems:
            click.echo(f"error: {problem}", err=True)
        if problems:
            click.echo(f"{config_path}: {len(problems)} problem(s)", err=True)
        elif config is not None:
            tenants = ", ".join(config.tenants) or "none"
            click.echo(f"{config_path}: OK ({len(config.tenants)} tenants: {tenants})")
    if problems:
        sys.exit(EXIT_PROBLEM)
