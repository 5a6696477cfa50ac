"""#10 item 6: /openapi.json describes every route the node serves, exactly, and is itself a
valid OpenAPI 3.1 document (checked against the OpenAPI meta-schema that schemathesis ships)."""

from __future__ import annotations

import copy
import re
from typing import Any

import jsonschema_rs
import pytest
import schemathesis
from handler_fakes import Fakes
from problem_checks import Client
from route_table import ROUTES

from node.api.openapi import build
from node.web import is_web_page

METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
ERRORS_FOR_EVERY_KEYED_ROUTE = {"400", "401", "403", "429", "503"}


def operations(doc: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {
        (method.upper(), path): op
        for path, item in doc["paths"].items()
        for method, op in item.items()
        if method in METHODS
    }


def served(fakes: Fakes) -> set[tuple[str, str]]:
    """(method, template) of every route of the real app; HEAD is aiohttp's twin of each GET,
    which the document states once for all. The web pages (node.web) are not the API's."""
    app = fakes.app()
    routes = {
        (r.method, r.resource.canonical)
        for r in app.router.routes()
        if r.resource is not None and not is_web_page(r)
    }
    heads = {(m, p) for m, p in routes if m == "HEAD"}
    assert heads == {("HEAD", p) for m, p in routes if m == "GET"}
    return routes - heads


def resolve(doc: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        target: Any = doc
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        node = target
    return node


def test_every_served_route_is_documented_and_nothing_else(fakes: Fakes) -> None:
    """#10 item 6: each route/method the app's router serves has an operation in the document,
    and the document names no route the app does not serve."""
    documented = set(operations(build()))
    routes = served(fakes)
    assert routes - documented == set(), "served but not documented"
    assert documented - routes == set(), "documented but not served"


def test_the_document_is_valid_openapi_3_1() -> None:
    """#10 item 6: the document passes the OpenAPI 3.1 meta-schema, and a broken one does not
    (so the validation really runs)."""
    doc = build()
    schemathesis.openapi.from_dict(copy.deepcopy(doc)).validate()
    broken = copy.deepcopy(doc)
    broken["paths"]["/v1/status"]["get"]["responses"] = "none"
    with pytest.raises(jsonschema_rs.ValidationError, match="none"):
        schemathesis.openapi.from_dict(broken).validate()


def test_every_reference_resolves_and_every_link_names_an_operation() -> None:
    """#10 item 6: no dangling $ref; each OpenAPI link (used by the fuzzer's stateful runs)
    targets an existing operationId, with a parameter that operation has; operationIds are
    unique."""
    doc = build()
    text = repr(doc)
    for target in set(re.findall(r"'\$ref': '([^']+)'", text)):
        resolve(doc, {"$ref": target})
    ops = operations(doc)
    ids = [op["operationId"] for op in ops.values()]
    assert len(ids) == len(set(ids))
    params = {
        op["operationId"]: {p["name"] for p in op.get("parameters", [])} for op in ops.values()
    }
    for op in ops.values():
        for response in op["responses"].values():
            for link in response.get("links", {}).values():
                assert link["operationId"] in params, link
                assert set(link["parameters"]) <= params[link["operationId"]], link


def test_path_parameters_are_typed_precisely() -> None:
    """#10 item 6: CCRNs are 16 digits, registration ids UUIDs, other ids integers, LBCP codes
    the known ones; every {name} in a path is declared, required."""
    for (method, path), op in operations(build()).items():
        declared = {p["name"]: p for p in op.get("parameters", []) if p["in"] == "path"}
        assert set(declared) == set(re.findall(r"{(\w+)}", path)), (method, path)
        for name, p in declared.items():
            schema = p["schema"]
            assert p["required"] is True
            if name == "ccrn":
                assert schema["pattern"] == "^[0-9]{16}$"
            elif path.startswith("/v1/registrations/"):
                assert schema["format"] == "uuid"
            elif name == "id":
                assert schema["type"] == "integer"
            else:
                assert "LMC" in schema["enum"]


def test_roles_security_and_error_answers_go_together() -> None:
    """#10 item 6: an operation for some account kinds requires the bearer key and documents
    400/401/403/429/503 (429 and 503 with Retry-After) as problem+json; a public one does
    neither; every answer has a media type, problems carry `errors[{field, message}]`."""
    doc = build()
    assert doc["components"]["securitySchemes"]["apiKey"] == {
        **doc["components"]["securitySchemes"]["apiKey"],
        "type": "http",
        "scheme": "bearer",
    }
    problem = doc["components"]["schemas"]["Problem"]
    assert problem["properties"]["errors"]["items"]["required"] == ["field", "message"]
    for key, op in operations(doc).items():
        roles = op["x-rocars-roles"]
        codes = set(op["responses"])
        if roles:
            assert op["security"] == [{"apiKey": []}], key
            assert codes >= ERRORS_FOR_EVERY_KEYED_ROUTE, key
            for code in ("429", "503"):
                answer = resolve(doc, op["responses"][code])
                assert answer["headers"]["Retry-After"]["required"] is True
        else:
            assert "security" not in op, key
            assert "401" not in codes, key
        for code, answer in op["responses"].items():
            content = resolve(doc, answer)["content"]
            assert content, (key, code)
            if int(code) >= 400 and key[1].startswith("/v1/"):
                assert set(content) == {"application/problem+json"}, (key, code)


def test_bodies_are_the_models_and_the_batch_takes_json_and_csv() -> None:
    """#10 item 6: every route the handler tests send a JSON body to has a request body schema
    (413 and 400 documented); the batch takes a JSON array of at most 10,000 consignments, or
    CSV."""
    doc = build()
    ops = operations(doc)
    for route in ROUTES:
        if route.body is None:
            continue
        op = ops[route.key]
        assert "application/json" in op["requestBody"]["content"], route.key
        assert {"400", "413", "422"} <= set(op["responses"]), route.key
    batch = ops[("POST", "/v1/consignments:batch")]["requestBody"]["content"]
    assert batch["application/json"]["schema"]["maxItems"] == 10_000
    assert batch["application/json"]["schema"]["items"] == {
        "$ref": "#/components/schemas/ConsignmentIn"
    }
    assert batch["text/csv"]["schema"]["type"] == "string"


def test_the_manual_clearance_documents_its_idempotency_key() -> None:
    """#14 item 3: recording a manual clearance takes Idempotency-Key (the header every write
    of node.writes documents, with 400 for a bad one and 422 for one reused), so a client and
    the fuzzer send it."""
    doc = build()
    op = operations(doc)[("POST", "/v1/contingency/clearances")]
    (param,) = [p for p in op["parameters"] if p["name"] == "Idempotency-Key"]
    write = operations(doc)[("POST", "/v1/consignments")]
    assert param in write["parameters"]
    assert {"400", "422"} <= set(op["responses"])
    assert "Idempotent-Replayed" in op["description"]


async def test_the_served_document_is_the_built_one(client: Client) -> None:
    """#10 item 6: GET /openapi.json answers this document as application/json."""
    async with client.get("/openapi.json") as resp:
        assert resp.status == 200
        assert resp.content_type == "application/json"
        assert await resp.json() == build()
