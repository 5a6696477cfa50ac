"""The OpenAPI 3.1 document at /openapi.json: every route the node serves, exactly, so a
generated client and a fuzzer see the real contract.

Request bodies are the pydantic models that validate them (`model_json_schema()`), answers are
the schemas of node.api.openapi_schemas. Each operation names the account kinds allowed in
`x-rocars-roles` (empty: public) and every status it can answer; a GET also answers HEAD
(aiohttp's default), which is not listed again. tests/unit/handlers/test_openapi_contract.py
checks the document against the app's router.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from pydantic import BaseModel

from monitoring.health import HEALTH_JSON
from node import schemas
from node.api import contingency, phone_pin
from node.api.openapi_schemas import CCRN, LBCP, LBCPS, REGISTRATION_STATUSES, RESPONSES, ref
from node.api.openapi_schemas import CONSIGNMENT_STATUSES as STATUSES

JSON = "application/json"
PROBLEM_JSON = "application/problem+json"
MAX_BATCH_ITEMS = 10_000
# Statuses every authenticated operation can answer: a malformed Authorization header, no or
# an unknown key, a suspended account or the wrong kind, the rate limit, no way to check the
# key (database down and key not cached) or a component down.
AUTHENTICATED = (400, 401, 403, 429, 503)

Schema = dict[str, Any]


@dataclass(frozen=True)
class Op:
    method: str
    path: str
    operation_id: str
    summary: str
    roles: tuple[str, ...]  # () = public
    ok: dict[int, tuple[str, Schema]]  # status -> (description, schema)
    errors: tuple[int, ...] = ()  # beyond AUTHENTICATED (and those implied below)
    body: type[BaseModel] | str | None = None  # a model, "batch", or None
    optional_body: bool = False
    query: tuple[Schema, ...] = ()
    write: bool = False  # goes through node.writes.run_write: Idempotency-Key, 503 on standby
    keyed: bool = False  # takes Idempotency-Key on a path of its own (manual clearances)
    links: dict[int, dict[str, Schema]] = field(default_factory=dict)
    description: str = ""


def _query(name: str, schema: Schema, description: str) -> Schema:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "schema": schema,
        "description": description,
    }


def _link(operation_id: str, **parameters: str) -> Schema:
    return {"operationId": operation_id, "parameters": parameters}


OFFICER = ("officer",)
TRADER = ("trader",)
TRUCKER = ("trucker",)
BY_CCRN = {
    name: _link(name, ccrn="$response.body#/ccrn")
    for name in (
        "getConsignment",
        "amendConsignment",
        "cancelConsignment",
        "consignmentHistory",
        "selectConsignment",
        "revokeFromBundle",
        "getItfs",
        "recordAirportInspection",
    )
}
BY_BUNDLE = {
    name: _link(name, id="$response.body#/id")
    for name in ("getBundle", "cancelBundle", "recordInspection")
}

OPERATIONS: tuple[Op, ...] = (
    # Registration and accounts.
    Op(
        "post",
        "/v1/registrations",
        "applyForRegistration",
        "Apply for registration (no account needed)",
        (),
        {201: ("the application, pending", ref("Registration"))},
        errors=(400, 503),
        body=schemas.RegistrationIn,
        write=True,
        links={
            201: {
                "approveRegistration": _link("approveRegistration", id="$response.body#/id"),
                "rejectRegistration": _link("rejectRegistration", id="$response.body#/id"),
            }
        },
    ),
    Op(
        "get",
        "/v1/registrations",
        "listRegistrations",
        "Registrations by status (at most 1,000, oldest first)",
        OFFICER,
        {200: ("registrations", ref("RegistrationList"))},
        errors=(422,),
        query=(
            _query(
                "status",
                {"type": "string", "enum": REGISTRATION_STATUSES, "default": "pending"},
                "which registrations",
            ),
        ),
    ),
    Op(
        "post",
        "/v1/registrations/{id}/approve",
        "approveRegistration",
        "Approve: creates the account and answers its API key once (a replay answers"
        " `api_key: null` and `api_key_issued: true`)",
        OFFICER,
        {200: ("the approved registration and the new account", ref("Approval"))},
        errors=(404, 409, 422),
        body=schemas.DecisionIn,
        optional_body=True,
        write=True,
        links={
            200: {
                "suspendAccount": _link("suspendAccount", id="$response.body#/account_id"),
                "reinstateAccount": _link("reinstateAccount", id="$response.body#/account_id"),
            }
        },
    ),
    Op(
        "post",
        "/v1/registrations/{id}/reject",
        "rejectRegistration",
        "Reject, with a reason",
        OFFICER,
        {200: ("the rejected registration", ref("Registration"))},
        errors=(404, 409, 422),
        body=schemas.DecisionIn,
        write=True,
    ),
    Op(
        "post",
        "/v1/accounts/{id}/suspend",
        "suspendAccount",
        "Suspend an account (its key answers 403 from then on)",
        OFFICER,
        {200: ("the account", ref("AccountStatus"))},
        errors=(404, 422),
        write=True,
    ),
    Op(
        "post",
        "/v1/accounts/{id}/reinstate",
        "reinstateAccount",
        "Reinstate a suspended account",
        OFFICER,
        {200: ("the account", ref("AccountStatus"))},
        errors=(404, 422),
        write=True,
    ),
    Op(
        "put",
        phone_pin.PATH,
        "setPhonePin",
        "Set the 6-digit PIN of the phone (IVR) channel; stored hashed, clears a lockout",
        TRUCKER,
        {
            200: (
                "the PIN is set",
                {
                    "type": "object",
                    "required": ["account_id", "phone_pin", "updated_at"],
                    "properties": {
                        "account_id": {"type": "integer"},
                        "phone_pin": {"type": "string", "enum": ["set"]},
                        "updated_at": {"type": "string", "format": "date-time"},
                    },
                    "additionalProperties": False,
                },
            )
        },
        errors=(422,),
        body=phone_pin.PhonePinIn,
        write=True,
    ),
    # Consignments.
    Op(
        "post",
        "/v1/consignments",
        "submitConsignment",
        "Submit cargo information; answers the CCRN",
        TRADER,
        {201: ("the stored consignment", ref("Consignment"))},
        errors=(422,),
        body=schemas.ConsignmentIn,
        write=True,
        links={201: BY_CCRN},
    ),
    Op(
        "post",
        "/v1/consignments:batch",
        "submitConsignmentBatch",
        f"Submit up to {MAX_BATCH_ITEMS:,} consignments (a JSON array, or CSV with a header row"
        " naming the fields, `itfs.airport`/`itfs.flight` for the nested ones); each item is"
        " accepted or rejected on its own",
        TRADER,
        {200: ("one result per item, in order", ref("BatchResult"))},
        errors=(422,),
        body="batch",
        write=True,
    ),
    Op(
        "get",
        "/v1/consignments",
        "listConsignments",
        "Own consignments, oldest first, a page at a time",
        TRADER,
        {200: ("a page", ref("ConsignmentPage"))},
        errors=(422,),
        query=(
            _query("status", {"type": "string", "enum": STATUSES}, "only this status"),
            _query(
                "since",
                {"type": "string", "format": "date-time"},
                "only those changed at or after this time (ISO 8601 with an offset)",
            ),
            _query("cursor", {"type": "string"}, "`next_cursor` of the previous page"),
            _query(
                "limit",
                {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100},
                "page size",
            ),
        ),
    ),
    Op(
        "get",
        "/v1/consignments/{ccrn}",
        "getConsignment",
        "Read a consignment (its owner, or an officer: who also sees the risk facts)",
        ("trader", "officer"),
        {
            200: (
                "the consignment",
                {"anyOf": [ref("Consignment"), ref("ConsignmentForOfficer")]},
            )
        },
        errors=(404, 422),
    ),
    Op(
        "patch",
        "/v1/consignments/{ccrn}",
        "amendConsignment",
        "Amend any of the 8 cargo items (a new version; the bundle's gate facts follow)",
        TRADER,
        {200: ("the new version", ref("Consignment"))},
        errors=(404, 409, 422),
        body=schemas.ConsignmentPatch,
        write=True,
    ),
    Op(
        "delete",
        "/v1/consignments/{ccrn}",
        "cancelConsignment",
        "Cancel (the CCRN is never reused); only while not in a bundle",
        TRADER,
        {200: ("the cancelled consignment", ref("Consignment"))},
        errors=(404, 409, 422),
        write=True,
    ),
    Op(
        "get",
        "/v1/consignments/{ccrn}/history",
        "consignmentHistory",
        "Every version of a consignment",
        ("trader", "officer"),
        {200: ("the versions, oldest first", ref("ConsignmentHistory"))},
        errors=(404, 422),
    ),
    Op(
        "delete",
        "/v1/consignments/{ccrn}/bundle",
        "revokeFromBundle",
        "The owner takes the CCRN back out of an open bundle (before the truck arrives)",
        TRADER,
        {200: ("the consignment, no longer bundled", ref("ConsignmentRevoked"))},
        errors=(404, 409, 422),
        write=True,
        description="404: no such CCRN (or not the caller's); 409: not in an open bundle.",
    ),
    Op(
        "post",
        "/v1/consignments/{ccrn}/selection",
        "selectConsignment",
        "Select for inspection, or release, by hand",
        OFFICER,
        {200: ("the consignment", ref("ConsignmentForOfficer"))},
        errors=(404, 409, 422),
        body=schemas.SelectionIn,
        write=True,
    ),
    # Bundles and the gate.
    Op(
        "post",
        "/v1/bundles",
        "createBundle",
        "Bundle CCRNs with a vehicle (or declare an empty truck)",
        TRUCKER,
        {201: ("the bundle and its crossing instruction", ref("Bundle"))},
        errors=(409, 422),
        body=schemas.BundleIn,
        write=True,
        links={
            201: {
                **BY_BUNDLE,
                "revokeFromBundle": _link("revokeFromBundle", ccrn="$response.body#/ccrns/0"),
            }
        },
    ),
    Op(
        "get",
        "/v1/bundles/{id}",
        "getBundle",
        "Read a bundle (its trucker, or an officer)",
        ("trucker", "officer"),
        {200: ("the bundle", {"anyOf": [ref("Bundle"), ref("BundleForOfficer")]})},
        errors=(404, 422),
    ),
    Op(
        "delete",
        "/v1/bundles/{id}",
        "cancelBundle",
        "Cancel an open bundle",
        TRUCKER,
        {200: ("the cancelled bundle", ref("Bundle"))},
        errors=(404, 409, 422),
        write=True,
    ),
    Op(
        "post",
        "/v1/bundles/{id}/inspection",
        "recordInspection",
        "Record the result of an inspection the gate directed",
        OFFICER,
        {200: ("the closed bundle", ref("InspectionResult"))},
        errors=(404, 409, 422),
        body=schemas.InspectionIn,
        write=True,
    ),
    Op(
        "post",
        "/v1/lbcp/{code}/arrivals",
        "recordArrival",
        "Gate decision for an arriving truck (release / inspect / hold / manual); in manual"
        " clearance mode answered without the database",
        OFFICER,
        {200: ("the decision", ref("GateDecision"))},
        errors=(404, 422),
        body=schemas.ArrivalIn,
        write=True,
    ),
    # Risk rules and selections.
    Op(
        "get",
        "/v1/risk-rules",
        "listRiskRules",
        "Every risk rule",
        OFFICER,
        {200: ("the rules", ref("RiskRuleList"))},
    ),
    Op(
        "post",
        "/v1/risk-rules",
        "createRiskRule",
        "Create a risk rule",
        OFFICER,
        {201: ("the rule", ref("RiskRule"))},
        errors=(422,),
        body=schemas.RuleIn,
        write=True,
        links={201: {"updateRiskRule": _link("updateRiskRule", id="$response.body#/id")}},
    ),
    Op(
        "patch",
        "/v1/risk-rules/{id}",
        "updateRiskRule",
        "Activate or deactivate a rule",
        OFFICER,
        {200: ("the rule", ref("RiskRule"))},
        errors=(404, 422),
        body=schemas.RulePatch,
        write=True,
    ),
    Op(
        "get",
        "/v1/selections",
        "listSelections",
        "Consignments and trucks selected for inspection",
        OFFICER,
        {200: ("the selections", ref("Selections"))},
        errors=(422,),
        query=(_query("lbcp", LBCP, "only this LBCP"),),
    ),
    # ITFS.
    Op(
        "get",
        "/v1/itfs/{ccrn}",
        "getItfs",
        "ITFS inspection status, for the airport",
        OFFICER,
        {200: ("the status", ref("ItfsStatus"))},
        errors=(404, 422),
    ),
    Op(
        "post",
        "/v1/itfs/{ccrn}/airport-inspections",
        "recordAirportInspection",
        "Record an airport inspection (cargo is inspected at most once)",
        OFFICER,
        {201: ("the status", ref("ItfsStatus"))},
        errors=(404, 409, 422),
        write=True,
    ),
    # Manual clearance: these keep working while PostgreSQL is down (officers' keys are then
    # checked against the node's key cache).
    Op(
        "get",
        "/v1/status",
        "publicStatus",
        "Public notice: the mode in force (no auth, no database)",
        (),
        {200: ("the notice", ref("ContingencyState"))},
    ),
    Op(
        "get",
        "/v1/contingency",
        "contingencyStatus",
        "The same notice, for officers' consoles (no auth)",
        (),
        {200: ("the notice", ref("ContingencyState"))},
    ),
    Op(
        "post",
        "/v1/contingency/activate",
        "activateManualClearance",
        "Switch manual clearance on (audited to the journal while PostgreSQL is down); answers"
        " once every node applies it",
        OFFICER,
        {200: ("the new state, and which nodes apply it", ref("ContingencyChange"))},
        errors=(409, 422),
        body=contingency.ActivateIn,
    ),
    Op(
        "post",
        "/v1/contingency/deactivate",
        "deactivateManualClearance",
        "Reconcile the manual records, then switch manual clearance off (503 while the"
        " database is not writable: manual mode stays on)",
        OFFICER,
        {200: ("the new state and the reconciliation", ref("ContingencyDeactivation"))},
        errors=(409, 422),
        body=contingency.DeactivateIn,
    ),
    Op(
        "post",
        "/v1/contingency/clearances",
        "recordManualClearance",
        "Record a truck cleared by hand",
        OFFICER,
        {
            201: ("stored in PostgreSQL", ref("ClearanceStored")),
            202: ("kept in the node's journal until reconciliation", ref("ClearanceJournaled")),
        },
        errors=(409, 422),
        body=contingency.ClearanceIn,
        keyed=True,
        description="Under an Idempotency-Key the record's `uuid` is derived from the account"
        " and the key, so a retry (to the database or to a node's journal) is one record and"
        " is answered as the first request was, with `Idempotent-Replayed: true`; a"
        " `cleared_at` left out keeps the first record's time. The same key with another"
        " clearance is 422. The key does not expire.",
    ),
)


def _problem(description: str, *, retry: bool = False, auth: bool = False) -> Schema:
    out: Schema = {
        "description": description,
        "content": {PROBLEM_JSON: {"schema": ref("Problem")}},
    }
    if retry:
        out["headers"] = {
            "Retry-After": {
                "required": True,
                "description": "seconds to wait before retrying",
                "schema": {"type": "integer", "minimum": 0},
            }
        }
    if auth:
        out["headers"] = {"WWW-Authenticate": {"schema": {"type": "string"}}}
    return out


PROBLEMS: dict[int, Schema] = {
    400: _problem(
        "malformed request: body not JSON (or not UTF-8 CSV), a bad Authorization or"
        " Idempotency-Key header"
    ),
    401: _problem("no API key, or one that is not valid", auth=True),
    403: _problem("the account is suspended, or of a kind this operation is not for"),
    404: _problem("no such resource, or not the caller's to see (answered alike)"),
    409: _problem("the resource is not in a state that allows this"),
    413: _problem("the body is over this route's limit (1 MiB; 10 MiB for a batch)"),
    422: _problem(
        "invalid fields (each named in `errors`), or an Idempotency-Key reused with a"
        " different request"
    ),
    429: _problem("over the account's rate limit; retry after Retry-After", retry=True),
    503: _problem(
        "standby node, a node at its limit of requests in flight (busy), or a component"
        " (database, etcd, journal) not available; retry after"
        " Retry-After (`retry_after_ms`: the finer hint), or, while manual clearance is in"
        " force, present the cargo documents at the boundary",
        retry=True,
    ),
}

PATH_PARAMETERS: dict[tuple[str, str], Schema] = {
    ("/v1/registrations/", "id"): {"type": "string", "format": "uuid"},
    ("/v1/accounts/", "id"): {"type": "integer", "minimum": 1, "maximum": 10**18 - 1},
    ("/v1/bundles/", "id"): {"type": "integer", "minimum": 1, "maximum": 10**18 - 1},
    ("/v1/risk-rules/", "id"): {"type": "integer", "minimum": 1, "maximum": 10**18 - 1},
    ("/v1/lbcp/", "code"): LBCP,
    ("/v1/", "ccrn"): CCRN,
}


def _path_parameters(path: str) -> list[Schema]:
    out = []
    for name in ("id", "ccrn", "code"):
        if "{" + name + "}" not in path:
            continue
        schema = next(
            s for (prefix, n), s in PATH_PARAMETERS.items() if n == name and path.startswith(prefix)
        )
        out.append({"name": name, "in": "path", "required": True, "schema": schema})
    return out


IDEMPOTENCY_KEY: Schema = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "description": "a repeat with the same key and request answers the first answer again"
    " (`Idempotent-Replayed: true`); the same key with another request is 422",
    "schema": {"type": "string", "minLength": 1, "maxLength": 200, "pattern": "^[!-~]+$"},
}


def _tighten(schema: Schema) -> Schema:
    """What the handlers check beyond the models: LBCP codes are the known ones, CCRNs are
    16 digits (their check digit is checked too, answered 422)."""
    for name, prop in schema.get("properties", {}).items():
        if name == "lbcp":
            _replace(prop, LBCP)
        elif name in ("lbcps", "ccrns"):
            items = _items(prop)
            if items is not None:
                _replace(items, LBCP if name == "lbcps" else CCRN)
    return schema


def _items(prop: Schema) -> Schema | None:
    if prop.get("type") == "array":
        items: Schema = prop["items"]
        return items
    for alt in prop.get("anyOf", []):
        if alt.get("type") == "array":
            found: Schema = alt["items"]
            return found
    return None


def _replace(prop: Schema, new: Schema) -> None:
    if "anyOf" in prop:  # Optional[...]: tighten the non-null branch
        for alt in prop["anyOf"]:
            if alt.get("type") == "string":
                alt.clear()
                alt.update(new)
        return
    title = prop.get("title")
    prop.clear()
    prop.update(new)
    if title:
        prop["title"] = title


def _model_schema(model: type[BaseModel], components: dict[str, Schema]) -> Schema:
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
    for name, sub in schema.pop("$defs", {}).items():
        components[name] = _tighten(sub)
    components[model.__name__] = _tighten(schema)
    return ref(model.__name__)


def _request_body(op: Op, components: dict[str, Schema]) -> Schema | None:
    if op.body is None:
        return None
    if op.body == "batch":
        item = _model_schema(schemas.ConsignmentIn, components)
        return {
            "required": True,
            "content": {
                JSON: {
                    "schema": {
                        "type": "array",
                        "minItems": 1,
                        "maxItems": MAX_BATCH_ITEMS,
                        "items": item,
                    }
                },
                "text/csv": {
                    "schema": {
                        "type": "string",
                        "description": "UTF-8 CSV; the header row names the fields",
                    }
                },
            },
        }
    assert not isinstance(op.body, str)
    return {
        "required": not op.optional_body,
        "content": {JSON: {"schema": _model_schema(op.body, components)}},
    }


def _statuses(op: Op) -> list[int]:
    codes = set(op.errors)
    if op.roles:
        codes |= set(AUTHENTICATED)
    if op.body is not None:
        codes |= {400, 413, 422}
    if op.method in ("post", "patch", "delete"):
        codes.add(413)  # the body is read (and capped) even when the route takes none
    if op.write:
        codes |= {400, 422, 503}  # Idempotency-Key; standby or database down
    if op.keyed:
        codes |= {400, 422}  # Idempotency-Key invalid, or reused with another request
    if "{" in op.path:
        codes |= {404, 422}
    if op.query:
        codes.add(422)
    return sorted(codes)


def _operation(op: Op, components: dict[str, Schema]) -> Schema:
    params = _path_parameters(op.path) + list(op.query)
    if op.write or op.keyed:
        params.append(IDEMPOTENCY_KEY)
    responses: dict[str, Schema] = {}
    for status, (description, schema) in sorted(op.ok.items()):
        responses[str(status)] = {
            "description": description,
            "content": {JSON: {"schema": schema}},
        }
        if status in op.links:
            responses[str(status)]["links"] = op.links[status]
    for status in _statuses(op):
        responses[str(status)] = {"$ref": f"#/components/responses/Problem{status}"}
    out: Schema = {
        "operationId": op.operation_id,
        "summary": op.summary,
        "x-rocars-roles": list(op.roles),
        "parameters": params,
        "responses": responses,
    }
    allowed = ", ".join(op.roles) if op.roles else "anyone (no API key)"
    out["description"] = f"Allowed for: {allowed}. {op.description}".strip()
    if op.roles:
        out["security"] = [{"apiKey": []}]
    body = _request_body(op, components)
    if body is not None:
        out["requestBody"] = body
    return out


def _health(summary: str, schema_name: str, operation_id: str) -> Schema:
    answer = {HEALTH_JSON: {"schema": ref(schema_name)}}
    return {
        "operationId": operation_id,
        "summary": summary,
        "x-rocars-roles": [],
        "responses": {
            "200": {"description": "pass (or warn)", "content": answer},
            "503": {"description": "fail", "content": answer},
        },
    }


def _plain_routes() -> dict[str, dict[str, Schema]]:
    """Probes, metrics and this document: public, not under /v1."""
    return {
        "/health/live": {
            "get": _health(
                "Liveness: the node's role loop is running (HAProxy and the supervisor ask)",
                "Liveness",
                "healthLive",
            )
        },
        "/health/ready": {
            "get": _health(
                "Readiness: live and the active node (takes writes)", "Readiness", "healthReady"
            )
        },
        "/health": {
            "get": _health(
                "Everything the node knows about its role, the cluster, Redis and the mode",
                "Health",
                "health",
            )
        },
        "/metrics": {
            "get": {
                "operationId": "metrics",
                "summary": "Prometheus metrics",
                "x-rocars-roles": [],
                "responses": {
                    "200": {
                        "description": "Prometheus text exposition format",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    },
                    # Through HAProxy: a node at its connection limit (node.admission).
                    "503": {"$ref": "#/components/responses/Problem503"},
                },
            }
        },
        "/openapi.json": {
            "get": {
                "operationId": "openapi",
                "summary": "This document",
                "x-rocars-roles": [],
                "responses": {
                    "200": {
                        "description": "OpenAPI 3.1",
                        "content": {JSON: {"schema": {"type": "object"}}},
                    },
                    # Through HAProxy: a node at its connection limit (node.admission).
                    "503": {"$ref": "#/components/responses/Problem503"},
                },
            }
        },
    }


def build() -> dict[str, Any]:
    components: dict[str, Schema] = dict(RESPONSES)
    paths: dict[str, dict[str, Schema]] = _plain_routes()
    for op in OPERATIONS:
        paths.setdefault(op.path, {})[op.method] = _operation(op, components)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "rocars e-ACI API",
            "version": "1",
            "description": "Road-cargo e-ACI service. Errors are RFC 9457 problem documents."
            " Every GET also answers HEAD. `x-rocars-roles` on each operation lists the"
            " account kinds allowed (empty: no API key needed). Known LBCP codes: "
            + ", ".join(LBCPS)
            + ".",
        },
        "paths": paths,
        "components": {
            "schemas": components,
            "responses": {f"Problem{status}": p for status, p in PROBLEMS.items()},
            "securitySchemes": {
                "apiKey": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "the API key an approval answers: `Authorization: Bearer"
                    " rk_...`",
                }
            },
        },
    }


async def openapi(request: web.Request) -> web.Response:
    return web.json_response(build())


def add_routes(app: web.Application) -> None:
    app.router.add_get("/openapi.json", openapi)
