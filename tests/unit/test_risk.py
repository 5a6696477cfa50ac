"""Risk-profiling rules, assessment and officer override."""

from __future__ import annotations

import string

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kernel.domain.risk import (
    MAX_RULE_VALUE_LENGTH,
    Assessment,
    Consignment,
    Override,
    Rule,
    apply_override,
    assess,
    normalise_text,
    rule_error,
)

CARGO = Consignment(
    package_description="12 cartons on 2 pallets",
    article_description="Lithium-ion  Battery packs, 18650 cells",
    consignor_name="Shenzhen  Bright Electronics Co., Ltd.",
    consignee_name="Kowloon Trading Limited",
)
draws = st.floats(min_value=0.0, max_value=1.0, exclude_max=True)


def selected_by(rule: Rule, *, vrn: str | None = None, draw: float = 0.5) -> bool:
    """Whether this single rule selects CARGO."""
    return assess(CARGO, [rule], vrn=vrn, draw=draw).selected


# --- rule validation -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "value"),
    [
        ("keyword", "battery"),
        ("pattern", r"\b186[0-9]0\b"),
        ("consignor", "Acme Ltd"),
        ("consignee", "Acme Ltd"),
        ("vrn", "ab-1234"),
        ("random", "0"),
        ("random", "0.05"),
        ("random", "1"),
        ("keyword", "x" * MAX_RULE_VALUE_LENGTH),
    ],
)
def test_valid_rules(kind: str, value: str) -> None:
    """Well-formed values of every kind are accepted."""
    assert rule_error(kind, value) is None


@pytest.mark.parametrize(
    ("kind", "value", "fragment"),
    [
        ("smell", "x", "unknown rule kind 'smell'"),
        ("keyword", "", "must not be empty"),
        ("consignor", "   ", "must not be empty"),
        ("keyword", "x" * (MAX_RULE_VALUE_LENGTH + 1), "at most 200 characters"),
        ("pattern", "(unclosed", "invalid regular expression: missing ), unterminated"),
        ("pattern", "*x", "invalid regular expression: nothing to repeat"),
        ("vrn", "AB_1", "only letters A-Z and digits 0-9"),
        ("vrn", "ABCDE12345", "at most 8"),
        ("random", "", "must be a number"),
        ("random", "often", "must be a number"),
        ("random", "-0.1", "between 0 and 1"),
        ("random", "1.01", "between 0 and 1"),
        ("random", "nan", "between 0 and 1"),
        ("random", "inf", "between 0 and 1"),
    ],
)
def test_invalid_rules_give_a_message(kind: str, value: str, fragment: str) -> None:
    """Each kind of bad rule is refused with a message saying what is wrong."""
    message = rule_error(kind, value)
    assert message is not None
    assert fragment in message


def test_rule_cannot_be_built_invalid() -> None:
    """Constructing a Rule with a bad value raises ValueError carrying the message."""
    with pytest.raises(ValueError, match="invalid regular expression"):
        Rule("r1", "pattern", "[a-")


# --- assessment by kind ----------------------------------------------------------------------


@pytest.mark.parametrize("value", ["battery", "BATTERY", "lithium-ion battery", "  Pallets "])
def test_keyword_is_case_and_spacing_insensitive_substring(value: str) -> None:
    """Keywords match ignoring case and runs of spaces, anywhere in either description."""
    assert selected_by(Rule("k", "keyword", value))


def test_keyword_reason_names_rule_and_field() -> None:
    """The reason names the rule id, kind, keyword and the description that matched."""
    result = assess(CARGO, [Rule("k7", "keyword", "cartons")], vrn=None, draw=0.5)
    reason = "rule k7 (keyword): keyword 'cartons' in package_description"
    assert result == Assessment(True, (reason,))


@pytest.mark.parametrize("value", ["firearm", "battery packs 18650x"])
def test_keyword_not_present(value: str) -> None:
    """A keyword absent from both descriptions selects nothing."""
    assert not selected_by(Rule("k", "keyword", value))


def test_keyword_ignores_names() -> None:
    """Keywords look at descriptions only, not consignor or consignee names."""
    assert not selected_by(Rule("k", "keyword", "Kowloon"))


