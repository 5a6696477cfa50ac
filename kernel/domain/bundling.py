"""Bundling: the crossing instruction given to the trucker, and bundle consistency checks.

Customs profiles cargo risk within 30 minutes of its information last changing. A bundle whose
every consignment was last submitted or amended at least 30 minutes ago may cross now; otherwise
the trucker is told to cross after the newest change plus 30 minutes.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from kernel.domain.ccrn import NO_SUCH_CCRN, validate_ccrn

RISK_PROFILING_WINDOW = timedelta(minutes=30)


@dataclass(frozen=True)
class Instruction:
    """What the trucker is told: cross now, or not before ``not_before``."""

    kind: Literal["cross_now", "cross_after"]
    not_before: datetime


def _require_aware(dt: datetime, name: str) -> None:
    if dt.tzinfo is None or dt.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware")


def bundling_instruction(
    now: datetime,
    last_changed_at: Iterable[datetime],
    *,
    window: timedelta = RISK_PROFILING_WINDOW,
) -> Instruction:
    """cross_after (newest change + window) while profiling may still run, else cross_now."""
    _require_aware(now, "now")
    changes = list(last_changed_at)
    for changed in changes:
        _require_aware(changed, "last_changed_at")
    # An empty truck carries no cargo to profile, so it may always cross now.
    if changes:
        not_before = max(changes) + window
        if not_before > now:
            return Instruction("cross_after", not_before)
    return Instruction("cross_now", now)


@dataclass(frozen=True)
class ConsignmentFacts:
    """What the store knows about one CCRN named in a bundle request."""

    exists: bool
    cancelled: bool = False
    # None when the consignment did not declare an LBCP: it may then cross at any of them.
    lbcp: str | None = None
    open_bundle_id: str | None = None


# (ccrn, message); ccrn is None for problems with the request as a whole.
Conflict = tuple[str | None, str]


def bundle_conflicts(
    ccrns: Sequence[str],
    facts: Mapping[str, ConsignmentFacts],
    bundle_lbcp: str,
    *,
    empty: bool = False,
    bundle_id: str | None = None,
) -> list[Conflict]:
    """Every reason the bundle cannot be made; an empty list means it is consistent.

    ``facts`` maps each CCRN to what the store knows (a missing key means no such CCRN).
    Facts about a CCRN that exists (its LBCP, its open bundle) are told to whoever quotes it:
    possession is the authority. An unknown CCRN gets `NO_SUCH_CCRN` and nothing else.
    ``bundle_id`` is the bundle being amended, if any: its own CCRNs are not conflicts.
    """
    if empty:
        if ccrns:
            return [(None, "an empty truck (empty=true) must not list any CCRN")]
        return []
    if not ccrns:
        return [(None, "a bundle needs at least one CCRN, or empty=true for an empty truck")]
    errors: list[Conflict] = []
    seen_twice = {ccrn for ccrn, n in Counter(ccrns).items() if n > 1}
    for ccrn in dict.fromkeys(ccrns):  # each CCRN once, in request order
        if ccrn in seen_twice:
            errors.append((ccrn, "CCRN is listed more than once"))
        form_error = validate_ccrn(ccrn)
        if form_error is not None:
            errors.append((ccrn, form_error))
            continue
        fact = facts.get(ccrn)
        if fact is None or not fact.exists:
            # Word for word what a trader is told about an unknown CCRN, for every unknown one.
            errors.append((ccrn, NO_SUCH_CCRN))
            continue
        if fact.cancelled:
            errors.append((ccrn, "consignment is cancelled"))
        if fact.lbcp is not None and fact.lbcp != bundle_lbcp:
            message = f"consignment is declared for LBCP {fact.lbcp}, not {bundle_lbcp}"
            errors.append((ccrn, message))
        if fact.open_bundle_id is not None and fact.open_bundle_id != bundle_id:
            errors.append((ccrn, f"consignment is already in open bundle {fact.open_bundle_id}"))
    return errors
