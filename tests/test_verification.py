"""The verifier against Stripe's scheme: shared vectors, and the stripe SDK as reference."""

from __future__ import annotations

import json
import time

import pytest
import stripe
from payhook.receive.verification import SignatureError, sign, verify_signature
from payhook.testing.samples import FIXTURES

VECTORS = json.loads((FIXTURES / "signature_vectors.json").read_text())
FIXTURE_BODY = (FIXTURES / "payment_intent.succeeded.json").read_bytes()


def vector_body(vector: dict) -> bytes:
    if "body_file" in vector:
        return (FIXTURES / vector["body_file"]).read_bytes()
    return vector["body"].encode()


@pytest.mark.parametrize(
    "vector", [v for v in VECTORS["vectors"] if "expected_v1" in v], ids=lambda v: v["name"]
)
def test_vectors_verify_at_their_own_time(vector: dict) -> None:
    body = vector_body(vector)
    assert verify_signature(body, vector["header"], [vector["secret"]], now=vector["timestamp"]) == 0
    assert sign(body, vector["secret"], vector["timestamp"]) == vector["header"]
    if "negative" in vector:
        with pytest.raises(SignatureError) as info:
            verify_signature(
                vector["negative"]["body"].encode(),
                vector["header"],
                [vector["secret"]],
                now=vector["timestamp"],
            )
        assert info.value.code == "invalid_signature"


EDGE = {case["name"]: case for case in VECTORS["edge_cases_on_fixture_payment_intent_succeeded"]}


@pytest.mark.parametrize(
    ("name", "code"),
    [
        ("multiple_v1_one_valid", None),
        ("docs_style_with_v0", None),
        ("v0_only_same_digest", "malformed_signature"),
        ("wrong_secret", "invalid_signature"),
        ("timestamp_changed", "invalid_signature"),
    ],
)
def test_edge_cases_agree_with_the_stripe_sdk(name: str, code: str | None) -> None:
    case = EDGE[name]
    now = 1648320033

    def ours() -> int:
        return verify_signature(FIXTURE_BODY, case["header"], [case["secret"]], now=now)

    def reference() -> bool:
        return stripe.WebhookSignature.verify_header(
            FIXTURE_BODY, case["header"], case["secret"], tolerance=None
        )

    if code is None:
        assert ours() == 0
        assert reference()
    else:
        with pytest.raises(SignatureError) as info:
            ours()
        assert info.value.code == code
        with pytest.raises(stripe.SignatureVerificationError):
            reference()


def test_reserialised_body_is_rejected() -> None:
    header = sign(FIXTURE_BODY, "whsec_x")
    compact = json.dumps(json.loads(FIXTURE_BODY), separators=(",", ":")).encode()
    with pytest.raises(SignatureError):
        verify_signature(compact, header, ["whsec_x"])


def test_rotation_reports_which_secret_matched() -> None:
    rotation = VECTORS["rotation_signatures"]
    t = rotation["timestamp"]
    old, new = rotation["old_secret"], rotation["new_secret"]
    header_new = f"t={t},v1={rotation['v1_new']}"
    header_old = f"t={t},v1={rotation['v1_old']}"
    both = f"t={t},v1={rotation['v1_old']},v1={rotation['v1_new']}"
    assert verify_signature(FIXTURE_BODY, header_new, [old, new], now=t) == 1
    assert verify_signature(FIXTURE_BODY, header_old, [old, new], now=t) == 0
    assert verify_signature(FIXTURE_BODY, both, [new], now=t) == 0


@pytest.mark.parametrize(
    ("age", "tolerance", "code"),
    [
        (299, 300, None),
        (301, 300, "stale_timestamp"),
        (-299, 300, None),
        (-301, 300, "future_timestamp"),
        (-3600, 300, "future_timestamp"),
        (15, 10, "stale_timestamp"),
    ],
)
def test_tolerance_bounds_past_and_future(age: int, tolerance: int, code: str | None) -> None:
    now = time.time()
    header = sign(FIXTURE_BODY, "whsec_x", int(now - age))
    if code is None:
        assert verify_signature(FIXTURE_BODY, header, ["whsec_x"], tolerance=tolerance, now=now) == 0
        # The SDK agrees on everything but the future bound, which it does not check.
        assert stripe.WebhookSignature.verify_header(FIXTURE_BODY, header, "whsec_x", tolerance=tolerance)
    else:
        with pytest.raises(SignatureError) as info:
            verify_signature(FIXTURE_BODY, header, ["whsec_x"], tolerance=tolerance, now=now)
        assert info.value.code == code


