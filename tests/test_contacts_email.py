"""``normalize_email``'s fast path for plain addresses agrees with ``validate_email``.

The fast path may leave any address to ``validate_email``; what it accepts, it must accept
exactly as ``validate_email`` would (same text, lower-cased), and never an address
``validate_email`` rejects.
"""

from __future__ import annotations

import random

import pytest
from email_validator import EmailNotValidError, validate_email

from engine.contacts import _plain_address, normalize_email
from engine.errors import ValidationError

EDGES = [
    "ana@example.com",
    "Ana.Maria+news@Mail.Example.COM",
    "lead1@bench.example",
    "a_b-c@sub-domain.co.uk",
    "x@a.io",
    "a..b@example.com",
    ".a@example.com",
    "a.@example.com",
    "a@-example.com",
    "a@example-.com",
    "a@exa--mple.com",
    "a@xn--bcher-kva.com",
    "a@ab--cd.com",
    "a@example.c0m",
    "a@example.123",
    "a@example",
    "a@localhost",
    "a@printer.local",
    "a@host.test",
    "a@host.invalid",
    "a@10.in-addr.arpa",
    "a@hidden.onion",
    "a@" + "b" * 63 + ".com",
    "a@" + "b" * 64 + ".com",
    "l" * 64 + "@example.com",
    "l" * 65 + "@example.com",
    "a@" + ".".join(["d" * 60] * 4) + ".com",
    "a@" + ".".join(["d" * 49] * 5) + ".com",
    "a!b@example.com",
    '"quoted"@example.com',
    "ñandu@example.com",
    "a@bücher.de",
    "a@[127.0.0.1]",
    "a b@example.com",
    "a@b@example.com",
    "info@Example.com",
]


def _reference(address: str) -> str | None:
    try:
        return validate_email(address, check_deliverability=False).normalized.lower()
    except EmailNotValidError:
        return None


def _fuzzed(rng: random.Random) -> str:
    """Mostly plain characters, with the ones the rules are about mixed in."""

    def text(plain: str, special: str, length: int) -> str:
        return "".join(rng.choice(special if rng.random() < 0.08 else plain) for _ in range(length))

    local = text("abcXYZ019", "._+-!#", rng.choice([1, 3, 8, 63, 64, 65]))
    labels = [
        text("abcXYZ019", ".-", rng.choice([1, 2, 5, 62, 63, 64]))
        for _ in range(rng.randrange(1, 4))
    ]
    tld = rng.choice(
        ["com", "org", "io", "c0", "123", "x", "local", "test", "arpa", "onion", "invalid",
         "localhost", "example", "xn--p1ai", "Com", "a" * 63, "a" * 64]
    )  # fmt: skip
    return local + "@" + ".".join([*labels, tld])


@pytest.mark.parametrize("address", EDGES)
def test_the_fast_path_accepts_only_what_validate_email_accepts_and_as_it_would(
    address: str,
) -> None:
    fast = _plain_address(address)
    if fast is not None:
        assert fast == _reference(address)


def test_the_same_holds_for_twenty_thousand_fuzzed_addresses() -> None:
    rng = random.Random(20261205)
    accepted = 0
    for _ in range(20_000):
        address = _fuzzed(rng)
        fast = _plain_address(address)
        if fast is not None:
            accepted += 1
            assert fast == _reference(address), address
    # Not vacuous: the fuzzing reaches the fast path often.
    assert accepted > 1_000


def test_common_addresses_take_the_fast_path() -> None:
    for address in ("ana@example.com", "Ana.Maria+news@Mail.Example.COM", "lead1@bench.example"):
        assert _plain_address(address) == address.lower()


def test_anything_else_is_still_judged_by_validate_email() -> None:
    assert normalize_email("  Ana@Example.COM ") == "ana@example.com"
    assert normalize_email("ñandu@example.com") == "ñandu@example.com"
    with pytest.raises(ValidationError, match="is not valid"):
        normalize_email("a..b@example.com")
    with pytest.raises(ValidationError, match="is not valid"):
        normalize_email("a@printer.local")


def test_a_local_part_longer_than_64_bytes_is_refused_saying_so() -> None:
    """``validate_email`` takes it, mail servers need not (RFC 5321): one such address in a
    provider's batch request could fail the request for everyone in it."""
    assert normalize_email("l" * 64 + "@example.com") == "l" * 64 + "@example.com"
    with pytest.raises(ValidationError, match="65 bytes long"):
        normalize_email("l" * 65 + "@example.com")
    with pytest.raises(ValidationError, match="66 bytes long"):
        normalize_email("ñ" * 33 + "@example.com")  # 33 characters, two bytes each