@pytest.mark.parametrize(
    ("value", "hit"),
    [(r"\b18650\b", True), (r"LITHIUM-ION", True), (r"(?-i:LITHIUM)", False), (r"^cells", False)],
)
def test_pattern_searches_descriptions(value: str, hit: bool) -> None:
    """Patterns are searched case-insensitively unless they turn that off inline."""
    assert selected_by(Rule("p", "pattern", value)) is hit


def test_pattern_reason_names_field() -> None:
    """A pattern hit names the description it matched."""
    result = assess(CARGO, [Rule("p", "pattern", r"\d+ pallets")], vrn=None, draw=0.5)
    reason = r"rule p (pattern): pattern '\\d+ pallets' matches package_description"
    assert result.reasons == (reason,)


@pytest.mark.parametrize(
    "value", ["shenzhen bright electronics co., ltd.", "  SHENZHEN BRIGHT   ELECTRONICS CO., LTD. "]
)
def test_consignor_watch_list_ignores_case_and_spacing(value: str) -> None:
    """A watch-listed consignor matches regardless of case and spacing."""
    assert selected_by(Rule("c", "consignor", value))


@pytest.mark.parametrize(
    "value", ["Shenzhen Bright Electronics", "Shenzhen Bright Electronics Co Ltd"]
)
def test_consignor_watch_list_needs_the_whole_name(value: str) -> None:
    """Part of a name, or the name with different punctuation, is not a match."""
    assert not selected_by(Rule("c", "consignor", value))


def test_consignee_watch_list() -> None:
    """The consignee list checks the consignee name, not the consignor's."""
    assert selected_by(Rule("e", "consignee", "kowloon trading limited"))
    assert not selected_by(Rule("e", "consignee", "Shenzhen Bright Electronics Co., Ltd."))
    assert not selected_by(Rule("c", "consignor", "Kowloon Trading Limited"))


def test_vrn_watch_list_compares_normalised_marks() -> None:
    """A watch-listed VRN matches the truck's VRN however either was typed."""
    rule = Rule("v", "vrn", "ab-1234")
    result = assess(CARGO, [rule], vrn="AB 1234", draw=0.5)
    assert result == Assessment(True, ("rule v (vrn): vehicle AB1234 is on the watch-list",))
    assert not selected_by(rule, vrn="AB1235")


def test_vrn_rule_cannot_hit_before_bundling() -> None:
    """Without a VRN (not yet bundled) VRN rules do not select."""
    assert not selected_by(Rule("v", "vrn", "AB1234"), vrn=None)


@given(draws, st.floats(min_value=0.0, max_value=1.0))
def test_random_selects_exactly_when_draw_below_rate(draw: float, rate: float) -> None:
    """A random rule selects if and only if draw < rate."""
    assert selected_by(Rule("r", "random", repr(rate)), draw=draw) is (draw < rate)


@given(draws)
def test_random_rate_zero_never_and_one_always(draw: float) -> None:
    """Rate 0 never selects and rate 1 always selects, for every draw."""
    assert not selected_by(Rule("r", "random", "0"), draw=draw)
    assert selected_by(Rule("r", "random", "1"), draw=draw)


def test_random_draw_equal_to_rate_is_not_selected() -> None:
    """At draw == rate the strict comparison does not select."""
    assert not selected_by(Rule("r", "random", "0.25"), draw=0.25)
    assert selected_by(Rule("r", "random", "0.25"), draw=0.2499)


@pytest.mark.parametrize("draw", [-0.1, 1.0, 1.5, float("nan")])
def test_draw_outside_unit_interval_is_a_bug(draw: float) -> None:
    """draw must be in [0, 1); anything else raises ValueError."""
    with pytest.raises(ValueError, match="draw"):
        assess(CARGO, [], vrn=None, draw=draw)


# --- rule set behaviour ----------------------------------------------------------------------


def test_no_rules_no_selection() -> None:
    """With no rules nothing is selected and there are no reasons."""
    assert assess(CARGO, [], vrn=None, draw=0.0) == Assessment(False, ())


def test_inactive_rules_are_skipped() -> None:
    """A rule switched off never selects."""
    assert not selected_by(Rule("k", "keyword", "battery", active=False))


