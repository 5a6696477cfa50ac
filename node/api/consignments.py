"""Cargo information: submit (one or a batch), read, list, amend with history, cancel.

Pure rules used: `kernel.domain.advance_window` (30 min .. 14 days ahead), `kernel.domain.ccrn`
(numbering and check digit), `kernel.domain.risk` (assessment on every change).
"""

from __future__ import annotations

import asyncio
import base64
import functools
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta, tzinfo
from functools import partial
from typing import Any, NamedTuple, TypeVar

from aiohttp import web
from psycopg.rows import dict_row
from pydantic import ValidationError

from contingency.state import late_flags_suppressed
from kernel.domain.advance_window import MIN_LEAD, check_advance_window
from kernel.domain.ccrn import SYSTEM_RANDBELOW, RandBelow, ccrn_draws, validate_ccrn
from kernel.domain.lbcp import DEFAULT_LBCPS
from kernel.errors import RocarsError
from monitoring.metrics import NodeMetrics
from node import appkeys, batch_body, json_text, memory_tuning
from node.account import Account
from node.api import common
from node.api.bundles import refresh_bundle_of
from node.api.outcomes import counted
from node.auth import enforce_rate_limit, require
from node.group_commit import GroupCommit
from node.problems import Problem
from node.risk_cache import VERSION_MATCHES, RulesCache, rules_cache
from node.schemas import AMENDABLE, ConsignmentIn, ConsignmentPatch, iso
from node.validation import field_errors, invalid, load_json, parse_model, read_body, read_model
from node.writes import Conn, NewRecord, Written, run_grouped, run_write

T = TypeVar("T")
MAX_BATCH = batch_body.MAX_ITEMS
MAX_BATCH_BODY = 10 * 1024 * 1024
# Batches from this size on hand their freed memory back after the write (node.memory_tuning).
TRIM_AFTER_BYTES = 1024 * 1024
MAX_ITEM_ERRORS = 5  # listed per rejected batch item
# Batches a node reads and parses at once (as many as batch_body's worker threads), and how long
# one more waits for a slot before it is told to come back: bounds the memory hostile batches
# can hold (each up to MAX_BATCH_BODY of body plus its items) whatever the number sent at once.
BATCH_SLOTS = 2
BATCH_SLOT_WAIT_S = 10.0


def min_lead(request: web.Request, now: datetime) -> timedelta:
    """30 minutes, except during manual clearance mode and for 2 hours after it: trade users
    could not submit while the system was down, so a late submission is then accepted and not
    counted against them (no late flag), like the paper process's grace period."""
    rt = request.app[appkeys.CONTINGENCY]
    if rt.override is not None or late_flags_suppressed(now, rt.state.windows):
        return timedelta(0)
    return MIN_LEAD


def _window_error(
    expected_at: datetime, now: datetime, field: str = "expected_at", *, lead: timedelta = MIN_LEAD
) -> None:
    err = check_advance_window(expected_at, now, min_lead=lead)
    if err is not None:
        raise invalid([{"field": field, "message": err}], detail=err)


def _item_errors(
    item: Any, now: datetime, lead: timedelta = MIN_LEAD
) -> tuple[ConsignmentIn | None, list[dict[str, str]]]:
    if not isinstance(item, dict):
        return None, [{"field": "body", "message": "must be a JSON object"}]
    try:
        c = ConsignmentIn.model_validate(item)
    except ValidationError as exc:
        return None, field_errors(exc)
    errors = []
    if c.lbcp not in DEFAULT_LBCPS:
        errors.append({"field": "lbcp", "message": f"unknown LBCP {c.lbcp!r}"})
    err = check_advance_window(c.expected_at, now, min_lead=lead)
    if err is not None:
        errors.append({"field": "expected_at", "message": err})
    return (c if not errors else None), errors


