"""CCRN format and Damm check digit, for legacy (sequence) and random CCRNs.

The unguessability of random CCRNs (issue 10) is pinned in test_hostile_ccrn.py.
"""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kernel.domain.ccrn import (
    CCRN_LENGTH,
    CCRN_PREFIX,
    MAX_SEQUENCE,
    damm_check_digit,
    is_valid_ccrn,
    make_ccrn,
    new_ccrn,
    validate_ccrn,
)

DIGITS = "0123456789"
sequences = st.integers(min_value=1, max_value=MAX_SEQUENCE)
# Random CCRNs from a seeded source, so hypothesis can shrink and replay them.
random_ccrns = st.randoms(use_true_random=False).map(lambda r: new_ccrn(r.randrange))


def single_digit_errors(text: str) -> list[str]:
    """Every string that differs from text in exactly one digit."""
    return [text[:i] + d + text[i + 1 :] for i in range(len(text)) for d in DIGITS if d != text[i]]


def adjacent_swaps(text: str) -> list[str]:
    """Every string made by swapping two adjacent, differing digits of text."""
    return [
        text[:i] + text[i + 1] + text[i] + text[i + 2 :]
        for i in range(len(text) - 1)
        if text[i] != text[i + 1]
    ]


def test_known_damm_vector() -> None:
    """The published example: 572 gets check digit 4, and 5724 checks out."""
    assert damm_check_digit("572") == "4"
    assert damm_check_digit("5724") == "0"


def test_check_digit_of_empty_string_is_zero() -> None:
    """The Damm interim value starts at 0, so an empty string has check digit 0."""
    assert damm_check_digit("") == "0"


@pytest.mark.parametrize("text", ["12a", " 1", "1-2", "²", "٣", "１"])
def test_check_digit_refuses_non_ascii_digits(text: str) -> None:
    """Letters, separators and non-ASCII digits are refused with a ValueError."""
    with pytest.raises(ValueError, match="not a digit"):
        damm_check_digit(text)


def test_every_interim_state_detects_every_substitution_and_adjacent_swap() -> None:
    """From every interim state, changing one digit or swapping two changes the check digit."""
    # Row 0 of the table is a permutation, so the leading digit d reaches every interim state;
    # later digits map differing states to differing states (a Latin square's columns are
    # permutations), so this exhaustive check covers those errors at any position, any length.
    for d, x, y in itertools.product(DIGITS, repeat=3):
        if x != y:
            assert damm_check_digit(d + x) != damm_check_digit(d + y)
            assert damm_check_digit(d + x + y) != damm_check_digit(d + y + x)


def test_detects_09_90_transposition_that_luhn_misses() -> None:
    """The 09 <-> 90 swap, invisible to Luhn, changes the Damm check digit."""
    body = CCRN_PREFIX + "0" * 11 + "09"
    ccrn = body + damm_check_digit(body)
    swapped = ccrn[:13] + "90" + ccrn[15:]
    assert is_valid_ccrn(ccrn)
    assert not is_valid_ccrn(swapped)


def test_make_ccrn_of_first_sequence() -> None:
    """Legacy numbering: sequence 1 gives the prefix, zero padding, the 1 and its check digit."""
    body = CCRN_PREFIX + "0" * 12 + "1"
    assert make_ccrn(1) == body + damm_check_digit(body)


def test_make_ccrn_of_last_sequence() -> None:
    """The largest sequence still fits the 16 digits."""
    ccrn = make_ccrn(MAX_SEQUENCE)
    assert ccrn.startswith(CCRN_PREFIX + "9" * 13)
    assert is_valid_ccrn(ccrn)


@pytest.mark.parametrize("sequence", [0, -1, MAX_SEQUENCE + 1, 10**20])
def test_make_ccrn_rejects_out_of_range(sequence: int) -> None:
    """Sequences outside 1..MAX_SEQUENCE raise ValueError naming the range."""
    with pytest.raises(ValueError, match="out of range"):
        make_ccrn(sequence)


