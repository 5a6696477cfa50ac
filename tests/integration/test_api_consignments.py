"""Cargo submission, validation, reading, listing, amendment with history, cancellation and batch
submission, through HAProxy on the real cluster.

The service's clock is the real one, so advance-window edges are tested against "now" as the
client sees it: a request takes milliseconds, so "now + 30 min + 2 s" is at least 30 minutes
after the server's submission time, and "now + 14 days" at most 14 days after it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from apikit import (
    REQUIRED_FIELDS,
    Account,
    Accounts,
    Api,
    assert_problem,
    consignment_body,
    iso_in,
    parse_time,
    submit,
)

from kernel.domain.ccrn import is_valid_ccrn

pytestmark = pytest.mark.integration

TEXT_FIELDS = (
    "package_description",
    "article_description",
    "consignor_name",
    "consignor_address",
    "consignee_name",
    "consignee_address",
)


async def test_submission_answers_201_with_the_stored_record_and_a_ccrn(
    api: Api, accounts: Accounts
) -> None:
    """A valid submission is 201 with every item stored (text trimmed) and a valid 16-digit CCRN."""
    body = consignment_body(consignor_name="  Padded Name Ltd  ", package_count=999999)
    r = await api.post("/v1/consignments", accounts.trader.key, json=body)
    assert r.status == 201, r.text
    assert r.content_type == "application/json"
    c = r.json
    assert len(c["ccrn"]) == 16
    assert c["ccrn"].isdigit()
    assert is_valid_ccrn(c["ccrn"])
    assert c["status"] == "submitted"
    assert c["version"] == 1
    assert c["consignor_name"] == "Padded Name Ltd"
    assert c["package_count"] == 999999
    for f in ("direction", "lbcp", *TEXT_FIELDS[:2], "consignee_name"):
        assert c[f] == body[f]
    assert parse_time(c["expected_at"]) == parse_time(body["expected_at"])
    assert c["itfs"] is None
    got = await api.get(f"/v1/consignments/{c['ccrn']}", accounts.trader.key)
    assert got.status == 200
    assert got.json == c


async def test_ccrns_are_unique_and_random(api: Api, accounts: Accounts) -> None:
    """Successive submissions get distinct, valid CCRNs from the random range (first digit
    2..9, never the legacy sequence prefix "10"); their order is pinned in test_hostile_ccrn."""
    ccrns = [(await submit(api, accounts.trader.key))["ccrn"] for _ in range(5)]
    assert len(set(ccrns)) == 5
    assert all(is_valid_ccrn(c) for c in ccrns)
    assert all(c[0] in "23456789" for c in ccrns)


async def test_itfs_submission_is_stored(api: Api, accounts: Accounts) -> None:
    """The optional ITFS block (airport, flight) is stored with the consignment."""
    c = await submit(api, accounts.trader.key, itfs={"airport": "HKG", "flight": "CX880"})
    assert c["itfs"] == {"airport": "HKG", "flight": "CX880"}


@pytest.mark.parametrize(
    ("lead", "ok"),
    [
        (timedelta(minutes=29), False),
        (timedelta(minutes=29, seconds=59), False),
        (timedelta(minutes=30, seconds=2), True),
        (timedelta(days=14), True),
        (timedelta(days=14, minutes=1), False),
        (timedelta(days=30), False),
        (timedelta(minutes=-5), False),
    ],
    ids=["29min", "29min59s", "30min", "14d", "14d+1min", "30d", "past"],
)
async def test_advance_window(api: Api, accounts: Accounts, lead: timedelta, ok: bool) -> None:
    """expected_at must be 30 min to 14 days after submission (both inclusive), else 422."""
    r = await api.post("/v1/consignments", accounts.trader.key, json=consignment_body(lead))
    if ok:
        assert r.status == 201, r.text
    else:
        doc = assert_problem(r, 422, "expected_at")
        assert [e["field"] for e in doc["errors"]] == ["expected_at"]


@pytest.mark.parametrize("field", REQUIRED_FIELDS)
async def test_each_missing_field_is_422_naming_it(
    api: Api, accounts: Accounts, field: str
) -> None:
    """Leaving out any one of the required fields is 422 naming exactly that field."""
    body = consignment_body()
    del body[field]
    doc = assert_problem(await api.post("/v1/consignments", accounts.trader.key, json=body), 422)
    assert [(e["field"], e["message"]) for e in doc["errors"]] == [(field, "field required")]


@pytest.mark.parametrize("blank", ["", "   ", "\t\n"], ids=["empty", "spaces", "whitespace"])
@pytest.mark.parametrize("field", REQUIRED_FIELDS)
async def test_each_blank_field_is_422_naming_it(
    api: Api, accounts: Accounts, field: str, blank: str
) -> None:
    """A blank (empty or whitespace-only) value in any required field is 422 naming that field."""
    body = {**consignment_body(), field: blank}
    doc = assert_problem(await api.post("/v1/consignments", accounts.trader.key, json=body), 422)
    assert [e["field"] for e in doc["errors"]] == [field]


async def test_empty_object_names_every_required_field(api: Api, accounts: Accounts) -> None:
    """An empty JSON object is 422 with one error per required field (every field is named)."""
    doc = assert_problem(await api.post("/v1/consignments", accounts.trader.key, json={}), 422)
    assert sorted(e["field"] for e in doc["errors"]) == sorted(REQUIRED_FIELDS)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("package_count", "3"),
        ("package_count", 0),
        ("package_count", -1),
        ("package_count", 1000000),
        ("package_count", True),
        ("package_count", 2.5),
        ("package_count", 3.0),
        ("package_count", None),
        ("package_count", [3]),
        ("direction", "transit"),
        ("direction", 1),
        ("lbcp", 7),
        ("consignor_name", 123),
        ("consignee_address", {"line1": "x"}),
        ("article_description", ["shoes"]),
        ("expected_at", 1_800_000_000),
        ("expected_at", "1800000000"),
        ("expected_at", "tomorrow"),
        ("expected_at", "2030-13-01T00:00:00+08:00"),
        ("itfs", "HKG"),
        ("itfs", {"airport": "hkg", "flight": "CX880"}),
        ("itfs", {"airport": "HKG"}),
        ("package_description", "x" * 501),
        ("article_description", "x" * 2001),
        ("consignor_name", "x" * 201),
        ("consignor_address", "x" * 501),
        ("consignee_name", "A\u0000B"),
    ],
)
async def test_wrong_type_or_value_is_422_naming_the_field(
    api: Api, accounts: Accounts, field: str, value: Any
) -> None:
    """Wrong types (no coercion: "3", true, 3.0), out-of-range counts and over-long text are 422."""
    body = consignment_body(**{field: value})
    doc = assert_problem(await api.post("/v1/consignments", accounts.trader.key, json=body), 422)
    assert all(e["field"].split(".")[0] == field for e in doc["errors"]), doc["errors"]


async def test_unknown_fields_are_rejected_and_all_named(api: Api, accounts: Accounts) -> None:
    """Unknown fields (top level and inside itfs) are 422, each named as 'unknown field'."""
    body = consignment_body(
        vrn="AB123", ccrn="1000000000000015", itfs={"airport": "HKG", "flight": "CX1", "gate": 3}
    )
    doc = assert_problem(await api.post("/v1/consignments", accounts.trader.key, json=body), 422)
    assert {(e["field"], e["message"]) for e in doc["errors"]} == {
        ("vrn", "unknown field"),
        ("ccrn", "unknown field"),
        ("itfs.gate", "unknown field"),
    }


async def test_naive_expected_at_is_422(api: Api, accounts: Accounts) -> None:
    """expected_at without an offset is 422 on expected_at (it must say which instant it is)."""
    naive = (datetime.now(UTC) + timedelta(hours=3)).replace(tzinfo=None).isoformat()
    body = consignment_body(expected_at=naive)
    assert_problem(
        await api.post("/v1/consignments", accounts.trader.key, json=body), 422, "expected_at"
    )


@pytest.mark.parametrize("lbcp", ["XYZ", "lmc", "HKG", "LMC1"])
async def test_unknown_lbcp_is_422(api: Api, accounts: Accounts, lbcp: str) -> None:
    """An LBCP code that is not configured is 422 naming lbcp (codes are exact, upper case)."""
    body = consignment_body(lbcp=lbcp)
    assert_problem(await api.post("/v1/consignments", accounts.trader.key, json=body), 422, "lbcp")


@pytest.mark.parametrize("lbcp", ["LMC", "MKT", "STK", "SBC", "HYW", "HZMB"])
async def test_every_configured_lbcp_is_accepted(api: Api, accounts: Accounts, lbcp: str) -> None:
    """Every LBCP of the default configuration is accepted."""
    assert (await submit(api, accounts.trader.key, lbcp=lbcp))["lbcp"] == lbcp


async def test_body_errors_are_4xx_naming_the_body(api: Api, accounts: Accounts) -> None:
    """Malformed JSON 400, empty body 400, non-object 422, deep nesting 400, too large 413."""
    key = accounts.trader.key
    hdr = {"Content-Type": "application/json"}
    for raw in (b"{", b'{"direction": "import",}', b"\xff\xfe", b"not json", b"'single'"):
        assert_problem(await api.post("/v1/consignments", key, data=raw, headers=hdr), 400, "body")
    assert_problem(await api.post("/v1/consignments", key, data=b"", headers=hdr), 400, "body")
    for doc in ([consignment_body()], "text", 42, None):
        assert_problem(await api.post("/v1/consignments", key, json=doc), 422, "body")
    deep = b"[" * 100_000 + b"]" * 100_000
    assert_problem(await api.post("/v1/consignments", key, data=deep, headers=hdr), 400, "body")
    big = json.dumps(consignment_body(article_description="x" * (1024 * 1024)))
    assert_problem(await api.post("/v1/consignments", key, data=big, headers=hdr), 413, "body")
    huge = b" " * (40 * 1024 * 1024)
    assert_problem(await api.post("/v1/consignments", key, data=huge, headers=hdr), 413, "body")


async def test_rejected_submissions_store_nothing(
    api: Api, new_account: Callable[[str], Account]
) -> None:
    """No rejected request leaves a partial write: the trader's list stays empty."""
    trader = new_account("trader")
    bad = [
        consignment_body(timedelta(minutes=10)),
        consignment_body(package_count=0),
        consignment_body(lbcp="NOPE"),
        consignment_body(extra=1),
    ]
    for body in bad:
        r = await api.post("/v1/consignments", trader.key, json=body)
        assert r.status == 422
    listed = await api.get("/v1/consignments", trader.key)
    assert listed.json == {"items": [], "next_cursor": None}


