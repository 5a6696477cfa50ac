"""#10 item 3: a NUL anywhere in a request (JSON strings however deeply nested, query and path
parameters) is a 422 naming where it was, answered before any database access: PostgreSQL's
text and jsonb cannot hold U+0000, and the driver's refusal used to be a 500."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

import pytest
from handler_fakes import Fakes
from problem_checks import Client, assert_problem, call
from route_table import BY_KEY, WITH_JSON_BODY, WITH_PATH, Route, rid

NUL = "\x00"


def _string_leaves(value: Any, loc: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    if isinstance(value, str):
        yield loc
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _string_leaves(item, (*loc, str(i)))
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _string_leaves(item, (*loc, key))


def _with_nul(value: Any, loc: tuple[str, ...]) -> Any:
    if not loc:
        return value[:1] + NUL + value[1:]  # inside the text, so trimming cannot remove it
    head, *rest = loc
    if isinstance(value, list):
        i = int(head)
        return [*value[:i], _with_nul(value[i], tuple(rest)), *value[i + 1 :]]
    return {**value, head: _with_nul(value[head], tuple(rest))}


def _caller(fakes: Fakes, route: Route) -> dict[str, str]:
    return fakes.auth(sorted(route.roles)[0]) if route.roles else {}


# Each object-bodied route's valid body with a NUL put into each of its strings in turn, plus
# bodies with nested strings the table's valid bodies do not have.
EXTRA_BODIES = {
    ("POST", "/v1/consignments"): {
        **BY_KEY[("POST", "/v1/consignments")].body,
        "itfs": {"airport": "HKG", "flight": "CX123"},
    },
    ("POST", "/v1/contingency/clearances"): {
        "lbcp": "LMC",
        "vrn": "AB1234",
        "decision": "release",
        "documents": ["invoice", "manifest", "packing list"],
    },
    ("POST", "/v1/registrations"): {
        "kind": "trucker",
        "name": "Fast Trucks Ltd",
        "brn": "12345678",
        "contact": {"email": "ops@fast.example", "phone": "+852 1234 5678"},
    },
    ("POST", "/v1/contingency/activate"): {"reason": "down", "message": "present documents"},
}
CASES = [
    pytest.param(route, body, loc, id=f"{rid(route)} {'.'.join(loc)}")
    for route in WITH_JSON_BODY
    if isinstance(route.body, dict)
    for body in (route.body, EXTRA_BODIES.get(route.key))
    if body is not None
    for loc in _string_leaves(body)
]


def test_the_cases_reach_nested_strings() -> None:
    """The parametrisation below covers list items and nested objects, not only top-level
    fields (so the clearance documents, contact fields and ITFS are in it)."""
    named = {c.id for c in CASES}
    for case in ("documents.2", "contact.email", "contact.phone", "itfs.flight", "ccrns.0"):
        assert any(n.endswith(f" {case}") for n in named), case  # type: ignore[union-attr]


@pytest.mark.parametrize(("route", "body", "loc"), CASES)
async def test_a_nul_in_any_body_string_is_422_naming_it(
    fakes: Fakes, client: Client, route: Route, body: dict[str, Any], loc: tuple[str, ...]
) -> None:
    """#10 item 3: a NUL in any string of a request body, nested ones included (clearance
    `documents.2`, `contact.email`, `itfs.flight`), is 422 naming that string, never a 500, and
    the database is not touched."""
    data = json.dumps(_with_nul(body, loc)).encode()
    answer = await call(client, route, headers=_caller(fakes, route), data=data)
    assert_problem(answer, 422, field=".".join(loc))
    assert fakes.pool.attempts == 0


async def test_a_nul_in_a_json_key_is_422(fakes: Fakes, client: Client) -> None:
    """#10 item 3: a NUL in a field name is an unknown field (422), not a 500."""
    route = BY_KEY[("POST", "/v1/contingency/clearances")]
    data = json.dumps({**route.body, "doc\x00uments": ["x"]}).encode()
    answer = await call(client, route, headers=fakes.auth("officer"), data=data)
    assert_problem(answer, 422)
    assert fakes.pool.attempts == 0


def _cursor_with_nul() -> str:
    return base64.urlsafe_b64encode(b"2030-01-07T08:00:00+00:00|0000\x0000001").decode()


@pytest.mark.parametrize(
    ("key", "query", "field"),
    [
        (("GET", "/v1/consignments"), "status=%00", "status"),
        (("GET", "/v1/consignments"), "status=submitted%00", "status"),
        (("GET", "/v1/consignments"), "since=%00", "since"),
        (("GET", "/v1/consignments"), "limit=1%00", "limit"),
        (("GET", "/v1/consignments"), f"cursor={_cursor_with_nul()}", "cursor"),
        (("GET", "/v1/consignments"), "cursor=%00", "cursor"),
        (("GET", "/v1/registrations"), "status=pending%00", "status"),
        (("GET", "/v1/selections"), "lbcp=LMC%00", "lbcp"),
    ],
)
async def test_a_nul_in_a_query_parameter_is_422_naming_it(
    fakes: Fakes, client: Client, key: tuple[str, str], query: str, field: str
) -> None:
    """#10 item 3: query parameters that would reach the database refuse a NUL with a 422
    naming the parameter, before any database access."""
    route = BY_KEY[key]
    answer = await call(client, route, headers=_caller(fakes, route), url=f"{route.url}?{query}")
    assert_problem(answer, 422, field=field)
    assert fakes.pool.attempts == 0


@pytest.mark.parametrize("route", WITH_PATH, ids=rid)
async def test_a_nul_in_a_path_parameter_is_422_naming_it(
    fakes: Fakes, client: Client, route: Route
) -> None:
    """#10 item 3: a NUL (%00) in a path parameter is 422 naming it, before any database
    access."""
    ((name, _),) = route.bad_path.items()
    good = route.path[name]
    url = route.url_with(name, f"{good[:2]}%00{good[2:]}")
    answer = await call(client, route, headers=_caller(fakes, route), url=url)
    assert_problem(answer, 422, field=name)
    assert fakes.pool.attempts == 0
