"""The keypad's meaning (issue 16 item 2): ITU E.161 two-key letters, `0`+digit, `#` end,
`*` short codes, one-digit menus."""

from __future__ import annotations

import pytest

from node.phone.keypad import (
    E161_LETTERS,
    BadEntry,
    Mark,
    ShortCode,
    ccrn_keys,
    decode_vehicle,
    encode_mark,
    menu_choice,
)

LETTER_KEYS = {
    "A": "21", "B": "22", "C": "23", "D": "31", "E": "32", "F": "33", "G": "41", "H": "42",
    "I": "43", "J": "51", "K": "52", "L": "53", "M": "61", "N": "62", "O": "63", "P": "71",
    "Q": "72", "R": "73", "S": "74", "T": "81", "U": "82", "V": "83", "W": "91", "X": "92",
    "Y": "93", "Z": "94",
}  # fmt: skip


@pytest.mark.parametrize(("letter", "keys"), sorted(LETTER_KEYS.items()))
def test_every_letter_is_its_key_and_position(letter: str, keys: str) -> None:
    """#16 item 2: a letter is its E.161 key then its position on that key (1-4)."""
    assert decode_vehicle(keys) == Mark(letter)
    assert encode_mark(letter) == keys


@pytest.mark.parametrize("digit", "0123456789")
def test_a_digit_is_zero_then_the_digit(digit: str) -> None:
    """#16 item 2: a digit is keyed as 0 followed by the digit."""
    assert decode_vehicle("0" + digit) == Mark(digit)


@pytest.mark.parametrize(
    ("keys", "vrn"),
    [
        ("2122010203#", "AB123"),  # `#` ends the entry
        ("2122010203", "AB123"),  # Asterisk's GET DATA strips the `#`
        ("7494060708", "SZ678"),
        ("2121212121212121", "AAAAAAAA"),  # 8 characters, the most a mark has
    ],
)
def test_marks_decode(keys: str, vrn: str) -> None:
    """#16 item 2: whole marks, with or without the ending `#`."""
    assert decode_vehicle(keys) == Mark(vrn)
    assert encode_mark(vrn) == keys.rstrip("#")


@pytest.mark.parametrize(
    "keys",
    [
        "",  # nothing
        "#",  # `#` alone
        "212",  # odd count: half a character
        "11",  # key 1 carries no letter
        "20",  # position 0
        "25",  # key 2 has 3 letters
        "75",  # key 7 has 4: 5 is beyond
        "95",
        "2121212121212121" + "21",  # 9 characters
        "21*1",  # `*` inside a mark
        "21#21",  # `#` inside
        "2a",  # not a key
        "٢١",  # non-ASCII digits
    ],
)
def test_bad_entries_are_refused(keys: str) -> None:
    """#16 item 2: anything that is not a whole mark or a short code is a bad entry."""
    assert isinstance(decode_vehicle(keys), BadEntry)


@pytest.mark.parametrize(
    ("keys", "expected"),
    [
        ("*1", ShortCode(1)),
        ("*12#", ShortCode(12)),
        ("*99", ShortCode(99)),
        ("*", None),
        ("*0", None),
        ("*100", None),
        ("**1", None),
    ],
)
def test_short_codes(keys: str, expected: ShortCode | None) -> None:
    """#16 item 2: `*` and a number 1-99 picks a registered vehicle; anything else is bad."""
    got = decode_vehicle(keys)
    if expected is None:
        assert isinstance(got, BadEntry)
    else:
        assert got == expected


def test_the_table_is_the_itu_one() -> None:
    """#16 item 2: keys 2-9 carry A-Z in order, 7 and 9 four letters, the rest three."""
    assert "".join(E161_LETTERS.values()) == "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    assert [len(v) for v in E161_LETTERS.values()] == [3, 3, 3, 3, 3, 4, 3, 4]


OPTIONS = ("LMC", "MKT", "STK", "SBC", "HYW", "HZMB")


@pytest.mark.parametrize(
    ("keys", "expected"),
    [
        ("1", "LMC"),
        ("2", "MKT"),
        ("3", "STK"),
        ("4", "SBC"),
        ("5", "HYW"),
        ("6", "HZMB"),
        ("6#", "HZMB"),
        ("7", None),
        ("0", None),
        ("", None),
        ("11", None),
        ("*", None),
    ],
)
def test_menu_digits_follow_the_configured_order(keys: str, expected: str | None) -> None:
    """#16 item 3: menu digit n picks the n-th LBCP of the configured order; others none."""
    assert menu_choice(keys, OPTIONS) == expected


def test_a_ccrn_entry_loses_its_end_key_only() -> None:
    """#16 item 3: `#` after a CCRN ends it and is not part of it."""
    assert ccrn_keys("1000000000000018#") == "1000000000000018"
    assert ccrn_keys("1000000000000018") == "1000000000000018"
    assert ccrn_keys("#") == ""
