"""CCRN (Customs Cargo Reference Number): format, check digit, and how new ones are drawn.

A CCRN is 16 ASCII digits: a 15-digit body followed by one Damm check digit.

Digits only, so a trucker can key it on a phone keypad and read it aloud. The check digit uses
the Damm algorithm (a totally anti-symmetric quasigroup of order 10) because it catches every
single-digit error and every adjacent transposition; Luhn, the obvious alternative, misses
09 <-> 90. The check digit guards against typing errors, not guessing: anyone can compute it.

Possession is the authority: the shipper hands the CCRN to the trucker, and whoever quotes it may
bundle it. So a CCRN must be unguessable, and `new_ccrn` draws it at random (issue 10):
- body = one digit from 2..9, then 14 uniformly random digits, all from `secrets` (the
  operating system's CSPRNG). 8 * 10**14 bodies: about 49.5 bits (`RANDOM_BITS`), with no
  sequence and no time component, so one CCRN says nothing about its neighbours or its age;
- the first digit is never 0, so a CCRN survives tools that treat it as an integer
  (spreadsheets, some phone systems) with all 16 digits intact;
- the first digit is never 1, because bodies starting "1" were issued before: prefix "10" plus
  a 13-digit database sequence number (`make_ccrn`). Those CCRNs stay valid forever, and a random
  CCRN can never equal one of them;
- uniqueness comes from the database (the primary key), not from the number: two draws can
  collide (after a billion CCRNs, about one draw in 800,000 hits an existing one), so the issuer
  inserts with ON CONFLICT DO NOTHING and draws again, up to `ISSUE_ATTEMPTS` times. Running out
  of attempts means the random source is broken, not bad luck (chance below 1e-29).
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Callable, Iterator

from kernel.errors import RocarsError

# randbelow(n) -> a uniform integer in 0..n-1; `secrets.randbelow` unless a test injects one.
RandBelow = Callable[[int], int]
SYSTEM_RANDBELOW: RandBelow = secrets.randbelow

CCRN_LENGTH = 16
# Legacy numbering (sequence-issued before issue 10; still valid, no longer issued).
CCRN_PREFIX = "10"
_SEQUENCE_DIGITS = CCRN_LENGTH - len(CCRN_PREFIX) - 1
MAX_SEQUENCE = 10**_SEQUENCE_DIGITS - 1
# Random numbering: the first digit of the body, then `_RANDOM_DIGITS` uniform digits.
RANDOM_FIRST_DIGITS = "23456789"
_RANDOM_DIGITS = CCRN_LENGTH - 2
RANDOM_BITS = math.log2(len(RANDOM_FIRST_DIGITS) * 10**_RANDOM_DIGITS)
ISSUE_ATTEMPTS = 5
# The one answer for a CCRN that does not exist or that the caller may not see: it must not
# tell the two apart, nor name an owner, a state or an LBCP.
NO_SUCH_CCRN = "no such CCRN"

# The standard Damm operation table (Damm 2004): a weakly totally anti-symmetric quasigroup
# with zeros on the diagonal, so appending the check digit brings the interim value to 0.
_DAMM_TABLE: tuple[tuple[int, ...], ...] = (
    (0, 3, 1, 7, 5, 9, 8, 6, 4, 2),
    (7, 0, 9, 2, 1, 5, 4, 8, 6, 3),
    (4, 2, 0, 6, 8, 7, 1, 3, 5, 9),
    (1, 7, 5, 0, 9, 8, 3, 4, 2, 6),
    (6, 1, 2, 3, 0, 4, 5, 9, 7, 8),
    (3, 6, 7, 4, 2, 0, 9, 5, 8, 1),
    (5, 8, 6, 9, 7, 2, 0, 1, 3, 4),
    (8, 9, 4, 5, 3, 6, 2, 0, 1, 7),
    (9, 4, 3, 8, 6, 1, 7, 2, 0, 5),
    (2, 5, 8, 1, 4, 3, 6, 7, 9, 0),
)

# str.isdigit() accepts non-ASCII digits such as "²" or "٣"; a keypad only has these.
_ASCII_DIGITS = frozenset("0123456789")


def _first_non_digit(text: str) -> int | None:
    return next((i for i, ch in enumerate(text) if ch not in _ASCII_DIGITS), None)


def _damm_interim(digits: str) -> int:
    interim = 0
    for ch in digits:
        interim = _DAMM_TABLE[interim][ord(ch) - ord("0")]
    return interim


def damm_check_digit(digits: str) -> str:
    """The Damm check digit to append to ``digits`` (ASCII digits only, may be empty)."""
    bad = _first_non_digit(digits)
    if bad is not None:
        raise ValueError(f"not a digit at position {bad + 1}: {digits[bad]!r}")
    # Zero diagonal: the check digit equals the interim value itself.
    return str(_damm_interim(digits))


def new_ccrn(randbelow: RandBelow = SYSTEM_RANDBELOW) -> str:
    """A fresh random CCRN (see the module docstring); ``randbelow(n)`` returns 0..n-1."""
    first = randbelow(len(RANDOM_FIRST_DIGITS))
    rest = randbelow(10**_RANDOM_DIGITS)
    if not (0 <= first < len(RANDOM_FIRST_DIGITS) and 0 <= rest < 10**_RANDOM_DIGITS):
        raise ValueError(f"random source returned out-of-range values {first}, {rest}")
    body = f"{RANDOM_FIRST_DIGITS[first]}{rest:0{_RANDOM_DIGITS}d}"
    return body + damm_check_digit(body)


def ccrn_draws(
    randbelow: RandBelow = SYSTEM_RANDBELOW, attempts: int = ISSUE_ATTEMPTS
) -> Iterator[str]:
    """Fresh CCRNs for the issuer to try in turn until one is not taken; asking for one more
    than ``attempts`` raises RocarsError (every draw collided: the random source is broken)."""
    for _ in range(attempts):
        yield new_ccrn(randbelow)
    raise RocarsError(
        f"{attempts} random CCRNs in a row were already taken: the random source is broken"
    )


def make_ccrn(sequence: int) -> str:
    """The legacy CCRN of a database sequence value in 1..MAX_SEQUENCE.

    No longer issued (see `new_ccrn`); kept because such CCRNs exist and stay valid, and tests
    use it for numbers in that range.
    """
    if isinstance(sequence, bool) or not isinstance(sequence, int):
        raise TypeError(f"sequence must be an int, got {type(sequence).__name__}")
    # Database sequences start at 1; 0 and negatives mean a caller bug, not a number to issue.
    if not 1 <= sequence <= MAX_SEQUENCE:
        raise ValueError(f"sequence {sequence} out of range 1..{MAX_SEQUENCE}")
    body = f"{CCRN_PREFIX}{sequence:0{_SEQUENCE_DIGITS}d}"
    return body + damm_check_digit(body)


def validate_ccrn(text: str) -> str | None:
    """None when ``text`` is a well-formed CCRN, else a message naming what is wrong.

    Only the format is checked; whether the CCRN was ever issued is the database's question.
    """
    bad = _first_non_digit(text)
    if bad is not None:
        return f"CCRN must contain digits only; found {text[bad]!r} at position {bad + 1}"
    if len(text) != CCRN_LENGTH:
        return f"CCRN must be {CCRN_LENGTH} digits long, got {len(text)}"
    if _damm_interim(text) != 0:
        return "CCRN check digit does not match; please check the number for a typing error"
    return None


def is_valid_ccrn(text: str) -> bool:
    """True when ``text`` is a well-formed CCRN (length, digits, check digit)."""
    return validate_ccrn(text) is None
