"""Stripe amounts: integers in a currency's minor unit, as exact Decimals and back.

Stripe writes every amount as an integer count of the currency's smallest unit, and its
idea of that unit follows ISO 4217 except where its documentation says otherwise
(https://docs.stripe.com/currencies, "Zero-decimal", "Three-decimal", "Special cases").
ISO 4217 minor units come from the `iso4217` package, which tracks the ISO tables.
"""

from __future__ import annotations

from decimal import Decimal

from iso4217 import Currency

__all__ = [
    "STRIPE_EXPONENTS",
    "UnknownCurrency",
    "check_chargeable",
    "exponent",
    "from_minor_units",
    "quantize",
    "to_minor_units",
]

# Stripe's zero-decimal list. It agrees with ISO 4217 except for MGA, which ISO gives two
# decimals (1 ariary = 5 iraimbilanja) and Stripe none: what counts is what Stripe sends.
_ZERO_DECIMAL = (
    *("bif", "clp", "djf", "gnf", "jpy", "kmf", "krw", "mga"),
    *("pyg", "rwf", "ugx", "vnd", "vuv", "xaf", "xof", "xpf"),
)
_THREE_DECIMAL = ("bhd", "jod", "kwd", "omr", "tnd")

STRIPE_EXPONENTS: dict[str, int] = {
    **dict.fromkeys(_ZERO_DECIMAL, 0),
    **dict.fromkeys(_THREE_DECIMAL, 3),
    # ISO 4217 gives the Icelandic krona no minor unit, but Stripe's API kept it
    # two-decimal for backwards compatibility: an ISK amount of 100 is 1 krona.
    "isk": 2,
    # HUF and TWD are two-decimal in charges and refunds (as in ISO 4217); Stripe's
    # "zero-decimal for payouts" rule concerns payout amounts only, which no handler reads.
}
"""Exponents where Stripe's API differs from ISO 4217, or pins a currency explicitly."""


class UnknownCurrency(ValueError):
    """The code is not an ISO 4217 currency with a minor unit."""


def exponent(currency: str) -> int:
    """How many decimal places Stripe's integer amounts have in `currency` (any case).

    Raises UnknownCurrency for codes that are not ISO 4217 currencies with a minor unit.
    """
    code = currency.lower()
    if code in STRIPE_EXPONENTS:
        return STRIPE_EXPONENTS[code]
    try:
        iso = Currency(code.upper()).exponent
    except ValueError:
        raise UnknownCurrency(f"unknown currency {currency!r}") from None
    if iso is None:  # gold, SDRs, testing codes: they have no minor unit to count in
        raise UnknownCurrency(f"currency {currency!r} has no minor unit")
    return int(iso)


def from_minor_units(amount: int, currency: str) -> Decimal:
    """`from_minor_units(2000, "usd") == Decimal("20.00")`; JPY 500 is `Decimal("500")`.

    The result carries the currency's exponent as its scale, so it prints as money.
    """
    if isinstance(amount, bool) or not isinstance(amount, int):
        raise TypeError(f"Stripe amounts are integers, got {amount!r}")
    return Decimal(amount).scaleb(-exponent(currency))


def to_minor_units(amount: Decimal | int | str, currency: str) -> int:
    """The integer Stripe expects for `amount` major units of `currency`.

    Raises ValueError if `amount` has more decimal places than the currency can carry:
    rounding money silently is never the right default.
    """
    value = Decimal(amount)
    minor = value.scaleb(exponent(currency))
    if minor != minor.to_integral_value():
        raise ValueError(f"{amount} {currency.upper()} has more decimals than the currency allows")
    return int(minor)


def quantize(amount: Decimal, currency: str) -> Decimal:
    """`amount` at the currency's scale, e.g. `Decimal("20.000")` USD -> `Decimal("20.00")`.

    Databases hand back the column's scale; this restores the currency's own.
    """
    return amount.quantize(Decimal(1).scaleb(-exponent(currency)))


def check_chargeable(minor: int, currency: str) -> None:
    """Raise ValueError if Stripe would refuse to charge `minor` units of `currency`.

    Three-decimal currencies must end in 0 (card networks settle them to the hundredth),
    and ISK amounts must be whole kronur (divisible by 100) since April 2023.
    """
    code = currency.lower()
    if code in _THREE_DECIMAL and minor % 10:
        raise ValueError(f"Stripe charges {code.upper()} only in amounts ending in 0, got {minor}")
    if code == "isk" and minor % 100:
        raise ValueError(f"Stripe charges ISK only in whole kronur (multiples of 100), got {minor}")
