"""The phone PIN (issue 16 item 1): its form, its scrypt hash, and the 15-minute lock after
three wrong tries."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from kernel.domain.phone_pin import LOCKOUT, PinState, attempt, hash_pin, pin_error, pin_matches

NOW = datetime(2030, 1, 7, 8, 0, tzinfo=UTC)


@pytest.mark.parametrize("pin", ["12345", "1234567", "12345a", "١٢٣٤٥٦", "", 123456, None])
def test_only_six_ascii_digits_are_a_pin(pin: object) -> None:
    """#16 item 1: a PIN is exactly 6 digits 0-9; the message never repeats the value."""
    error = pin_error(pin)
    assert error is not None
    assert str(pin) not in error or pin in ("", None)


def test_the_stored_form_is_a_salted_scrypt_hash() -> None:
    """#16 item 1: stored hashed (scrypt, random salt), never in clear; only the PIN matches."""
    stored = hash_pin("314159")
    assert stored.startswith("scrypt$")
    assert "314159" not in stored
    assert stored != hash_pin("314159")  # another salt
    assert pin_matches("314159", stored)
    assert not pin_matches("314158", stored)
    assert not pin_matches("314159", "sha256$x")
    assert not pin_matches("314159", "garbage")


@pytest.mark.parametrize(
    ("state", "matches", "verdict", "after"),
    [
        (PinState(), True, "ok", PinState()),
        (PinState(), False, "wrong", PinState(1)),
        (PinState(1), False, "wrong", PinState(2)),
        (PinState(2), False, "locked", PinState(3, NOW + LOCKOUT)),
        (PinState(2), True, "ok", PinState()),
        # Locked: refused unchecked, even the right PIN, and the lock is not extended.
        (
            PinState(3, NOW + timedelta(minutes=1)),
            True,
            "locked",
            PinState(3, NOW + timedelta(minutes=1)),
        ),
        (
            PinState(3, NOW + timedelta(minutes=1)),
            False,
            "locked",
            PinState(3, NOW + timedelta(minutes=1)),
        ),
        # A lock that ran out: counting starts again.
        (PinState(3, NOW), False, "wrong", PinState(1)),
        (PinState(3, NOW - timedelta(seconds=1)), True, "ok", PinState()),
    ],
)
def test_lockout(state: PinState, matches: bool, verdict: str, after: PinState) -> None:
    """#16 item 1: the 3rd wrong PIN in a row locks phone access for 15 minutes."""
    got = attempt(state, matches=matches, now=NOW)
    assert (got.verdict, got.state) == (verdict, after)
