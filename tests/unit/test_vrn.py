"""Vehicle registration mark normalisation."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kernel.domain.vrn import MAX_VRN_LENGTH, normalise_vrn

CANONICAL = re.compile(r"[A-Z0-9]{1,8}")
ALNUM = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("AB1234", "AB1234"),
        ("ab 1234", "AB1234"),
        ("AB-1234", "AB1234"),
        ("  a-b 12 34 ", "AB1234"),
        ("hk\t2025", "HK2025"),
        ("ZJ\u00a01", "ZJ1"),
        ("1", "1"),
        ("ABCD1234", "ABCD1234"),
        ("A-B-C-D-1-2-3-4", "ABCD1234"),
    ],
)
def test_normalises_separators_and_case(text: str, expected: str) -> None:
    """Spaces, tabs, no-break spaces and hyphens vanish and letters become upper case."""
    assert normalise_vrn(text) == expected


@pytest.mark.parametrize("text", ["", "   ", "-", " - - "])
def test_empty_is_rejected(text: str) -> None:
    """Nothing left after removing separators is an empty VRN."""
    with pytest.raises(ValueError, match="VRN is empty"):
        normalise_vrn(text)


@pytest.mark.parametrize(
    ("text", "bad"),
    [
        ("AB_123", "_"),
        ("AB.123", "."),
        ("AB/123", "/"),
        ("粵B1234", "粵"),
        ("ＡＢ12", "Ａ"),
        ("ı23", "ı"),
        ("ſ23", "ſ"),
        ("ß1", "ß"),
        ("AB١٢", "١"),
    ],
)
def test_characters_outside_ascii_letters_and_digits_are_rejected(text: str, bad: str) -> None:
    """Punctuation, CJK, full-width and letters that upper-case into ASCII are refused by name."""
    with pytest.raises(ValueError, match="only letters A-Z and digits 0-9") as info:
        normalise_vrn(text)
    assert repr(bad) in str(info.value)


def test_nine_characters_is_too_long() -> None:
    """More than 8 letters and digits is rejected with the count."""
    with pytest.raises(ValueError, match="at most 8 letters and digits, got 9"):
        normalise_vrn("ABCD 12345")


@given(st.text(max_size=30))
def test_result_is_canonical_or_valueerror(text: str) -> None:
    """Any input either yields 1-8 of A-Z0-9 or raises ValueError; nothing else escapes."""
    try:
        result = normalise_vrn(text)
    except ValueError:
        return
    assert CANONICAL.fullmatch(result)


@given(st.text(alphabet=ALNUM, min_size=1, max_size=MAX_VRN_LENGTH), st.data())
def test_separators_anywhere_do_not_matter(core: str, data: st.DataObject) -> None:
    """Inserting spaces or hyphens anywhere gives the same VRN as the bare upper-cased text."""
    pieces = [data.draw(st.text(alphabet=" -\t", max_size=2)) + ch for ch in core]
    decorated = "".join(pieces) + data.draw(st.text(alphabet=" -", max_size=2))
    assert normalise_vrn(decorated) == core.upper()


@given(st.text(alphabet=ALNUM + " -", max_size=20))
def test_normalisation_is_idempotent(text: str) -> None:
    """Normalising a normalised VRN changes nothing."""
    try:
        once = normalise_vrn(text)
    except ValueError:
        return
    assert normalise_vrn(once) == once
