"""Manual clearance mode over HTTP: switch it on and off, the public notice, and the officers'
record of each truck cleared by hand (to PostgreSQL, or to the node's journal when the database
is down). Works with both database members down: officers' keys are then checked against the
node's on-disk key cache, and an unverifiable key is refused.

Switching answers once every node applies the new mode (`contingency.runtime.await_nodes`: this
node re-reads etcd at once, the peers are asked for their /health), naming any node that did
not. Outages answer through the table in `node.problems`; the fallbacks here (journal instead of
PostgreSQL) catch the kernel errors that `translated()` raises, never a driver's own.

Serves `contingency.runtime` (mode state in etcd), `contingency.journal`, `contingency.reconcile`.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import aiohttp
from aiohttp import web
from pydantic import AwareDatetime, Field, StringConstraints, field_validator

from contingency import state as cstate
from contingency.journal import AuditEvent, ClearanceRecord
from contingency.reconcile import journal_paths, reconcile, replay_clearance, store_clearance
from contingency.runtime import applies, await_nodes
from kernel.domain.ccrn import validate_ccrn
from kernel.domain.lbcp import DEFAULT_LBCPS
from kernel.domain.vrn import normalise_vrn
from kernel.errors import DatabaseUnavailable
from node import appkeys
from node.account import Account
from node.api import common
from node.api.health import contingency_section
from node.auth import require
from node.driver_errors import translated
from node.problems import Problem, not_writable
from node.schemas import Text500, _Strict, iso
from node.validation import invalid, read_model
from node.writes import idempotency_key

# One peer's /health must answer within this; a mode change waits at most NODES_DEADLINE_S for
# the nodes to apply it (they re-read it every 0.25 s, so this is ample).
PEER_TIMEOUT = aiohttp.ClientTimeout(total=1.0)
NODES_DEADLINE_S = 3.0

Lbcp = Annotated[str, StringConstraints(min_length=1, max_length=8)]


class ActivateIn(_Strict):
    reason: Text500
    lbcps: list[Lbcp] | None = Field(default=None, max_length=20)
    message: Annotated[
        str, StringConstraints(strip_whitespace=True, min_length=1, max_length=1000)
    ] = "Manual customs clearance is in force: present your cargo documents to an officer."


class DeactivateIn(_Strict):
    reason: Text500
    lbcps: list[Lbcp] | None = Field(default=None, max_length=20)


class ClearanceIn(_Strict):
    lbcp: Lbcp
    vrn: Annotated[str, StringConstraints(min_length=1, max_length=20)]
    decision: Literal["release", "inspect", "refuse"]
    documents: list[
        Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
    ] = Field(min_length=1, max_length=50)
    ccrns: list[Annotated[str, StringConstraints(max_length=32)]] = Field(
        default_factory=list, max_length=200
    )
    cleared_at: AwareDatetime | None = None

    @field_validator("vrn")
    @classmethod
    def _vrn(cls, v: str) -> str:
        return normalise_vrn(v)


def _lbcp_set(codes: list[str] | None, field: str = "lbcps") -> frozenset[str] | None:
    if codes is None:
        return None
    bad = [c for c in codes if c not in DEFAULT_LBCPS]
    if bad:
        raise invalid([{"field": field, "message": f"unknown LBCP codes {bad}"}])
    return frozenset(codes)


def state_json(request: web.Request) -> dict[str, Any]:
    rt = request.app[appkeys.CONTINGENCY]
    s = rt.state
    rec = rt.recommendation()
    override = rt.override
    return {
        "mode": "manual" if rt.any_manual else "normal",
        "since": iso(rt.since()),
        "lbcps": sorted(code for code in DEFAULT_LBCPS if rt.mode_for(code) == "manual"),
        "message": s.message or (override.reason if override else ""),
        "switched_by": s.actor,
        "reason": s.reason,
        "local_override": (
            {
                "actor": override.actor,
                "reason": override.reason,
                "at": iso(override.at),
                "lbcps": sorted(override.lbcps) if override.lbcps else None,
            }
            if override
            else None
        ),
        "recent_changes": [
            {
                "action": c.action,
                "actor": c.actor,
                "reason": c.reason,
                "at": iso(c.at),
                "lbcps": sorted(c.lbcps) if c.lbcps else None,
            }
            for c in reversed(s.history[-10:])
        ],
        "recommendation": {"manual_recommended": rec.recommended, "reason": rec.reason},
        "etcd_reachable": rt.etcd_ok,
        "node": request.app[appkeys.CONFIG].site,
    }


async def public_status(request: web.Request) -> web.Response:
    """The public notice; no auth, no database."""
    return web.json_response(state_json(request))


async def _journal_audit(request: web.Request, event: AuditEvent) -> None:
    await asyncio.to_thread(request.app[appkeys.JOURNAL].append_audit, event)


async def _audit_anywhere(
    request: web.Request, *, actor: str, action: str, subject: str, after: dict[str, Any]
) -> str:
    """Audit to PostgreSQL when this node can write, else to the journal (reconciled later)."""
    if request.app[appkeys.ROLE].role == "active":
        try:
            with translated():
                async with (
                    request.app[appkeys.POOL].connection(timeout=2) as conn,
                    conn.transaction(),
                ):
                    await common.audit(
                        conn, actor=actor, action=action, subject=subject, after=after
                    )
            return "database"
        except DatabaseUnavailable:
            pass
    await _journal_audit(
        request,
        AuditEvent(
            at=datetime.now(UTC),
            actor=actor,
            action=action,
            subject=subject,
            after=json.loads(json.dumps(after, default=str)),
        ),
    )
    return "journal"


async def _node_sections(request: web.Request) -> dict[str, Mapping[str, Any] | None]:
    """Every node's account of the mode it applies: this node's own, the peers' /health."""
    app = request.app
    cfg = app[appkeys.CONFIG]
    session = app[appkeys.HTTP]

    async def ask(url: str) -> Mapping[str, Any] | None:
        try:
            async with session.get(f"{url.rstrip('/')}/health", timeout=PEER_TIMEOUT) as r:
                doc = await r.json(content_type=None)  # 503 ("fail") still carries the section
        except (aiohttp.ClientError, TimeoutError, ValueError):
            return None
        section = doc.get("contingency") if isinstance(doc, dict) else None
        return section if isinstance(section, dict) else None

    peers = {site: url for site, url in cfg.peers.items() if site != cfg.site}
    answers = await asyncio.gather(*(ask(url) for url in peers.values()))
    out: dict[str, Mapping[str, Any] | None] = dict(zip(peers, answers, strict=True))
    out[cfg.site] = contingency_section(app)
    return out