@pytest.mark.parametrize(
    ("header", "code"),
    [
        (None, "missing_signature"),
        ("", "missing_signature"),
        ("garbage", "malformed_signature"),
        ("t=abc,v1=00", "malformed_signature"),
        ("v1=00", "malformed_signature"),
        ("t=1648320033", "malformed_signature"),
        ("t=1648320033,v1=not-hex-\u00e9", "invalid_signature"),
    ],
)
def test_malformed_headers(header: str | None, code: str) -> None:
    with pytest.raises(SignatureError) as info:
        verify_signature(FIXTURE_BODY, header, ["whsec_x"], now=1648320033)
    assert info.value.code == code


def test_error_never_contains_the_secret() -> None:
    with pytest.raises(SignatureError) as info:
        verify_signature(FIXTURE_BODY, sign(FIXTURE_BODY, "whsec_wrong"), ["whsec_the_real_one"])
    assert "whsec" not in str(info.value)


def stripe_accepts(body: bytes, header: str) -> bool:
    try:
        return bool(stripe.WebhookSignature.verify_header(body, header, "whsec_x", tolerance=None))
    except stripe.SignatureVerificationError:
        return False


NOW = 1648320033
V1 = sign(FIXTURE_BODY, "whsec_x", NOW).split(",v1=")[1]


@pytest.mark.parametrize(
    ("header", "code"),
    [
        (f"t={NOW},v1={V1}=anything", None),  # an item keeps the text between its first two '='
        (f"t={NOW}=1,v1={V1}", None),
        (f"t={NOW},t=not-a-number,v1={V1}", None),  # the first t counts; later ones are not read
        (f"t= {NOW} ,v1={V1}", None),  # int() allows whitespace around the number...
        (f"t=+{NOW:_},v1={V1}", None),  # ...a sign, and '_' between digits
        (f"t={NOW}, v1={V1}", "malformed_signature"),  # keys are not trimmed: " v1" is no v1
        (f" t={NOW},v1={V1}", "malformed_signature"),
        (f"t={NOW},v1={V1},t", "malformed_signature"),  # a bare t or v1 anywhere is unreadable
        (f"t={NOW},v1={V1},v1", "malformed_signature"),
        (f"t=1,t={NOW},v1={V1}", "stale_timestamp"),  # the first t is the one signed
        (f"t={NOW},V1={V1}", "malformed_signature"),
        (f"t={NOW},v1={V1.upper()}", "invalid_signature"),
    ],
)
def test_header_items_are_read_as_stripe_reads_them(header: str, code: str | None) -> None:
    if code is None:
        assert verify_signature(FIXTURE_BODY, header, ["whsec_x"], now=NOW) == 0
    else:
        with pytest.raises(SignatureError) as info:
            verify_signature(FIXTURE_BODY, header, ["whsec_x"], now=NOW)
        assert info.value.code == code
    assert stripe_accepts(FIXTURE_BODY, header) is (code is None)


@pytest.mark.parametrize(
    ("timestamp", "code"),
    [
        ("1" + "0" * 399, "future_timestamp"),  # once an OverflowError (a 500)
        ("-1" + "0" * 399, "stale_timestamp"),
        ("9" * 4300, "future_timestamp"),
        ("9" * 4301, "malformed_signature"),  # past Python's int() digit limit, as in stripe
        ("9" * 100_000, "malformed_signature"),
        ("1e400", "malformed_signature"),
        ("inf", "malformed_signature"),
    ],
)
def test_huge_timestamps_are_signature_errors(timestamp: str, code: str) -> None:
    with pytest.raises(SignatureError) as info:
        verify_signature(FIXTURE_BODY, f"t={timestamp},v1=00", ["whsec_x"], now=NOW)
    assert info.value.code == code


def test_non_ascii_v1_is_a_non_match_where_stripe_raises_type_error() -> None:
    header = f"t={NOW},v1=caf\u00e9,v1={V1}"
    assert verify_signature(FIXTURE_BODY, header, ["whsec_x"], now=NOW) == 0
    with pytest.raises(TypeError):  # a deliberate difference (docs/http.md)
        stripe.WebhookSignature.verify_header(FIXTURE_BODY, header, "whsec_x", tolerance=None)


def test_raw_bytes_are_verified_where_stripe_needs_utf8() -> None:
    body = b"\xff\xfe not UTF-8"
    header = sign(body, "whsec_x", NOW)
    assert verify_signature(body, header, ["whsec_x"], now=NOW) == 0
    with pytest.raises(UnicodeDecodeError):  # a deliberate difference (docs/http.md)
        stripe.WebhookSignature.verify_header(body, header, "whsec_x", tolerance=None)


def test_a_far_future_signature_is_refused_where_stripe_accepts_it() -> None:
    later = NOW + 10**9
    header = sign(FIXTURE_BODY, "whsec_x", later)
    with pytest.raises(SignatureError) as info:
        verify_signature(FIXTURE_BODY, header, ["whsec_x"], now=NOW)
    assert info.value.code == "future_timestamp"
    assert stripe.WebhookSignature.verify_header(FIXTURE_BODY, header, "whsec_x", tolerance=300)