# One statement inserting consignments, only while the rules' version is the one they were
# assessed with (node.risk_cache), skipping a CCRN already taken, and the first version of each
# consignment it inserted; it answers the version it saw and the CCRNs it inserted. The items
# and versions come as JSON arrays (a parameter each, parsed by PostgreSQL): 10,000 of them in
# one statement (#11 target 4). `{extra}` takes more CTEs over `c` (the CCRNs inserted).
_INSERT = (
    "WITH c AS (INSERT INTO consignments (ccrn, owner_id, direction, lbcp, package_count,"
    " package_description, article_description, consignor_name, consignor_address,"
    " consignee_name, consignee_address, expected_at, itfs, last_changed_at, created_at,"
    " selected, selection_reasons, risk_draw)"
    " SELECT u.ccrn, u.owner_id, u.direction, u.lbcp, u.package_count, u.package_description,"
    " u.article_description, u.consignor_name, u.consignor_address, u.consignee_name,"
    " u.consignee_address, u.expected_at, u.itfs, u.created_at, u.created_at, u.selected,"
    " u.selection_reasons, u.risk_draw"
    " FROM jsonb_to_recordset(%(items)s::jsonb) AS u(ccrn text, owner_id bigint,"
    " direction text, lbcp text, package_count integer, package_description text,"
    " article_description text, consignor_name text, consignor_address text,"
    " consignee_name text, consignee_address text, expected_at timestamptz, itfs jsonb,"
    " created_at timestamptz, selected boolean, selection_reasons jsonb,"
    " risk_draw double precision)"
    f" WHERE {VERSION_MATCHES}"
    " ON CONFLICT (ccrn) DO NOTHING RETURNING ccrn, owner_id, created_at),"
    " v AS (INSERT INTO consignment_versions (ccrn, version, data, changed_at, changed_by)"
    " SELECT c.ccrn, 1, d, c.created_at, c.owner_id"
    " FROM jsonb_array_elements(%(versions)s::jsonb) d JOIN c ON c.ccrn = d ->> 'ccrn')"
    "{extra}"
    " SELECT (SELECT version FROM risk_rules_version), ARRAY(SELECT ccrn FROM c)"
)
# What `_insert` adds to its statement for the rows of one attempt (given with their indexes
# among the items), given also their first versions' documents: CTEs over `c` and their
# parameters.
Params = tuple[str, dict[str, Any]]
Extra = Callable[[list[int], list[dict[str, Any]], list[dict[str, Any]]], Params]
# A rule set replaced this many times during one insert means something is wrong.
_RULE_RELOADS = 5
# Items per insert statement of a batch: a statement's rows and JSON (about 1.2 MB per 1,000
# items, twice) are what a batch holds at once besides its parsed items, so node memory stays
# flat after 10,000-item batches; ten statements cost a few round trips, nothing more.
_BATCH_STATEMENT_ITEMS = 1000
# More items than this are prepared (assessed, encoded) in the batch worker threads.
_INLINE_ITEMS = 64


def _new_row(c: ConsignmentIn, owner: int, at: datetime, tz: tzinfo) -> dict[str, Any]:
    """The row a new consignment gets, as `SELECT *` would read it back on a connection in
    time zone `tz` (so its JSON is what a later GET answers); `ccrn` and the selection are
    filled in by `_insert`."""
    row = c.model_dump()
    row.update(
        ccrn=None,
        owner_id=owner,
        expected_at=c.expected_at.astimezone(tz),
        status="submitted",
        version=1,
        last_changed_at=at,
        created_at=at,
        selected=False,
        selection_reasons=[],
        override=None,
        lbcp_outcome=None,
        risk_draw=common.new_draw(),
    )
    return row


