"""#14 item 3: a manual clearance retried under one Idempotency-Key is one record (the chaos
checker found a clearance retried after a reset connection stored twice). In process, through
the real app factory with the handler fakes; PostgreSQL's `manual_clearances` is a table in
memory that answers the statements `store_clearance` and `replay_clearance` send, the journal
is the node's real one."""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import json
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from handler_fakes import Fakes, operational_error
from problem_checks import AiohttpClient, Client
from web_signin import csrf, sign_in

from contingency.reconcile import journal_paths, reconcile
from kernel.domain.ccrn import make_ccrn
from node import appkeys
from node.app import create_app

URL = "/v1/contingency/clearances"
BODY: dict[str, Any] = {
    "lbcp": "LMC",
    "vrn": "AB1234",
    "decision": "release",
    "documents": ["manifest 1", "invoice 2"],
}
IDEM = re.compile(r'name="idem" value="([^"]+)"')


class _Cursor:
    def __init__(self, db: ClearanceTable, rows: list[Any] | None = None) -> None:
        self.db = db
        self.rows = rows or []

    async def execute(self, sql: str, params: Any = None) -> None:
        self.rows = self.db.run(sql, params)

    async def fetchone(self) -> Any:
        return self.rows[0] if self.rows else None

    async def fetchall(self) -> list[Any]:
        return self.rows


class _Conn:
    def __init__(self, db: ClearanceTable) -> None:
        self.db = db

    async def execute(self, sql: str, params: Any = None) -> _Cursor:
        return _Cursor(self.db, self.db.run(sql, params))

    def cursor(self, row_factory: Any = None) -> _Cursor:
        return _Cursor(self.db)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[None]:
        saved = copy.deepcopy((self.db.rows, self.db.audit))
        try:
            yield
        except BaseException:
            self.db.rows, self.db.audit = saved  # rolled back: nothing of it stays
            raise


class ClearanceTable:
    """`manual_clearances` (by UUID, ON CONFLICT DO NOTHING) and `audit_log` as the clearance
    path writes them; no bundles, no consignments. `down`: connecting fails like an
    unreachable database."""

    def __init__(self) -> None:
        self.rows: dict[str, dict[str, Any]] = {}
        self.audit: list[Any] = []
        self.down = False
        self.touches = 0

    @asynccontextmanager
    async def connection(self, timeout: float | None = None) -> AsyncIterator[_Conn]:
        if self.down:
            raise operational_error()
        yield _Conn(self)

    def run(self, sql: str, params: Any) -> list[Any]:
        if sql.startswith("INSERT INTO manual_clearances"):
            uid, node, officer, lbcp, vrn, decision, docs, ccrns, cleared, recorded, source = params
            if uid in self.rows:
                return []
            self.rows[uid] = {
                "node": node,
                "officer": officer,
                "lbcp": lbcp,
                "vrn": vrn,
                "decision": decision,
                "documents": json.loads(docs),
                "ccrns": json.loads(ccrns),
                "cleared_at": cleared,
                "recorded_at": recorded,
                "source": source,
                "bundle_id": None,
                "matched": [],
                "unmatched": [],
            }
            return [(uid,)]
        if sql.startswith("UPDATE manual_clearances SET bundle_id"):
            bundle_id, matched, unmatched, uid = params
            row = self.rows[uid]
            row.update(bundle_id=bundle_id, matched=json.loads(matched))
            row["unmatched"] = json.loads(unmatched)
            return []
        if sql.startswith("UPDATE manual_clearances SET recorded_at = recorded_at"):
            (uid,) = params
            if uid not in self.rows:
                return []
            self.touches += 1
            r = self.rows[uid]
            names = "node officer lbcp vrn decision documents ccrns cleared_at recorded_at"
            return [tuple(r[n] for n in (*names.split(), "bundle_id", "matched", "unmatched"))]
        if "FROM bundles" in sql or "FROM consignments" in sql:
            return []
        if sql.startswith("INSERT INTO audit_log"):
            self.audit.append(params)
            return []
        raise AssertionError(f"the test's database does not know {sql!r}")


@pytest.fixture
def db() -> ClearanceTable:
    return ClearanceTable()


