"""The LBCP gate decision for a truck arriving at a land boundary control point.

Precedence, first match wins:
1. manual clearance mode in force at this LBCP -> ``manual`` (officers clear by hand; the system's
   view may be stale or unavailable, so it must not wave anyone through);
2. no bundle in progress for this VRN here -> ``hold`` (nothing was declared for this truck);
3. the bundle was already directed to inspection -> ``inspect`` (arriving again, or the gate
   re-reading the plate, must not let the truck escape it);
4. before the bundle's not_before -> ``hold`` until then (risk profiling may still change);
5. any consignment selected -> ``inspect`` (red channel);
6. otherwise -> ``release`` (green channel, cleared without stopping).

Rung 1 needs the mode alone: :func:`decision_by_mode` answers it without the bundle, so the gate
can answer in manual mode while PostgreSQL is down; :func:`gate_decision` applies every rung.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Final, Literal

from kernel.domain.lbcp import to_hk

# The clearance mode in force at one LBCP (contingency.state decides it from etcd and overrides).
Mode = Literal["normal", "manual"]


@dataclass(frozen=True)
class GateDecision:
    """What the gate does with the truck; ``until`` is set only for a timed hold."""

    decision: Literal["release", "inspect", "hold", "manual"]
    reason: str
    until: datetime | None = None


@dataclass(frozen=True)
class BundleAtGate:
    """The truck's bundle in progress at this LBCP, as precomputed at bundling and profiling.

    ``status`` is ``open`` or ``inspecting`` (directed to inspection at an earlier arrival);
    ``selected``/``reasons`` summarise the risk assessments of the bundle's consignments.
    """

    status: Literal["open", "inspecting"]
    not_before: datetime
    selected: bool
    reasons: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.status not in ("open", "inspecting"):
            raise ValueError(
                f"status: a bundle at the gate is open or inspecting, not {self.status!r}"
            )


MANUAL: Final = GateDecision(
    "manual",
    "manual clearance mode is in force at this LBCP: the driver presents the cargo documents"
    " to an officer",
)


def decision_by_mode(mode: Mode) -> GateDecision | None:
    """The decision the mode settles on its own (rung 1), or None when the bundle decides."""
    if mode == "manual":
        return MANUAL
    if mode == "normal":
        return None
    # A misspelt mode must not read as "normal" and wave trucks through.
    raise ValueError(f"mode: must be 'normal' or 'manual', got {mode!r}")


def gate_decision(*, now: datetime, mode: Mode, bundle: BundleAtGate | None) -> GateDecision:
    """Decide manual / hold / inspect / release; see the module docstring for the precedence.

    ``mode`` is the effective mode at this LBCP; ``bundle`` the truck's bundle in progress
    here, None when there is none.
    """
    by_mode = decision_by_mode(mode)
    if by_mode is not None:
        return by_mode
    if bundle is None:
        return GateDecision("hold", "no open bundle for this vehicle at this LBCP")
    if bundle.status == "inspecting":
        return GateDecision("inspect", "already directed to inspection")
    if now < bundle.not_before:
        at = to_hk(bundle.not_before).strftime("%Y-%m-%d %H:%M:%S HKT")
        return GateDecision("hold", f"risk profiling window: cross after {at}", bundle.not_before)
    if bundle.selected:
        why = "; ".join(bundle.reasons) if bundle.reasons else "no reason recorded"
        return GateDecision("inspect", f"selected for inspection: {why}")
    return GateDecision("release", "not selected for inspection")
