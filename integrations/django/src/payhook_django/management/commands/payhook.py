"""`manage.py payhook <command>`: any payhook command, with Django set up, PAYHOOK_CONFIG
from the settings, and Django's LOGGING in charge of the log lines."""

from __future__ import annotations

import os
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from payhook_django.logs import django_logging
from payhook_django.site import CONFIG_SETTING


class Command(BaseCommand):
    help = "Run a payhook command (payhook --help lists them) with this site's settings."
    # payhook's commands check what they need themselves.
    requires_system_checks: list[str] = []  # noqa: RUF012

    def create_parser(self, prog_name: str, subcommand: str, **kwargs: Any) -> CommandParser:
        parser = super().create_parser(prog_name, subcommand, **kwargs)
        self.prog = f"{os.path.basename(prog_name)} {subcommand}"
        return parser

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("args", nargs="*", help="the payhook command and its options")

    def run_from_argv(self, argv: list[str]) -> None:
        # Everything after `payhook` belongs to payhook's own parser (click), --help included.
        from django.conf import settings
        from payhook.cli import main

        configured = getattr(settings, CONFIG_SETTING, None)
        if configured and "PAYHOOK_CONFIG" not in os.environ:
            os.environ["PAYHOOK_CONFIG"] = str(configured)
        with django_logging():
            main.main(args=argv[2:], prog_name=f"{os.path.basename(argv[0])} {argv[1]}")

    def handle(self, *args: str, **options: Any) -> None:  # call_command("payhook", ...)
        self.run_from_argv(["manage.py", "payhook", *args])