def _items_json(rows: list[dict[str, Any]], rules: tuple[Any, ...]) -> str:
    """Assess `rows` against `rules` (setting their selection) and encode them for `_INSERT`."""
    items = []
    for row in rows:
        a = common.assess_row(row, rules)
        row["selected"], row["selection_reasons"] = a.selected, list(a.reasons)
        item = {k: row[k] for k in _ITEM_FIELDS}
        item["expected_at"] = row["expected_at"].isoformat()
        item["created_at"] = row["created_at"].isoformat()
        if row["itfs"] is None:
            del item["itfs"]  # absent, so NULL (not a JSON null)
        items.append(item)
    return json_text.dumps(items)


# What `_INSERT` reads of each item: the submitted fields and what the node decided for them.
_ITEM_FIELDS = (
    "ccrn",
    "owner_id",
    *ConsignmentIn.model_fields,
    "created_at",
    "selected",
    "selection_reasons",
    "risk_draw",
)


def _statement_json(
    rows: list[dict[str, Any]], rules: tuple[Any, ...]
) -> tuple[str, str, list[dict[str, Any]]]:
    """The items (`_items_json`) and their first versions, as `_INSERT` takes them, and the
    versions' documents (a submission's answer is its first version: built once)."""
    items = _items_json(rows, rules)
    versions = [common.consignment_json(r) for r in rows]
    return items, json_text.dumps(versions), versions


async def _off_loop_if_many(n: int, fn: Callable[[], T]) -> T:
    """`fn()` for `n` items: in the batch worker threads when there are many."""
    return fn() if n <= _INLINE_ITEMS else await batch_body.run_off_loop(fn)


class _Draft:
    """New consignments' rows (`_new_row`), each under a CCRN drawn for it and unique among
    them; `draw(i)` draws item i's next one (after a collision), by its `ccrn_draws`."""

    def __init__(
        self,
        items: Sequence[NewConsignment],
        tz: tzinfo,
        randbelow: RandBelow,
        taken: set[str],
    ) -> None:
        self.rows = [_new_row(n.item, n.owner, n.at.astimezone(tz), tz) for n in items]
        self._draws = [ccrn_draws(randbelow) for _ in items]
        self._taken = taken
        for i in range(len(items)):
            self.draw(i)

    def draw(self, i: int) -> None:
        ccrn = next(self._draws[i])
        while ccrn in self._taken:
            ccrn = next(self._draws[i])
        self._taken.add(ccrn)
        self.rows[i]["ccrn"] = ccrn


class NewConsignment(NamedTuple):
    """A consignment to store: what was submitted, by whom, when."""

    item: ConsignmentIn
    owner: int
    at: datetime


async def _insert(
    conn: Conn,
    items: Sequence[NewConsignment],
    cache: RulesCache,
    *,
    randbelow: RandBelow = SYSTEM_RANDBELOW,
    extra: Extra | None = None,
    taken: set[str] | None = None,
) -> list[dict[str, Any]]:
    """Store new consignments, each under a fresh random CCRN (`kernel.domain.ccrn.new_ccrn`)
    and assessed against the current risk rules, with their first version; their rows, in order.
    Each item carries its owner and time: one statement may hold several accounts' items (a
    group commit, `submission_group`).

    A CCRN already taken is skipped with ON CONFLICT DO NOTHING and another is drawn for that
    item, so a collision never aborts the transaction (a batch keeps its other rows); each item's
    `ccrn_draws` gives up after a few. CCRNs drawn twice within the call are drawn again before
    anything is sent. When the rules changed since the cache read them, nothing is inserted: the
    rules are read again and the items assessed again. The `ccrn_seq` sequence of the legacy
    numbering stays in the schema, unused. `extra(indexes, rows)` adds to each attempt's
    statement, given the rows still to insert and their indexes among `items` (what it adds
    must write only for the rows of `c`). `taken`: CCRNs drawn by earlier calls for the
    same batch, which this call must not draw again (it adds its own).
    """
    if not items:
        return []
    draft = await _off_loop_if_many(
        len(items),
        partial(_Draft, items, conn.info.timezone, randbelow, set() if taken is None else taken),
    )
    rows, draw = draft.rows, draft.draw
    ruleset = await cache.rules(conn)
    pending, reloads = list(range(len(rows))), 0
    while pending:
        todo = [rows[i] for i in pending]
        items_json, versions_json, versions = await _off_loop_if_many(
            len(todo), partial(_statement_json, todo, ruleset.rules)
        )
        tail, params = ("", {}) if extra is None else extra(pending, todo, versions)
        cur = await conn.execute(
            _INSERT.format(extra=tail),
            {
                **params,
                "items": items_json,
                "versions": versions_json,
                "rules_version": ruleset.version,
            },
        )
        got = await cur.fetchone()
        assert got is not None
        version, inserted = got
        if version != ruleset.version:
            reloads += 1
            if reloads > _RULE_RELOADS:
                raise RocarsError("the risk rules kept changing during one submission")
            ruleset = await cache.load(conn)
            continue
        done = set(inserted)
        pending = [i for i in pending if rows[i]["ccrn"] not in done]
        for i in pending:
            draw(i)
    return rows