# ---------------------------------------------------------------------------------------------
# Reading, CCRN format


async def test_owner_and_officer_read_others_get_404(api: Api, accounts: Accounts) -> None:
    """The owner and officers read a consignment; another trader gets 404, as if it were absent."""
    c = await submit(api, accounts.trader.key)
    path = f"/v1/consignments/{c['ccrn']}"
    assert (await api.get(path, accounts.trader.key)).status == 200
    officer_view = await api.get(path, accounts.officer.key)
    assert officer_view.status == 200
    assert officer_view.json["selected"] is False
    assert "selection_reasons" in officer_view.json
    assert "selected" not in (await api.get(path, accounts.trader.key)).json
    assert_problem(await api.get(path, accounts.trader2.key), 404)
    assert_problem(await api.get(path + "/history", accounts.trader2.key), 404)
    assert_problem(await api.patch(path, accounts.trader2.key, json={"package_count": 1}), 404)
    assert_problem(await api.delete(path, accounts.trader2.key), 404)
    # Still untouched by those attempts.
    assert (await api.get(path, accounts.trader.key)).json == c


def _mutations(ccrn: str) -> list[str]:
    """Every single-digit substitution and every adjacent transposition of `ccrn`."""
    out = []
    for i, ch in enumerate(ccrn):
        out += [ccrn[:i] + d + ccrn[i + 1 :] for d in "0123456789" if d != ch]
    for i in range(len(ccrn) - 1):
        if ccrn[i] != ccrn[i + 1]:
            out.append(ccrn[:i] + ccrn[i + 1] + ccrn[i] + ccrn[i + 2 :])
    return out