@pytest.fixture
async def node(fakes: Fakes, db: ClearanceTable, aiohttp_client: AiohttpClient) -> Client:
    """The active node, its database `db`."""
    deps = dataclasses.replace(fakes.deps(), pool=db)
    return await aiohttp_client(create_app(fakes.config(), deps))


@dataclasses.dataclass(frozen=True)
class Sent:
    status: int
    body: dict[str, Any]
    replayed: bool


async def clear(node: Client, fakes: Fakes, body: dict[str, Any], key: str | None = None) -> Sent:
    headers = fakes.auth("officer") | ({"Idempotency-Key": key} if key is not None else {})
    async with node.post(URL, json=body, headers=headers) as r:
        doc = await r.json(content_type=None)
        return Sent(r.status, doc, r.headers.get("Idempotent-Replayed") == "true")


def journalled(node: Client) -> list[Any]:
    return list(node.app[appkeys.JOURNAL].pending_clearances())


async def test_the_same_key_twice_is_one_record_answered_alike(
    node: Client, fakes: Fakes, db: ClearanceTable
) -> None:
    """#14 item 3: a clearance sent twice under one Idempotency-Key (a retry after the answer
    was lost) is one row in PostgreSQL; the retry is answered 201 with the same uuid and
    outcome, marked replayed, and the first record's times stand (its `cleared_at` defaulted
    to the moment of the first request). The replay touches the row, so its commit waits for
    the synchronous standby."""
    first = await clear(node, fakes, BODY, "retry-me")
    stored = copy.deepcopy(db.rows)
    await asyncio.sleep(0.01)  # the retry's "now" is later than the first's
    again = await clear(node, fakes, BODY, "retry-me")
    assert (first.status, again.status) == (201, 201), (first, again)
    assert again.body == first.body
    assert first.body["stored"] == "database"
    assert (first.replayed, again.replayed) == (False, True)
    assert list(db.rows) == [first.body["uuid"]]
    assert db.rows == stored  # the first record's cleared_at and recorded_at stand
    assert db.touches == 1
    assert len(db.audit) == 1


@pytest.mark.parametrize(
    "change",
    [
        {"lbcp": "MKT"},
        {"vrn": "CD5678"},
        {"decision": "inspect"},
        {"documents": ["manifest 1"]},
        {"ccrns": [make_ccrn(7)]},
        {"cleared_at": "2020-01-01T00:00:00+00:00"},
    ],
    ids=lambda c: next(iter(c)),
)
@pytest.mark.parametrize("store", ["database", "journal"])
async def test_the_same_key_with_another_clearance_is_422_and_writes_nothing(
    node: Client, fakes: Fakes, db: ClearanceTable, change: dict[str, Any], store: str
) -> None:
    """#14 item 3: an Idempotency-Key reused with a different clearance (any of LBCP, VRN,
    decision, documents, CCRNs, an explicit cleared_at) is 422 problem+json naming
    `Idempotency-Key`, from the database and from the journal alike, and nothing is written:
    the first record stays as it was, alone."""
    db.down = store == "journal"
    first = await clear(node, fakes, BODY, "one-key")
    assert first.status == (201 if store == "database" else 202), first
    rows, pending = copy.deepcopy(db.rows), journalled(node)
    other = await clear(node, fakes, {**BODY, **change}, "one-key")
    assert other.status == 422, other
    assert [e["field"] for e in other.body["errors"]] == ["Idempotency-Key"]
    assert (db.rows, journalled(node)) == (rows, pending)
    assert db.touches == (1 if store == "database" else 0)  # the stored row was compared


async def test_an_explicit_cleared_at_must_match_the_first(node: Client, fakes: Fakes) -> None:
    """#14 item 3: a retry that repeats an explicit `cleared_at` is the same clearance (the
    time compared as an instant, whatever its offset); leaving it out is too (the first
    record's time stands); another time is another clearance."""
    body = {**BODY, "cleared_at": "2026-01-07T08:00:00+00:00"}
    first = await clear(node, fakes, body, "timed")
    hkt = await clear(node, fakes, {**body, "cleared_at": "2026-01-07T16:00:00+08:00"}, "timed")
    bare = await clear(node, fakes, BODY, "timed")
    later = await clear(node, fakes, {**body, "cleared_at": "2026-01-07T08:00:01+00:00"}, "timed")
    assert (first.status, hkt.status, bare.status, later.status) == (201, 201, 201, 422)
    assert hkt.body == bare.body == first.body


