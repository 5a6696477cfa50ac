"""Reconciliation matching: manual clearance records against open bundles (pure core).

While manual mode is on, officers at the gate record each truck (VRN, the CCRNs presented and
the decision) into the on-disk journal, each record under its own UUID. Afterwards the
reconciliation adapter reads the journal, asks :func:`plan_import` which records are new
(exactly once, I4: idempotent by record UUID), asks :func:`match_records` how each one links
to the bundles truckers made before arriving, and writes the result to PostgreSQL.

Matching rules (cautious: a wrong link would clear cargo that nobody looked at):

* A record can only match an open bundle at the same LBCP with the same VRN (both in the
  canonical form of :func:`kernel.domain.vrn.normalise_vrn`), sharing at least one CCRN with
  the record. A VRN typo is not guessed around; the CCRNs say that they sit in another
  bundle, for an officer to resolve.
* Among such bundles the one sharing the most CCRNs wins; a tie is ambiguous and matches
  nothing.
* Records are matched in clearance order (``cleared_at``, then UUID), and each bundle is used
  once: a second record for an already matched bundle is a double entry, not a second crossing.
* Each CCRN of a record is either matched or unmatched with one reason, checked in order:
  ``duplicate_in_record`` (listed before in the same record), ``invalid_ccrn`` (fails the
  format or check digit: a typing error at the gate), ``in_other_bundle`` (in an open
  bundle other than the one matched), ``not_bundled`` (a known consignment in no open bundle),
  ``unknown_ccrn`` (no such consignment).
"""

from __future__ import annotations

import uuid as uuid_lib
from collections import Counter
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final, Literal

from kernel.domain.ccrn import is_valid_ccrn
from kernel.domain.vrn import normalise_vrn

ClearanceDecision = Literal["release", "inspect", "refuse"]
UnmatchedReason = Literal[
    "duplicate_in_record", "invalid_ccrn", "in_other_bundle", "not_bundled", "unknown_ccrn"
]

_DECISIONS: Final = frozenset({"release", "inspect", "refuse"})


def canonical_uuid(value: object, field: str = "uuid") -> str:
    """The lowercase hyphenated form of a UUID string, so case or braces never make it new."""
    if not isinstance(value, str):
        raise ValueError(f"{field}: must be a UUID string, got {type(value).__name__}")
    try:
        return str(uuid_lib.UUID(value))
    except ValueError:
        raise ValueError(f"{field}: not a UUID: {value[:40]!r}") from None


def _key(field: str, value: object, normalise: Callable[[str], str] = str.strip) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{field}: must be a string, got {type(value).__name__}")
    try:
        key = normalise(value)
    except ValueError as exc:  # normalise_vrn explains what is wrong with the plate
        raise ValueError(f"{field}: {exc}") from None
    if not key:
        raise ValueError(f"{field}: must not be blank")
    return key


def _ccrns(field: str, values: object) -> tuple[str, ...]:
    if isinstance(values, str | bytes) or not isinstance(values, Iterable):
        raise ValueError(f"{field}: must be a list of CCRNs, got {type(values).__name__}")
    return tuple(_key(f"{field}[{i}]", v) for i, v in enumerate(values))


@dataclass(frozen=True)
class ManualRecord:
    """One gate clearance recorded during manual mode (one line of the journal)."""

    uuid: str
    lbcp: str
    vrn: str
    ccrns: tuple[str, ...]
    decision: ClearanceDecision
    cleared_at: datetime

    def __post_init__(self) -> None:
        object.__setattr__(self, "uuid", canonical_uuid(self.uuid))
        object.__setattr__(self, "lbcp", _key("lbcp", self.lbcp))
        object.__setattr__(self, "vrn", _key("vrn", self.vrn, normalise_vrn))
        # Duplicates are kept: the officer's list is reported back as written, flagged.
        ccrns = _ccrns("ccrns", self.ccrns)
        if not ccrns:
            raise ValueError("ccrns: a clearance record lists at least one CCRN")
        object.__setattr__(self, "ccrns", ccrns)
        if self.decision not in _DECISIONS:
            raise ValueError(
                f"decision: must be one of {sorted(_DECISIONS)}, got {self.decision!r}"
            )
        at = self.cleared_at
        if not isinstance(at, datetime) or at.utcoffset() is None:
            raise ValueError("cleared_at: must be a timezone-aware datetime")
        object.__setattr__(self, "cleared_at", at.astimezone(UTC))


@dataclass(frozen=True)
class OpenBundle:
    """A bundle (CCRNs with one VRN for one LBCP) that has not been cleared yet."""

    bundle_id: str
    lbcp: str
    vrn: str
    ccrns: frozenset[str]

    def __post_init__(self) -> None:
        object.__setattr__(self, "bundle_id", _key("bundle_id", self.bundle_id))
        object.__setattr__(self, "lbcp", _key("lbcp", self.lbcp))
        object.__setattr__(self, "vrn", _key("vrn", self.vrn, normalise_vrn))
        object.__setattr__(self, "ccrns", frozenset(_ccrns("ccrns", self.ccrns)))


@dataclass(frozen=True)
class Unmatched:
    """A CCRN of a record that could not be linked, and why."""

    ccrn: str
    reason: UnmatchedReason


