"""The LBCP gate decision for a truck arriving at a land boundary control point.

Precedence, first match wins:
1. manual clearance mode in force at this LBCP -> ``manual`` (officers clear by hand; the system's
   view may be stale or unavailable, so it must not wave anyone through);
2. no open bundle for this VRN here -> ``hold`` (nothing was declared for this truck);
3. before the bundle's not_before -> ``hold`` until then (risk profiling may still change);
4. any consignment selected -> ``inspect`` (red channel);
5. otherwise -> ``release`` (green channel, cleared without stopping).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from kernel.domain.lbcp import to_hk


@dataclass(frozen=True)
class GateDecision:
    """What the gate does with the truck; ``until`` is set only for a timed hold."""

    decision: Literal["release", "inspect", "hold", "manual"]
    reason: str
    until: datetime | None = None


def gate_decision(
    *,
    now: datetime,
    manual_mode: bool,
    bundle_open: bool,
    not_before: datetime | None,
    selected: bool,
    reasons: Sequence[str] = (),
) -> GateDecision:
    """Decide release / inspect / hold / manual; see the module docstring for the precedence.

    ``not_before`` is the open bundle's instruction time and is required when ``bundle_open``.
    ``selected``/``reasons`` summarise the risk assessments of the bundle's consignments.
    """
    if manual_mode:
        return GateDecision("manual", "manual clearance mode is in force at this LBCP")
    if not bundle_open:
        return GateDecision("hold", "no open bundle for this vehicle at this LBCP")
    if not_before is None:
        raise ValueError("an open bundle must carry its not_before time")
    if now < not_before:
        at = to_hk(not_before).strftime("%Y-%m-%d %H:%M:%S HKT")
        return GateDecision("hold", f"risk profiling window: cross after {at}", not_before)
    if selected:
        why = "; ".join(reasons) if reasons else "no reason recorded"
        return GateDecision("inspect", f"selected for inspection: {why}")
    return GateDecision("release", "not selected for inspection")
