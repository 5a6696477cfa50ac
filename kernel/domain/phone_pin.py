"""The phone PIN (pure): its form, its stored hash, and the lockout after wrong tries.

A PIN has 6 digits, so a fast hash of it is broken by trying all 10**6: it is stored as
scrypt (a slow, memory-hard KDF, hashlib's) with a random salt, in the form
`scrypt$<n>$<r>$<p>$<salt hex>$<hash hex>` so the cost can be raised later without losing
the PINs already set. Guessing over the phone is stopped by the lockout instead: 3 wrong PINs
in a row lock phone access for 15 minutes, counted in the database across calls, so hanging
up and calling again does not reset them.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

PIN_LENGTH = 6
MAX_WRONG = 3
LOCKOUT = timedelta(minutes=15)
# scrypt cost: n=2**14, r=8 (16 MiB, about 50 ms here): slow for a guesser, fine per call.
_N, _R, _P = 2**14, 8, 1
_SCHEME = "scrypt"


def pin_error(pin: object) -> str | None:
    """None when `pin` is a well-formed PIN, else what is wrong with it."""
    if not isinstance(pin, str):
        return "the PIN is a string of 6 digits"
    if len(pin) != PIN_LENGTH or not all("0" <= c <= "9" for c in pin):
        return f"the PIN is exactly {PIN_LENGTH} digits 0-9"
    return None


def _derive(pin: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(pin.encode(), salt=salt, n=n, r=r, p=p, maxmem=64 * 1024**2, dklen=32)


def hash_pin(pin: str, salt: bytes | None = None) -> str:
    """The stored form of a well-formed `pin`."""
    if pin_error(pin) is not None:
        raise ValueError("not a PIN")
    salt = secrets.token_bytes(16) if salt is None else salt
    digest = _derive(pin, salt, _N, _R, _P)
    return f"{_SCHEME}${_N}${_R}${_P}${salt.hex()}${digest.hex()}"


def pin_matches(pin: str, stored: str) -> bool:
    """Whether `pin` is the PIN whose stored form is `stored` (constant time)."""
    if pin_error(pin) is not None:
        return False
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != _SCHEME:
            return False
        mine = _derive(pin, bytes.fromhex(salt), int(n), int(r), int(p))
        return hmac.compare_digest(mine, bytes.fromhex(digest))
    except ValueError:
        return False


@dataclass(frozen=True)
class PinState:
    """What the database keeps about an account's PIN besides its hash."""

    failed: int = 0
    locked_until: datetime | None = None

    def locked_at(self, now: datetime) -> bool:
        return self.locked_until is not None and now < self.locked_until


@dataclass(frozen=True)
class Attempt:
    """The verdict on one try and the state to store after it."""

    verdict: str  # "ok" | "wrong" | "locked"
    state: PinState


def attempt(state: PinState, *, matches: bool, now: datetime) -> Attempt:
    """One PIN try: while locked every try is refused unchecked (and does not extend the
    lock); a right PIN clears the count; the MAX_WRONG-th wrong one in a row locks."""
    if state.locked_at(now):
        return Attempt("locked", state)
    if matches:
        return Attempt("ok", PinState())
    failed = state.failed + 1 if state.locked_until is None else 1  # a lock that ran out
    if failed >= MAX_WRONG:
        return Attempt("locked", PinState(failed, now + LOCKOUT))
    return Attempt("wrong", PinState(failed, None))
