"""The JSON Schemas of what the node answers (components of /openapi.json, built in
node.api.openapi). Objects stay open (`additionalProperties` unrestricted): a write answered
while manual clearance is in force carries an extra `mode` member, and problem documents carry
extension members (RFC 9457)."""

from __future__ import annotations

from typing import Any

from kernel.domain.ccrn import CCRN_LENGTH
from kernel.domain.lbcp import DEFAULT_LBCPS

CCRN_PATTERN = f"^[0-9]{{{CCRN_LENGTH}}}$"
LBCPS = sorted(DEFAULT_LBCPS)
CONSIGNMENT_STATUSES = ["submitted", "bundled", "cleared", "detained", "cancelled"]
REGISTRATION_STATUSES = ["pending", "approved", "rejected"]

JsonSchema = dict[str, Any]


def ref(name: str) -> JsonSchema:
    return {"$ref": f"#/components/schemas/{name}"}


def obj(
    required: dict[str, JsonSchema], optional: dict[str, JsonSchema] | None = None
) -> JsonSchema:
    """An object with these members (all of `required` always present)."""
    return {
        "type": "object",
        "required": sorted(required),
        "properties": {**required, **(optional or {})},
    }


def nullable(schema: JsonSchema) -> JsonSchema:
    return {"anyOf": [schema, {"type": "null"}]}


def array(items: JsonSchema) -> JsonSchema:
    return {"type": "array", "items": items}


STRING: JsonSchema = {"type": "string"}
INTEGER: JsonSchema = {"type": "integer"}
BOOLEAN: JsonSchema = {"type": "boolean"}
NUMBER: JsonSchema = {"type": "number"}
OBJECT: JsonSchema = {"type": "object"}
TIME: JsonSchema = {"type": "string", "format": "date-time"}
CCRN: JsonSchema = {"type": "string", "pattern": CCRN_PATTERN}
LBCP: JsonSchema = {"type": "string", "enum": LBCPS}

_CONSIGNMENT_FIELDS: dict[str, JsonSchema] = {
    "ccrn": CCRN,
    "status": {"type": "string", "enum": CONSIGNMENT_STATUSES},
    "version": {"type": "integer", "minimum": 1},
    "direction": {"type": "string", "enum": ["import", "export"]},
    "lbcp": STRING,
    "package_count": INTEGER,
    "package_description": STRING,
    "article_description": STRING,
    "consignor_name": STRING,
    "consignor_address": STRING,
    "consignee_name": STRING,
    "consignee_address": STRING,
    "expected_at": TIME,
    "itfs": nullable(OBJECT),
    "submitted_at": TIME,
    "last_changed_at": TIME,
}
_OFFICER_FIELDS: dict[str, JsonSchema] = {
    "selected": BOOLEAN,
    "selection_reasons": array(STRING),
    "lbcp_outcome": nullable({"type": "string", "enum": ["released", "inspected"]}),
}
_BUNDLE_FIELDS: dict[str, JsonSchema] = {
    "id": INTEGER,
    "vrn": STRING,
    "lbcp": STRING,
    "empty": BOOLEAN,
    "status": {"type": "string", "enum": ["open", "inspecting", "closed", "cancelled"]},
    "ccrns": array(CCRN),
    "instruction": {"type": "string", "enum": ["cross_now", "cross_after"]},
    "not_before": TIME,
    "created_at": TIME,
}
_BUNDLE_OFFICER_FIELDS: dict[str, JsonSchema] = {
    "selected": BOOLEAN,
    "reasons": array(STRING),
    "outcome": nullable({"type": "string", "enum": ["released", "inspected"]}),
}
_REGISTRATION_FIELDS: dict[str, JsonSchema] = {
    "id": {"type": "string", "format": "uuid"},
    "kind": {"type": "string", "enum": ["trader", "trucker"]},
    "trader_kind": nullable({"type": "string", "enum": ["shipper", "forwarder", "agent"]}),
    "name": STRING,
    "brn": STRING,
    "contact": OBJECT,
    "status": {"type": "string", "enum": REGISTRATION_STATUSES},
    "reason": nullable(STRING),
    "created_at": TIME,
    "decided_at": nullable(TIME),
}
_CONTINGENCY_FIELDS: dict[str, JsonSchema] = {
    "mode": {"type": "string", "enum": ["normal", "manual"]},
    "since": nullable(TIME),
    "lbcps": array(STRING),
    "message": STRING,
    "switched_by": nullable(STRING),
    "reason": nullable(STRING),
    "local_override": nullable(OBJECT),
    "recent_changes": array(OBJECT),
    "recommendation": obj({"manual_recommended": BOOLEAN, "reason": STRING}),
    "etcd_reachable": BOOLEAN,
    "node": STRING,
}
_PROPAGATION_FIELDS: dict[str, JsonSchema] = {
    "audited_to": {"type": "string", "enum": ["database", "journal"]},
    "nodes": {"type": "object", "additionalProperties": STRING},
    "not_applied": array(STRING),
}
_HEALTH_STATUS: JsonSchema = {"type": "string", "enum": ["pass", "warn", "fail"]}