@pytest.mark.parametrize("sequence", [True, 1.0, "1"])
def test_make_ccrn_rejects_non_int(sequence: object) -> None:
    """bool, float and str are not sequence numbers."""
    with pytest.raises(TypeError):
        make_ccrn(sequence)  # type: ignore[arg-type]


@given(sequences)
def test_make_ccrn_is_valid_and_encodes_the_sequence(sequence: int) -> None:
    """Every issued CCRN is 16 digits, valid, prefixed, and its body gives back the sequence."""
    ccrn = make_ccrn(sequence)
    assert len(ccrn) == CCRN_LENGTH
    assert validate_ccrn(ccrn) is None
    assert ccrn.startswith(CCRN_PREFIX)
    assert int(ccrn[len(CCRN_PREFIX) : -1]) == sequence


@given(sequences, sequences)
def test_distinct_sequences_give_distinct_ccrns(a: int, b: int) -> None:
    """CCRNs are unique because sequences are: a != b implies make_ccrn(a) != make_ccrn(b)."""
    assert (make_ccrn(a) == make_ccrn(b)) == (a == b)


@given(st.one_of(sequences.map(make_ccrn), random_ccrns))
def test_every_single_digit_error_is_detected(ccrn: str) -> None:
    """Changing any one of the 16 digits of a legacy or random CCRN makes it invalid."""
    assert validate_ccrn(ccrn) is None
    for wrong in single_digit_errors(ccrn):
        assert validate_ccrn(wrong) is not None, wrong


@given(st.one_of(sequences.map(make_ccrn), random_ccrns))
def test_every_adjacent_transposition_is_detected(ccrn: str) -> None:
    """Swapping any two adjacent, differing digits of a legacy or random CCRN makes it invalid."""
    for wrong in adjacent_swaps(ccrn):
        assert validate_ccrn(wrong) is not None, wrong


@given(st.text(alphabet=DIGITS, min_size=15, max_size=15))
def test_exactly_one_check_digit_completes_any_body(body: str) -> None:
    """Of the ten possible last digits, only the Damm check digit makes a valid CCRN."""
    valid = [d for d in DIGITS if is_valid_ccrn(body + d)]
    assert valid == [damm_check_digit(body)]


@pytest.mark.parametrize("text", ["", "1", "1" * 15, "1" * 17, "1" * 1000])
def test_validate_names_wrong_length(text: str) -> None:
    """A digit string of the wrong length is reported with the expected and actual length."""
    assert validate_ccrn(text) == f"CCRN must be 16 digits long, got {len(text)}"


@pytest.mark.parametrize(
    ("text", "position", "char"),
    [
        ("A" + "1" * 15, 1, "A"),
        ("1234 5678", 5, " "),
        ("1" * 15 + "²", 16, "²"),
        ("١" * 16, 1, "١"),
        ("1" * 20 + "x", 21, "x"),
    ],
)
def test_validate_names_first_non_digit(text: str, position: int, char: str) -> None:
    """Non-ASCII-digit input is reported with the offending character and its position."""
    message = validate_ccrn(text)
    assert message is not None
    assert "digits only" in message
    assert f"{char!r} at position {position}" in message


def test_validate_names_bad_check_digit() -> None:
    """A 16-digit string with the wrong check digit is reported as a check-digit mismatch."""
    ccrn = make_ccrn(12345)
    wrong = ccrn[:-1] + str((int(ccrn[-1]) + 1) % 10)
    message = validate_ccrn(wrong)
    assert message is not None
    assert "check digit" in message


@given(st.text(max_size=20))
def test_is_valid_agrees_with_validate(text: str) -> None:
    """is_valid_ccrn is exactly 'validate_ccrn found nothing wrong'."""
    assert is_valid_ccrn(text) == (validate_ccrn(text) is None)
