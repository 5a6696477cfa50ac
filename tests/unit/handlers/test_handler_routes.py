"""Every route's authentication, authorisation, input validation and outage answers, through
the real app in process (tests/unit/handlers/conftest.py): problem+json naming the field,
never a 500."""

from __future__ import annotations

import json

import pytest
from handler_fakes import KINDS, Fakes, operational_error, pool_timeout
from problem_checks import Client, assert_problem, call
from route_table import (
    AUTHENTICATED,
    BY_KEY,
    NEEDS_DATABASE,
    PUBLIC,
    ROUTES,
    WITH_JSON_BODY,
    WITH_PATH,
    WRITES,
    Route,
    rid,
)

from node.web import is_web_page

BAD_AUTHORIZATION = {
    "missing": None,
    "empty": "",
    "wrong scheme": "Basic dXNlcjpwYXNz",
    "bearer without key": "Bearer   ",
    "malformed key": "Bearer not-a-rocars-key",
    "unknown key": "Bearer rk_0badcafe_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
}


def test_every_route_is_in_the_table(fakes: Fakes) -> None:
    """The table the tests below run over names every route the app serves (HEAD aside, which
    aiohttp adds to each GET), and nothing the app does not serve. The web pages (node.web,
    tests/unit/handlers/test_web_pages.py) are not API routes."""
    app = fakes.app()
    served = {
        (r.method, r.resource.canonical)
        for r in app.router.routes()
        if r.resource is not None and r.method != "HEAD" and not is_web_page(r)
    }
    assert served == set(BY_KEY)


def test_documented_roles_are_the_enforced_ones() -> None:
    """The OpenAPI document says who may call each operation; it says what the table (and so
    the tests that enforce it) says."""
    from node.api.openapi import build

    paths = build()["paths"]
    for route in ROUTES:
        documented = frozenset(paths[route.template][route.method.lower()]["x-rocars-roles"])
        assert documented == route.roles, route.key


@pytest.mark.parametrize("route", [r for r in PUBLIC if not r.database], ids=rid)
async def test_public_routes_need_no_credentials(client: Client, route: Route) -> None:
    """Health, metrics, the API document and the public notice answer without a key."""
    answer = await call(client, route)
    assert answer.status == 200, answer


@pytest.mark.parametrize("what", BAD_AUTHORIZATION)
@pytest.mark.parametrize("route", AUTHENTICATED, ids=rid)
async def test_missing_or_invalid_credentials_are_401(
    client: Client, route: Route, what: str
) -> None:
    """Without a valid 'Authorization: Bearer <key>' every protected route answers 401
    problem+json naming Authorization, with a WWW-Authenticate challenge, before it looks at
    the body or the database."""
    value = BAD_AUTHORIZATION[what]
    headers = {} if value is None else {"Authorization": value}
    answer = await call(client, route, headers=headers)
    assert_problem(answer, 401, field="Authorization")
    assert answer.headers["WWW-Authenticate"].startswith("Bearer")


@pytest.mark.parametrize("route", AUTHENTICATED, ids=rid)
async def test_other_account_kinds_are_403(fakes: Fakes, client: Client, route: Route) -> None:
    """Every account kind the route is not for (sre included) gets 403 problem+json."""
    for kind in sorted(set(KINDS) - route.roles):
        answer = await call(client, route, headers=fakes.auth(kind))
        assert_problem(answer, 403)
        assert kind in answer.body["detail"]


@pytest.mark.parametrize("route", AUTHENTICATED, ids=rid)
async def test_a_suspended_account_is_403(fakes: Fakes, client: Client, route: Route) -> None:
    """A key of a suspended account is refused with 403, whatever the route."""
    kind = sorted(route.roles)[0]
    key, _ = fakes.accounts.add(kind, status="suspended")
    answer = await call(client, route, headers={"Authorization": f"Bearer {key}"})
    assert_problem(answer, 403)
    assert "suspended" in answer.body["detail"]


def _caller(fakes: Fakes, route: Route) -> dict[str, str]:
    return fakes.auth(sorted(route.roles)[0]) if route.roles else {}


@pytest.mark.parametrize(
    ("body", "status"),
    [
        pytest.param(b"{not json", 400, id="malformed"),
        pytest.param(b"", 400, id="empty"),
        pytest.param(b'{"a": "\xff"}', 400, id="not-utf8"),
        pytest.param(b"[" * 100_000 + b"]" * 100_000, 400, id="nested-too-deep"),
    ],
)
@pytest.mark.parametrize("route", WITH_JSON_BODY, ids=rid)
async def test_a_body_that_is_not_json_is_4xx_naming_body(
    fakes: Fakes, client: Client, route: Route, body: bytes, status: int
) -> None:
    """Malformed, empty, non-UTF-8 or hostile JSON is refused naming 'body'."""
    if body == b"" and route.template.startswith("/v1/registrations/{id}/"):
        pytest.skip("approval and rejection take an empty body (the reason is optional)")
    answer = await call(client, route, headers=_caller(fakes, route), data=body)
    assert_problem(answer, status, field="body")


