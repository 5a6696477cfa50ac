"""#10 item 1, pure rules: CCRNs are drawn at random (unguessable, no order), keep the legacy
format valid, are retried on a collision, and every "no such CCRN" answer is one text."""

from __future__ import annotations

import inspect
import itertools
import random
import secrets
from collections import Counter
from collections.abc import Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kernel.domain.bundling import ConsignmentFacts, bundle_conflicts
from kernel.domain.ccrn import (
    CCRN_LENGTH,
    CCRN_PREFIX,
    ISSUE_ATTEMPTS,
    MAX_SEQUENCE,
    NO_SUCH_CCRN,
    RANDOM_BITS,
    RANDOM_FIRST_DIGITS,
    SYSTEM_RANDBELOW,
    RandBelow,
    ccrn_draws,
    damm_check_digit,
    is_valid_ccrn,
    make_ccrn,
    new_ccrn,
)
from kernel.errors import RocarsError
from node.api.common import not_found

DIGITS = frozenset("0123456789")
# chi-square critical values at p = 0.001 for 9 and 7 degrees of freedom.
CHI2_9DF = 27.88
CHI2_7DF = 24.32


def scripted(values: list[int]) -> tuple[list[tuple[int, int]], RandBelow]:
    """A randbelow that returns `values` in turn and records every (n, value) it gave."""
    calls: list[tuple[int, int]] = []
    it: Iterator[int] = iter(values)

    def randbelow(n: int) -> int:
        v = next(it)
        calls.append((n, v))
        return v

    return calls, randbelow


def chi_square(counts: Counter[str], symbols: str) -> float:
    total = sum(counts.values())
    expected = total / len(symbols)
    assert set(counts) <= set(symbols), counts
    return sum((counts[s] - expected) ** 2 / expected for s in symbols)


@given(st.randoms(use_true_random=False))
def test_a_new_ccrn_is_16_ascii_digits_with_its_check_digit(r: random.Random) -> None:
    """#10 item 1: digits only, 16 long, the Damm check digit last, first digit 2..9."""
    ccrn = new_ccrn(r.randrange)
    assert len(ccrn) == CCRN_LENGTH
    assert set(ccrn) <= DIGITS
    assert ccrn[-1] == damm_check_digit(ccrn[:-1])
    assert is_valid_ccrn(ccrn)
    assert ccrn[0] in "23456789"


def test_the_system_source_draws_valid_ccrns_that_never_start_with_0_or_1() -> None:
    """#10 item 1: with the real CSPRNG every draw is valid and starts with 2..9, so none can
    be a legacy (prefix 10) CCRN or lose a leading zero in a spreadsheet."""
    ccrns = [new_ccrn() for _ in range(2000)]
    assert all(is_valid_ccrn(c) for c in ccrns)
    assert {c[0] for c in ccrns} <= set("23456789")
    assert not any(c.startswith(CCRN_PREFIX) for c in ccrns)
    assert len(set(ccrns)) == len(ccrns)


def test_the_default_source_is_the_secrets_module() -> None:
    """#10 item 1: new CCRNs come from the operating system's CSPRNG, not `random`."""
    assert SYSTEM_RANDBELOW is secrets.randbelow
    assert inspect.signature(new_ccrn).parameters["randbelow"].default is secrets.randbelow
    assert inspect.signature(ccrn_draws).parameters["randbelow"].default is secrets.randbelow


def test_at_least_40_bits_of_randomness() -> None:
    """#10 item 1: 8 first digits x 10**14 tails: about 49.5 bits, above the 40 asked for."""
    assert RANDOM_BITS > 49.5
    assert len(RANDOM_FIRST_DIGITS) == 8


def test_the_ccrn_is_the_random_source_and_nothing_else() -> None:
    """#10 item 1: no time or counter component: the same random values give the same CCRN,
    and the extremes of the source map to the extremes of the range."""
    calls, low = scripted([0, 0])
    assert new_ccrn(low) == "2" + "0" * 14 + damm_check_digit("2" + "0" * 14)
    assert calls == [(8, 0), (10**14, 0)]
    _, high = scripted([7, 10**14 - 1])
    assert new_ccrn(high) == "9" * 15 + damm_check_digit("9" * 15)
    _, again = scripted([3, 12345678901234])
    _, same = scripted([3, 12345678901234])
    assert (
        new_ccrn(again) == new_ccrn(same) == "512345678901234" + damm_check_digit("512345678901234")
    )


@pytest.mark.parametrize("values", [[8, 0], [-1, 0], [0, 10**14], [0, -1]])
def test_a_broken_source_is_refused(values: list[int]) -> None:
    """#10 item 1: a source that answers outside 0..n-1 is a bug, not a CCRN."""
    _, source = scripted(values)
    with pytest.raises(ValueError, match="out-of-range"):
        new_ccrn(source)


