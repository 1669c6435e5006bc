"""payhook's verdict on generated `Stripe-Signature` headers, against Stripe's own library.

`stripe.WebhookSignature.verify_header` is the oracle. Every deliberate difference (listed
in docs/http.md) is handled here by name:

* future timestamps: payhook refuses a timestamp more than the tolerance ahead, which
  Stripe's library accepts;
* non-ASCII `v1` values: Stripe's library raises TypeError when it reaches one before a
  match; payhook counts it as a non-match. The oracle's compare is given that rule;
* bodies that are not UTF-8: Stripe's library raises UnicodeDecodeError before reading
  the header, while payhook verifies raw bytes, so generated bodies are UTF-8 here and
  tests/test_verification.py covers the other kind.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterator
from contextlib import contextmanager
from types import SimpleNamespace
from unittest import mock

import stripe
import stripe._webhook as stripe_webhook
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from payhook.receive.verification import SignatureError, verify_signature
from payhook.testing.samples import FIXTURES

NOW = 1_700_000_000
TOLERANCE = 300
SECRET = "whsec_property_test"
OTHER_SECRET = "whsec_someone_else"
# A short Stripe payload (from stripe-python's own webhook tests) keeps failure reports legible.
SHORT_BODY = next(
    vector["body"].encode()
    for vector in json.loads((FIXTURES / "signature_vectors.json").read_text())["vectors"]
    if vector["name"] == "stripe_python_dummy_payload"
)

# Stripe's messages for a header it cannot read; payhook calls all of them malformed.
UNREADABLE = ("Unable to extract timestamp and signatures", "No signatures found with expected scheme")
MISSING = "No Stripe-Signature header"

ARABIC_INDIC_DIGITS = str.maketrans("0123456789", "".join(map(chr, range(0x0660, 0x066A))))
PADDING = ["", " ", "\t", "\u00a0", "\u3000", " \n"]  # int() strips Unicode whitespace


def v1_for(body: bytes, timestamp: int, secret: str = SECRET) -> str:
    return hmac.new(secret.encode(), b"%d." % timestamp + body, hashlib.sha256).hexdigest()


near_now = st.integers(NOW - TOLERANCE - 3, NOW + TOLERANCE + 3)
timestamps = st.one_of(
    near_now,
    near_now,
    st.sampled_from([NOW - TOLERANCE - 1, NOW - TOLERANCE, NOW + TOLERANCE, NOW + TOLERANCE + 1]),
    st.integers(-(10**30), 10**30),
    st.integers(0, 4200).map(lambda digits: 10**digits),  # huge, still printable by str()
)


@st.composite
def timestamp_texts(draw: st.DrawFn, timestamp: int) -> str:
    """`timestamp` written in one of the ways int() reads back as the same number."""
    digits = str(abs(timestamp))
    if draw(st.booleans()):
        digits = "0" * draw(st.integers(1, 3)) + digits
    if len(digits) > 1 and draw(st.integers(0, 5)) == 0:
        digits = "_".join(digits)
    if draw(st.integers(0, 5)) == 0:
        digits = digits.translate(ARABIC_INDIC_DIGITS)
    sign = "-" if timestamp < 0 else draw(st.sampled_from(["", "", "+"]))
    return draw(st.sampled_from(PADDING)) + sign + digits + draw(st.sampled_from(PADDING))


not_integers = st.one_of(
    st.sampled_from(["", " ", "1.5", "0x1f", "1e9", "NaN", "--1", "1__0", "_1", "1_", "12 34"]),
    st.just("12x".translate(ARABIC_INDIC_DIGITS)),
    st.integers(4290, 4310).map(lambda n: "1" * n),  # around Python's int() digit limit
    st.text(max_size=12),
)
extra_equals = st.sampled_from(["", "", "", "=", "=junk", "=1", "=="])


@st.composite
def headers(draw: st.DrawFn, body: bytes) -> str | None:
    """A header of items that Stripe's parser treats differently, valid signatures among them."""
    stamps = draw(st.lists(timestamps, min_size=1, max_size=3))

    def t_item() -> st.SearchStrategy[str]:
        key = st.sampled_from(["t", "t", "t", " t", "t ", "T", "ts"])
        value = st.one_of(st.sampled_from(stamps).flatmap(timestamp_texts), not_integers)
        return st.tuples(key, value, extra_equals).map(lambda kv: f"{kv[0]}={kv[1]}{kv[2]}")

    def v1_item() -> st.SearchStrategy[str]:
        key = st.sampled_from(["v1", "v1", "v1", " v1", "v1 ", "V1", "v0", "v2"])
        valid = st.sampled_from(stamps).map(lambda t: v1_for(body, t))
        value = st.one_of(
            valid,
            valid,
            valid.map(str.upper),
            valid.map(lambda v: v + " "),
            st.sampled_from(stamps).map(lambda t: v1_for(body, t, OTHER_SECRET)),
            st.text(alphabet="0123456789abcdef", min_size=64, max_size=64),
            st.text(max_size=70),
            st.just(""),
        )
        return st.tuples(key, value, extra_equals).map(lambda kv: f"{kv[0]}={kv[1]}{kv[2]}")

    bare = st.sampled_from(["t", "v1", "", "=", "v0", " ", "t=", "v1=", "v1 =x", "t =1"])
    item = st.one_of(t_item(), t_item(), v1_item(), v1_item(), v1_item(), bare, st.text(max_size=20))
    shape = draw(st.sampled_from(["stripe"] * 4 + ["items"] * 3 + ["empty"]))
    if shape == "empty":
        return draw(st.sampled_from([None, ""]))
    if shape == "stripe":
        # Stripe's own layout, with noise around it.
        core = [f"t={draw(timestamp_texts(stamps[0]))}", f"v1={v1_for(body, stamps[0])}"]
        items = draw(st.lists(item, max_size=2)) + core + draw(st.lists(item, max_size=3))
    else:
        items = draw(st.lists(item, min_size=1, max_size=8))
    # Now and then, thousands of entries.
    repeat = draw(st.sampled_from([1, 1, 1, 1, 1, 1, 2, 1000, 3000]))
    return ",".join(items * repeat)


