"""Minor-unit conversion: ISO 4217 exponents with Stripe's documented exceptions."""

from __future__ import annotations

from decimal import Decimal

import pytest
from payhook.currency import (
    UnknownCurrency,
    check_chargeable,
    exponent,
    from_minor_units,
    quantize,
    to_minor_units,
)


@pytest.mark.parametrize(
    ("currency", "digits"),
    [
        ("usd", 2),
        ("EUR", 2),
        # Stripe's zero-decimal currencies, ISO and Stripe agreeing...
        *[(code, 0) for code in ("jpy", "krw", "clp", "vnd", "xaf", "xof", "xpf", "bif", "ugx")],
        # ...and MGA, two-decimal in ISO 4217 but zero-decimal at Stripe.
        ("mga", 0),
        *[(code, 3) for code in ("kwd", "bhd", "jod", "omr", "tnd")],
        # ISK has no minor unit in ISO 4217 but stays two-decimal in Stripe's API.
        ("isk", 2),
        ("huf", 2),
        ("twd", 2),
        # Not in Stripe's lists: straight from ISO 4217.
        ("clf", 4),
    ],
)
def test_exponent_follows_stripe_then_iso(currency: str, digits: int) -> None:
    assert exponent(currency) == digits


@pytest.mark.parametrize(
    ("amount", "currency", "expected"),
    [
        (2000, "usd", Decimal("20.00")),
        (1, "usd", Decimal("0.01")),
        (500, "jpy", Decimal("500")),
        (50000, "krw", Decimal("50000")),
        (12340, "kwd", Decimal("12.340")),
        (5125, "bhd", Decimal("5.125")),
        (500, "isk", Decimal("5.00")),
        (-250, "eur", Decimal("-2.50")),
        (0, "jpy", Decimal("0")),
    ],
)
def test_round_trip(amount: int, currency: str, expected: Decimal) -> None:
    major = from_minor_units(amount, currency)
    assert major == expected
    assert str(major) == str(expected)  # the currency's own scale, ready to print
    assert to_minor_units(major, currency) == amount


def test_to_minor_units_accepts_strings_and_ints() -> None:
    assert to_minor_units("19.99", "usd") == 1999
    assert to_minor_units(7, "jpy") == 7
    assert to_minor_units(Decimal("1.5"), "kwd") == 1500


@pytest.mark.parametrize(("amount", "currency"), [("0.001", "usd"), ("1.5", "jpy"), ("1.0001", "kwd")])
def test_to_minor_units_refuses_to_round(amount: str, currency: str) -> None:
    with pytest.raises(ValueError, match="more decimals"):
        to_minor_units(amount, currency)


def test_from_minor_units_wants_an_integer() -> None:
    with pytest.raises(TypeError):
        from_minor_units(20.5, "usd")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        from_minor_units(True, "usd")


@pytest.mark.parametrize("code", ["zzz", "", "xau"])
def test_unknown_or_unitless_currency(code: str) -> None:
    with pytest.raises(UnknownCurrency):
        exponent(code)


def test_quantize_restores_the_currency_scale() -> None:
    assert str(quantize(Decimal("20.000"), "usd")) == "20.00"
    assert str(quantize(Decimal("500.000"), "jpy")) == "500"


def test_check_chargeable_applies_stripes_rounding_rules() -> None:
    check_chargeable(5120, "kwd")
    check_chargeable(500, "isk")
    check_chargeable(1999, "usd")
    with pytest.raises(ValueError, match="ending in 0"):
        check_chargeable(5124, "kwd")
    with pytest.raises(ValueError, match="whole kronur"):
        check_chargeable(4010, "isk")
