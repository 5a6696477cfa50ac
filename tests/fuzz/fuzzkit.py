"""Helpers of the schemathesis fuzz run (#10 Tests): which key each operation is called with,
what undoes an operation that would sabotage the run, how the live document is loaded, and
the tally of requests sent. Fixtures live in conftest.py next to this module."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import requests
import schemathesis
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.specs.openapi.schemas import OpenApiSchema

# The checks every answer must pass: no 5xx, a documented status, a documented media type,
# a body that fits its schema, documented required headers (Retry-After on 429 and 503).
CHECKS = [
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_schema_conformance",
    "response_headers_conformance",
]


@dataclass(frozen=True)
class FuzzAccount:
    id: int
    kind: str
    key: str


@dataclass
class Tally:
    """Requests sent, by operation and by status, over the whole session."""

    by_operation: Counter[str] = field(default_factory=Counter)
    by_status: Counter[int] = field(default_factory=Counter)
    by_operation_status: Counter[tuple[str, int]] = field(default_factory=Counter)

    def add(self, label: str, status: int) -> None:
        self.by_operation[label] += 1
        self.by_status[status] += 1
        self.by_operation_status[(label, status)] += 1

    @property
    def total(self) -> int:
        return sum(self.by_operation.values())

    def lines(self) -> list[str]:
        out = [f"fuzz requests: {self.total}"]
        out.append("statuses: " + ", ".join(f"{s}: {n}" for s, n in sorted(self.by_status.items())))
        for label, n in sorted(self.by_operation.items()):
            statuses = sorted(
                (s, c) for (op, s), c in self.by_operation_status.items() if op == label
            )
            out.append(f"  {n:6d}  {label}  (" + ", ".join(f"{s}: {c}" for s, c in statuses) + ")")
        return out


TALLY = Tally()


@dataclass(frozen=True)
class Caller:
    """What the tests need to send a case as the right account and undo what would sabotage
    the run."""

    entry: str
    accounts: dict[str, FuzzAccount]
    session: requests.Session

    def headers_for(self, case: schemathesis.Case) -> dict[str, str]:
        """The key of the first account kind the operation allows (none for public ones)."""
        roles = case.operation.definition.raw.get("x-rocars-roles", [])
        return {"Authorization": f"Bearer {self.accounts[roles[0]].key}"} if roles else {}

    def restore_normal_mode(self) -> None:
        """Switch manual clearance off again (with reconciliation), as an officer would."""
        officer = {"Authorization": f"Bearer {self.accounts['officer'].key}"}
        r = self.session.post(
            f"{self.entry}/v1/contingency/deactivate",
            json={"reason": "fuzz run restores normal mode"},
            headers=officer,
            timeout=30,
        )
        assert r.status_code == 200, (r.status_code, r.text)
        status = self.session.get(f"{self.entry}/v1/status", timeout=10).json()
        assert status["mode"] == "normal", status

    def after(self, case: schemathesis.Case, response: schemathesis.Response) -> None:
        TALLY.add(case.operation.label, response.status_code)
        if case.operation.label == "POST /v1/contingency/activate" and response.status_code == 200:
            self.restore_normal_mode()


def _protect_own_accounts(schema: OpenApiSchema, ids: set[int]) -> None:
    """Never let the officer suspend (or reinstate) the fuzzer's own accounts."""

    @schema.hook
    def filter_path_parameters(context: Any, path_parameters: dict[str, Any]) -> bool:
        op = context.operation
        if op is None or not op.path.startswith("/v1/accounts/") or not path_parameters:
            return True  # (`/v1/accounts/me/...` has no id)
        try:
            return int(path_parameters.get("id")) not in ids
        except (TypeError, ValueError):
            return True


def _in_window(item: Any) -> Any:
    if isinstance(item, dict) and "expected_at" in item:
        at = datetime.now(UTC) + timedelta(hours=2)
        return {**item, "expected_at": at.isoformat()}
    return item


def _reach_valid_consignments(schema: OpenApiSchema) -> None:
    """Generated times almost never fall in the advance window (30 min to 14 days ahead), so
    consignments would never be stored and the CCRN links never followed: half the bodies of
    the two submit operations get an expected_at two hours ahead, the other half stay as
    generated."""

    @schema.hook
    def flatmap_body(context: Any, body: Any) -> st.SearchStrategy[Any]:
        op = context.operation
        if op is None or op.method.upper() != "POST" or not op.path.startswith("/v1/consignments"):
            return st.just(body)
        moved = [_in_window(b) for b in body] if isinstance(body, list) else _in_window(body)
        return st.sampled_from([body, moved])


def load_schema(entry_url: str, accounts: dict[str, FuzzAccount], ca: str) -> OpenApiSchema:
    """The live document, set up for the run: base URL (HTTPS, checked against the system's
    CA bundle `ca`), both generation modes, the checks."""
    schema = schemathesis.openapi.from_url(
        f"{entry_url}/openapi.json", wait_for_schema=30, verify=ca
    )
    schema.config.update(base_url=entry_url, request_timeout=60, tls_verify=ca)
    schema.config.generation.update(
        modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE],
        with_security_parameters=False,
        database="none",
    )
    schema.config.checks.update(included_check_names=CHECKS)
    _protect_own_accounts(schema, {a.id for a in accounts.values()})
    _reach_valid_consignments(schema)
    return schema
