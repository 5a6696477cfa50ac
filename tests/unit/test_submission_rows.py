"""The rows a submission inserts, built in the node before the one insert statement (#11)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from kernel.domain.risk import Rule
from node.api import common
from node.api.consignments import _items_json, _new_row
from node.risk_cache import rules_cache
from node.schemas import ConsignmentIn

AT = datetime(2030, 1, 7, 8, 0, 0, 123456, tzinfo=UTC)
HKT = timezone(timedelta(hours=8))


def body(**overrides: Any) -> ConsignmentIn:
    doc: dict[str, Any] = {
        "direction": "import",
        "lbcp": "LMC",
        "package_count": 12,
        "package_description": "cartons on 2 pallets",
        "article_description": "cotton T-shirts",
        "consignor_name": "Shenzhen Garment Works Ltd",
        "consignor_address": "8 Industrial Road, Longgang, Shenzhen",
        "consignee_name": "Kowloon Apparel Trading Co",
        "consignee_address": "22 Canton Road, Tsim Sha Tsui, Kowloon",
        "expected_at": "2030-01-07T18:30:00+05:30",
        **overrides,
    }
    return ConsignmentIn.model_validate(doc)


def test_the_answer_is_what_a_later_read_answers() -> None:
    """#11 target 1: the answer is built from the row the node makes, not read back, so it
    must be in the time zone the database reads rows back in: an expected_at sent with an
    offset and the submission time come out in the connection's zone, as a GET shows them."""
    row = _new_row(body(), 7, AT, UTC)
    row["ccrn"] = "1234567890123452"
    out = common.consignment_json(row)
    assert out["expected_at"] == "2030-01-07T13:00:00Z"
    assert out["submitted_at"] == out["last_changed_at"] == "2030-01-07T08:00:00.123456Z"
    assert (out["status"], out["version"], out["ccrn"]) == ("submitted", 1, "1234567890123452")
    in_hkt = common.consignment_json({**_new_row(body(), 7, AT, HKT), "ccrn": "x"})
    assert in_hkt["expected_at"] == "2030-01-07T21:00:00+08:00"


def test_items_carry_the_assessment_with_the_rules_given() -> None:
    """#11 target 1: the selection is decided in the node before the insert (no UPDATE after
    it), with the rule set the insert then checks the version of."""
    rows = [
        _new_row(body(article_description="lithium batteries"), 7, AT, UTC),
        _new_row(body(), 7, AT, UTC),
    ]
    for i, r in enumerate(rows):
        r["ccrn"] = f"c{i}"
    rules = (Rule(id="9", kind="keyword", value="lithium"),)
    items = json.loads(_items_json(rows, rules))
    assert [i["selected"] for i in items] == [True, False]
    assert items[0]["selection_reasons"] == list(rows[0]["selection_reasons"])
    assert len(items[0]["selection_reasons"]) == 1
    assert "lithium" in items[0]["selection_reasons"][0]
    assert items[1]["selection_reasons"] == []
    assert rows[0]["selected"] is True
    assert [i["ccrn"] for i in items] == ["c0", "c1"]
    none = json.loads(_items_json(rows, ()))
    assert [i["selected"] for i in none] == [False, False]


def test_items_encode_what_postgresql_must_read_back_exactly() -> None:
    """#11 target 4: an item without ITFS has no itfs key at all (so the column is NULL, not a
    JSON null), one with ITFS keeps it; the instant, the random draw, the owner and the
    submission time survive the text form."""
    plain = _new_row(body(), 7, AT, UTC)
    flown = _new_row(body(itfs={"airport": "HKG", "flight": "CX250"}), 7, AT, UTC)
    plain["ccrn"], flown["ccrn"] = "a", "b"
    a, b = json.loads(_items_json([plain, flown], ()))
    assert "itfs" not in a
    assert b["itfs"] == {"airport": "HKG", "flight": "CX250"}
    assert datetime.fromisoformat(a["expected_at"]) == plain["expected_at"]
    assert a["risk_draw"] == plain["risk_draw"]
    assert isinstance(a["risk_draw"], float)
    # Owner and time travel with each item: one statement holds several accounts' submissions.
    assert a["owner_id"] == 7
    assert datetime.fromisoformat(a["created_at"]) == AT


def test_one_rules_cache_per_pool() -> None:
    """#11 target 1: the cache is kept per pool (per database), so two nodes in one process
    never share one, and one node always finds its own."""

    class Pool:
        """Stands for a pool: any object that can be weakly referenced."""

    p1, p2 = Pool(), Pool()
    assert rules_cache(p1) is rules_cache(p1)
    assert rules_cache(p1) is not rules_cache(p2)
    assert rules_cache(p1).current is None