async def _audit_and_propagate(
    request: web.Request, *, actor: str, action: str, new: cstate.ContingencyState
) -> dict[str, Any]:
    """After a mode change: audit it, apply `new` on this node now, then wait until the peers
    apply it too. The response members saying where it was audited and which nodes follow."""
    where = await _audit_anywhere(
        request, actor=actor, action=action, subject="contingency", after=cstate.to_dict(new)
    )
    await request.app[appkeys.CONTINGENCY].refresh()
    spread = await await_nodes(
        lambda: _node_sections(request),
        lambda section: applies(section, new),
        deadline_s=NODES_DEADLINE_S,
    )
    return {"audited_to": where, **spread.as_dict()}


async def activate(request: web.Request) -> web.Response:
    account = await require(request, "officer")
    _, body = await read_model(request, ActivateIn)
    return web.json_response(await activate_as(request, account, body))


async def activate_as(request: web.Request, account: Account, body: ActivateIn) -> dict[str, Any]:
    """Switch manual mode on (the API's and the officers' pages' switch); the new state."""
    lbcps = _lbcp_set(body.lbcps)
    new = await request.app[appkeys.CONTINGENCY].activate(
        actor=account.actor, reason=body.reason, lbcps=lbcps, message=body.message
    )
    done = await _audit_and_propagate(
        request, actor=account.actor, action="contingency.activate", new=new
    )
    return {**state_json(request), **done}


