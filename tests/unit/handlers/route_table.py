"""Every route of the node, as the tests expect it to behave: who may call it, a valid request
(path values and body), and what it answers when it cannot write or the database is down.
`test_every_route_is_in_the_table` fails when a route is added without a row here."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from kernel.domain.ccrn import make_ccrn

NOW_PLUS_2H = "2030-01-07T10:00:00Z"  # conftest.NOW + 2 hours: inside the advance window
CCRN = make_ccrn(1)
LBCP = "LMC"
REG_ID = "0f6a8e1c-3c55-4f7e-9b1e-4a2f0d6c7b11"

CONSIGNMENT = {
    "direction": "import",
    "lbcp": LBCP,
    "package_count": 2,
    "package_description": "cartons",
    "article_description": "garments",
    "consignor_name": "Shenzhen Textiles",
    "consignor_address": "1 Road, Shenzhen",
    "consignee_name": "HK Retail Ltd",
    "consignee_address": "2 Street, Kowloon",
    "expected_at": NOW_PLUS_2H,
}


@dataclass(frozen=True)
class Route:
    method: str
    template: str
    # Account kinds allowed; empty: public (no Authorization needed).
    roles: frozenset[str] = frozenset()
    # A valid body (JSON-encoded unless bytes); None: the route takes no body.
    body: Any = None
    # A field of the body and a value of the wrong type for it.
    wrong_type: tuple[str, Any] | None = None
    path: dict[str, str] = field(default_factory=dict)
    # Path parameter -> a malformed value.
    bad_path: dict[str, str] = field(default_factory=dict)
    write: bool = False  # refused by a standby node (503 + Retry-After)
    database: bool = False  # needs the database for a valid request
    # Status on a standby node / with the database down, when not the plain 503.
    standby_status: int = 503
    outage_status: int = 503

    @property
    def key(self) -> tuple[str, str]:
        return self.method, self.template

    @property
    def url(self) -> str:
        out = self.template
        for name, value in self.path.items():
            out = out.replace("{" + name + "}", value)
        return out

    def url_with(self, name: str, value: str) -> str:
        return Route(self.method, self.template, path={**self.path, name: value}).url

    @property
    def json_body(self) -> bool:
        return self.body is not None and not isinstance(self.body, bytes)

    def data(self) -> bytes | None:
        if self.body is None:
            return None
        return self.body if isinstance(self.body, bytes) else json.dumps(self.body).encode()


OFFICER = frozenset({"officer"})
TRADER = frozenset({"trader"})
TRUCKER = frozenset({"trucker"})
CCRN_PATH = {"ccrn": CCRN}
BAD_CCRN = {"ccrn": "1234"}
BUNDLE_PATH = {"id": "7"}
BAD_ID = {"id": "x7"}

ROUTES: tuple[Route, ...] = (
    # Health, metrics, documents: public, no database.
    Route("GET", "/health/live"),
    Route("GET", "/health/ready"),
    Route("GET", "/health"),
    Route("GET", "/metrics"),
    Route("GET", "/openapi.json"),
    Route("GET", "/v1/status"),
    Route("GET", "/v1/contingency"),
    # Registration and accounts.
    Route(
        "POST",
        "/v1/registrations",
        body={
            "kind": "trucker",
            "name": "Fast Trucks Ltd",
            "brn": "12345678",
            "contact": {"email": "ops@fast.example"},
        },
        wrong_type=("name", 42),
        write=True,
        database=True,
    ),
    Route("GET", "/v1/registrations", OFFICER, database=True),
    Route(
        "POST",
        "/v1/registrations/{id}/approve",
        OFFICER,
        body={},
        wrong_type=("reason", 42),
        path={"id": REG_ID},
        bad_path={"id": "not-a-uuid"},
        write=True,
        database=True,
    ),
    Route(
        "POST",
        "/v1/registrations/{id}/reject",
        OFFICER,
        body={"reason": "incomplete documents"},
        wrong_type=("reason", ["x"]),
        path={"id": REG_ID},
        bad_path={"id": "not-a-uuid"},
        write=True,
        database=True,
    ),
    Route(
        "POST",
        "/v1/accounts/{id}/suspend",
        OFFICER,
        path={"id": "3"},
        bad_path=BAD_ID,
        write=True,
        database=True,
    ),
    Route(
        "POST",
        "/v1/accounts/{id}/reinstate",
        OFFICER,
        path={"id": "3"},
        bad_path=BAD_ID,
        write=True,
        database=True,
    ),
    Route(
        "PUT",
        "/v1/accounts/me/phone-pin",
        TRUCKER,
        body={"pin": "246810"},
        wrong_type=("pin", 246810),
        write=True,
        database=True,
    ),
    # Consignments.
    Route(
        "POST",
        "/v1/consignments",
        TRADER,
        body=CONSIGNMENT,
        wrong_type=("package_count", "two"),
        write=True,
        database=True,
    ),
    Route(
        "POST",
        "/v1/consignments:batch",
        TRADER,
        body=[CONSIGNMENT],
        write=True,
        database=True,
    ),
    Route("GET", "/v1/consignments", TRADER, database=True),
    Route(
        "GET",
        "/v1/consignments/{ccrn}",
        TRADER | OFFICER,
        path=CCRN_PATH,
        bad_path=BAD_CCRN,
        database=True,
    ),
    Route(
        "GET",
        "/v1/consignments/{ccrn}/history",
        TRADER | OFFICER,
        path=CCRN_PATH,
        bad_path=BAD_CCRN,
        database=True,
    ),
    Route(
        "PATCH",
        "/v1/consignments/{ccrn}",
        TRADER,
        body={"package_count": 3},
        wrong_type=("package_count", "3"),
        path=CCRN_PATH,
        bad_path=BAD_CCRN,
        write=True,
        database=True,
    ),
    Route(
        "DELETE",
        "/v1/consignments/{ccrn}",
        TRADER,
        path=CCRN_PATH,
        bad_path=BAD_CCRN,
        write=True,
        database=True,
    ),
    Route(
        "DELETE",
        "/v1/consignments/{ccrn}/bundle",
        TRADER,
        path=CCRN_PATH,
        bad_path=BAD_CCRN,
        write=True,
        database=True,
    ),
    Route(
        "POST",
        "/v1/consignments/{ccrn}/selection",
        OFFICER,
        body={"action": "select", "reason": "tip-off"},
        wrong_type=("action", True),
        path=CCRN_PATH,
        bad_path=BAD_CCRN,
        write=True,
        database=True,
    ),
    # Bundles and the gate.
    Route(
        "POST",
        "/v1/bundles",
        TRUCKER,
        body={"vrn": "AB1234", "lbcp": LBCP, "ccrns": [CCRN]},
        wrong_type=("empty", "yes"),
        write=True,
        database=True,
    ),
    Route(
        "GET",
        "/v1/bundles/{id}",
        TRUCKER | OFFICER,
        path=BUNDLE_PATH,
        bad_path=BAD_ID,
        database=True,
    ),
    Route(
        "DELETE",
        "/v1/bundles/{id}",
        TRUCKER,
        path=BUNDLE_PATH,
        bad_path=BAD_ID,
        write=True,
        database=True,
    ),
    Route(
        "POST",
        "/v1/bundles/{id}/inspection",
        OFFICER,
        body={"result": "cleared"},
        wrong_type=("result", 1),
        path=BUNDLE_PATH,
        bad_path=BAD_ID,
        write=True,
        database=True,
    ),
    Route(
        "POST",
        "/v1/lbcp/{code}/arrivals",
        OFFICER,
        body={"vrn": "AB1234"},
        wrong_type=("vrn", 1234),
        path={"code": LBCP},
        bad_path={"code": "NOPE"},
        write=True,
        database=True,
    ),
    # Risk rules and selections.
    Route("GET", "/v1/risk-rules", OFFICER, database=True),
    Route(
        "POST",
        "/v1/risk-rules",
        OFFICER,
        body={"kind": "keyword", "value": "ivory"},
        wrong_type=("active", "yes"),
        write=True,
        database=True,
    ),
    Route(
        "PATCH",
        "/v1/risk-rules/{id}",
        OFFICER,
        body={"active": False},
        wrong_type=("active", "no"),
        path={"id": "5"},
        bad_path=BAD_ID,
        write=True,
        database=True,
    ),
    Route("GET", "/v1/selections", OFFICER, database=True),
    # ITFS.
    Route("GET", "/v1/itfs/{ccrn}", OFFICER, path=CCRN_PATH, bad_path=BAD_CCRN, database=True),
    Route(
        "POST",
        "/v1/itfs/{ccrn}/airport-inspections",
        OFFICER,
        path=CCRN_PATH,
        bad_path=BAD_CCRN,
        write=True,
        database=True,
    ),
    # Manual clearance: works without the database (I4); only switching it off needs one.
    Route(
        "POST",
        "/v1/contingency/activate",
        OFFICER,
        body={"reason": "database down at both sites"},
        wrong_type=("lbcps", "LMC"),
        standby_status=200,  # audited to the node's journal
        outage_status=200,
    ),
    Route(
        "POST",
        "/v1/contingency/deactivate",
        OFFICER,
        body={"reason": "database back"},
        wrong_type=("reason", 1),
        write=True,
        database=True,
    ),
    Route(
        "POST",
        "/v1/contingency/clearances",
        OFFICER,
        body={"lbcp": LBCP, "vrn": "AB1234", "decision": "release", "documents": ["invoice"]},
        wrong_type=("documents", "invoice"),
        standby_status=202,  # recorded in the node's journal
        outage_status=202,
    ),
)

BY_KEY = {r.key: r for r in ROUTES}
PUBLIC = tuple(r for r in ROUTES if not r.roles)
AUTHENTICATED = tuple(r for r in ROUTES if r.roles)
WITH_JSON_BODY = tuple(r for r in ROUTES if r.json_body)
WITH_PATH = tuple(r for r in ROUTES if r.bad_path)
WRITES = tuple(r for r in ROUTES if r.write or r.standby_status != 503)
NEEDS_DATABASE = tuple(r for r in ROUTES if r.database or r.outage_status != 503)


def rid(route: Route) -> str:
    return f"{route.method} {route.template}"
