"""Plugin settings declared with `plugin_settings`, checked at start, handed to handlers as
`ctx.settings`; the per-tenant `events` filter applied when an event arrives."""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

import pydantic
import pytest
from payhook import (
    Config,
    ConfigError,
    Event,
    HandlerContext,
    InvalidSetting,
    PluginHost,
    Register,
    hookimpl,
)
from payhook.testing import MakePayhook, store_backends

WHERE = "tenants.conf.plugin_config.shop"


@dataclass(frozen=True)
class Address:
    city: str
    postcode: str = ""


@dataclass(frozen=True)
class ShopSettings:
    currency: Literal["eur", "usd"]
    seats: int = 100
    price: float = 10.0
    open: bool = True
    tags: tuple[str, ...] = ()
    limits: dict[str, int] = field(default_factory=dict)
    address: Address | None = None
    opens_on: datetime.date | None = None
    code: int | str = 0

    def __post_init__(self) -> None:
        if self.seats > 1000:
            raise InvalidSetting("seats", "must be at most 1000")
        if self.price > 100 and self.currency == "eur":
            raise ValueError("prices above 100 need currency usd")


class Shop:
    """Records what its handler saw of `ctx.settings`."""

    def __init__(self, settings: type | None = ShopSettings) -> None:
        self.settings_class = settings
        self.seen: list[tuple[str, Any]] = []

    @hookimpl
    def plugin_settings(self) -> type | None:
        return self.settings_class

    def sold(self, event: Event, ctx: HandlerContext) -> None:
        self.seen.append((event.type, ctx.settings))

    @hookimpl
    def register_handlers(self, register: Register) -> None:
        register("payment_intent.*", self.sold, name="sold")
        register("charge.refunded", self.sold, name="sold")


class Other:
    def __init__(self) -> None:
        self.seen: list[str] = []

    @hookimpl
    def register_handlers(self, register: Register) -> None:
        register("payment_intent.succeeded", lambda event, ctx: self.seen.append(event.type), name="other")


def problems(table: dict[str, Any], plugin: object | None = None, name: str = "shop") -> list[str]:
    """The lines `check_config` reports for tenant "conf" with `table` as the plugin's."""
    config = Config.from_mapping(
        {
            "tenants": {
                "conf": {"webhook_secrets": ["whsec_x"], "plugins": [name], "plugin_config": {name: table}}
            }
        },
        source="site.toml",
    )
    host = PluginHost({name: plugin if plugin is not None else Shop()})
    with pytest.raises(ConfigError) as raised:
        host.check_config(config)
    return raised.value.problems


def read(table: dict[str, Any], plugin: object | None = None) -> Any:
    config = Config.from_mapping(
        {
            "tenants": {
                "conf": {
                    "webhook_secrets": ["whsec_x"],
                    "plugins": ["shop"],
                    "plugin_config": {"shop": table},
                }
            }
        }
    )
    host = PluginHost({"shop": plugin if plugin is not None else Shop()})
    host.check_config(config)
    return host.settings_for(config.tenants["conf"], "shop")


def test_a_valid_table_is_read_into_the_declared_class() -> None:
    settings = read(
        {
            "currency": "usd",
            "seats": 50,
            "price": 12,  # an integer is a float
            "tags": ["a", "b"],
            "limits": {"day": 3},
            "address": {"city": "Lyon"},
            "opens_on": datetime.date(2027, 5, 1),
            "code": "X1",
        }
    )
    assert settings == ShopSettings(
        currency="usd",
        seats=50,
        price=12.0,
        tags=("a", "b"),
        limits={"day": 3},
        address=Address(city="Lyon"),
        opens_on=datetime.date(2027, 5, 1),
        code="X1",
    )
    assert read({"currency": "eur"}) == ShopSettings(currency="eur")