async def deactivate(request: web.Request) -> web.Response:
    account = await require(request, "officer")
    _, body = await read_model(request, DeactivateIn)
    return web.json_response(await deactivate_as(request, account, body))


async def deactivate_as(
    request: web.Request, account: Account, body: DeactivateIn
) -> dict[str, Any]:
    """Reconcile the journals, then switch manual mode off; the new state and the report."""
    lbcps = _lbcp_set(body.lbcps)
    if request.app[appkeys.ROLE].role != "active":
        raise not_writable(
            "deactivation needs a writable database (it reconciles the manual records first);"
            " send it to the active node through the API entry point"
        )
    try:
        with translated():
            async with request.app[appkeys.POOL].connection(timeout=5) as conn:
                report = await reconcile(conn, journal_paths(request.app[appkeys.CONFIG].state_dir))
    except DatabaseUnavailable as exc:
        raise not_writable(
            "the database is not writable, so the manual records cannot be reconciled;"
            " manual mode stays on"
        ) from exc
    new = await request.app[appkeys.CONTINGENCY].deactivate(
        actor=account.actor, reason=body.reason, lbcps=lbcps
    )
    done = await _audit_and_propagate(
        request, actor=account.actor, action="contingency.deactivate", new=new
    )
    return {**state_json(request), "reconciliation": report.as_dict(), **done}


async def record_clearance(request: web.Request) -> web.Response:
    account: Account = await require(request, "officer")
    _, c = await read_model(request, ClearanceIn)
    return await record_clearance_as(request, account, c)


# Names the UUIDs of clearances recorded under an Idempotency-Key (uuid5 of account and key).
CLEARANCE_KEYS = uuid.UUID("6f1f5d3e-5b0e-4c52-9a57-0c4b3f0e8a21")
JOURNALLED = "recorded on this node; it is imported into the database by reconciliation"


def clearance_uuid(account: Account, key: str | None) -> str:
    """The UUID of the clearance `account` records under Idempotency-Key `key`: the same for
    every retry, so each store (PostgreSQL by primary key, a journal by its UUID, and
    reconciliation between them) keeps one record. No key: a fresh one."""
    if key is None:
        return str(uuid.uuid4())
    return str(uuid.uuid5(CLEARANCE_KEYS, f"{account.id}:{key}"))


def same_clearance(stored: ClearanceRecord, c: ClearanceIn, officer: str) -> bool:
    """Whether `stored` is the clearance `c` asks for. A time `c` leaves out defaults to the
    moment of the request, which a retry cannot repeat: the first record's time stands."""
    s = stored
    asked = (officer, c.lbcp, c.vrn, c.decision, tuple(c.documents), tuple(c.ccrns))
    return (s.officer, s.lbcp, s.vrn, s.decision, s.documents, s.ccrns) == asked and (
        c.cleared_at is None or c.cleared_at == s.cleared_at
    )


def _reused_key() -> Problem:
    return invalid(
        [{"field": "Idempotency-Key", "message": "already used with a different clearance"}],
        "this Idempotency-Key was already used with a different clearance; nothing was recorded",
    )


def _journalled(uid: str, *, replayed: bool) -> web.Response:
    headers = {"Idempotent-Replayed": "true"} if replayed else None
    body = {"uuid": uid, "stored": "journal", "detail": JOURNALLED}
    return web.json_response(body, status=202, headers=headers)


def _may_journal(app: web.Application, lbcp: str) -> bool:
    if appkeys.CONTINGENCY not in app:
        return True  # no contingency state on this node: it cannot tell, so it journals
    rt = app[appkeys.CONTINGENCY]
    return cstate.may_journal(rt.mode_for(lbcp), state_known=rt.etcd_ok and rt.loaded)