@dataclass(frozen=True)
class RecordMatch:
    """How one record links to the bundles.

    ``matched`` and ``unmatched`` follow the record's own CCRN order; ``missing`` lists the
    matched bundle's CCRNs the officer did not record (sorted). ``note`` is one sentence on the
    bundle choice, for the officer who reviews the reconciliation.
    """

    record_uuid: str
    bundle_id: str | None
    matched: tuple[str, ...]
    unmatched: tuple[Unmatched, ...]
    missing: tuple[str, ...]
    note: str


def _choose(
    record: ManualRecord, bundles: Iterable[OpenBundle], claimed: Collection[str]
) -> tuple[OpenBundle | None, str]:
    where = f"VRN {record.vrn} at {record.lbcp}"
    same_truck = [b for b in bundles if b.lbcp == record.lbcp and b.vrn == record.vrn]
    if not same_truck:
        return None, f"no open bundle for {where}."
    presented = frozenset(record.ccrns)
    free = [b for b in same_truck if b.bundle_id not in claimed]
    if not free:
        ids = ", ".join(sorted(b.bundle_id for b in same_truck))
        return None, f"every open bundle for {where} ({ids}) was matched by an earlier record."
    best = max(len(b.ccrns & presented) for b in free)
    if best == 0:
        return None, f"no open bundle for {where} shares a CCRN with the record."
    top = sorted((b for b in free if len(b.ccrns & presented) == best), key=lambda b: b.bundle_id)
    if len(top) > 1:
        ids = ", ".join(b.bundle_id for b in top)
        return None, (
            f"bundles {ids} for {where} each share {best} CCRNs with the record: "
            "ambiguous, resolve by hand."
        )
    chosen = top[0]
    return chosen, (
        f"matched bundle {chosen.bundle_id} for {where} on {best} of "
        f"{len(chosen.ccrns)} bundled CCRNs."
    )


def _match(
    record: ManualRecord,
    bundles: tuple[OpenBundle, ...],
    bundled: frozenset[str],
    known_ccrns: frozenset[str],
    claimed: Collection[str],
) -> RecordMatch:
    bundle, note = _choose(record, bundles, claimed)
    matched: list[str] = []
    unmatched: list[Unmatched] = []
    seen: set[str] = set()
    for ccrn in record.ccrns:
        if ccrn in seen:
            unmatched.append(Unmatched(ccrn, "duplicate_in_record"))
        elif not is_valid_ccrn(ccrn):
            unmatched.append(Unmatched(ccrn, "invalid_ccrn"))
        elif bundle is not None and ccrn in bundle.ccrns:
            matched.append(ccrn)
        elif ccrn in bundled:
            unmatched.append(Unmatched(ccrn, "in_other_bundle"))
        elif ccrn in known_ccrns:
            unmatched.append(Unmatched(ccrn, "not_bundled"))
        else:
            unmatched.append(Unmatched(ccrn, "unknown_ccrn"))
        seen.add(ccrn)
    missing = () if bundle is None else tuple(sorted(bundle.ccrns - seen))
    return RecordMatch(
        record_uuid=record.uuid,
        bundle_id=None if bundle is None else bundle.bundle_id,
        matched=tuple(matched),
        unmatched=tuple(unmatched),
        missing=missing,
        note=note,
    )


def match_records(
    records: Iterable[ManualRecord],
    bundles: Iterable[OpenBundle],
    known_ccrns: Collection[str],
) -> tuple[RecordMatch, ...]:
    """Match every record, in clearance order (``cleared_at``, then UUID), each bundle once.

    The result is in that order too, so it does not depend on the order of the journal.
    """
    ordered = sorted(records, key=lambda r: (r.cleared_at, r.uuid))
    for uuid, count in Counter(r.uuid for r in ordered).items():
        if count > 1:
            raise ValueError(f"records: uuid {uuid} appears twice; deduplicate with plan_import")
    pool = tuple(bundles)
    for bundle_id, count in Counter(b.bundle_id for b in pool).items():
        if count > 1:
            raise ValueError(f"bundles: bundle_id {bundle_id!r} appears twice")
    bundled = frozenset(c for b in pool for c in b.ccrns)
    known = frozenset(c.strip() for c in known_ccrns)
    claimed: set[str] = set()
    results: list[RecordMatch] = []
    for record in ordered:
        result = _match(record, pool, bundled, known, claimed)
        if result.bundle_id is not None:
            claimed.add(result.bundle_id)
        results.append(result)
    return tuple(results)


def plan_import(
    journal_uuids: Iterable[str], already_imported_uuids: Iterable[str]
) -> tuple[str, ...]:
    """The journal's record UUIDs that still need importing, in journal order, each once.

    A journal may hold a record twice (a write retried after a crash); the first occurrence
    wins. UUIDs are compared in canonical form, so running the plan again after a partial
    import yields exactly the rest: importing stays exactly once.
    """
    done = {
        canonical_uuid(u, f"already_imported_uuids[{i}]")
        for i, u in enumerate(already_imported_uuids)
    }
    plan: list[str] = []
    for i, raw in enumerate(journal_uuids):
        key = canonical_uuid(raw, f"journal_uuids[{i}]")
        if key not in done:
            done.add(key)
            plan.append(key)
    return tuple(plan)
