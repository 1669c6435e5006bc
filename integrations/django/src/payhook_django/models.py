"""payhook's tables as Django sees them (read-only, for the admin), and the applied-marker.

`Event`, `HandlerRun` and `RunFailure` are unmanaged: payhook's own (alembic) migrations
create and change those tables, Django never does. Their columns follow
payhook.store.models. `AppliedRun` is Django's: the mark a handler run leaves in Django's
database, in the same transaction as its Django writes (see payhook_django.applied).
"""

from __future__ import annotations

from django.db import models

__all__ = ["AppliedRun", "Event", "HandlerRun", "RunFailure"]


class Event(models.Model):
    tenant = models.CharField(max_length=64)
    stripe_event_id = models.CharField(max_length=255)
    type = models.CharField(max_length=255)
    livemode = models.BooleanField()
    api_version = models.CharField(max_length=64, null=True)
    account = models.CharField(max_length=255, null=True)
    object_id = models.CharField(max_length=255, null=True)
    created = models.DateTimeField(null=True)
    received_at = models.DateTimeField()
    payload = models.TextField()
    pruned_at = models.DateTimeField(null=True)
    source = models.CharField(max_length=16)
    ignored_reason = models.CharField(max_length=255, null=True)

    class Meta:
        managed = False
        db_table = "payhook_event"
        ordering = ("-id",)

    def __str__(self) -> str:
        return f"{self.tenant} {self.stripe_event_id} ({self.type})"


class HandlerRun(models.Model):
    event = models.ForeignKey(Event, models.DO_NOTHING, db_constraint=False, related_name="runs")
    plugin = models.CharField(max_length=100)
    handler = models.CharField(max_length=255)
    status = models.CharField(max_length=16)
    attempts = models.IntegerField()
    next_attempt_at = models.DateTimeField(null=True)
    last_error_type = models.CharField(max_length=255, null=True)
    last_error = models.TextField(null=True)
    created_at = models.DateTimeField()
    finished_at = models.DateTimeField(null=True)
    duration_ms = models.FloatField(null=True)
    replay_count = models.IntegerField()
    replayed_at = models.DateTimeField(null=True)
    replayed_by = models.CharField(max_length=255, null=True)

    class Meta:
        managed = False
        db_table = "payhook_handler_run"
        ordering = ("-id",)

    def __str__(self) -> str:
        return f"run {self.pk}: {self.plugin} {self.handler} ({self.status})"


class RunFailure(models.Model):
    run = models.ForeignKey(HandlerRun, models.DO_NOTHING, db_constraint=False, related_name="failures")
    attempt = models.IntegerField()
    error_type = models.CharField(max_length=255)
    message = models.TextField()
    traceback = models.TextField()
    failed_at = models.DateTimeField()

    class Meta:
        managed = False
        db_table = "payhook_run_failure"
        ordering = ("-id",)

    def __str__(self) -> str:
        return f"run {self.run_id} attempt {self.attempt}: {self.error_type}"


class AppliedRun(models.Model):
    """A handler run whose Django writes committed: a rerun of it (after a crash between
    Django's commit and payhook's success mark) skips the handler.

    A run is named by what makes it one in any store: the tenant, the Stripe event and the
    handler (run ids start again in a new store). `run_id` is the store's, for people.
    """

    tenant = models.CharField(max_length=64)
    stripe_event_id = models.CharField(max_length=255)
    plugin = models.CharField(max_length=100)
    handler = models.CharField(max_length=255)
    run_id = models.BigIntegerField()
    applied_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        db_table = "payhook_django_applied_run"
        constraints = (
            models.UniqueConstraint(
                fields=("tenant", "stripe_event_id", "plugin", "handler"), name="payhook_django_applied_once"
            ),
        )

    def __str__(self) -> str:
        return f"run {self.run_id} ({self.plugin} {self.handler} on {self.stripe_event_id}) applied"