@pytest.mark.parametrize("route", WITH_JSON_BODY, ids=rid)
async def test_a_body_of_the_wrong_json_type_is_422(
    fakes: Fakes, client: Client, route: Route
) -> None:
    """An array where an object is expected, or an object where the batch wants an array, is
    422 naming 'body'."""
    wrong = b'{"items": []}' if isinstance(route.body, list) else b"[1, 2]"
    answer = await call(client, route, headers=_caller(fakes, route), data=wrong)
    assert_problem(answer, 422, field="body")


@pytest.mark.parametrize("route", [r for r in WITH_JSON_BODY if isinstance(r.body, dict)], ids=rid)
async def test_unknown_fields_are_422_naming_them(
    fakes: Fakes, client: Client, route: Route
) -> None:
    """A field the operation does not know is refused (not ignored), named in `errors`."""
    data = json.dumps({**route.body, "surprise": 1}).encode()
    answer = await call(client, route, headers=_caller(fakes, route), data=data)
    assert_problem(answer, 422, field="surprise")


@pytest.mark.parametrize("route", [r for r in WITH_JSON_BODY if r.wrong_type], ids=rid)
async def test_wrong_types_are_422_naming_the_field(
    fakes: Fakes, client: Client, route: Route
) -> None:
    """A value of the wrong JSON type is 422 naming its field."""
    assert route.wrong_type is not None
    name, value = route.wrong_type
    data = json.dumps({**route.body, name: value}).encode()
    answer = await call(client, route, headers=_caller(fakes, route), data=data)
    assert_problem(answer, 422)
    assert any(f == name or f.startswith(f"{name}.") for f in answer.fields()), answer


@pytest.mark.parametrize("route", WITH_JSON_BODY, ids=rid)
async def test_an_oversized_body_is_413(fakes: Fakes, client: Client, route: Route) -> None:
    """More than the route's limit (1 MiB; 10 MiB for the batch) is 413 naming 'body'."""
    limit = 10 * 1024**2 if isinstance(route.body, list) else 1024**2
    data = b'{"reason": "' + b"x" * limit + b'"}'
    answer = await call(client, route, headers=_caller(fakes, route), data=data)
    assert_problem(answer, 413, field="body")


@pytest.mark.parametrize("route", WITH_PATH, ids=rid)
async def test_malformed_path_values_are_422_naming_them(
    fakes: Fakes, client: Client, route: Route
) -> None:
    """A malformed id, CCRN or LBCP code in the path is 422 naming the parameter, before any
    database lookup."""
    ((name, value),) = route.bad_path.items()
    answer = await call(
        client, route, headers=_caller(fakes, route), url=route.url_with(name, value)
    )
    assert_problem(answer, 422, field=name)
    assert fakes.pool.attempts == 0


@pytest.mark.parametrize("route", WRITES, ids=rid)
async def test_a_standby_refuses_writes_with_503_and_retry_after(
    fakes: Fakes, client: Client, route: Route
) -> None:
    """On the standby every write answers 503 problem+json with Retry-After, and never touches
    the database; manual clearance records and activation go to the node's journal instead."""
    fakes.role.set("standby")
    answer = await call(client, route, headers=_caller(fakes, route))
    if route.standby_status != 503:
        assert answer.status == route.standby_status, answer
        assert answer.body.get("stored", answer.body.get("audited_to")) == "journal", answer
    else:
        assert_problem(answer, 503)
        assert int(answer.headers["Retry-After"]) >= 1
    assert fakes.pool.attempts == 0
    assert answer.headers["X-Rocars-Role"] == "standby"


@pytest.mark.parametrize("error", [operational_error, pool_timeout], ids=["down", "pool-timeout"])
@pytest.mark.parametrize("route", NEEDS_DATABASE, ids=rid)
async def test_a_database_outage_is_503_never_500(
    fakes: Fakes, client: Client, route: Route, error: object
) -> None:
    """With the database unreachable (connection refused, or no pooled connection in time),
    every route that needs it answers 503 problem+json with Retry-After and the retry hint;
    the manual clearance routes that do not need it answer from the node's journal."""
    fakes.pool.error = error  # type: ignore[assignment]
    answer = await call(client, route, headers=_caller(fakes, route))
    assert fakes.pool.attempts >= 1
    if route.outage_status != 503:
        assert answer.status == route.outage_status, answer
        assert answer.body.get("stored", answer.body.get("audited_to")) == "journal", answer
        return
    assert_problem(answer, 503)
    assert int(answer.headers["Retry-After"]) >= 1
    assert answer.body.get("retry_after_ms", 0) > 0, answer


