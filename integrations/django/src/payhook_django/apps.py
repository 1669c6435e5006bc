"""The Django app: payhook's checks, and its migrations applied by `manage.py migrate`."""

from __future__ import annotations

from typing import Any

from django.apps import AppConfig
from django.db.models.signals import post_migrate


class PayhookConfig(AppConfig):
    name = "payhook_django"
    label = "payhook_django"
    verbose_name = "payhook"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from payhook_django import checks  # noqa: F401  (registers the checks)
        from payhook_django.logs import route_payhook_logs

        route_payhook_logs()
        post_migrate.connect(migrate_payhook, sender=self)


def migrate_payhook(using: str, **_: Any) -> None:
    """After Django's migrations on the database payhook's store is on, payhook's and the
    installed plugins' (alembic) migrations."""
    from payhook_django.runtime import store_alias, upgrade

    if store_alias() == using:
        upgrade()
