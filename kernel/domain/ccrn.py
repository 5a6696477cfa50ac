"""CCRN (Customs Cargo Reference Number): format and check digit.

A CCRN is 16 ASCII digits: a 15-digit body followed by one Damm check digit.

Digits only, so a trucker can key it on a phone keypad. The check digit uses the Damm algorithm
(a totally anti-symmetric quasigroup of order 10) because it catches every single-digit error
and every adjacent transposition; Luhn, the obvious alternative, misses 09 <-> 90.

Body = ``CCRN_PREFIX`` (2 digits) + the database sequence number zero-padded to 13 digits.
The sequence never repeats, so a CCRN is unique forever. The prefix is fixed at "10":
- its first digit is not 0, so a CCRN survives tools that treat it as an integer (spreadsheets,
  some phone systems) with all 16 digits intact;
- other prefixes stay free for a separate numbering range (for example references issued
  while the database is unreachable) that can then never collide with sequence-issued numbers.
13 digits of sequence allow about 10 trillion consignments, far beyond the system's life.
"""

from __future__ import annotations

CCRN_PREFIX = "10"
CCRN_LENGTH = 16
_SEQUENCE_DIGITS = CCRN_LENGTH - len(CCRN_PREFIX) - 1
MAX_SEQUENCE = 10**_SEQUENCE_DIGITS - 1

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


def make_ccrn(sequence: int) -> str:
    """The CCRN for a database sequence value in 1..MAX_SEQUENCE."""
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
