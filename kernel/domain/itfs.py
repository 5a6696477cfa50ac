"""ITFS (Intermodal Transshipment Facilitation Scheme): inspect land-to-air cargo at most once.

Land-to-air transshipment cargo crosses an LBCP by truck and then flies out of the airport. It is
inspected at the LBCP or at the airport, never both. The airport may therefore inspect only cargo
the LBCP released without inspection, and only once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

LbcpOutcome = Literal["released", "inspected"]


@dataclass(frozen=True)
class ItfsDecision:
    """Whether an airport inspection request is allowed, and why."""

    allowed: bool
    message: str


def airport_inspection_decision(
    lbcp_outcome: LbcpOutcome | None, *, airport_inspected: bool
) -> ItfsDecision:
    """Allow an airport inspection only after an LBCP release and no earlier airport inspection.

    ``lbcp_outcome`` is None while no LBCP clearance is recorded. That is refused rather than
    allowed: during manual clearance mode the LBCP's record may arrive later by reconciliation,
    and allowing the airport to go first could then inspect the cargo twice.
    """
    if lbcp_outcome not in (None, "released", "inspected"):
        raise ValueError(f"unknown LBCP outcome {lbcp_outcome!r}")
    if airport_inspected:
        return ItfsDecision(False, "cargo was already inspected at the airport")
    if lbcp_outcome == "inspected":
        return ItfsDecision(False, "cargo was already inspected at the LBCP; ITFS allows one")
    if lbcp_outcome is None:
        return ItfsDecision(False, "no LBCP clearance is recorded for this cargo yet")
    return ItfsDecision(True, "released at the LBCP without inspection; airport may inspect")
