"""The event a handler receives."""

from __future__ import annotations

from typing import Any

import stripe

__all__ = ["Event"]

# Building Stripe's objects is most of the cost of an event: for `data` (the event's object: a
# PaymentIntent with its charges, say) above all, but also for the envelope's other objects
# (`request`, ...). A handler pays for each only when it first reads it.


class _LazyValues(dict[str, Any]):
    """An event's values, with `data` converted to Stripe objects on first read."""

    def __init__(self, values: dict[str, Any], raw: dict[str, Any], build: Any) -> None:
        super().__init__(values)
        super().update(raw)
        self._raw = raw
        self._build = build

    def _convert(self, key: str) -> None:
        if key in self._raw:
            raw = self._raw.pop(key)
            super().__setitem__(key, self._build(key, raw))

    def _convert_all(self) -> None:
        for key in list(self._raw):
            self._convert(key)

    def __getitem__(self, key: str) -> Any:
        if key in self._raw:
            self._convert(key)
        return super().__getitem__(key)

    def get(self, key: str, default: Any = None) -> Any:
        if key in self._raw:
            self._convert(key)
        return super().get(key, default)

    def __setitem__(self, key: str, value: Any) -> None:
        self._raw.pop(key, None)
        super().__setitem__(key, value)

    def pop(self, key: str, *default: Any) -> Any:
        self._convert(key)
        return super().pop(key, *default)

    def items(self) -> Any:
        self._convert_all()
        return super().items()

    def values(self) -> Any:
        self._convert_all()
        return super().values()

    def copy(self) -> dict[str, Any]:
        self._convert_all()
        return dict(self)

    def __eq__(self, other: object) -> bool:
        self._convert_all()
        if isinstance(other, _LazyValues):
            other._convert_all()
        return super().__eq__(other)

    __hash__ = None

    def __repr__(self) -> str:
        self._convert_all()
        return super().__repr__()


class Event(stripe.Event):
    """A snapshot Stripe event, exactly as Stripe sent it (a `stripe.Event`).

    The same object is shared by every handler run of one event: treat it as read-only.
    """

    @classmethod
    def from_payload(cls, values: dict[str, Any]) -> Event:
        """The event for parsed `values`, as `construct_from(values, None)` builds it.

        `construct_from` makes a new API requestor for every event, copying the SDK's global
        options (a fifth of a no-op run's cost); the SDK's own global requestor, which reads
        those options when a request is made, serves every event alike.
        """
        requestor = _global_requestor()
        if requestor is None:
            return cls.construct_from(values, None)
        return cls._construct_from(values=values, requestor=requestor, api_mode="V1")

    @property
    def payload(self) -> dict[str, Any]:
        """The event as Stripe sent it, parsed: plain dicts and lists, no Stripe objects.

        Cheaper than `event.data.object.to_dict()` (nothing is built); shared by every run
        of the event, so never modify it.
        """
        payload = self.__dict__.get("_payload")
        if payload is None:
            payload = self.__dict__["_payload"] = self.to_dict()
        return dict(payload)

    def _refresh_from(self, *, values: Any, api_mode: Any, **options: Any) -> None:
        if isinstance(values, stripe.StripeObject) or not isinstance(values, dict):
            super()._refresh_from(values=values, api_mode=api_mode, **options)
            return
        self.__dict__["_payload"] = values
        raw = {key: value for key, value in values.items() if isinstance(value, dict)}
        eager = {key: value for key, value in values.items() if key not in raw}
        super()._refresh_from(values=eager, api_mode=api_mode, **options)
        if not raw:
            return

        def build(key: str, value: dict[str, Any]) -> Any:
            # Stripe's own conversion, for just this key.
            holder = stripe.Event._construct_from(
                values={key: value}, requestor=self._requestor, api_mode=api_mode
            )
            return holder._data[key]

        self._data = _LazyValues(self._data, raw, build)


def _global_requestor() -> Any:
    """The stripe SDK's global API requestor, or None if this SDK version has none."""
    try:
        from stripe._api_requestor import _APIRequestor
    except ImportError:
        return None
    instance = getattr(_APIRequestor, "_global_instance", None)
    return instance() if callable(instance) else None
