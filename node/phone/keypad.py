"""What keys a caller pressed mean (pure): ITU E.161 letters, short codes, menu digits.

Asterisk's GET DATA ends an entry at `#` and leaves it out of the digits it answers, so an
entry reaches this module without its terminator; a trailing `#` is accepted all the same.

A registration mark is keyed two keys per character: a letter as its E.161 key (2 = ABC,
3 = DEF, 4 = GHI, 5 = JKL, 6 = MNO, 7 = PQRS, 8 = TUV, 9 = WXYZ) followed by its position on
that key (1-4); a digit as `0` followed by the digit. `*` first means a short code instead.
"""

from __future__ import annotations

from dataclasses import dataclass

from kernel.domain.vrn import MAX_VRN_LENGTH, normalise_vrn

E161_LETTERS: dict[str, str] = {
    "2": "ABC",
    "3": "DEF",
    "4": "GHI",
    "5": "JKL",
    "6": "MNO",
    "7": "PQRS",
    "8": "TUV",
    "9": "WXYZ",
}
KEYPAD = frozenset("0123456789*#")
SHORT_CODE_MARK = "*"
MAX_SHORT_CODE_DIGITS = 2


@dataclass(frozen=True)
class Mark:
    """A registration mark spelled on the keypad (canonical, as node VRNs are)."""

    vrn: str


@dataclass(frozen=True)
class ShortCode:
    """`*` and a number: one of the account's vehicles by its position."""

    number: int


@dataclass(frozen=True)
class BadEntry:
    """Keys that mean nothing here, and why (for logs; the caller hears one prompt)."""

    reason: str


def _strip_end(keys: str) -> str:
    return keys[:-1] if keys.endswith("#") else keys


def encode_mark(vrn: str) -> str:
    """The keys that spell `vrn` (the inverse of `decode_vehicle`; for tests and prompts)."""
    out = []
    for ch in normalise_vrn(vrn):
        if ch.isdigit():
            out.append("0" + ch)
            continue
        key = next(k for k, letters in E161_LETTERS.items() if ch in letters)
        out.append(key + str(E161_LETTERS[key].index(ch) + 1))
    return "".join(out)


def decode_vehicle(keys: str) -> Mark | ShortCode | BadEntry:
    """What the caller keyed at the vehicle prompt."""
    keys = _strip_end(keys)
    if not keys:
        return BadEntry("nothing keyed")
    if any(k not in KEYPAD or k == "#" for k in keys):
        return BadEntry("a key that is not on a keypad, or # inside the entry")
    if keys.startswith(SHORT_CODE_MARK):
        code = keys[1:]
        if not code.isdigit() or len(code) > MAX_SHORT_CODE_DIGITS or int(code) == 0:
            return BadEntry(f"a short code is * and 1-{MAX_SHORT_CODE_DIGITS} digits, not 0")
        return ShortCode(int(code))
    if "*" in keys:
        return BadEntry("* only starts a short code")
    if len(keys) % 2:
        return BadEntry("a mark is keyed two keys per character")
    if len(keys) > 2 * MAX_VRN_LENGTH:
        return BadEntry(f"a mark has at most {MAX_VRN_LENGTH} characters")
    chars = []
    for i in range(0, len(keys), 2):
        key, pos = keys[i], keys[i + 1]
        if key == "0":
            chars.append(pos)
            continue
        letters = E161_LETTERS.get(key)
        if letters is None or not "1" <= pos <= str(len(letters)):
            return BadEntry(f"{key}{pos} is no letter (key 1 has none; positions run 1-4)")
        chars.append(letters[int(pos) - 1])
    return Mark(normalise_vrn("".join(chars)))


def menu_choice(keys: str, options: tuple[str, ...]) -> str | None:
    """The option a one-digit menu answer picks (1 = the first), or None."""
    keys = _strip_end(keys)
    if len(keys) != 1 or not "1" <= keys <= "9":
        return None
    index = int(keys) - 1
    return options[index] if index < len(options) else None


def ccrn_keys(keys: str) -> str:
    """A CCRN entry as keyed (its ending `#` dropped); the CCRN rules judge it."""
    return _strip_end(keys)