async def test_without_a_key_each_request_is_a_new_record(
    node: Client, fakes: Fakes, db: ClearanceTable
) -> None:
    """#14 item 3: without an Idempotency-Key nothing changes: the same clearance sent twice
    is two records with two UUIDs (the officer cleared the truck twice, as far as the server
    can tell), to the database and to the journal alike."""
    a, b = await clear(node, fakes, BODY), await clear(node, fakes, BODY)
    assert (a.status, b.status) == (201, 201)
    assert a.body["uuid"] != b.body["uuid"]
    assert sorted(db.rows) == sorted([a.body["uuid"], b.body["uuid"]])
    db.down = True
    c, d = await clear(node, fakes, BODY), await clear(node, fakes, BODY)
    assert (c.status, d.status) == (202, 202)
    assert len({c.body["uuid"], d.body["uuid"], a.body["uuid"], b.body["uuid"]}) == 4
    assert len(journalled(node)) == 2


@pytest.mark.parametrize(
    "value", ["x" * 201, "   ", "tab\there"], ids=["too-long", "blank", "control-char"]
)
async def test_an_invalid_key_is_refused_naming_it(
    node: Client, fakes: Fakes, db: ClearanceTable, value: str
) -> None:
    """#14 item 3: an Idempotency-Key that is blank, over 200 characters or not printable is
    refused as on every other write (node.writes.idempotency_key: 400 naming
    `Idempotency-Key`), and nothing is recorded anywhere."""
    sent = await clear(node, fakes, BODY, value)
    assert sent.status == 400, sent
    assert [e["field"] for e in sent.body["errors"]] == ["Idempotency-Key"]
    db.down = True
    assert (await clear(node, fakes, BODY, value)).status == 400
    assert (db.rows, journalled(node)) == ({}, [])


async def test_a_journalled_clearance_retried_is_202_with_the_same_uuid(
    node: Client, fakes: Fakes, db: ClearanceTable
) -> None:
    """#14 item 3: with the database down a keyed clearance is journalled (202); its retry is
    answered 202 with the same uuid, marked replayed, and the journal holds one record with
    the first request's times. Two retries at once still make one record."""
    db.down = True
    first = await clear(node, fakes, BODY, "journal-key")
    at = journalled(node)[0].recorded_at
    again = await clear(node, fakes, BODY, "journal-key")
    both = await asyncio.gather(*(clear(node, fakes, BODY, "journal-key") for _ in range(2)))
    assert [s.status for s in (first, again, *both)] == [202] * 4
    assert {s.body["uuid"] for s in (again, *both)} == {first.body["uuid"]}
    assert again.body == first.body
    assert [s.replayed for s in (first, again, *both)] == [False, True, True, True]
    records = journalled(node)
    assert [(r.uuid, r.recorded_at) for r in records] == [(first.body["uuid"], at)]


async def test_a_retry_racing_the_first_into_the_journal_is_compared_there(
    node: Client, fakes: Fakes, db: ClearanceTable, monkeypatch: pytest.MonkeyPatch
) -> None:
    """#14 item 3: a retry that passed the journal lookup before its first request was
    journalled (two at once) meets it in the append itself: the same clearance is answered
    202 with the same uuid, another one is 422 naming `Idempotency-Key`; one record stays."""
    db.down = True
    monkeypatch.setattr(node.app[appkeys.JOURNAL], "clearance", lambda uid: None)
    first = await clear(node, fakes, BODY, "racing")
    again = await clear(node, fakes, BODY, "racing")
    other = await clear(node, fakes, {**BODY, "vrn": "CD5678"}, "racing")
    assert (first.status, again.status, other.status) == (202, 202, 422)
    assert (again.body, again.replayed) == (first.body, True)
    assert [e["field"] for e in other.body["errors"]] == ["Idempotency-Key"]
    assert [r.vrn for r in journalled(node)] == ["AB1234"]