async def test_every_single_digit_error_and_adjacent_swap_is_422(
    api: Api, accounts: Accounts
) -> None:
    """Each one-digit typo or adjacent swap of a real CCRN is 422 (check digit), never a lookup."""
    c = await submit(api, accounts.trader.key)
    for wrong in _mutations(c["ccrn"]):
        r = await api.get(f"/v1/consignments/{wrong}", accounts.officer.key)
        doc = assert_problem(r, 422, "ccrn")
        assert doc["type"].endswith("/invalid-ccrn")


@pytest.mark.parametrize(
    "bad", ["1000000000000016", "12345", "10000000000000155", "10000000000O0015"]
)
async def test_malformed_ccrn_is_422_on_every_route(api: Api, accounts: Accounts, bad: str) -> None:
    """A malformed CCRN is 422 naming ccrn on GET, history, PATCH and DELETE (before any lookup)."""
    key = accounts.trader.key
    base = f"/v1/consignments/{bad}"
    assert_problem(await api.get(base, key), 422, "ccrn")
    assert_problem(await api.get(base + "/history", key), 422, "ccrn")
    assert_problem(await api.patch(base, key, json={"package_count": 2}), 422, "ccrn")
    assert_problem(await api.delete(base, key), 422, "ccrn")


async def test_well_formed_unknown_ccrn_is_404(api: Api, accounts: Accounts) -> None:
    """A well-formed CCRN that was never issued is looked up and answers 404."""
    from kernel.domain.ccrn import make_ccrn

    assert_problem(
        await api.get(f"/v1/consignments/{make_ccrn(9_999_999_999)}", accounts.officer.key), 404
    )