@pytest.mark.parametrize(
    ("table", "expected"),
    [
        ({"currency": "usd", "seats": "5"}, f"{WHERE}.seats: must be int, got '5'"),
        ({"currency": "usd", "seats": True}, f"{WHERE}.seats: must be int, got True"),
        ({"currency": "usd", "open": 1}, f"{WHERE}.open: must be bool, got 1"),
        ({"currency": "gbp"}, f'{WHERE}.currency: must be "eur" or "usd", got \'gbp\''),
        ({"currency": "usd", "tags": "a"}, f"{WHERE}.tags: must be a list, got 'a'"),
        ({"currency": "usd", "tags": ["a", 2]}, f"{WHERE}.tags[1]: must be str, got 2"),
        ({"currency": "usd", "limits": {"day": "x"}}, f"{WHERE}.limits.day: must be int, got 'x'"),
        ({"currency": "usd", "address": {"city": "Lyon", "town": "x"}}, f"{WHERE}.address.town: unknown key"),
        ({"currency": "usd", "address": "Lyon"}, f"{WHERE}.address: must be a table, got 'Lyon'"),
        ({"currency": "usd", "code": 1.5}, f"{WHERE}.code: must be int or str, got 1.5"),
        ({"currency": "usd", "seats": 5000}, f"{WHERE}.seats: must be at most 1000"),
        ({"currency": "eur", "price": 500}, f"{WHERE}: prices above 100 need currency usd"),
        ({}, f"{WHERE}.currency: missing; this setting has no default"),
        ({"currency": "usd", "colour": "red"}, f"{WHERE}.colour: unknown key; expected one of address,"),
    ],
)
def test_each_mistake_is_reported_with_file_and_full_key(table: dict[str, Any], expected: str) -> None:
    [line] = problems(table)
    assert line.startswith(f"site.toml: {expected}"), line


def test_all_mistakes_of_all_tenants_are_reported_at_once() -> None:
    config = Config.from_mapping(
        {
            "tenants": {
                "a": {
                    "webhook_secrets": ["whsec_x"],
                    "plugins": ["shop"],
                    "plugin_config": {"shop": {"seats": 1}},
                },
                "b": {
                    "webhook_secrets": ["whsec_x"],
                    "plugins": ["shop", "nope"],
                    "plugin_config": {"shop": {"currency": "usd", "tags": [1], "x": 0}},
                },
            }
        },
        source="site.toml",
    )
    with pytest.raises(ConfigError) as raised:
        PluginHost({"shop": Shop()}).check_config(config)
    assert [line.split(": ")[1] for line in raised.value.problems] == [
        "tenants.a.plugin_config.shop.currency",
        "tenants.b.plugins[1]",
        "tenants.b.plugin_config.shop.x",
        "tenants.b.plugin_config.shop.tags[0]",
    ]


def test_a_plugin_without_settings_of_its_own_refuses_any_key_but_events() -> None:
    @dataclass(frozen=True)
    class Nothing:
        pass

    [line] = problems({"colour": "red"}, Shop(Nothing))
    assert line == f"site.toml: {WHERE}.colour: unknown key; expected none: it has no settings"
    assert read({"events": ["charge.refunded"]}, Shop(Nothing)) == Nothing()


def test_a_plugin_that_declares_no_settings_class_keeps_its_raw_table() -> None:
    assert read({"anything": {"goes": 1}}, Shop(None)) is None  # ctx.settings is None
    assert read({"anything": {"goes": 1}}, Other()) is None  # no plugin_settings hook at all


def test_pydantic_models_are_read_and_their_errors_keyed() -> None:
    class Model(pydantic.BaseModel):
        url: str
        retries: int = 3

    assert read({"url": "https://x.test", "retries": 5}, Shop(Model)) == Model(
        url="https://x.test", retries=5
    )
    [line] = problems({"url": "https://x.test", "retries": "many"}, Shop(Model))
    assert line.startswith(f"site.toml: {WHERE}.retries: ")
    [line] = problems({"url": "https://x.test", "extra": 1}, Shop(Model))
    assert line == f"site.toml: {WHERE}.extra: unknown key; expected one of retries, url"


def test_pydantic_constraints_and_validators_raising_invalid_setting_are_keyed() -> None:
    class Model(pydantic.BaseModel):
        url: str

        @pydantic.field_validator("url")
        @classmethod
        def https_only(cls, url: str) -> str:
            if not url.startswith("https://"):
                raise InvalidSetting("url", "must be an https URL")
            return url

    @dataclass(frozen=True)
    class Bounded:
        seats: Annotated[int, pydantic.Field(gt=0, le=1000)] = 10

    assert problems({"url": "http://x.test"}, Shop(Model)) == [
        f"site.toml: {WHERE}.url: must be an https URL"
    ]
    assert problems({"seats": 0}, Shop(Bounded)) == [
        f"site.toml: {WHERE}.seats: must be greater than 0, got 0"
    ]
    assert read({"seats": 12}, Shop(Bounded)) == Bounded(seats=12)


def test_a_plugin_whose_settings_hook_is_broken_is_reported_for_the_tenants_using_it() -> None:
    [line] = problems({}, Shop(dict))  # not a dataclass
    assert line.startswith("site.toml: tenants.conf.plugins[0]: plugin 'shop' is broken: its plugin_settings")