@dataclass(frozen=True)
class _Submission:
    """One accepted `POST /v1/consignments`, waiting for its group's statement."""

    new: NewConsignment
    actor: str
    record: NewRecord | None


# Per new record of a group statement: its audit entry and, with a key, its idempotency record
# (the answer in both). Joined to `c`, so a CCRN that collided and is drawn again gets them
# in the attempt that inserts it.
_GROUP_EXTRA = (
    ", g AS (SELECT g.* FROM jsonb_to_recordset(%(group)s::jsonb) AS g(ccrn text, actor text,"
    " answer jsonb, account_id bigint, key text, request_hash text) JOIN c USING (ccrn)),"
    " a AS (INSERT INTO audit_log (actor, action, subject, after)"
    " SELECT actor, 'consignment.submit', ccrn, answer FROM g),"
    " r AS (INSERT INTO idempotency_keys (account_id, key, request_hash, status, response)"
    " SELECT account_id, key, request_hash, 201, answer FROM g WHERE key IS NOT NULL)"
)


async def _write_submissions(
    conn: Conn, subs: Sequence[_Submission], cache: RulesCache
) -> list[Written]:
    """The one statement of `subs`: consignments, first versions, audit records and, for
    those with a key, idempotency records; each one's status, answer and the answer's JSON."""
    answers: dict[int, dict[str, Any]] = {}  # by item: its answer in the attempt inserting it

    def audit_and_records(
        pending: list[int], rows: list[dict[str, Any]], versions: list[dict[str, Any]]
    ) -> Params:
        group = []
        for i, row, version in zip(pending, rows, versions, strict=True):
            sub, answers[i] = subs[i], version
            one: dict[str, Any] = {"ccrn": row["ccrn"], "actor": sub.actor, "answer": answers[i]}
            if sub.record is not None:
                one.update(
                    account_id=sub.record.account_id,
                    key=sub.record.key,
                    request_hash=sub.record.request_hash,
                )
            group.append(one)
        return _GROUP_EXTRA, {"group": json_text.dumps(group)}

    await _insert(conn, [s.new for s in subs], cache, extra=audit_and_records)
    return [(201, answers[i], json_text.dumps(answers[i])) for i in range(len(subs))]


def submission_group(pool: Any, metrics: NodeMetrics) -> GroupCommit[_Submission, Written]:
    """Submissions of every account, written by one statement per group (node.group_commit,
    `_write_submissions`). A used key fails the record's primary key; the group is then
    written item by item and that one request takes the general path
    (node.writes.run_grouped)."""
    return GroupCommit(
        pool,
        partial(_write_submissions, cache=rules_cache(pool)),
        on_statement=metrics.group_items.observe,
        on_split=metrics.group_splits.inc,
    )


