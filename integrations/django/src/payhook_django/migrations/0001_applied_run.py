# The first three models are unmanaged (payhook's alembic migrations own those tables): this
# records them in Django's state only. AppliedRun's table is Django's own.

from django.db import migrations, models


class Migration(migrations.Migration):
    initial = True

    dependencies = []  # noqa: RUF012  (Django's migration shape)

    operations = [  # noqa: RUF012
        migrations.CreateModel(
            name="Event",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("tenant", models.CharField(max_length=64)),
                ("stripe_event_id", models.CharField(max_length=255)),
                ("type", models.CharField(max_length=255)),
                ("livemode", models.BooleanField()),
                ("api_version", models.CharField(max_length=64, null=True)),
                ("account", models.CharField(max_length=255, null=True)),
                ("object_id", models.CharField(max_length=255, null=True)),
                ("created", models.DateTimeField(null=True)),
                ("received_at", models.DateTimeField()),
                ("payload", models.TextField()),
                ("pruned_at", models.DateTimeField(null=True)),
                ("source", models.CharField(max_length=16)),
                ("ignored_reason", models.CharField(max_length=255, null=True)),
            ],
            options={
                "db_table": "payhook_event",
                "ordering": ("-id",),
                "managed": False,
            },
        ),
        migrations.CreateModel(
            name="HandlerRun",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("plugin", models.CharField(max_length=100)),
                ("handler", models.CharField(max_length=255)),
                ("status", models.CharField(max_length=16)),
                ("attempts", models.IntegerField()),
                ("next_attempt_at", models.DateTimeField(null=True)),
                ("last_error_type", models.CharField(max_length=255, null=True)),
                ("last_error", models.TextField(null=True)),
                ("created_at", models.DateTimeField()),
                ("finished_at", models.DateTimeField(null=True)),
                ("duration_ms", models.FloatField(null=True)),
                ("replay_count", models.IntegerField()),
                ("replayed_at", models.DateTimeField(null=True)),
                ("replayed_by", models.CharField(max_length=255, null=True)),
            ],
            options={
                "db_table": "payhook_handler_run",
                "ordering": ("-id",),
                "managed": False,
            },
        ),
        migrations.CreateModel(
            name="RunFailure",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("attempt", models.IntegerField()),
                ("error_type", models.CharField(max_length=255)),
                ("message", models.TextField()),
                ("traceback", models.TextField()),
                ("failed_at", models.DateTimeField()),
            ],
            options={
                "db_table": "payhook_run_failure",
                "ordering": ("-id",),
                "managed": False,
            },
        ),
        migrations.CreateModel(
            name="AppliedRun",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("tenant", models.CharField(max_length=64)),
                ("stripe_event_id", models.CharField(max_length=255)),
                ("plugin", models.CharField(max_length=100)),
                ("handler", models.CharField(max_length=255)),
                ("run_id", models.BigIntegerField()),
                ("applied_at", models.DateTimeField(auto_now_add=True)),
            ],
            options={
                "db_table": "payhook_django_applied_run",
                "constraints": [
                    models.UniqueConstraint(
                        fields=("tenant", "stripe_event_id", "plugin", "handler"),
                        name="payhook_django_applied_once",
                    )
                ],
            },
        ),
    ]
