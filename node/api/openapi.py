"""The OpenAPI 3.1 document at /openapi.json, built from the same pydantic models that validate
requests, so the document cannot drift from what the service accepts."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from pydantic import BaseModel

from node import schemas
from node.api import contingency

PROBLEM = {"$ref": "#/components/schemas/Problem"}
# (method, path, summary, roles, request model, success status)
OPERATIONS: list[tuple[str, str, str, str, type[BaseModel] | None, int]] = [
    ("post", "/v1/registrations", "Apply for registration", "public", schemas.RegistrationIn, 201),
    ("get", "/v1/registrations", "List registrations by status", "officer", None, 200),
    (
        "post",
        "/v1/registrations/{id}/approve",
        "Approve; returns the API key once",
        "officer",
        schemas.DecisionIn,
        200,
    ),
    (
        "post",
        "/v1/registrations/{id}/reject",
        "Reject with a reason",
        "officer",
        schemas.DecisionIn,
        200,
    ),
    ("post", "/v1/accounts/{id}/suspend", "Suspend an account", "officer", None, 200),
    ("post", "/v1/accounts/{id}/reinstate", "Reinstate an account", "officer", None, 200),
    (
        "post",
        "/v1/consignments",
        "Submit cargo information; answers the CCRN",
        "trader",
        schemas.ConsignmentIn,
        201,
    ),
    (
        "post",
        "/v1/consignments:batch",
        "Submit up to 10,000 consignments (JSON array or CSV)",
        "trader",
        None,
        200,
    ),
    (
        "get",
        "/v1/consignments",
        "List own consignments (status, since, cursor, limit)",
        "trader",
        None,
        200,
    ),
    ("get", "/v1/consignments/{ccrn}", "Read a consignment", "trader, officer", None, 200),
    (
        "patch",
        "/v1/consignments/{ccrn}",
        "Amend any of the 8 cargo items",
        "trader",
        schemas.ConsignmentPatch,
        200,
    ),
    ("delete", "/v1/consignments/{ccrn}", "Cancel (the CCRN is never reused)", "trader", None, 200),
    ("get", "/v1/consignments/{ccrn}/history", "Every version", "trader, officer", None, 200),
    (
        "post",
        "/v1/consignments/{ccrn}/selection",
        "Select or release by hand",
        "officer",
        schemas.SelectionIn,
        200,
    ),
    ("post", "/v1/bundles", "Bundle CCRNs with a vehicle", "trucker", schemas.BundleIn, 201),
    ("get", "/v1/bundles/{id}", "Read a bundle", "trucker, officer", None, 200),
    ("delete", "/v1/bundles/{id}", "Cancel an open bundle", "trucker", None, 200),
    (
        "post",
        "/v1/bundles/{id}/inspection",
        "Record the inspection result",
        "officer",
        schemas.InspectionIn,
        200,
    ),
    (
        "post",
        "/v1/lbcp/{code}/arrivals",
        "Gate decision for an arriving truck",
        "officer",
        schemas.ArrivalIn,
        200,
    ),
    ("get", "/v1/risk-rules", "List risk rules", "officer", None, 200),
    ("post", "/v1/risk-rules", "Create a risk rule", "officer", schemas.RuleIn, 201),
    (
        "patch",
        "/v1/risk-rules/{id}",
        "Activate or deactivate a rule",
        "officer",
        schemas.RulePatch,
        200,
    ),
    (
        "get",
        "/v1/selections",
        "Consignments and trucks selected for inspection",
        "officer",
        None,
        200,
    ),
    ("get", "/v1/itfs/{ccrn}", "ITFS inspection status for the airport", "officer", None, 200),
    (
        "post",
        "/v1/itfs/{ccrn}/airport-inspections",
        "Record an airport inspection",
        "officer",
        None,
        201,
    ),
    # Manual clearance: these keep working while PostgreSQL is down (officers' keys are then
    # checked against the node's key cache). A mode change answers once every node applies it
    # (`nodes`: the mode each applies or "unreachable"; `not_applied`: who did not follow); 503
    # when etcd is unreachable.
    ("get", "/v1/status", "Public notice: the mode in force (no auth)", "public", None, 200),
    ("get", "/v1/contingency", "The same notice, for officers' consoles", "public", None, 200),
    (
        "post",
        "/v1/contingency/activate",
        "Switch manual clearance on (audited to the journal while PostgreSQL is down)",
        "officer",
        contingency.ActivateIn,
        200,
    ),
    (
        "post",
        "/v1/contingency/deactivate",
        "Reconcile the manual records, then switch manual clearance off (503 while the"
        " database is not writable: manual mode stays on)",
        "officer",
        contingency.DeactivateIn,
        200,
    ),
    (
        "post",
        "/v1/contingency/clearances",
        "Record a truck cleared by hand: 201 stored in PostgreSQL, 202 in the node's journal",
        "officer",
        contingency.ClearanceIn,
        201,
    ),
]


def build() -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    components: dict[str, Any] = {
        "Problem": {
            "type": "object",
            "description": "RFC 9457 problem details",
            "properties": {
                "type": {"type": "string"},
                "title": {"type": "string"},
                "status": {"type": "integer"},
                "detail": {"type": "string"},
                "errors": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {"field": {"type": "string"}, "message": {"type": "string"}},
                    },
                },
            },
        }
    }
    for method, path, summary, roles, model, ok in OPERATIONS:
        op: dict[str, Any] = {
            "summary": summary,
            "description": f"Allowed for: {roles}.",
            "parameters": [
                {
                    "name": "Idempotency-Key",
                    "in": "header",
                    "required": False,
                    "schema": {"type": "string", "maxLength": 200},
                }
            ]
            if method in ("post", "patch", "delete")
            else [],
            "responses": {
                str(ok): {"description": "success"},
                "4XX": {
                    "description": "problem",
                    "content": {"application/problem+json": {"schema": PROBLEM}},
                },
                "503": {
                    "description": "standby node, or a component (database, etcd, journal) not"
                    " available; retry after Retry-After (retry_after_ms: the finer hint), or,"
                    " in manual clearance mode, present the cargo documents at the boundary",
                    "content": {"application/problem+json": {"schema": PROBLEM}},
                },
            },
        }
        for name in ("id", "ccrn", "code"):
            if "{" + name + "}" in path:
                op["parameters"].append(
                    {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
                )
        if roles != "public":
            op["security"] = [{"apiKey": []}]
            op["responses"]["429"] = {
                "description": "over the account's rate limit; retry after Retry-After seconds",
                "content": {"application/problem+json": {"schema": PROBLEM}},
            }
        if model is not None:
            schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
            for k, v in schema.pop("$defs", {}).items():
                components[k] = v
            components[model.__name__] = schema
            op["requestBody"] = {
                "required": True,
                "content": {
                    "application/json": {
                        "schema": {"$ref": f"#/components/schemas/{model.__name__}"}
                    }
                },
            }
        paths.setdefault(path, {})[method] = op
    return {
        "openapi": "3.1.0",
        "info": {"title": "rocars e-ACI API", "version": "1"},
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {"apiKey": {"type": "http", "scheme": "bearer"}},
        },
    }


async def openapi(request: web.Request) -> web.Response:
    return web.json_response(build())


def add_routes(app: web.Application) -> None:
    app.router.add_get("/openapi.json", openapi)