@counted(lambda m: m.submission_outcomes["single"])
async def submit(request: web.Request) -> web.Response:
    """One consignment, written with the others arriving at the same time by one statement
    and one commit (`submission_group`); a repeated key takes the general path: `write` (the
    same statement, without the record) under run_write, which keeps the record."""
    account = await require(request, "trader")
    body, c = await read_model(request, ConsignmentIn)
    return await submit_one(request, account, body, c)


async def submit_one(
    request: web.Request, account: Account, body: bytes, c: ConsignmentIn
) -> web.Response:
    """`submit` once the caller and the item are known (the API's handler, the web pages)."""
    common.check_lbcp(c.lbcp)
    at = common.now(request)
    _window_error(c.expected_at, at, lead=min_lead(request, at))
    new = NewConsignment(c, account.id, at)
    cache = rules_cache(request.app[appkeys.POOL])

    async def write(conn: Conn) -> tuple[int, dict[str, Any]]:
        ((status, answer, _),) = await _write_submissions(
            conn, [_Submission(new, account.actor, None)], cache
        )
        return status, answer

    return await run_grouped(
        request,
        account,
        body,
        request.app[appkeys.SUBMISSIONS],
        lambda record: _Submission(new, account.actor, record),
        write,
    )


@counted(lambda m: m.submission_outcomes["batch"])
async def submit_batch(request: web.Request) -> web.Response:
    """A JSON array or a CSV (node.batch_body) of at most MAX_BATCH consignments, in a body of
    at most MAX_BATCH_BODY bytes. Parsing and validating the items run in the batch worker
    threads (they take a good part of a second for 10,000 items; the event loop must not wait
    on them), and the batch counts its items against the account's rate limit (#10 items 2, 5).
    """
    account = await require(request, "trader")
    async with batch_slot(request):
        body = await read_body(request, limit=MAX_BATCH_BODY)
        return await write_batch(
            request, account, body, csv_body=request.content_type == "text/csv"
        )


@asynccontextmanager
async def batch_slot(request: web.Request) -> AsyncIterator[None]:
    """One of the node's BATCH_SLOTS for a batch, or 503 after BATCH_SLOT_WAIT_S; held while
    its body is read and written."""
    slots = request.app[appkeys.BATCH_SLOTS]
    try:
        async with asyncio.timeout(BATCH_SLOT_WAIT_S):
            await slots.acquire()
    except TimeoutError:
        raise Problem(
            503,
            "Service Unavailable",
            f"this node is busy with {BATCH_SLOTS} other batches; retry shortly",
            type_="https://rocars.example/problems/busy",
            headers={"Retry-After": "2"},
        ) from None
    try:
        yield
    finally:
        slots.release()


async def write_batch(
    request: web.Request, account: Account, body: bytes, *, csv_body: bool
) -> web.Response:
    """A batch's body (JSON array or CSV) parsed, checked and written, under a `batch_slot`."""
    items = await batch_body.run_off_loop(
        lambda: batch_body.parse_batch(body, csv_body=csv_body, max_items=MAX_BATCH)
    )
    await enforce_rate_limit(request, account, cost=len(items))
    at = common.now(request)
    lead = min_lead(request, at)
    checked = await batch_body.run_off_loop(functools.partial(_check_all, items, at, lead))

    cache = rules_cache(request.app[appkeys.POOL])
    valid = [c for c in checked if isinstance(c, ConsignmentIn)]
    written = False  # by `write`, so not when the batch is a replay

    async def write(conn: Conn) -> tuple[int, dict[str, Any]]:
        nonlocal written
        await cache.load(conn)  # a batch is rare and long: the rules as they are now
        drawn: list[str] = []
        taken: set[str] = set()
        for start in range(0, len(valid), _BATCH_STATEMENT_ITEMS):
            chunk = valid[start : start + _BATCH_STATEMENT_ITEMS]
            news = [NewConsignment(c, account.id, at) for c in chunk]
            rows = await _insert(conn, news, cache, taken=taken)
            drawn.extend(r["ccrn"] for r in rows)
        ccrns = iter(drawn)
        results: list[dict[str, Any]] = [
            {"index": i, "ccrn": next(ccrns)}
            if isinstance(c, ConsignmentIn)
            else {"index": i, "errors": [{"field": f, "message": m} for f, m in c]}
            for i, c in enumerate(checked)
        ]
        accepted = len(valid)
        await common.audit(
            conn,
            actor=account.actor,
            action="consignment.submit_batch",
            subject=f"batch:{len(checked)}",
            after={"accepted": accepted, "ccrns": [r["ccrn"] for r in results if "ccrn" in r]},
        )
        written = True
        return 200, {"accepted": accepted, "rejected": len(checked) - accepted, "results": results}

    n_accepted, n_rejected = len(valid), len(checked) - len(valid)
    try:
        response = await run_write(request, account, body, write)
    finally:
        if len(body) >= TRIM_AFTER_BYTES:  # its parse is garbage now: hand it back
            del checked, valid
            await batch_body.run_off_loop(memory_tuning.trim)
    if written:  # and committed, or run_write would have raised
        metrics = request.app[appkeys.METRICS]
        metrics.batch_items_accepted.inc(n_accepted)
        metrics.batch_items_rejected.inc(n_rejected)
    return response


