"""Tests for contingency.reconcile_match: manual records against open bundles, exactly-once plan."""

from __future__ import annotations

import itertools
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from contingency.reconcile_match import (
    ManualRecord,
    OpenBundle,
    RecordMatch,
    Unmatched,
    canonical_uuid,
    match_records,
    plan_import,
)
from kernel.domain.ccrn import make_ccrn

T0 = datetime(2025, 3, 1, 2, 0, tzinfo=UTC)
C = [make_ccrn(i) for i in range(1, 21)]  # valid CCRNs C[0]..C[19]
INVALID = C[0][:-1] + str((int(C[0][-1]) + 1) % 10)  # wrong check digit: a typo at the gate
U = [str(uuid.UUID(int=i + 1)) for i in range(20)]

B1 = OpenBundle("b1", "LMC", "AB1234", frozenset(C[0:3]))
B2 = OpenBundle("b2", "LMC", "CD5678", frozenset({C[3]}))
B3 = OpenBundle("b3", "SBC", "AB1234", frozenset({C[4]}))
BUNDLES = (B1, B2, B3)
KNOWN = frozenset(C[0:10])


def _rec(i: int, ccrns: Any, *, lbcp: str = "LMC", vrn: str = "AB1234", **kw: Any) -> Any:
    args: dict[str, Any] = {
        "uuid": U[i],
        "lbcp": lbcp,
        "vrn": vrn,
        "ccrns": ccrns,
        "decision": "release",
        "cleared_at": T0 + timedelta(minutes=i),
    }
    return ManualRecord(**{**args, **kw})


def _one(record: ManualRecord, bundles: tuple[OpenBundle, ...] = BUNDLES) -> RecordMatch:
    (result,) = match_records([record], bundles, KNOWN)
    return result


# --- single records --------------------------------------------------------------------------


def test_full_match() -> None:
    """A record listing exactly a bundle's CCRNs for its truck and LBCP matches it fully."""
    r = _one(_rec(0, [C[2], C[0], C[1]]))
    assert r == RecordMatch(
        record_uuid=U[0],
        bundle_id="b1",
        matched=(C[2], C[0], C[1]),
        unmatched=(),
        missing=(),
        note="matched bundle b1 for VRN AB1234 at LMC on 3 of 3 bundled CCRNs.",
    )


def test_partial_match_reports_missing_bundle_ccrns() -> None:
    """Bundled CCRNs the officer did not record are listed as missing, sorted."""
    r = _one(_rec(0, [C[1]]))
    assert r.bundle_id == "b1"
    assert r.matched == (C[1],)
    assert r.missing == (C[0], C[2])


def test_vrn_is_compared_in_canonical_form() -> None:
    """'ab-1234' recorded at the gate is the same truck as bundle VRN 'AB 1234'."""
    bundle = OpenBundle("b9", "LMC", "AB 1234", frozenset({C[0]}))
    assert _one(_rec(0, [C[0]], vrn="ab-1234"), (bundle,)).bundle_id == "b9"


def test_same_vrn_other_lbcp_does_not_match() -> None:
    """A bundle made for LMC is not matched by a crossing recorded at SBC."""
    r = _one(_rec(0, [C[0]], lbcp="SBC"))
    assert r.bundle_id is None
    assert r.unmatched == (Unmatched(C[0], "in_other_bundle"),)
    assert r.note == "no open bundle for VRN AB1234 at SBC shares a CCRN with the record."


def test_vrn_typo_is_not_guessed_around() -> None:
    """CCRNs of another truck's bundle do not pull the record onto that bundle."""
    r = _one(_rec(0, [C[0], C[1]], vrn="AB1243"))
    assert r.bundle_id is None
    assert r.note == "no open bundle for VRN AB1243 at LMC."
    assert [u.reason for u in r.unmatched] == ["in_other_bundle", "in_other_bundle"]


def test_no_bundle_classifies_each_ccrn() -> None:
    """Without a bundle, each CCRN says whether it is bundled elsewhere, known, invalid, unknown."""
    r = _one(_rec(0, [C[3], C[7], INVALID, C[15]], vrn="ZZ9"))
    assert r.bundle_id is None
    assert r.matched == ()
    assert r.unmatched == (
        Unmatched(C[3], "in_other_bundle"),
        Unmatched(C[7], "not_bundled"),
        Unmatched(INVALID, "invalid_ccrn"),
        Unmatched(C[15], "unknown_ccrn"),
    )