@pytest.mark.parametrize(
    ("events", "expected"),
    [
        ("charge.refunded", f"{WHERE}.events: must be a list of event types"),
        (["charge.refunded", 3], f"{WHERE}.events[1]: must be an event type, got 3"),
        (
            ["charge.refunded", "customer.created"],
            f"{WHERE}.events[1]: plugin 'shop' has no handler for 'customer.created'; "
            "it handles charge.refunded, payment_intent.*",
        ),
    ],
)
def test_events_is_checked_for_every_plugin(events: Any, expected: str) -> None:
    [line] = problems({"currency": "usd", "events": events})
    assert line.startswith(f"site.toml: {expected}"), line


@store_backends
def test_handlers_get_the_parsed_settings_as_ctx_settings(
    make_payhook: MakePayhook, stripe_event: Any
) -> None:
    shop = Shop()
    harness = make_payhook(
        {"shop": shop},
        tenants={"conf": {"plugins": ["shop"], "plugin_config": {"shop": {"currency": "eur"}}}},
    )
    [run] = harness.send(stripe_event("payment_intent.succeeded"))
    assert run.status == "succeeded"
    assert shop.seen == [("payment_intent.succeeded", ShopSettings(currency="eur"))]


@store_backends
def test_a_tenants_events_filter_is_applied_at_ingest(make_payhook: MakePayhook, stripe_event: Any) -> None:
    shop, other = Shop(), Other()
    harness = make_payhook(
        {"shop": shop, "other": other},
        tenants={
            "conf": {
                "plugins": ["shop", "other"],
                "plugin_config": {"shop": {"currency": "usd", "events": ["charge.refunded"]}},
            },
            "all": {"plugins": ["shop"], "plugin_config": {"shop": {"currency": "usd"}}},
        },
    )
    succeeded, failed, refunded = (
        stripe_event("payment_intent.succeeded"),
        stripe_event("payment_intent.payment_failed"),
        stripe_event("charge.refunded.full"),
    )

    # The filtered plugin gets no run row; the other plugin still gets its own.
    assert [run.plugin for run in harness.send(succeeded, tenant="conf")] == ["other"]
    # No run at all: answered "ignored", and the event is stored all the same.
    assert harness.send(failed, tenant="conf", expect="ignored") == []
    assert [run.plugin for run in harness.send(refunded, tenant="conf")] == ["shop"]
    assert {event.stripe_event_id for event in harness.events()} == {
        succeeded["id"],
        failed["id"],
        refunded["id"],
    }
    # A tenant without `events` gets every type the plugin registered for.
    assert [run.plugin for run in harness.send(stripe_event("payment_intent.succeeded"), tenant="all")] == [
        "shop"
    ]
    assert [event_type for event_type, _ in shop.seen] == ["charge.refunded", "payment_intent.succeeded"]
    assert other.seen == ["payment_intent.succeeded"]


@store_backends
def test_a_declared_events_default_is_the_filter(make_payhook: MakePayhook, stripe_event: Any) -> None:
    @dataclass(frozen=True)
    class Refunds:
        events: tuple[str, ...] = ("charge.refunded",)

    shop = Shop(Refunds)
    harness = make_payhook({"shop": shop})
    assert harness.send(stripe_event("payment_intent.succeeded"), expect="ignored") == []
    [run] = harness.send(stripe_event("charge.refunded.full"))
    assert run.status == "succeeded"
    assert shop.seen == [("charge.refunded", Refunds())]


def test_a_secret_left_unset_by_a_command_that_needs_none_is_not_a_mistake() -> None:
    """`payhook db upgrade` loads the file without secrets: an unset `$env` is None there."""
    table = {"currency": {"$env": "SHOP_CURRENCY"}, "address": {"city": {"$env": "SHOP_CITY"}}}
    config = Config.from_mapping(
        {
            "tenants": {
                "conf": {
                    "webhook_secrets": ["whsec_x"],
                    "plugins": ["shop"],
                    "plugin_config": {"shop": table},
                }
            }
        },
        environ={},
        require_secrets=False,
    )
    host = PluginHost({"shop": Shop()})
    host.check_config(config)  # nothing to report: the values are only unknown here
    assert host.settings_for(config.tenants["conf"], "shop") is None

    table["seats"] = "many"  # what can be checked still is
    config = Config.from_mapping(
        {
            "tenants": {
                "conf": {
                    "webhook_secrets": ["whsec_x"],
                    "plugins": ["shop"],
                    "plugin_config": {"shop": table},
                }
            }
        },
        environ={},
        require_secrets=False,
        source="site.toml",
    )
    with pytest.raises(ConfigError) as raised:
        PluginHost({"shop": Shop()}).check_config(config)
    assert raised.value.problems == [f"site.toml: {WHERE}.seats: must be int, got 'many'"]