def test_successive_ccrns_have_no_order() -> None:
    """#10 item 1: successive CCRNs neither increase nor decrease: about half of the steps go
    up (999 steps: 500 +- 100 is more than 6 standard deviations)."""
    ccrns = [new_ccrn() for _ in range(1000)]
    ups = sum(a < b for a, b in itertools.pairwise(ccrns))
    assert 400 <= ups <= 600, ups
    gaps = {abs(int(b[:-1]) - int(a[:-1])) for a, b in itertools.pairwise(ccrns)}
    assert len(gaps) > 990  # no fixed stride between neighbours


def test_digits_are_uniform_at_every_position() -> None:
    """#10 item 1: over 20,000 draws from a seeded source, each of the 14 free positions is
    uniform over 0..9 and the first digit uniform over 2..9 (chi-square, p = 0.001)."""
    r = random.Random(20240610)
    ccrns = [new_ccrn(r.randrange) for _ in range(20_000)]
    assert chi_square(Counter(c[0] for c in ccrns), RANDOM_FIRST_DIGITS) < CHI2_7DF
    for pos in range(1, 15):
        stat = chi_square(Counter(c[pos] for c in ccrns), "0123456789")
        assert stat < CHI2_9DF, (pos, stat)


def test_draws_are_lazy_fresh_and_bounded() -> None:
    """#10 item 1: the issuer gets a fresh CCRN per collision, drawn only when it asks, and
    after ISSUE_ATTEMPTS collisions a RocarsError (a broken source), never an endless loop."""
    calls, source = scripted([1, 111, 2, 222, 3, 333, 4, 444, 5, 555, 6, 666])
    draws = ccrn_draws(source)
    assert calls == []
    first = next(draws)
    assert len(calls) == 2
    second = next(draws)
    assert first != second
    assert first[0] == "3"
    assert second[0] == "4"
    rest = [next(draws) for _ in range(ISSUE_ATTEMPTS - 2)]
    assert len({first, second, *rest}) == ISSUE_ATTEMPTS
    with pytest.raises(RocarsError, match="random source is broken"):
        next(draws)


def test_a_stuck_source_gives_up_after_the_attempts() -> None:
    """#10 item 1: a source that keeps giving the same (taken) number is retried exactly
    ISSUE_ATTEMPTS times."""
    draws = ccrn_draws(lambda n: 0)
    got = [next(draws) for _ in range(ISSUE_ATTEMPTS)]
    assert len(set(got)) == 1
    with pytest.raises(RocarsError):
        next(draws)


@given(st.integers(1, MAX_SEQUENCE), st.integers(0, 10**14 - 1))
def test_a_random_ccrn_never_equals_a_legacy_one(sequence: int, tail: int) -> None:
    """#10 item 1: legacy CCRNs start "10", random ones never start "1" whatever the source
    gives: the ranges are apart, so CCRNs issued before the change stay unique forever."""
    legacy = make_ccrn(sequence)
    assert is_valid_ccrn(legacy)
    assert legacy.startswith(CCRN_PREFIX)
    for first in range(len(RANDOM_FIRST_DIGITS)):
        _, source = scripted([first, tail])
        ccrn = new_ccrn(source)
        assert ccrn[0] not in "01"
        assert ccrn not in (legacy, make_ccrn(tail % MAX_SEQUENCE + 1))


@given(st.lists(st.randoms(use_true_random=False), min_size=2, max_size=2))
def test_every_unknown_ccrn_in_a_bundle_gets_the_same_text(rs: list[random.Random]) -> None:
    """#10 item 1: an unknown CCRN in a bundle is told NO_SUCH_CCRN, word for word what a
    trader is told, and the text does not depend on the number."""
    a, b = (new_ccrn(r.randrange) for r in rs)
    for ccrn in (a, b):
        assert bundle_conflicts([ccrn], {}, "LMC") == [(ccrn, NO_SUCH_CCRN)]
        gone = {ccrn: ConsignmentFacts(exists=False)}
        assert bundle_conflicts([ccrn], gone, "LMC") == [(ccrn, NO_SUCH_CCRN)]


def test_not_found_for_a_ccrn_is_one_text_without_the_number() -> None:
    """#10 item 1: the 404 for a consignment is exactly NO_SUCH_CCRN for every number (the
    same for "does not exist" and "not yours": callers pass only the number)."""
    a, b = new_ccrn(), make_ccrn(42)
    pa, pb = not_found(f"consignment {a}"), not_found(f"consignment {b}")
    assert (pa.status, pa.title, pa.detail) == (404, "Not Found", NO_SUCH_CCRN)
    assert (pb.status, pb.title, pb.detail, pb.type) == (pa.status, pa.title, pa.detail, pa.type)
    assert pa.response().text == pb.response().text
    assert not set(NO_SUCH_CCRN) & DIGITS
    other = not_found("bundle 17")
    assert other.status == 404
    assert "17" not in other.detail
    assert "bundle" in other.detail
