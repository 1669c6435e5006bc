"""The operator commands of `payhook`, each registered in cli.py with one line."""

from .config_check import config_group
from .events import events
from .failures import failures
from .plugins import plugins_group
from .reconcile import reconcile_command

__all__ = ["config_group", "events", "failures", "plugins_group", "reconcile_command"]