PROBLEM: JsonSchema = {
    "type": "object",
    "description": "RFC 9457 problem details; `errors` names every offending field. Extension"
    " members: `retry_after_ms` (the finer retry hint), `mode`/`since` (manual clearance in"
    " force), `limit_per_s`/`retry_after_s` (rate limit), `instance` (the request path).",
    "required": ["type", "title", "status", "detail"],
    "properties": {
        "type": STRING,
        "title": STRING,
        "status": {"type": "integer", "minimum": 400, "maximum": 599},
        "detail": STRING,
        "instance": STRING,
        "errors": array(obj({"field": STRING, "message": STRING})),
        "retry_after_ms": INTEGER,
    },
}

RESPONSES: dict[str, JsonSchema] = {
    "Problem": PROBLEM,
    "Consignment": obj(_CONSIGNMENT_FIELDS),
    "ConsignmentForOfficer": obj({**_CONSIGNMENT_FIELDS, **_OFFICER_FIELDS}),
    "ConsignmentRevoked": obj({**_CONSIGNMENT_FIELDS, "revoked_from_bundle": INTEGER}),
    "ConsignmentPage": obj({"items": array(ref("Consignment")), "next_cursor": nullable(STRING)}),
    "ConsignmentHistory": obj(
        {
            "ccrn": CCRN,
            "versions": array(
                obj(
                    {
                        "version": INTEGER,
                        "data": OBJECT,
                        "changed_at": TIME,
                        "changed_by": INTEGER,
                    }
                )
            ),
        }
    ),
    "BatchResult": obj(
        {
            "accepted": {"type": "integer", "minimum": 0},
            "rejected": {"type": "integer", "minimum": 0},
            "results": array(
                {
                    "oneOf": [
                        obj({"index": INTEGER, "ccrn": CCRN}),
                        obj({"index": INTEGER, "errors": PROBLEM["properties"]["errors"]}),
                    ]
                }
            ),
        }
    ),
    "Bundle": obj(_BUNDLE_FIELDS),
    "BundleForOfficer": obj({**_BUNDLE_FIELDS, **_BUNDLE_OFFICER_FIELDS}),
    "InspectionResult": obj(
        {
            **_BUNDLE_FIELDS,
            **_BUNDLE_OFFICER_FIELDS,
            "result": {"type": "string", "enum": ["cleared", "detained"]},
            "notes": nullable(STRING),
        }
    ),
    "GateDecision": obj(
        {
            "lbcp": STRING,
            "vrn": STRING,
            "decision": {"type": "string", "enum": ["release", "inspect", "hold", "manual"]},
            "reason": STRING,
            "at": TIME,
        },
        {
            "until": nullable(TIME),
            "bundle_id": nullable(INTEGER),
            "ccrns": array(CCRN),
            "mode": STRING,
            "since": nullable(TIME),
        },
    ),
    "Registration": obj(_REGISTRATION_FIELDS),
    "RegistrationList": obj({"items": array(ref("Registration"))}),
    "Approval": obj(
        {
            **_REGISTRATION_FIELDS,
            "account_id": INTEGER,
            # The key is shown once; a replay of the approval says it was issued instead.
            "api_key": nullable(STRING),
        },
        {"api_key_issued": BOOLEAN},
    ),
    "AccountStatus": obj(
        {
            "id": INTEGER,
            "kind": {"type": "string", "enum": ["trader", "trucker", "officer", "sre"]},
            "name": STRING,
            "status": {"type": "string", "enum": ["active", "suspended"]},
        }
    ),
    "RiskRule": obj(
        {
            "id": INTEGER,
            "kind": {
                "type": "string",
                "enum": ["keyword", "pattern", "consignor", "consignee", "vrn", "random"],
            },
            "value": STRING,
            "lbcp": nullable(STRING),
            "active": BOOLEAN,
            "created_at": TIME,
        }
    ),
    "RiskRuleList": obj({"items": array(ref("RiskRule"))}),
    "Selections": obj(
        {
            "consignments": array(
                obj({**_CONSIGNMENT_FIELDS, **_OFFICER_FIELDS, "vrn": nullable(STRING)})
            ),
            "trucks": array(
                obj(
                    {
                        "bundle_id": INTEGER,
                        "vrn": STRING,
                        "lbcp": STRING,
                        "status": STRING,
                        "not_before": TIME,
                        "reasons": array(STRING),
                    }
                )
            ),
        }
    ),
    "ItfsStatus": obj(
        {
            "ccrn": CCRN,
            "itfs": nullable(OBJECT),
            "status": {"type": "string", "enum": CONSIGNMENT_STATUSES},
            "lbcp_outcome": nullable(STRING),
            "inspected_at_lbcp": BOOLEAN,
            "airport_inspected": BOOLEAN,
            "airport_inspection_allowed": BOOLEAN,
            "message": STRING,
        }
    ),
    "ContingencyState": obj(_CONTINGENCY_FIELDS),
    "ContingencyChange": obj({**_CONTINGENCY_FIELDS, **_PROPAGATION_FIELDS}),
    "ContingencyDeactivation": obj(
        {**_CONTINGENCY_FIELDS, **_PROPAGATION_FIELDS, "reconciliation": ref("Reconciliation")}
    ),
    # contingency.reconcile.ReconcileReport.as_dict: what the journals held and what became
    # of it; `set_aside` lists records PostgreSQL refused (kept in the journal, with the reason).
    "Reconciliation": obj(
        {
            "journals": array(STRING),
            "imported": INTEGER,
            "already_imported": INTEGER,
            "matched": INTEGER,
            "unmatched": array(OBJECT),
            "audit_imported": INTEGER,
            "set_aside": array(
                obj({"journal": STRING, "uuid": STRING, "kind": STRING, "reason": STRING})
            ),
        }
    ),
    "ClearanceStored": obj(
        {"uuid": {"type": "string", "format": "uuid"}, "stored": {"const": "database"}}
    ),
    "ClearanceJournaled": obj(
        {
            "uuid": {"type": "string", "format": "uuid"},
            "stored": {"const": "journal"},
            "detail": STRING,
        }
    ),
    "Liveness": obj({"status": _HEALTH_STATUS}, {"role_loop_age_s": nullable(NUMBER)}),
    "Readiness": obj({"status": _HEALTH_STATUS, "role": STRING, "reason": STRING}),
    "Health": obj(
        {
            "status": _HEALTH_STATUS,
            "serviceId": STRING,
            "site": STRING,
            "role": STRING,
            "ready": BOOLEAN,
            "reason": STRING,
            "contingency": OBJECT,
            "redis": OBJECT,
            "checks": {"type": "object", "additionalProperties": array(OBJECT)},
        }
    ),
}