def _check_all(
    items: list[Any], now: datetime, lead: timedelta
) -> list[ConsignmentIn | tuple[tuple[str, str], ...]]:
    """Each item checked (`_checked`), in order. Consumes `items`: each parsed dict is let go
    once checked, so 10,000 of them (about 14 MiB) are never held beside all their models."""
    out = []
    for i, item in enumerate(items):
        items[i] = None
        out.append(_checked(item, now, lead))
    return out


def _checked(
    item: Any, now: datetime, lead: timedelta
) -> ConsignmentIn | tuple[tuple[str, str], ...]:
    """The valid consignment, or its errors (at most MAX_ITEM_ERRORS listed: a hostile item can
    have hundreds). Errors are tuples of strings, which the garbage collector stops tracking:
    10,000 items' worth of lists and dicts kept alive made it run full collections of the
    whole heap (about 80 ms each, the interpreter lock held) while a batch was validated."""
    c, errors = _item_errors(item, now, lead)
    if c is not None:
        return c
    out = tuple((e["field"], e["message"]) for e in errors[:MAX_ITEM_ERRORS])
    if len(errors) > MAX_ITEM_ERRORS:
        out += (("body", f"{len(errors) - MAX_ITEM_ERRORS} more errors"),)
    return out


async def _visible(request: web.Request, ccrn: str) -> tuple[Any, dict[str, Any]]:
    account = await require(request, "trader", "officer")
    return account, await visible_row(request, account, ccrn)


async def visible_row(request: web.Request, account: Account, ccrn: str) -> dict[str, Any]:
    """The consignment `ccrn` if `account` may see it, else 404."""
    common.check_ccrn(ccrn)
    async with request.app[appkeys.POOL].connection() as conn:
        row = await common.fetch_consignment(conn, ccrn)
    if row is None or (account.kind == "trader" and row["owner_id"] != account.id):
        raise common.not_found(f"consignment {ccrn}")
    return row


async def get_one(request: web.Request) -> web.Response:
    account, row = await _visible(request, request.match_info["ccrn"])
    return web.json_response(common.consignment_json(row, officer=account.kind == "officer"))


async def history(request: web.Request) -> web.Response:
    _, row = await _visible(request, request.match_info["ccrn"])
    return web.json_response(await history_of(request, row))


async def history_of(request: web.Request, row: dict[str, Any]) -> dict[str, Any]:
    """The versions of a consignment the caller may see (`visible_row`), oldest first."""
    async with request.app[appkeys.POOL].connection() as conn:
        cur = await conn.execute(
            "SELECT version, data, changed_at, changed_by FROM consignment_versions"
            " WHERE ccrn = %s ORDER BY version",
            (row["ccrn"],),
        )
        versions = [
            {"version": v, "data": d, "changed_at": iso(at), "changed_by": by}
            for v, d, at, by in await cur.fetchall()
        ]
    return {"ccrn": row["ccrn"], "versions": versions}