# ---------------------------------------------------------------------------------------------
# Listing


async def test_list_own_paginates_with_cursor_and_hides_others(
    api: Api, accounts: Accounts, new_account: Callable[[str], Account]
) -> None:
    """GET /v1/consignments lists only the caller's own, in pages joined by next_cursor."""
    trader = new_account("trader")
    mine = [(await submit(api, trader.key))["ccrn"] for _ in range(5)]
    theirs = await submit(api, accounts.trader2.key)

    seen: list[str] = []
    cursor: str | None = None
    pages = 0
    while True:
        q = "?limit=2" + (f"&cursor={cursor}" if cursor else "")
        r = await api.get("/v1/consignments" + q, trader.key)
        assert r.status == 200, r.text
        assert len(r.json["items"]) <= 2
        seen += [i["ccrn"] for i in r.json["items"]]
        pages += 1
        cursor = r.json["next_cursor"]
        if cursor is None:
            break
    assert pages == 3
    assert seen == mine
    assert theirs["ccrn"] not in seen

    other = await api.get("/v1/consignments?limit=1000", accounts.trader2.key)
    assert not set(mine) & {i["ccrn"] for i in other.json["items"]}


async def test_list_filters_status_and_since(
    api: Api, new_account: Callable[[str], Account]
) -> None:
    """status= and since= filter the caller's list."""
    trader = new_account("trader")
    a = await submit(api, trader.key)
    b = await submit(api, trader.key)
    assert (await api.delete(f"/v1/consignments/{a['ccrn']}", trader.key)).status == 200

    r = await api.get("/v1/consignments?status=cancelled", trader.key)
    assert [i["ccrn"] for i in r.json["items"]] == [a["ccrn"]]
    r = await api.get("/v1/consignments?status=submitted", trader.key)
    assert [i["ccrn"] for i in r.json["items"]] == [b["ccrn"]]
    future = iso_in(timedelta(hours=1)).replace("+", "%2B")
    r = await api.get(f"/v1/consignments?since={future}", trader.key)
    assert r.json["items"] == []
    past = iso_in(timedelta(hours=-1)).replace("+", "%2B")
    r = await api.get(f"/v1/consignments?since={past}", trader.key)
    assert {i["ccrn"] for i in r.json["items"]} == {a["ccrn"], b["ccrn"]}


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("status=lost", "status"),
        ("since=yesterday", "since"),
        ("since=2026-01-01T00:00:00", "since"),
        ("limit=0", "limit"),
        ("limit=1001", "limit"),
        ("limit=ten", "limit"),
        ("cursor=%%%", "cursor"),
        ("cursor=bm90IGEgY3Vyc29y", "cursor"),
        # A forged cursor carrying a NUL byte once reached the database and failed with a 500.
        ("cursor=MjAyNC0wMS0wMVQwMDowMDowMCswMDowMHwA", "cursor"),
    ],
)
async def test_bad_list_parameters_are_422(
    api: Api, accounts: Accounts, query: str, field: str
) -> None:
    """Invalid status, since, limit or cursor is 422 naming the parameter."""
    assert_problem(await api.get(f"/v1/consignments?{query}", accounts.trader.key), 422, field)