def test_duplicate_ccrn_in_record_is_flagged_once_matched() -> None:
    """A CCRN listed twice is matched once and flagged as a duplicate the second time."""
    r = _one(_rec(0, [C[0], C[0]]))
    assert r.matched == (C[0],)
    assert r.unmatched == (Unmatched(C[0], "duplicate_in_record"),)


def test_bundle_sharing_most_ccrns_wins() -> None:
    """Between two bundles of the same truck, the one sharing more CCRNs is chosen."""
    small = OpenBundle("x1", "LMC", "AB1234", frozenset({C[0], C[5]}))
    large = OpenBundle("x2", "LMC", "AB1234", frozenset({C[1], C[2], C[6]}))
    r = _one(_rec(0, [C[0], C[1], C[2]]), (small, large))
    assert r.bundle_id == "x2"
    assert r.unmatched == (Unmatched(C[0], "in_other_bundle"),)
    assert r.missing == (C[6],)


def test_tie_is_ambiguous_and_matches_nothing() -> None:
    """Two bundles of the same truck sharing equally many CCRNs leave the record unmatched."""
    one = OpenBundle("x1", "LMC", "AB1234", frozenset({C[0]}))
    two = OpenBundle("x2", "LMC", "AB1234", frozenset({C[1]}))
    r = _one(_rec(0, [C[0], C[1]]), (two, one))
    assert r.bundle_id is None
    assert r.note == (
        "bundles x1, x2 for VRN AB1234 at LMC each share 1 CCRNs with the record: "
        "ambiguous, resolve by hand."
    )


# --- classification, enumerated --------------------------------------------------------------


def test_every_ccrn_category_gets_the_documented_reason() -> None:
    """Over every combination of facts about a CCRN, the first applicable reason is given."""
    checked = 0
    for dup, valid, in_chosen, in_other, known in itertools.product((False, True), repeat=5):
        if not valid and (in_chosen or in_other or known):
            continue  # bundles and consignments only ever hold valid CCRNs
        ccrn = C[10] if valid else INVALID
        anchor = C[11]  # makes the record match bundle "m" whatever ccrn is
        bundles = [
            OpenBundle("m", "LMC", "AB1234", frozenset({anchor, ccrn} if in_chosen else {anchor}))
        ]
        if in_other:
            bundles.append(OpenBundle("o", "MKT", "XY1", frozenset({ccrn})))
        record = _rec(0, [anchor, ccrn, *([ccrn] * dup)])
        known_set = {anchor} | ({ccrn} if known else set())
        (r,) = match_records([record], bundles, known_set)
        assert r.bundle_id == "m"
        reasons = {u.ccrn: u.reason for u in r.unmatched if u.reason != "duplicate_in_record"}
        if not valid:
            expected = "invalid_ccrn"
        elif in_chosen:
            expected = "matched"
        elif in_other:
            expected = "in_other_bundle"
        elif known:
            expected = "not_bundled"
        else:
            expected = "unknown_ccrn"
        assert ("matched" if ccrn in r.matched else reasons[ccrn]) == expected
        assert sum(u.reason == "duplicate_in_record" for u in r.unmatched) == dup
        checked += 1
    assert checked == 2 * (8 + 1)  # duplicate or not, times 8 valid cases and 1 invalid


# --- batches ---------------------------------------------------------------------------------


def test_each_bundle_is_matched_once() -> None:
    """A second record for an already matched bundle is a double entry and matches nothing."""
    first, second = _rec(0, [C[0]]), _rec(1, [C[1]])
    r1, r2 = match_records([second, first], BUNDLES, KNOWN)
    assert (r1.record_uuid, r1.bundle_id) == (U[0], "b1")
    assert (r2.record_uuid, r2.bundle_id) == (U[1], None)
    assert (
        r2.note == "every open bundle for VRN AB1234 at LMC (b1) was matched by an earlier record."
    )
    assert r2.unmatched == (Unmatched(C[1], "in_other_bundle"),)