def test_lbcp_scoped_rule_applies_only_there() -> None:
    """A rule scoped to an LBCP hits only at that LBCP, and not while the LBCP is unknown."""
    rule = Rule("k", "keyword", "battery", lbcp="SBC")
    assert assess(CARGO, [rule], vrn=None, draw=0.5, lbcp="SBC").selected
    assert not assess(CARGO, [rule], vrn=None, draw=0.5, lbcp="LMC").selected
    assert not assess(CARGO, [rule], vrn=None, draw=0.5).selected


def test_unscoped_rule_applies_everywhere() -> None:
    """A rule without an LBCP scope hits at any LBCP and when the LBCP is unknown."""
    rule = Rule("k", "keyword", "battery")
    assert all(
        assess(CARGO, [rule], vrn=None, draw=0.5, lbcp=lbcp).selected for lbcp in ("LMC", None)
    )


def test_every_hit_is_a_reason_in_rule_order() -> None:
    """All hitting rules are listed, in the order the rules were given; misses are not."""
    rules = [
        Rule("r3", "random", "0.9"),
        Rule("k1", "keyword", "firearm"),
        Rule("c2", "consignee", "Kowloon Trading Limited"),
    ]
    result = assess(CARGO, rules, vrn=None, draw=0.1)
    assert result.selected
    assert [reason.split(" (")[0] for reason in result.reasons] == ["rule r3", "rule c2"]


@given(st.lists(draws, min_size=1, max_size=5), draws)
def test_one_draw_selects_at_the_highest_random_rate(rates: list[float], draw: float) -> None:
    """Several random rules share the draw, so selection happens iff draw < the highest rate."""
    rules = [Rule(f"r{i}", "random", repr(rate)) for i, rate in enumerate(rates)]
    assert assess(CARGO, rules, vrn=None, draw=draw).selected is (draw < max(rates))


@given(st.text(alphabet=string.printable, max_size=40))
def test_normalise_text_is_idempotent_and_case_free(text: str) -> None:
    """Normalised text is stable, single-spaced, trimmed, and the same for upper-cased input."""
    once = normalise_text(text)
    assert normalise_text(once) == once
    assert once == " ".join(once.split())
    assert normalise_text(text.upper()) == once


# --- officer override ------------------------------------------------------------------------


SELECTED = Assessment(True, ("rule k (keyword): keyword 'battery' in article_description",))
CLEAR = Assessment(False, ())


def test_no_override_keeps_assessment() -> None:
    """Without an override the rule assessment stands."""
    assert apply_override(SELECTED, None) is SELECTED


def test_release_overrides_rule_selection() -> None:
    """An officer's release clears a rule selection; the rule reason stays for the audit."""
    result = apply_override(SELECTED, Override("release", "officer-42", "known shipper, docs ok"))
    assert result == Assessment(
        False, ("released by officer officer-42: known shipper, docs ok", *SELECTED.reasons)
    )


def test_select_overrides_clear_assessment() -> None:
    """An officer's selection inspects cargo no rule picked."""
    result = apply_override(CLEAR, Override("select", "officer-7", "tip-off"))
    assert result == Assessment(True, ("selected by officer officer-7: tip-off",))


@pytest.mark.parametrize(
    ("action", "officer", "reason", "fragment"),
    [
        ("select", "officer-7", "  ", "give a reason"),
        ("release", "", "ok", "name the officer"),
        ("ignore", "officer-7", "ok", "'select' or 'release'"),
    ],
)
def test_override_needs_action_officer_and_reason(
    action: str, officer: str, reason: str, fragment: str
) -> None:
    """An override without a valid action, an officer or a reason is refused."""
    with pytest.raises(ValueError, match=fragment):
        Override(action, officer, reason)  # type: ignore[arg-type]


@given(st.booleans(), st.sampled_from(["select", "release"]))
def test_override_always_takes_precedence(rule_selected: bool, action: str) -> None:
    """Whatever the rules said, the result is selected exactly when the officer selected."""
    base = SELECTED if rule_selected else CLEAR
    result = apply_override(base, Override(action, "officer-1", "why"))  # type: ignore[arg-type]
    assert result.selected is (action == "select")
    verb = {"select": "selected", "release": "released"}[action]
    assert result.reasons[0] == f"{verb} by officer officer-1: why"