# ---------------------------------------------------------------------------------------------
# Amendment and history


async def test_amendment_keeps_every_version(api: Api, accounts: Accounts) -> None:
    """PATCH amends the named items, bumps the version, and GET .../history keeps all versions."""
    key = accounts.trader.key
    c = await submit(api, key)
    path = f"/v1/consignments/{c['ccrn']}"
    r1 = await api.patch(path, key, json={"package_count": 40, "consignee_name": "  New Co  "})
    assert r1.status == 200, r1.text
    assert r1.json["version"] == 2
    assert r1.json["package_count"] == 40
    assert r1.json["consignee_name"] == "New Co"
    assert r1.json["consignor_name"] == c["consignor_name"]
    assert parse_time(r1.json["last_changed_at"]) >= parse_time(c["last_changed_at"])
    new_at = iso_in(timedelta(days=3))
    r2 = await api.patch(path, key, json={"expected_at": new_at})
    assert r2.status == 200
    assert r2.json["version"] == 3
    assert parse_time(r2.json["expected_at"]) == parse_time(new_at)

    h = await api.get(path + "/history", key)
    assert h.status == 200
    versions = h.json["versions"]
    assert [v["version"] for v in versions] == [1, 2, 3]
    assert versions[0]["data"]["package_count"] == c["package_count"]
    assert versions[0]["data"]["consignee_name"] == c["consignee_name"]
    assert versions[1]["data"]["package_count"] == 40
    assert versions[2]["data"] == r2.json
    assert all(v["changed_by"] == accounts.trader.id for v in versions)
    officer_h = await api.get(path + "/history", accounts.officer.key)
    assert officer_h.json == h.json


@pytest.mark.parametrize(
    ("lead", "ok"),
    [
        (timedelta(minutes=29), False),
        (timedelta(minutes=30, seconds=2), True),
        (timedelta(days=14), True),
        (timedelta(days=14, minutes=1), False),
    ],
    ids=["29min", "30min", "14d", "14d+1min"],
)
async def test_amending_expected_at_rechecks_the_window(
    api: Api, accounts: Accounts, lead: timedelta, ok: bool
) -> None:
    """An amended expected_at must again be 30 min to 14 days after the amendment."""
    c = await submit(api, accounts.trader.key)
    path = f"/v1/consignments/{c['ccrn']}"
    r = await api.patch(path, accounts.trader.key, json={"expected_at": iso_in(lead)})
    if ok:
        assert r.status == 200, r.text
    else:
        assert_problem(r, 422, "expected_at")
        assert (await api.get(path, accounts.trader.key)).json["version"] == 1


@pytest.mark.parametrize(
    ("patch", "field"),
    [
        ({}, "body"),
        ({"direction": "export"}, "direction"),
        ({"lbcp": "MKT"}, "lbcp"),
        ({"ccrn": "1"}, "ccrn"),
        ({"package_count": None}, "package_count"),
        ({"consignor_name": "  "}, "consignor_name"),
        ({"package_count": "9"}, "package_count"),
        ({"expected_at": "2030-01-01T00:00:00"}, "expected_at"),
    ],
)
async def test_invalid_amendment_is_422(
    api: Api, accounts: Accounts, patch: dict[str, Any], field: str
) -> None:
    """Only the 8 cargo items are amendable, with the submission's rules; nothing else."""
    c = await submit(api, accounts.trader.key)
    r = await api.patch(f"/v1/consignments/{c['ccrn']}", accounts.trader.key, json=patch)
    assert_problem(r, 422, field)


