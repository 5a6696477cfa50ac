"""Registration, approval, API keys, roles and suspension, through HAProxy on the real cluster."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from apikit import (
    Account,
    Accounts,
    Api,
    assert_problem,
    consignment_body,
    submit,
)

from kernel.domain.ccrn import make_ccrn

pytestmark = pytest.mark.integration

SOME_CCRN = make_ccrn(987654321)  # well-formed; whether it exists does not matter before auth


def application(kind: str = "trader", **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "kind": kind,
        "name": f"Applicant {uuid.uuid4().hex[:8]}",
        "brn": "12345678-001",
        "contact": {"email": "ops@example.hk", "phone": "+852 2345 6789"},
    }
    if kind == "trader":
        body["trader_kind"] = "forwarder"
    body.update(overrides)
    return body


async def apply(api: Api, body: dict[str, Any]) -> dict[str, Any]:
    r = await api.post("/v1/registrations", json=body)
    assert r.status == 201, r.text
    doc: dict[str, Any] = r.json
    return doc


async def test_apply_is_pending_and_approval_returns_a_working_key_once(
    api: Api, accounts: Accounts
) -> None:
    """Apply (no auth) -> 201 pending; approve -> the API key once; that key submits cargo."""
    reg = await apply(api, application("trader"))
    assert reg["status"] == "pending"
    uuid.UUID(reg["id"])
    assert "api_key" not in reg

    pending = await api.get("/v1/registrations?status=pending", accounts.officer.key)
    assert pending.status == 200
    assert reg["id"] in {r["id"] for r in pending.json["items"]}

    ok = await api.post(f"/v1/registrations/{reg['id']}/approve", accounts.officer.key)
    assert ok.status == 200, ok.text
    approved = ok.json
    assert approved["status"] == "approved"
    key = approved["api_key"]
    assert key.startswith("rk_")

    # The key works for the role applied for.
    c = await submit(api, key)
    assert c["status"] == "submitted"
    mine = await api.get("/v1/consignments", key)
    assert [i["ccrn"] for i in mine.json["items"]] == [c["ccrn"]]

    # It is never shown again: not in the listing, and a second approval is refused.
    listed = await api.get("/v1/registrations?status=approved", accounts.officer.key)
    row = next(r for r in listed.json["items"] if r["id"] == reg["id"])
    assert "api_key" not in row
    assert key not in listed.text
    again = await api.post(f"/v1/registrations/{reg['id']}/approve", accounts.officer.key)
    assert_problem(again, 409)
    assert key not in again.text


async def test_approved_trucker_key_can_bundle(api: Api, accounts: Accounts) -> None:
    """A trucker's approved registration gives a key that may bundle (an empty truck here)."""
    reg = await apply(api, application("trucker"))
    ok = await api.post(f"/v1/registrations/{reg['id']}/approve", accounts.officer.key)
    assert ok.status == 200
    r = await api.post(
        "/v1/bundles", ok.json["api_key"], json={"vrn": "RG 1", "lbcp": "SBC", "empty": True}
    )
    assert r.status == 201, r.text


async def test_reject_needs_a_reason_and_is_final(api: Api, accounts: Accounts) -> None:
    """Rejection without (or with a blank) reason is 422 on `reason`; once rejected, no approval."""
    reg = await apply(api, application("trader"))
    path = f"/v1/registrations/{reg['id']}/reject"
    assert_problem(await api.post(path, accounts.officer.key), 422, "reason")
    assert_problem(await api.post(path, accounts.officer.key, json={}), 422, "reason")
    assert_problem(await api.post(path, accounts.officer.key, json={"reason": "  "}), 422, "reason")

    r = await api.post(path, accounts.officer.key, json={"reason": "  BRN does not match  "})
    assert r.status == 200, r.text
    assert r.json["status"] == "rejected"
    assert r.json["reason"] == "BRN does not match"
    assert "api_key" not in r.json
    approve = await api.post(f"/v1/registrations/{reg['id']}/approve", accounts.officer.key)
    assert_problem(approve, 409)


@pytest.mark.parametrize(
    ("change", "fields"),
    [
        ({"name": None}, ["name"]),
        ({"name": "   "}, ["name"]),
        ({"brn": "1234"}, ["brn"]),
        ({"contact": {"email": "not-an-email"}}, ["contact.email"]),
        ({"contact": {"email": "a@b.hk", "fax": "1"}}, ["contact.fax"]),
        ({"kind": "officer"}, ["kind"]),
        ({"trader_kind": None}, ["trader_kind"]),
        ({"trader_kind": "smuggler"}, ["trader_kind"]),
        ({"kind": "trucker", "trader_kind": "agent"}, ["trader_kind"]),
        ({"sneaky": True}, ["sneaky"]),
        ({"name": "A\u0000B"}, ["name"]),
        ({"contact": None, "brn": 12345678}, ["contact", "brn"]),
    ],
)
async def test_invalid_application_is_422_naming_the_fields(
    api: Api, change: dict[str, Any], fields: list[str]
) -> None:
    """Each invalid application is refused with 422 naming every offending field."""
    body = application("trader")
    for k, v in change.items():
        if v is None:
            body.pop(k, None)
        else:
            body[k] = v
    assert_problem(await api.post("/v1/registrations", json=body), 422, *fields)


