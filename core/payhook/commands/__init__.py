"""The operator commands of `payhook`, each registered in cli.py with one line."""

from payhook.commands.config_check import config_group
from payhook.commands.events import events
from payhook.commands.failures import failures
from payhook.commands.plugins import plugins_group
from payhook.commands.reconcile import reconcile_command

__all__ = ["config_group", "events", "failures", "plugins_group", "reconcile_command"]