# ---------------------------------------------------------------------------------------------
# Cancellation


async def test_cancel_never_reuses_the_ccrn(api: Api, accounts: Accounts) -> None:
    """DELETE cancels; the CCRN stays cancelled, cannot be amended, and is never issued again."""
    key = accounts.trader.key
    c = await submit(api, key)
    path = f"/v1/consignments/{c['ccrn']}"
    r = await api.delete(path, key)
    assert r.status == 200, r.text
    assert r.json["status"] == "cancelled"
    assert_problem(await api.delete(path, key), 409)
    assert_problem(await api.patch(path, key, json={"package_count": 2}), 409)
    later = [(await submit(api, key))["ccrn"] for _ in range(3)]
    # Never issued again: the primary key keeps it taken (a random draw of it is redrawn).
    assert c["ccrn"] not in later
    assert (await api.get(path, key)).json["status"] == "cancelled"


# ---------------------------------------------------------------------------------------------
# Batch submission


async def test_json_batch_stores_valid_items_and_reports_invalid_ones(
    api: Api, accounts: Accounts
) -> None:
    """A JSON batch answers per item: CCRNs for valid items (stored), errors for invalid ones."""
    key = accounts.trader.key
    items: list[Any] = [
        consignment_body(),
        consignment_body(timedelta(minutes=5)),
        consignment_body(lbcp="MKT", itfs={"airport": "HKG", "flight": "KA100"}),
        {k: v for k, v in consignment_body().items() if k != "consignor_name"},
        consignment_body(package_count="7", bogus=1),
        "not an object",
        consignment_body(lbcp="ZZZ"),
        consignment_body(package_count=1),
    ]
    r = await api.post("/v1/consignments:batch", key, json=items)
    assert r.status == 200, r.text
    doc = r.json
    assert (doc["accepted"], doc["rejected"]) == (3, 5)
    results = doc["results"]
    assert [x["index"] for x in results] == list(range(len(items)))
    ok = {x["index"]: x["ccrn"] for x in results if "ccrn" in x}
    assert sorted(ok) == [0, 2, 7]
    errors = {x["index"]: {e["field"] for e in x["errors"]} for x in results if "errors" in x}
    assert errors == {
        1: {"expected_at"},
        3: {"consignor_name"},
        4: {"package_count", "bogus"},
        5: {"body"},
        6: {"lbcp"},
    }
    for i, ccrn in ok.items():
        got = await api.get(f"/v1/consignments/{ccrn}", key)
        assert got.status == 200
        assert got.json["lbcp"] == items[i]["lbcp"]
    assert (await api.get(f"/v1/consignments/{ok[2]}", key)).json["itfs"]["flight"] == "KA100"


async def test_csv_batch_with_invalid_rows(api: Api, accounts: Accounts) -> None:
    """A CSV batch (header row of field names) stores valid rows and reports each invalid row."""
    key = accounts.trader.key
    cols = [*REQUIRED_FIELDS, "itfs.airport", "itfs.flight"]

    def row(**kw: Any) -> str:
        b = consignment_body(**kw)
        b.setdefault("itfs.airport", "")
        b.setdefault("itfs.flight", "")
        return ",".join(f'"{b.get(c, "")}"' for c in cols)

    lines = [
        ",".join(cols),
        row(),  # 0 ok
        row(package_count="lots"),  # 1 bad count
        row(package_count="²"),  # 2 a non-ASCII digit once crashed int() with a 500
        row(consignor_name=""),  # 3 missing
        row(expected_at=iso_in(timedelta(days=20))),  # 4 too far ahead
        row(**{"itfs.airport": "HKG", "itfs.flight": "CX100"}),  # 5 ok, ITFS
        row(lbcp="MKT", consignee_address="Flat 3, 1 Road, \u4e5d\u9f8d"),  # 6 ok, non-ASCII
        row() + ',"extra cell"',  # 7 more cells than header fields
    ]
    body = ("\r\n".join(lines) + "\r\n").encode()
    r = await api.post(
        "/v1/consignments:batch", key, data=body, headers={"Content-Type": "text/csv"}
    )
    assert r.status == 200, r.text
    results = r.json["results"]
    assert len(results) == 8
    ok = {x["index"]: x["ccrn"] for x in results if "ccrn" in x}
    assert sorted(ok) == [0, 5, 6]
    errors = {x["index"]: {e["field"] for e in x["errors"]} for x in results if "errors" in x}
    assert errors[1] == {"package_count"}
    assert errors[2] == {"package_count"}
    assert errors[3] == {"consignor_name"}
    assert errors[4] == {"expected_at"}
    assert len(errors[7]) == 1
    assert r.json["accepted"] == 3
    c5 = (await api.get(f"/v1/consignments/{ok[5]}", key)).json
    assert c5["itfs"] == {"airport": "HKG", "flight": "CX100"}
    assert isinstance(c5["package_count"], int)
    c6 = (await api.get(f"/v1/consignments/{ok[6]}", key)).json
    assert c6["consignee_address"].endswith("\u4e5d\u9f8d")


