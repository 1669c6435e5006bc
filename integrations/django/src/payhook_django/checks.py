"""`manage.py check`: payhook's configuration loads, and its migrations are applied."""

from __future__ import annotations

from typing import Any

from django.core import checks

from payhook_django.site import CONFIG_SETTING


@checks.register(checks.Tags.database)
def payhook_migrations(databases: Any = None, **_: Any) -> list[checks.CheckMessage]:
    """Warn when payhook's migrations are pending on a Django database being checked."""
    from payhook_django.runtime import pending_migrations, store_alias

    try:
        alias = store_alias()
    except Exception as exc:
        return [checks.Error(f"payhook's configuration: {exc}", id="payhook.E001")]
    if alias is None or (databases is not None and alias not in databases):
        return []
    pending = pending_migrations()
    if not pending:
        return []
    return [
        checks.Warning(
            f"payhook's migrations are not applied on database {alias!r} (heads {', '.join(pending)})",
            hint="run `manage.py migrate` (or `manage.py payhook db upgrade`)",
            id="payhook.W001",
        )
    ]


@checks.register()
def payhook_config(**_: Any) -> list[checks.CheckMessage]:
    from django.conf import settings

    if not getattr(settings, CONFIG_SETTING, None):
        return [
            checks.Error(
                f"{CONFIG_SETTING} is not set",
                hint="set it to payhook's TOML file, e.g. BASE_DIR / 'payhook.toml'",
                id="payhook.E002",
            )
        ]
    return []