@pytest.mark.parametrize(
    "route",
    [r for r in NEEDS_DATABASE if r.write and r.template != "/v1/contingency/deactivate"],
    ids=rid,
)
async def test_an_outage_in_manual_mode_tells_users_to_present_documents(
    fakes: Fakes, client: Client, route: Route
) -> None:
    """While manual clearance is in force, a write that cannot reach the database says so:
    503 with mode 'manual' and the instruction to present documents at the boundary."""
    fakes.pool.error = operational_error
    activate = BY_KEY[("POST", "/v1/contingency/activate")]
    assert (await call(client, activate, headers=fakes.auth("officer"))).status == 200
    answer = await call(client, route, headers=_caller(fakes, route))
    if route.key == ("POST", "/v1/lbcp/{code}/arrivals"):
        # The gate answers "manual" itself, without the database.
        assert answer.status == 200, answer
        assert answer.body["decision"] == "manual"
        return
    assert_problem(answer, 503)
    assert answer.body.get("mode") == "manual", answer
    assert "present your cargo documents" in answer.body["detail"]


@pytest.mark.parametrize("route", AUTHENTICATED, ids=rid)
async def test_the_rate_limit_answers_429_with_retry_after(
    fakes: Fakes, client: Client, route: Route
) -> None:
    """An account over its limit gets 429 problem+json with Retry-After on every route."""
    from node.ratelimit import RateDecision

    fakes.redis.decision = RateDecision(False, 1001.0, 1000, 2, 1500)
    answer = await call(client, route, headers=_caller(fakes, route))
    assert_problem(answer, 429)
    assert answer.headers["Retry-After"] == "2"
    assert answer.body["retry_after_ms"] == 1500


async def test_unknown_paths_and_methods_are_problems(client: Client) -> None:
    """A path no route serves is 404, a method a route does not take is 405 with Allow; both
    as problem+json."""
    missing = await call(client, BY_KEY[("GET", "/health")], url="/v1/nothing-here")
    assert_problem(missing, 404)
    wrong = await call(client, BY_KEY[("GET", "/openapi.json")], method="DELETE")
    assert_problem(wrong, 405)
    assert "GET" in wrong.headers["Allow"]


@pytest.mark.parametrize("route", ROUTES, ids=rid)
async def test_every_answer_names_the_node_its_role_and_mode(
    fakes: Fakes, client: Client, route: Route
) -> None:
    """Whatever the outcome, the answer says which node answered, in which role and mode (the
    drills and the client read these through HAProxy)."""
    answer = await call(client, route, headers={})
    assert answer.headers["X-Rocars-Node"] == "A"
    assert answer.headers["X-Rocars-Role"] == "active"
    assert answer.headers["X-Rocars-Mode"] == "normal"


@pytest.mark.parametrize("route", [r for r in AUTHENTICATED if r.method == "GET"], ids=rid)
async def test_head_is_guarded_like_get(client: Client, route: Route) -> None:
    """aiohttp answers HEAD on every GET route: it is refused without credentials too."""
    answer = await call(client, route, method="HEAD")
    assert answer.status == 401
    assert answer.content_type == "application/problem+json"


async def test_an_etcd_outage_makes_switching_manual_mode_on_a_503(
    fakes: Fakes, client: Client
) -> None:
    """etcd unreachable: activation cannot be made cluster-wide and answers 503 problem+json
    with Retry-After (not a 409), pointing at the local override."""
    fakes.etcd.down = True
    answer = await call(
        client, BY_KEY[("POST", "/v1/contingency/activate")], headers=fakes.auth("officer")
    )
    assert_problem(answer, 503)
    assert "Retry-After" in answer.headers
    assert "--local" in answer.body["detail"]


async def test_a_blank_manual_mode_message_is_422_naming_it(fakes: Fakes, client: Client) -> None:
    """A message of blanks is invalid input (422 naming 'message'), not an outage."""
    route = BY_KEY[("POST", "/v1/contingency/activate")]
    data = json.dumps({**route.body, "message": "   "}).encode()
    answer = await call(client, route, headers=fakes.auth("officer"), data=data)
    assert_problem(answer, 422, field="message")