async def test_batch_errors(api: Api, accounts: Accounts) -> None:
    """Empty, non-array, header-less CSV, over 10,000 items or over the size limit: 4xx, no 5xx."""
    key = accounts.trader.key
    assert_problem(await api.post("/v1/consignments:batch", key, json=[]), 422, "body")
    assert_problem(await api.post("/v1/consignments:batch", key, json={"a": 1}), 422, "body")
    csv_hdr = {"Content-Type": "text/csv"}
    assert_problem(
        await api.post("/v1/consignments:batch", key, data=b"", headers=csv_hdr), 400, "body"
    )
    assert_problem(
        await api.post("/v1/consignments:batch", key, data=b"\xff\xfe\x00", headers=csv_hdr),
        400,
        "body",
    )
    too_many = "[" + ",".join(["{}"] * 10_001) + "]"
    r = await api.post(
        "/v1/consignments:batch", key, data=too_many, headers={"Content-Type": "application/json"}
    )
    assert_problem(r, 422, "body")
    huge = b" " * (33 * 1024 * 1024)
    r = await api.post(
        "/v1/consignments:batch", key, data=huge, headers={"Content-Type": "application/json"}
    )
    assert_problem(r, 413, "body")
    assert_problem(await api.post("/v1/consignments:batch", accounts.trucker.key, json=[{}]), 403)


async def test_consignment_changes_are_audited(
    api: Api, accounts: Accounts, db: psycopg.AsyncConnection[Any]
) -> None:
    """Submission, amendment and cancellation append audit rows with actor and before/after."""
    key = accounts.trader.key
    c = await submit(api, key)
    path = f"/v1/consignments/{c['ccrn']}"
    await api.patch(path, key, json={"package_count": 77})
    await api.delete(path, key)
    cur = await db.execute(
        "SELECT actor, action, before, after FROM audit_log WHERE subject = %s ORDER BY id",
        (c["ccrn"],),
    )
    rows = await cur.fetchall()
    actor = f"trader:{accounts.trader.id}"
    assert [(r[0], r[1]) for r in rows] == [
        (actor, "consignment.submit"),
        (actor, "consignment.amend"),
        (actor, "consignment.cancel"),
    ]
    submit_row, amend_row, cancel_row = rows
    assert submit_row[2] is None
    assert submit_row[3] == c
    assert (amend_row[2]["package_count"], amend_row[3]["package_count"]) == (12, 77)
    assert (cancel_row[2]["status"], cancel_row[3]["status"]) == ("submitted", "cancelled")

    b = await api.post("/v1/consignments:batch", key, json=[consignment_body()])
    ccrn = b.json["results"][0]["ccrn"]
    cur = await db.execute(
        "SELECT actor, after FROM audit_log WHERE action = 'consignment.submit_batch'"
        " AND after->'ccrns' ? %s",
        (ccrn,),
    )
    assert [r[0] for r in await cur.fetchall()] == [actor]
