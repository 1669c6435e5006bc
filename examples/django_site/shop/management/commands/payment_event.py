"""`manage.py payment_event <order ref>`: print a `payment_intent.succeeded` event for the
order (payhook's shipped sample, `metadata.order_id` set), for `payhook events trigger`."""

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandParser
from payhook.testing import load_event


class Command(BaseCommand):
    help = "Print a payment_intent.succeeded event paying the given order, as JSON."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("order_ref")

    def handle(self, *args: Any, order_ref: str, **options: Any) -> None:
        event = load_event("payment_intent.succeeded", data__object__metadata={"order_id": order_ref})
        self.stdout.write(json.dumps(event, indent=2))
