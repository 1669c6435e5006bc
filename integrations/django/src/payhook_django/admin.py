"""Read-only admin pages for payhook's events, handler runs and failures, and a replay
action that makes failed or dead runs due again through payhook's own replay."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from payhook_django.models import Event, HandlerRun, RunFailure

__all__ = ["EventAdmin", "HandlerRunAdmin", "RunFailureAdmin", "replay_runs"]


def on_store(queryset: QuerySet[Any]) -> QuerySet[Any]:
    """`queryset` on the Django database payhook's store is on."""
    from payhook_django.runtime import store_alias

    alias = store_alias()
    # The store on another database than Django's: its rows are not Django's to show.
    return queryset.none() if alias is None else queryset.using(alias)


class ReadOnlyAdmin(admin.ModelAdmin):
    """payhook's rows are payhook's: shown here, changed only through payhook."""

    def get_queryset(self, request: HttpRequest) -> QuerySet[Any]:
        return on_store(super().get_queryset(request))

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        return [field.name for field in self.model._meta.fields]

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return bool(getattr(request.user, "is_staff", False)) and super().has_view_permission(request, obj)


@admin.register(Event)
class EventAdmin(ReadOnlyAdmin):
    list_display = ("id", "tenant", "stripe_event_id", "type", "livemode", "received_at", "source")
    list_filter = ("tenant", "type", "livemode")
    search_fields = ("stripe_event_id", "object_id")


@admin.register(RunFailure)
class RunFailureAdmin(ReadOnlyAdmin):
    list_display = ("id", "run_id", "attempt", "error_type", "message", "failed_at")
    list_filter = ("error_type",)


@admin.action(description="Replay the selected failed or dead runs (due now, fresh attempts)")
def replay_runs(modeladmin: Any, request: HttpRequest, queryset: QuerySet[HandlerRun]) -> None:
    """Through payhook.ops.replay, one run at a time: only `failed` and `dead` runs are
    re-armed; the others are left as they are and counted."""
    from payhook.ops.replay import ReplaySelection, replay
    from payhook.store.engine import Store

    from payhook_django.runtime import load

    user = getattr(request.user, "get_username", lambda: "?")()
    store = Store(load(require_secrets=False).database)
    rearmed = 0
    try:
        for run_id in queryset.values_list("id", flat=True):
            result = replay(store, ReplaySelection(run_id=run_id), requested_by=f"django admin: {user}")
            rearmed += result.rearmed
    finally:
        store.dispose()
    skipped = queryset.count() - rearmed
    modeladmin.message_user(
        request,
        f"{rearmed} run(s) made due" + (f"; {skipped} left alone (not failed or dead)" if skipped else ""),
        messages.SUCCESS if rearmed else messages.WARNING,
    )


class FailureInline(admin.TabularInline):
    model = RunFailure
    fields = ("attempt", "error_type", "message", "failed_at")
    readonly_fields = fields
    extra = 0
    can_delete = False

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def get_queryset(self, request: HttpRequest) -> QuerySet[Any]:
        return on_store(super().get_queryset(request))


@admin.register(HandlerRun)
class HandlerRunAdmin(ReadOnlyAdmin):
    list_display = (
        "id",
        "event",
        "plugin",
        "handler",
        "status",
        "attempts",
        "last_error_type",
        "finished_at",
    )
    list_filter = ("status", "plugin")
    actions = (replay_runs,)
    inlines = (FailureInline,)