async def test_application_body_errors(api: Api) -> None:
    """Malformed JSON is 400, a non-object 422, an oversized body 413; all name the body."""
    hdr = {"Content-Type": "application/json"}
    assert_problem(await api.post("/v1/registrations", data=b"{", headers=hdr), 400, "body")
    assert_problem(await api.post("/v1/registrations", json=[1, 2]), 422, "body")
    big = json.dumps(application(name="x" * (2 * 1024 * 1024)))
    assert_problem(await api.post("/v1/registrations", data=big, headers=hdr), 413, "body")


async def test_unknown_or_malformed_registration_id(api: Api, accounts: Accounts) -> None:
    """Deciding an unknown registration is 404; a malformed id is 422 naming `id`."""
    r = await api.post(f"/v1/registrations/{uuid.uuid4()}/approve", accounts.officer.key)
    assert_problem(r, 404)
    r = await api.post("/v1/registrations/not-a-uuid/approve", accounts.officer.key)
    assert_problem(r, 422, "id")


async def test_registration_retry_with_idempotency_key_is_not_duplicated(api: Api) -> None:
    """A registration retried with the same Idempotency-Key answers the first registration."""
    body = application("trader")
    hdr = {"Idempotency-Key": f"reg-{uuid.uuid4()}"}
    first = await api.post("/v1/registrations", json=body, headers=hdr)
    second = await api.post("/v1/registrations", json=body, headers=hdr)
    assert first.json["id"] == second.json["id"]


# ---------------------------------------------------------------------------------------------
# Authentication and roles

AUTH_PROBES: list[tuple[str, str, Any]] = [
    ("POST", "/v1/consignments", consignment_body()),
    ("GET", "/v1/consignments", None),
    ("GET", f"/v1/consignments/{SOME_CCRN}", None),
    ("POST", "/v1/bundles", {"vrn": "AB1", "lbcp": "LMC", "empty": True}),
    ("POST", "/v1/lbcp/LMC/arrivals", {"vrn": "AB1"}),
    ("GET", "/v1/selections?lbcp=LMC", None),
    ("POST", "/v1/risk-rules", {"kind": "keyword", "value": "x"}),
]


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "Bearer ",
        "Bearer",
        "Basic dXNlcjpwYXNz",
        "Token rk_deadbeef_x",
        "Bearer garbage",
        "Bearer rk_deadbeef_0123456789abcdefghijklmnopqrstuv",
    ],
    ids=["missing", "empty-bearer", "bare-bearer", "basic", "token", "garbage", "unknown-key"],
)
async def test_missing_or_wrong_api_key_is_401(api: Api, authorization: str | None) -> None:
    """No key, a non-Bearer scheme or an unknown key is 401 with WWW-Authenticate on every route."""
    headers = {"Authorization": authorization} if authorization is not None else {}
    for method, path, body in AUTH_PROBES:
        kw: dict[str, Any] = {"headers": headers}
        if body is not None:
            kw["json"] = body
        r = await api.call(method, path, **kw)
        assert_problem(r, 401, "Authorization")
        assert r.headers.get("WWW-Authenticate", "").startswith("Bearer"), (method, path)


async def test_right_key_of_another_account_kind_is_not_401(api: Api, accounts: Accounts) -> None:
    """A valid key is authenticated even when the role is wrong (403, not 401)."""
    r = await api.post("/v1/consignments", accounts.trucker.key, json=consignment_body())
    assert_problem(r, 403)


OFFICER_ENDPOINTS: list[tuple[str, str, Any]] = [
    ("GET", "/v1/selections?lbcp=LMC", None),
    ("GET", "/v1/risk-rules", None),
    ("POST", "/v1/risk-rules", {"kind": "keyword", "value": "anything"}),
    ("PATCH", "/v1/risk-rules/1", {"active": False}),
    ("GET", "/v1/registrations", None),
    ("POST", f"/v1/registrations/{uuid.uuid4()}/approve", None),
    ("POST", f"/v1/registrations/{uuid.uuid4()}/reject", {"reason": "no"}),
    ("POST", "/v1/accounts/1/suspend", None),
    ("POST", "/v1/accounts/1/reinstate", None),
    ("POST", "/v1/lbcp/LMC/arrivals", {"vrn": "AB1"}),
    ("POST", "/v1/bundles/1/inspection", {"result": "cleared"}),
    ("POST", f"/v1/consignments/{SOME_CCRN}/selection", {"action": "select", "reason": "x"}),
    ("GET", f"/v1/itfs/{SOME_CCRN}", None),
    ("POST", f"/v1/itfs/{SOME_CCRN}/airport-inspections", None),
]