def test_repeat_trips_match_their_own_bundles() -> None:
    """A truck crossing twice matches each crossing to the bundle holding its CCRNs."""
    trip1 = OpenBundle("t1", "HZMB", "AB1234", frozenset({C[0]}))
    trip2 = OpenBundle("t2", "HZMB", "AB1234", frozenset({C[1]}))
    recs = [_rec(0, [C[1]], lbcp="HZMB"), _rec(1, [C[0]], lbcp="HZMB")]
    results = match_records(recs, [trip1, trip2], KNOWN)
    assert [r.bundle_id for r in results] == ["t2", "t1"]


def test_result_does_not_depend_on_input_order() -> None:
    """Every permutation of records and bundles gives the same results, in clearance order."""
    recs = [_rec(2, [C[0]]), _rec(0, [C[1], C[2]]), _rec(1, [C[3]], vrn="CD5678")]
    expected = match_records(recs, BUNDLES, KNOWN)
    assert [r.record_uuid for r in expected] == [U[0], U[1], U[2]]
    for rs, bs in itertools.product(itertools.permutations(recs), itertools.permutations(BUNDLES)):
        assert match_records(rs, bs, KNOWN) == expected


def test_duplicate_inputs_are_refused() -> None:
    """The same record UUID or bundle id twice is a caller bug, named in the error."""
    with pytest.raises(ValueError, match=r"^records: uuid"):
        match_records([_rec(0, [C[0]]), _rec(0, [C[1]])], BUNDLES, KNOWN)
    with pytest.raises(ValueError, match=r"^bundles: bundle_id 'b1'"):
        match_records([], [B1, B1], KNOWN)


_vrns = st.sampled_from(["AB1234", "CD5678"])
_lbcps = st.sampled_from(["LMC", "SBC"])
_ccrn = st.sampled_from([*C[:8], INVALID])
_bundles = st.lists(
    st.tuples(_lbcps, _vrns, st.frozensets(st.sampled_from(C[:8]), min_size=1, max_size=4)),
    max_size=6,
).map(lambda bs: [OpenBundle(f"b{i}", lb, v, cs) for i, (lb, v, cs) in enumerate(bs)])
_records = st.lists(
    st.tuples(_lbcps, _vrns, st.lists(_ccrn, min_size=1, max_size=5), st.integers(0, 5)),
    max_size=6,
).map(
    lambda rs: [
        _rec(i, ccrns, lbcp=lb, vrn=v, cleared_at=T0 + timedelta(minutes=m))
        for i, (lb, v, ccrns, m) in enumerate(rs)
    ]
)


@given(records=_records, bundles=_bundles, known=st.frozensets(st.sampled_from(C[:10])))
def test_random_batches_keep_the_matching_invariants(
    records: list[ManualRecord], bundles: list[OpenBundle], known: frozenset[str]
) -> None:
    """Every CCRN is accounted for once, links are to the same truck, no bundle is used twice."""
    results = match_records(records, bundles, known)
    by_id = {b.bundle_id: b for b in bundles}
    by_uuid = {r.uuid: r for r in records}
    assert sorted(r.record_uuid for r in results) == sorted(by_uuid)
    used = [r.bundle_id for r in results if r.bundle_id is not None]
    assert len(used) == len(set(used))
    for res in results:
        rec = by_uuid[res.record_uuid]
        assert Counter(res.matched) + Counter(u.ccrn for u in res.unmatched) == Counter(rec.ccrns)
        assert res.note.endswith(".")
        assert "\n" not in res.note
        if res.bundle_id is None:
            assert res.matched == ()
            assert res.missing == ()
            continue
        bundle = by_id[res.bundle_id]
        assert (bundle.lbcp, bundle.vrn) == (rec.lbcp, rec.vrn)
        assert res.matched
        assert set(res.matched) <= bundle.ccrns
        assert set(res.missing) == bundle.ccrns - set(rec.ccrns)


# --- record validation -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"uuid": "not-a-uuid"}, "uuid"),
        ({"uuid": 7}, "uuid"),
        ({"lbcp": "  "}, "lbcp"),
        ({"vrn": "AB 12?4"}, "vrn"),
        ({"vrn": "---"}, "vrn"),
        ({"ccrns": ()}, "ccrns"),
        ({"ccrns": C[0]}, "ccrns"),
        ({"ccrns": (C[0], " ")}, r"ccrns\[1\]"),
        ({"decision": "wave"}, "decision"),
        ({"cleared_at": datetime(2025, 3, 1)}, "cleared_at"),
        ({"cleared_at": "2025-03-01T00:00:00Z"}, "cleared_at"),
    ],
)
def test_record_rejects_bad_fields(kwargs: dict[str, Any], field: str) -> None:
    """A malformed journal record is refused with the field named."""
    with pytest.raises(ValueError, match=f"^{field}: "):
        _rec(0, kwargs.pop("ccrns", [C[0]]), **kwargs)