def _cursor_encode(created_at: datetime, ccrn: str) -> str:
    return base64.urlsafe_b64encode(f"{created_at.isoformat()}|{ccrn}".encode()).decode()


def _cursor_decode(text: str) -> tuple[datetime, str]:
    try:
        at, ccrn = base64.urlsafe_b64decode(text.encode()).decode().split("|")
        created_at = datetime.fromisoformat(at)
        # Only what _cursor_encode makes: a forged one must not reach the database (a NUL in
        # it made the driver fail with a 500).
        if created_at.tzinfo is None or validate_ccrn(ccrn) is not None:
            raise ValueError("not a cursor")
        return created_at, ccrn
    except (ValueError, UnicodeDecodeError) as exc:
        raise invalid([{"field": "cursor", "message": "not a cursor from this API"}]) from exc


async def list_own(request: web.Request) -> web.Response:
    account = await require(request, "trader")
    return web.json_response(await own_consignments(request, account, request.query))


async def own_consignments(
    request: web.Request, account: Account, q: Mapping[str, str]
) -> dict[str, Any]:
    """A page of `account`'s consignments filtered by `q` (status, since, limit, cursor)."""
    errors = []
    status = q.get("status")
    if status is not None and status not in (
        "submitted",
        "bundled",
        "cleared",
        "detained",
        "cancelled",
    ):
        errors.append({"field": "status", "message": "unknown status"})
    since = None
    if "since" in q:
        try:
            since = datetime.fromisoformat(q["since"])
            if since.tzinfo is None:
                raise ValueError
        except ValueError:
            errors.append({"field": "since", "message": "must be ISO 8601 with an offset"})
    try:
        limit = int(q.get("limit", "100"))
        if not 1 <= limit <= 1000:
            raise ValueError
    except ValueError:
        errors.append({"field": "limit", "message": "must be an integer 1..1000"})
        limit = 100
    if errors:
        raise invalid(errors)
    cursor = _cursor_decode(q["cursor"]) if "cursor" in q else None
    sql = "SELECT * FROM consignments WHERE owner_id = %(owner)s"
    params: dict[str, Any] = {"owner": account.id, "limit": limit + 1}
    if status:
        sql += " AND status = %(status)s"
        params["status"] = status
    if since:
        sql += " AND last_changed_at >= %(since)s"
        params["since"] = since
    if cursor:
        sql += " AND (created_at, ccrn) > (%(c_at)s, %(c_ccrn)s)"
        params["c_at"], params["c_ccrn"] = cursor
    sql += " ORDER BY created_at, ccrn LIMIT %(limit)s"
    async with request.app[appkeys.POOL].connection() as conn:
        cur = conn.cursor(row_factory=dict_row)
        await cur.execute(sql, params)
        rows = await cur.fetchall()
    more = len(rows) > limit
    rows = rows[:limit]
    nxt = _cursor_encode(rows[-1]["created_at"], rows[-1]["ccrn"]) if more and rows else None
    return {"items": [common.consignment_json(r) for r in rows], "next_cursor": nxt}


@counted(lambda m: m.change_outcomes["amend"])
async def amend(request: web.Request) -> web.Response:
    account = await require(request, "trader")
    return await amend_one(request, account, request.match_info["ccrn"], await read_body(request))