async def test_a_journalled_clearance_retried_once_the_database_is_back_stays_one(
    node: Client, fakes: Fakes, db: ClearanceTable
) -> None:
    """#14 item 3 (journal, then database): a clearance journalled while the database was
    down and retried once it is back is answered as first (202, same uuid) without a second
    record; reconciliation then imports it once."""
    db.down = True
    first = await clear(node, fakes, BODY, "crossing")
    db.down = False
    again = await clear(node, fakes, BODY, "crossing")
    assert (again.status, again.body, again.replayed) == (202, first.body, True)
    assert db.rows == {}
    async with db.connection() as conn:
        report = await reconcile(conn, journal_paths(node.app[appkeys.CONFIG].state_dir))
    assert (report.imported, report.already_imported) == (1, 0)
    assert list(db.rows) == [first.body["uuid"]]
    assert (await clear(node, fakes, BODY, "crossing")).body == first.body
    assert list(db.rows) == [first.body["uuid"]]


async def test_a_stored_clearance_retried_to_the_journal_is_imported_once(
    node: Client, fakes: Fakes, db: ClearanceTable
) -> None:
    """#14 item 3 (database, then journal): a clearance stored in PostgreSQL whose retry
    finds the database gone is journalled under the same uuid (202); reconciliation finds
    that UUID stored already and imports nothing, so it stays one record."""
    first = await clear(node, fakes, BODY, "other-way")
    db.down = True
    again = await clear(node, fakes, BODY, "other-way")
    assert (first.status, again.status) == (201, 202)
    assert again.body["uuid"] == first.body["uuid"]
    db.down = False
    async with db.connection() as conn:
        report = await reconcile(conn, journal_paths(node.app[appkeys.CONFIG].state_dir))
    assert (report.imported, report.already_imported) == (0, 1)
    assert list(db.rows) == [first.body["uuid"]]


async def test_keys_belong_to_their_officer(node: Client, fakes: Fakes, db: ClearanceTable) -> None:
    """#14 item 3: the record's UUID comes from the officer's account and the key, so another
    officer using the same key records a clearance of their own (not a replay, not a 422)."""
    first = await clear(node, fakes, BODY, "shared-key")
    key, _ = fakes.accounts.add("officer")
    fakes.keys["officer"] = key
    second = await clear(node, fakes, BODY, "shared-key")
    assert (first.status, second.status, second.replayed) == (201, 201, False)
    assert first.body["uuid"] != second.body["uuid"]
    assert len(db.rows) == 2


async def test_the_officers_form_sent_twice_is_one_clearance(
    node: Client, fakes: Fakes, db: ClearanceTable
) -> None:
    """#14 item 3: the officers' clearance form carries a token that is its Idempotency-Key:
    the same form sent twice (a double click, a reload after a lost answer) records one
    clearance and sends both to the same uuid; the token with other values is refused on the
    page, nothing recorded."""
    node.app[appkeys.ROLE].set("standby")  # type: ignore[attr-defined]  # journal: no reads
    await fakes.contingency.activate(actor="officer:1", reason="t", lbcps=None, message="m")
    await sign_in(node, fakes, "officer")
    r = await node.get("/officer/contingency")
    page = await r.text()
    idem = IDEM.search(page)
    assert idem is not None
    form = {
        "csrf": await csrf(node, "/officer/contingency"),
        "idem": idem.group(1),
        "lbcp": "LMC",
        "vrn": "AB1234",
        "decision": "release",
        "documents": "manifest 1",
    }
    sent = []
    for _ in range(2):
        r = await node.post("/officer/contingency/clearances", data=form, allow_redirects=False)
        assert r.status == 303, await r.text()
        sent.append(r.headers["Location"])
    assert sent[0] == sent[1]
    records = journalled(node)
    assert len(records) == 1
    assert f"uuid={records[0].uuid}" in sent[0]
    r = await node.post("/officer/contingency/clearances", data={**form, "vrn": "CD5678"})
    assert r.status == 422
    assert "already used with a different clearance" in await r.text()
    assert len(journalled(node)) == 1