def test_record_normalises_its_fields() -> None:
    """UUID, VRN, CCRNs and time are stored in canonical form."""
    r = _rec(
        0,
        [f" {C[0]} "],
        uuid=U[0].upper(),
        vrn="ab 1234",
        cleared_at=T0.astimezone(timezone(timedelta(hours=8))),
    )
    assert (r.uuid, r.vrn, r.ccrns, r.cleared_at) == (U[0], "AB1234", (C[0],), T0)
    assert r.cleared_at.tzinfo is UTC


def test_bundle_rejects_bad_fields() -> None:
    """A malformed open bundle is refused with the field named."""
    with pytest.raises(ValueError, match=r"^bundle_id: "):
        OpenBundle(" ", "LMC", "AB1", frozenset({C[0]}))
    with pytest.raises(ValueError, match=r"^ccrns: "):
        OpenBundle("b", "LMC", "AB1", C[0])  # type: ignore[arg-type]


@pytest.mark.parametrize("field", ["lbcp", "vrn", "bundle_id"])
@pytest.mark.parametrize("value", [None, 7, b"LMC"])
def test_bundle_refuses_non_string_keys(field: str, value: object) -> None:
    """A bundle key that is not text (None, a number, bytes from a driver) is refused with the
    field named, not stringified into a key that could never match a record."""
    kwargs: dict[str, Any] = {
        "bundle_id": "b",
        "lbcp": "LMC",
        "vrn": "AB1",
        "ccrns": frozenset({C[0]}),
        field: value,
    }
    with pytest.raises(ValueError, match=f"^{field}: must be a string"):
        OpenBundle(**kwargs)


def test_record_refuses_a_non_string_ccrn() -> None:
    """A CCRN read back as a number is refused with its position named."""
    with pytest.raises(ValueError, match=r"^ccrns\[1\]: must be a string, got int"):
        _rec(0, [C[0], 12345])


# --- exactly-once import plan ----------------------------------------------------------------


def test_plan_import_yields_only_new_uuids_in_journal_order() -> None:
    """Already imported UUIDs are skipped; the rest keep the journal's order."""
    assert plan_import([U[3], U[1], U[2], U[0]], [U[1], U[0]]) == (U[3], U[2])


def test_plan_import_deduplicates_the_journal() -> None:
    """A record written twice to the journal is planned once."""
    assert plan_import([U[0], U[1], U[0]], []) == (U[0], U[1])


def test_plan_import_compares_canonical_uuids() -> None:
    """Upper case, braces or missing hyphens do not make an imported UUID new."""
    variants = [U[0].upper(), "{" + U[0] + "}", U[0].replace("-", "")]
    assert plan_import(variants, []) == (U[0],)
    assert plan_import(variants, [U[0].upper()]) == ()
    assert canonical_uuid(U[0].upper()) == U[0]


def test_plan_import_rejects_bad_uuids_naming_the_position() -> None:
    """A bad UUID in either list is refused with its list and index named."""
    with pytest.raises(ValueError, match=r"^journal_uuids\[1\]: "):
        plan_import([U[0], "nope"], [])
    with pytest.raises(ValueError, match=r"^already_imported_uuids\[0\]: "):
        plan_import([], [None])  # type: ignore[list-item]


@given(
    journal=st.lists(st.sampled_from(U[:8]), max_size=20),
    imported=st.sets(st.sampled_from(U[:8])),
    cut=st.integers(0, 20),
)
def test_plan_import_is_exactly_once(journal: list[str], imported: set[str], cut: int) -> None:
    """New, unique, idempotent, and an import interrupted after any prefix completes exactly."""
    plan = plan_import(journal, imported)
    assert len(plan) == len(set(plan))
    assert set(plan) == set(journal) - imported
    assert plan_import(journal, imported | set(plan)) == ()
    done_first = set(plan[:cut])
    rest = plan_import(journal, imported | done_first)
    assert done_first.isdisjoint(rest)
    assert done_first | set(rest) == set(plan)
