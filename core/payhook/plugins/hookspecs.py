"""The core's hooks. Plugins implement them with `@payhook.hookimpl`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    import click

    from payhook.config import TenantConfig
    from payhook.plugins.context import HandlerContext
    from payhook.plugins.types import Handler, HookHost, Register, StoredEvent
    from payhook.stripe_api.events import Event

__all__ = ["hookimpl", "hookspec"]

hookspec = pluggy.HookspecMarker("payhook")
hookimpl = pluggy.HookimplMarker("payhook")


@hookspec
def register_handlers(register: Register) -> None:
    """Declare handlers: call `register(event_type, handler)` once per pair.

    `event_type` is an exact Stripe type or a pattern such as `"charge.dispute.*"` or `"*"`.
    """


@hookspec
def plugin_settings() -> type:  # type: ignore[empty-body]  # a specification: no body
    """Return the class of this plugin's per-tenant settings (a dataclass).

    payhook reads each tenant's `[tenants.<slug>.plugin_config.<plugin>]` into it when the
    configuration is loaded, refuses to start on a mistake, and hands the object to
    handlers as `ctx.settings`.
    """


@hookspec(firstresult=True)
def run_handler(handler: Handler, event: Event, ctx: HandlerContext) -> Any:
    """Call `handler(event, ctx)` inside its transaction.

    The core's implementation runs last; observers wrap it with `wrapper=True`.
    """


@hookspec
def event_stored(event: StoredEvent, tenant: TenantConfig) -> None:
    """An event was committed to the store (called for new events only). Keep it quick."""


@hookspec
def handler_failed(event: Event | None, ctx: HandlerContext, error: BaseException, dead: bool) -> None:
    """A handler attempt failed and was rolled back; `dead` means no retry is scheduled.

    `event` is None when the stored payload could not be read back.
    """


@hookspec
def startup(host: HookHost) -> None:
    """The app or worker is starting. Plugins may call `host.add_hookspecs(...)` here."""


@hookspec
def register_commands(cli: click.Group) -> None:
    """Add commands to the `payhook` command line: `cli.add_command(group)` or `@cli.group()`.

    Called once when the command line is built, for every installed plugin (tenants do not
    enable commands). Name the group after the plugin (`payhook registration ...`); a name
    the core or another plugin already uses is refused.
    """