@st.composite
def deliveries(draw: st.DrawFn) -> tuple[bytes, str | None]:
    body = draw(st.one_of(st.just(SHORT_BODY), st.text(max_size=40).map(str.encode)))
    return body, draw(headers(body))


def _ascii_only_compare(expected: str, value: str) -> bool:
    # payhook's rule for the one case where Stripe's compare raises (TypeError on non-ASCII).
    return value.isascii() and hmac.compare_digest(expected, value)


@contextmanager
def stripe_library_at(clock: float) -> Iterator[None]:
    """Stripe's library reads time.time() itself: give it the same clock as payhook."""
    with (
        mock.patch.object(stripe_webhook, "time", SimpleNamespace(time=lambda: clock)),
        mock.patch.object(stripe_webhook, "secure_compare", _ascii_only_compare),
    ):
        yield


def stripe_verdict(body: bytes, header: str | None, clock: float) -> tuple[bool, str]:
    with stripe_library_at(clock):
        try:
            stripe.WebhookSignature.verify_header(body, header, SECRET, tolerance=TOLERANCE)
        except stripe.SignatureVerificationError as exc:
            return False, str(exc)
    return True, ""


def payhook_verdict(body: bytes, header: str | None) -> tuple[bool, str]:
    try:
        assert verify_signature(body, header, [SECRET], tolerance=TOLERANCE, now=NOW) == 0
    except SignatureError as exc:
        return False, exc.code
    return True, ""


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(deliveries())
def test_payhook_reads_headers_as_stripe_does(delivery: tuple[bytes, str | None]) -> None:
    body, header = delivery
    ours, code = payhook_verdict(body, header)
    theirs, message = stripe_verdict(body, header, NOW)
    event(f"stripe {'accepts' if theirs else 'rejects'}, payhook {'accepts' if ours else code}")
    if theirs:
        # Stripe's library bounds only the past. A timestamp more than TOLERANCE ahead is
        # one it still accepts with its clock at NOW + 2 * TOLERANCE + 1.
        ahead, _ = stripe_verdict(body, header, NOW + 2 * TOLERANCE + 1)
        assert (ours, code) == ((False, "future_timestamp") if ahead else (True, ""))
    else:
        assert not ours
        assert (code == "missing_signature") == message.startswith(MISSING), (code, message)
        assert (code == "malformed_signature") == message.startswith(UNREADABLE), (code, message)


@settings(max_examples=200, deadline=None)
@given(
    st.one_of(
        st.integers(-(10**4000), 10**4000).map(str),
        st.integers(1, 100_000).map(lambda n: "9" * n),
        st.text(),
    ),
    st.text(),
)
def test_any_timestamp_and_signature_end_in_signature_error(timestamp: str, signature: str) -> None:
    header = f"t={timestamp},v1={signature}"
    try:
        verify_signature(SHORT_BODY, header, [SECRET], tolerance=TOLERANCE, now=NOW)
    except SignatureError as exc:
        assert exc.code in {"malformed_signature", "stale_timestamp", "future_timestamp", "invalid_signature"}