@pytest.mark.parametrize(
    ("method", "path", "body"), OFFICER_ENDPOINTS, ids=[f"{m} {p}" for m, p, _ in OFFICER_ENDPOINTS]
)
async def test_trader_and_trucker_calling_officer_endpoints_get_403(
    api: Api, accounts: Accounts, method: str, path: str, body: Any
) -> None:
    """Officer-only endpoints answer 403 to traders and truckers."""
    for who in (accounts.trader, accounts.trucker):
        kw: dict[str, Any] = {"json": body} if body is not None else {}
        r = await api.call(method, path, who.key, **kw)
        doc = assert_problem(r, 403)
        assert "officer" in doc["detail"]


async def test_roles_are_enforced_between_traders_and_truckers(
    api: Api, accounts: Accounts
) -> None:
    """Only traders submit and read cargo; only truckers bundle; traders cannot read bundles."""
    c = await submit(api, accounts.trader.key)
    b = {"vrn": "RL1", "lbcp": "LMC", "ccrns": [c["ccrn"]]}
    assert_problem(await api.post("/v1/bundles", accounts.trader.key, json=b), 403)
    assert_problem(await api.post("/v1/bundles", accounts.officer.key, json=b), 403)
    assert_problem(await api.get(f"/v1/consignments/{c['ccrn']}", accounts.trucker.key), 403)
    assert_problem(await api.get("/v1/consignments", accounts.officer.key), 403)
    assert_problem(await api.get("/v1/bundles/1", accounts.trader.key), 403)
    r = await api.post("/v1/consignments", accounts.officer.key, json=consignment_body())
    assert_problem(r, 403)


async def test_suspended_account_is_refused_403_until_reinstated(
    api: Api, accounts: Accounts, new_account: Callable[[str], Account]
) -> None:
    """After POST /v1/accounts/{id}/suspend the account's every call is 403; reinstate restores."""
    trader = new_account("trader")
    await submit(api, trader.key)

    r = await api.post(f"/v1/accounts/{trader.id}/suspend", accounts.officer.key)
    assert r.status == 200, r.text
    assert r.json["status"] == "suspended"

    doc = assert_problem(
        await api.post("/v1/consignments", trader.key, json=consignment_body()), 403
    )
    assert "suspended" in doc["detail"]
    assert_problem(await api.get("/v1/consignments", trader.key), 403)

    r = await api.post(f"/v1/accounts/{trader.id}/reinstate", accounts.officer.key)
    assert r.status == 200
    assert r.json["status"] == "active"
    await submit(api, trader.key)


async def test_suspend_errors(api: Api, accounts: Accounts) -> None:
    """Suspending is officer-only; an unknown account is 404; a malformed id is 422 naming `id`."""
    assert_problem(
        await api.post(f"/v1/accounts/{accounts.trader2.id}/suspend", accounts.trader.key), 403
    )
    assert_problem(await api.post("/v1/accounts/999999999/suspend", accounts.officer.key), 404)
    assert_problem(await api.post("/v1/accounts/abc/suspend", accounts.officer.key), 422, "id")


async def test_registration_decisions_and_suspension_are_audited(
    api: Api, accounts: Accounts, db: psycopg.AsyncConnection[Any]
) -> None:
    """apply, approve, reject and suspend each append an audit row with actor and before/after."""
    a = await apply(api, application("trader"))
    b = await apply(api, application("trucker"))
    ok = await api.post(f"/v1/registrations/{a['id']}/approve", accounts.officer.key)
    key = ok.json["api_key"]
    reject = await api.post(
        f"/v1/registrations/{b['id']}/reject", accounts.officer.key, json={"reason": "x"}
    )
    assert reject.status == 200
    account_id = ok.json["account_id"]
    await api.post(f"/v1/accounts/{account_id}/suspend", accounts.officer.key)

    async def rows(subject: str) -> list[tuple[str, str, Any, Any]]:
        cur = await db.execute(
            "SELECT actor, action, before, after FROM audit_log WHERE subject = %s ORDER BY id",
            (subject,),
        )
        return list(await cur.fetchall())

    officer = f"officer:{accounts.officer.id}"
    ra = await rows(f"registration:{a['id']}")
    assert [(r[0], r[1]) for r in ra] == [
        ("public", "registration.apply"),
        (officer, "registration.approve"),
    ]
    assert ra[0][3]["status"] == "pending"
    assert (ra[1][2]["status"], ra[1][3]["status"]) == ("pending", "approved")
    rb = await rows(f"registration:{b['id']}")
    assert [(r[0], r[1]) for r in rb] == [
        ("public", "registration.apply"),
        (officer, "registration.reject"),
    ]
    assert rb[1][3]["reason"] == "x"
    rs = await rows(f"account:{account_id}")
    assert [(r[0], r[1], r[3]["status"]) for r in rs] == [
        (officer, "account.suspended", "suspended")
    ]
    # The key itself is never written to the audit log.
    cur = await db.execute(
        "SELECT count(*) FROM audit_log WHERE after::text LIKE %s", (f"%{key}%",)
    )
    assert (await cur.fetchone()) == (0,)