async def record_clearance_as(
    request: web.Request, account: Account, c: ClearanceIn
) -> web.Response:
    """One truck cleared by hand: to PostgreSQL (201, "database") when this node can write,
    else to the node's journal (202, "journal") while manual clearance is in force at the LBCP
    or the node cannot read whether it is (`contingency.state.may_journal`); otherwise 503.

    Under an Idempotency-Key (the header, or a channel's own: a web form's token) the record's
    UUID is the key's (`clearance_uuid`), so a retry, to either store, finds the first record
    and is answered as it was (`Idempotent-Replayed: true`): 202 when this node's journal holds
    it, else 201 with its stored outcome; a different clearance under that key is 422 and
    writes nothing. Only the store a retry reaches can be compared: a record journalled on the
    other node, or stored in PostgreSQL while this node journals, meets its retry at
    reconciliation, which imports the UUID once (the first one there stands)."""
    key = idempotency_key(request)
    common.check_lbcp(c.lbcp)
    bad = [
        {"field": f"ccrns[{i}]", "message": err}
        for i, x in enumerate(c.ccrns)
        if (err := validate_ccrn(x)) is not None
    ]
    if bad:
        raise invalid(bad)
    now = datetime.now(UTC)
    if c.cleared_at is not None and c.cleared_at > now:
        raise invalid([{"field": "cleared_at", "message": "must not be in the future"}])
    officer = str(account.id)
    rec = ClearanceRecord(
        node=request.app[appkeys.CONFIG].site,
        officer=officer,
        lbcp=c.lbcp,
        vrn=c.vrn,
        decision=c.decision,
        documents=tuple(c.documents),
        ccrns=tuple(c.ccrns),
        cleared_at=c.cleared_at or now,
        uuid=clearance_uuid(account, key),
        recorded_at=now,
    )
    assert rec.uuid is not None
    journal = request.app[appkeys.JOURNAL]
    if key is not None:
        # First answered from this node's journal (202): answered so again, even once the
        # database is back.
        held = await asyncio.to_thread(journal.clearance, rec.uuid)
        if held is not None:
            if not same_clearance(held, c, officer):
                raise _reused_key()
            return _journalled(rec.uuid, replayed=True)
    if request.app[appkeys.ROLE].role == "active":
        try:
            with translated():
                async with (
                    request.app[appkeys.POOL].connection(timeout=2) as conn,
                    conn.transaction(),
                ):
                    inserted, outcome = await store_clearance(conn, rec, source="direct")
                    if not inserted:  # only under a key: a fresh UUID is never taken
                        found = await replay_clearance(conn, rec.uuid)
                        assert found is not None  # the row it conflicted with is committed
                        stored, outcome = found
                        if not same_clearance(stored, c, officer):
                            raise _reused_key()  # rolls the replay's touch back
            return web.json_response(
                {"uuid": rec.uuid, "stored": "database", **outcome},
                status=201,
                headers=None if inserted else {"Idempotent-Replayed": "true"},
            )
        except DatabaseUnavailable:
            pass  # fall through to the journal
    if not _may_journal(request.app, c.lbcp):
        raise not_writable(
            f"this node cannot write the clearance to the database now and manual clearance is"
            f" not in force at {c.lbcp}, so it is not journalled (only manual mode's records are"
            " reconciled); retry shortly with the same Idempotency-Key: the active node records"
            " it. If the system has failed, switch manual clearance on first",
            request,
        )
    if key is None:
        uid = await asyncio.to_thread(journal.append_clearance, rec)
        return _journalled(uid, replayed=False)
    first, appended = await asyncio.to_thread(journal.append_clearance_once, rec)
    if not appended and not same_clearance(first, c, officer):
        raise _reused_key()
    return _journalled(rec.uuid, replayed=not appended)


def add_routes(app: web.Application) -> None:
    app.router.add_get("/v1/status", public_status)
    app.router.add_get("/v1/contingency", public_status)
    app.router.add_post("/v1/contingency/activate", activate)
    app.router.add_post("/v1/contingency/deactivate", deactivate)
    app.router.add_post("/v1/contingency/clearances", record_clearance)
