"""payhook in a Django site: its database, its apps' handlers, one transaction per run.

`asgi(django_application, prefix="/stripe/")` serves payhook beside Django; see
docs/django.md.
"""

from __future__ import annotations

from typing import Any

__all__ = ["asgi"]


def asgi(django_application: Any, prefix: str = "/stripe/", **options: Any) -> Any:
    """Serve payhook under `prefix` and Django everywhere else (payhook_django.asgi.asgi)."""
    from payhook_django.asgi import asgi as build

    return build(django_application, prefix, **options)