async def amend_one(request: web.Request, account: Account, ccrn: str, body: bytes) -> web.Response:
    """`amend` once the caller is known; `body` is the patch's JSON."""
    ccrn = common.check_ccrn(ccrn)
    patch = parse_model(ConsignmentPatch, await load_json(body))
    at = common.now(request)
    if patch.expected_at is not None:
        _window_error(patch.expected_at, at, lead=min_lead(request, at))

    async def write(conn: Conn) -> tuple[int, dict[str, Any]]:
        row = await common.fetch_consignment(conn, ccrn, lock=True)
        if row is None or row["owner_id"] != account.id:
            raise common.not_found(f"consignment {ccrn}")
        if row["status"] in ("cancelled", "cleared", "detained"):
            raise common.conflict(f"consignment {ccrn} is {row['status']} and cannot be amended")
        before = common.consignment_json(row)
        changes = {f: getattr(patch, f) for f in patch.model_fields_set if f in AMENDABLE}
        sets = ", ".join(f"{f} = %({f})s" for f in changes)
        dcur = conn.cursor(row_factory=dict_row)
        await dcur.execute(
            f"UPDATE consignments SET {sets}, version = version + 1, last_changed_at = %(at)s"
            " WHERE ccrn = %(ccrn)s RETURNING *",
            {**changes, "at": at, "ccrn": ccrn},
        )
        new = await dcur.fetchone()
        assert new is not None
        await refresh_bundle_of(conn, ccrn, new, await common.load_rules(conn))
        new = await common.fetch_consignment(conn, ccrn)
        assert new is not None
        out = common.consignment_json(new)
        await conn.execute(
            "INSERT INTO consignment_versions (ccrn, version, data, changed_at, changed_by)"
            " VALUES (%s, %s, %s, %s, %s)",
            (ccrn, new["version"], json_text.dumps(out), at, account.id),
        )
        await common.audit(
            conn,
            actor=account.actor,
            action="consignment.amend",
            subject=ccrn,
            before=before,
            after=out,
        )
        return 200, out

    return await run_write(request, account, body, write)


@counted(lambda m: m.change_outcomes["cancel"])
async def cancel(request: web.Request) -> web.Response:
    account = await require(request, "trader")
    return await cancel_one(request, account, request.match_info["ccrn"], await request.read())


async def cancel_one(
    request: web.Request, account: Account, ccrn: str, body: bytes
) -> web.Response:
    """`cancel` once the caller is known."""
    ccrn = common.check_ccrn(ccrn)

    async def write(conn: Conn) -> tuple[int, dict[str, Any]]:
        row = await common.fetch_consignment(conn, ccrn, lock=True)
        if row is None or row["owner_id"] != account.id:
            raise common.not_found(f"consignment {ccrn}")
        if row["status"] == "cancelled":
            raise common.conflict(f"consignment {ccrn} is already cancelled")
        if row["status"] != "submitted":
            raise common.conflict(
                f"consignment {ccrn} is {row['status']}; only a consignment not in a bundle can"
                " be cancelled (until the truck arrives, you can revoke the bundle first:"
                f" DELETE /v1/consignments/{ccrn}/bundle)"
            )
        dcur = conn.cursor(row_factory=dict_row)
        await dcur.execute(
            "UPDATE consignments SET status = 'cancelled', last_changed_at = %s"
            " WHERE ccrn = %s RETURNING *",
            (common.now(request), ccrn),
        )
        new = await dcur.fetchone()
        assert new is not None
        out = common.consignment_json(new)
        await common.audit(
            conn,
            actor=account.actor,
            action="consignment.cancel",
            subject=ccrn,
            before=common.consignment_json(row),
            after=out,
        )
        return 200, out

    return await run_write(request, account, body, write)


def add_routes(app: web.Application) -> None:
    app.router.add_post("/v1/consignments", submit)
    app.router.add_post("/v1/consignments:batch", submit_batch)
    app.router.add_get("/v1/consignments", list_own)
    app.router.add_get("/v1/consignments/{ccrn}", get_one)
    app.router.add_get("/v1/consignments/{ccrn}/history", history)
    app.router.add_patch("/v1/consignments/{ccrn}", amend)
    app.router.add_delete("/v1/consignments/{ccrn}", cancel)
