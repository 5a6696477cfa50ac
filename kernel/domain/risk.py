"""Risk profiling: officers' rules, the assessment of one consignment, and manual override.

Rule kinds and what their ``value`` holds:
- ``keyword``    text searched for, case- and spacing-insensitively, in the package and article
                 descriptions (a substring match, so "lithium" also hits "lithium-ion");
- ``pattern``    a regular expression searched in those descriptions, case-insensitive unless
                 the pattern says otherwise (e.g. ``(?-i:...)``);
- ``consignor``  a watch-listed consignor name, matched whole, ignoring case and spacing;
- ``consignee``  the same for the consignee;
- ``vrn``        a watch-listed vehicle registration mark (normalised like every VRN);
- ``random``     a selection rate in [0, 1]: the consignment is selected when draw < rate.

Randomness is injected as ``draw`` so assessments are reproducible. One draw serves every random
rule, so overlapping random rules select at the highest of their rates, not a compounded rate.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal, get_args

from kernel.domain.vrn import normalise_vrn

RuleKind = Literal["keyword", "pattern", "consignor", "consignee", "vrn", "random"]
RULE_KINDS: tuple[str, ...] = get_args(RuleKind)
MAX_RULE_VALUE_LENGTH = 200


def normalise_text(text: str) -> str:
    """Case- and spacing-insensitive form: casefolded, whitespace runs collapsed to one space."""
    return " ".join(text.casefold().split())


@lru_cache(maxsize=1024)
def _compile(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern, re.IGNORECASE)


def rule_error(kind: str, value: str) -> str | None:
    """None when (kind, value) makes a usable rule, else a message saying what is wrong."""
    if kind not in RULE_KINDS:
        return f"unknown rule kind {kind!r}; expected one of {', '.join(RULE_KINDS)}"
    if len(value) > MAX_RULE_VALUE_LENGTH:
        return f"rule value must be at most {MAX_RULE_VALUE_LENGTH} characters"
    # An empty keyword or name would match every consignment: almost surely a mistake.
    if kind != "random" and not value.strip():
        return "rule value must not be empty"
    if kind == "pattern":
        try:
            _compile(value)
        except re.error as exc:
            return f"invalid regular expression: {exc}"
    elif kind == "vrn":
        try:
            normalise_vrn(value)
        except ValueError as exc:
            return str(exc)
    elif kind == "random":
        try:
            rate = float(value)
        except ValueError:
            return f"random rule value must be a number between 0 and 1, got {value!r}"
        if not (math.isfinite(rate) and 0.0 <= rate <= 1.0):
            return f"random rule rate must be between 0 and 1, got {value!r}"
    return None


@dataclass(frozen=True)
class Rule:
    """One risk-profiling rule; invalid rules cannot be built (ValueError)."""

    id: str
    kind: RuleKind
    value: str
    active: bool = True
    lbcp: str | None = None  # None: applies at every LBCP

    def __post_init__(self) -> None:
        error = rule_error(self.kind, self.value)
        if error is not None:
            raise ValueError(error)


@dataclass(frozen=True)
class Consignment:
    """The parts of an e-ACI that rules look at."""

    package_description: str
    article_description: str
    consignor_name: str
    consignee_name: str


@dataclass(frozen=True)
class Assessment:
    """Whether the consignment is selected for inspection, and why (first reason decides)."""

    selected: bool
    reasons: tuple[str, ...] = ()


def _hit(rule: Rule, consignment: Consignment, vrn: str | None, draw: float) -> str | None:
    descriptions = {
        "package_description": consignment.package_description,
        "article_description": consignment.article_description,
    }
    tag = f"rule {rule.id} ({rule.kind})"
    if rule.kind == "keyword":
        needle = normalise_text(rule.value)
        for field, text in descriptions.items():
            if needle in normalise_text(text):
                return f"{tag}: keyword {rule.value!r} in {field}"
    elif rule.kind == "pattern":
        for field, text in descriptions.items():
            if _compile(rule.value).search(text):
                return f"{tag}: pattern {rule.value!r} matches {field}"
    elif rule.kind in ("consignor", "consignee"):
        name = (
            consignment.consignor_name if rule.kind == "consignor" else consignment.consignee_name
        )
        if normalise_text(name) == normalise_text(rule.value):
            return f"{tag}: {rule.kind} {name!r} is on the watch-list"
    elif rule.kind == "vrn":
        if vrn is not None and normalise_vrn(vrn) == normalise_vrn(rule.value):
            return f"{tag}: vehicle {normalise_vrn(vrn)} is on the watch-list"
    elif rule.kind == "random" and draw < float(rule.value):
        return f"{tag}: random selection at rate {rule.value.strip()}"
    return None


def assess(
    consignment: Consignment,
    rules: Sequence[Rule],
    *,
    vrn: str | None,
    draw: float,
    lbcp: str | None = None,
) -> Assessment:
    """Apply every active rule in scope; selected when any rule hits.

    ``vrn`` is the bundled vehicle, any spelling ``normalise_vrn`` accepts (ValueError
    otherwise); None before bundling, when vrn rules cannot hit yet.
    ``lbcp`` is where the cargo crosses; a rule scoped to an LBCP applies only there, so while
    the LBCP is unknown (None) scoped rules do not apply.
    ``draw`` is a uniform random number in [0, 1) drawn by the caller.
    """
    if not 0.0 <= draw < 1.0:
        raise ValueError(f"draw must be in [0, 1), got {draw!r}")
    reasons: list[str] = []
    for rule in rules:
        if not rule.active or (rule.lbcp is not None and rule.lbcp != lbcp):
            continue
        reason = _hit(rule, consignment, vrn, draw)
        if reason is not None:
            reasons.append(reason)
    return Assessment(selected=bool(reasons), reasons=tuple(reasons))


@dataclass(frozen=True)
class Override:
    """An officer's decision to select or release a consignment regardless of the rules."""

    action: Literal["select", "release"]
    officer: str
    reason: str

    def __post_init__(self) -> None:
        if self.action not in ("select", "release"):
            raise ValueError(f"override action must be 'select' or 'release', not {self.action!r}")
        if not self.officer.strip():
            raise ValueError("override must name the officer")
        if not self.reason.strip():
            raise ValueError("override must give a reason")


def apply_override(assessment: Assessment, override: Override | None) -> Assessment:
    """The officer's decision wins; the rule reasons are kept after it for the audit trail."""
    if override is None:
        return assessment
    verb = "selected" if override.action == "select" else "released"
    first = f"{verb} by officer {override.officer}: {override.reason}"
    return Assessment(selected=override.action == "select", reasons=(first, *assessment.reasons))
