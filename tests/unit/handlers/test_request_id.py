"""#13 item 5: every answer carries X-Request-Id (the client's when sane, else a new one), and
the request's access line and every line logged while it is handled carry that id, and its
account once authenticated, in the node's JSON format; in process, on the real app factory."""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Iterator
from typing import Any

import pytest
from aiohttp import web
from handler_fakes import Fakes, operational_error
from problem_checks import PROBLEM_JSON, AiohttpClient, Answer, Client, call
from route_table import BY_KEY

from kernel.redact import install
from monitoring import logs

STATUS = BY_KEY[("GET", "/v1/status")]
ONE = BY_KEY[("GET", "/v1/consignments/{ccrn}")]
HEX32 = re.compile(r"[0-9a-f]{32}")


class Lines:
    """The JSON lines the node wrote, parsed."""

    def __init__(self, out: io.StringIO) -> None:
        self.out = out

    def all(self) -> list[dict[str, Any]]:
        return [json.loads(x) for x in self.out.getvalue().splitlines()]

    def access(self) -> list[dict[str, Any]]:
        return [x for x in self.all() if x["logger"] == "rocars.access"]


@pytest.fixture
def lines() -> Iterator[Lines]:
    """The root logger also writes the node's JSON lines (INFO and up) to a string, through
    the credential filter, as `rocars serve` configures it."""
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(logs.JsonFormatter("A"))
    root = logging.getLogger()
    root.addHandler(handler)
    install(root)
    level = root.level
    root.setLevel(logging.INFO)
    try:
        yield Lines(out)
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


def _rid(answer: Answer) -> str:
    """The answer's X-Request-Id (header names are case-insensitive)."""
    return next(v for k, v in answer.headers.items() if k.lower() == "x-request-id")


def _account_id(fakes: Fakes, kind: str) -> int:
    return next(s.account.id for s in fakes.accounts.by_prefix.values() if s.account.kind == kind)


async def test_a_sane_client_id_is_returned_and_logged(client: Client, lines: Lines) -> None:
    """#13 item 5: the client's X-Request-Id comes back unchanged and names the request's one
    access line, which has the route template, method, status and duration."""
    answer = await call(client, STATUS, headers={"X-Request-Id": "trace-42/abc"})
    assert answer.status == 200
    assert _rid(answer) == "trace-42/abc"
    [line] = lines.access()
    assert line["request_id"] == "trace-42/abc"
    assert line["route"] == "/v1/status"
    assert line["method"] == "GET"
    assert line["status"] == 200
    assert isinstance(line["duration_ms"], float)
    assert line["duration_ms"] >= 0
    assert line["site"] == "A"
    assert line["node"] == "node-A"
    assert "account_id" not in line  # not authenticated


async def test_without_an_id_each_request_gets_a_new_one(client: Client, lines: Lines) -> None:
    """#13 item 5: no X-Request-Id: a new uuid4 hex per request, returned and logged."""
    first = await call(client, STATUS)
    second = await call(client, STATUS)
    ids = [_rid(first), _rid(second)]
    assert all(HEX32.fullmatch(x) for x in ids), ids
    assert ids[0] != ids[1]
    assert [x["request_id"] for x in lines.access()] == ids


@pytest.mark.parametrize(
    "sent",
    [
        "x" * 129,  # too long
        "two words",  # a space
        "",
        "rk_0badcafe_Zq3-x_9AbCdEfGhIjKlMnOpQrStUvWx",  # a credential, never echoed
    ],
)
async def test_an_insane_id_is_replaced(client: Client, lines: Lines, sent: str) -> None:
    """#13 item 5: an X-Request-Id that is too long, not visible ASCII, empty or holding a
    credential is replaced by a new one, in the answer and in the log."""
    answer = await call(client, STATUS, headers={"X-Request-Id": sent})
    rid = _rid(answer)
    assert HEX32.fullmatch(rid), rid
    assert [x["request_id"] for x in lines.access()] == [rid]
    assert "Zq3-x" not in lines.out.getvalue()


async def test_the_longest_sane_id_is_kept(client: Client) -> None:
    """#13 item 5: 128 visible ASCII characters are kept as they are."""
    sent = "a!~" * 42 + "zz"
    answer = await call(client, STATUS, headers={"X-Request-Id": sent})
    assert _rid(answer) == sent


@pytest.mark.parametrize(
    ("method", "url", "status"),
    [
        ("GET", "/v1/consignments/none", 401),  # no credentials
        ("GET", "/no/such/route", 404),
        ("PUT", "/v1/status", 405),
    ],
)
async def test_problem_answers_carry_the_id(
    client: Client, lines: Lines, method: str, url: str, status: int
) -> None:
    """#13 item 5: 4xx problem+json answers (raised in handlers, or aiohttp's own 404/405)
    carry the request id; unmatched paths are logged under one route label, not the path."""
    answer = await call(
        client, STATUS, method=method, url=url, data=None, headers={"X-Request-Id": "req-4xx"}
    )
    assert answer.status == status
    assert answer.content_type == PROBLEM_JSON
    assert _rid(answer) == "req-4xx"
    [line] = lines.access()
    assert (line["status"], line["request_id"]) == (status, "req-4xx")
    if status != 401:
        assert line["route"] == "unmatched"


async def test_a_503_and_the_lines_logged_while_handling_it_carry_id_and_account(
    fakes: Fakes, client: Client, lines: Lines
) -> None:
    """#13 item 5: an authenticated request the database cannot answer (503 problem+json):
    the answer has the id; the warning logged while handling it and the access line both
    carry the id and the account id, never the key."""
    fakes.pool.error = operational_error
    headers = {**fakes.auth("trader"), "X-Request-Id": "req-503"}
    answer = await call(client, ONE, headers=headers)
    assert answer.status == 503
    assert _rid(answer) == "req-503"
    mine = [x for x in lines.all() if x.get("request_id") == "req-503"]
    assert {x["logger"] for x in mine} >= {"rocars.http", "rocars.access"}, mine
    assert all(x["account_id"] == _account_id(fakes, "trader") for x in mine), mine
    assert fakes.keys["trader"] not in lines.out.getvalue()


async def test_a_500_carries_the_id_and_its_traceback_line_too(
    fakes: Fakes, client: Client, lines: Lines
) -> None:
    """#13 item 5: an unexpected exception (a bug: 500 problem+json) is answered with the id,
    and its logged traceback (`exc`) is on a line with the same id."""
    fakes.pool.error = lambda: RuntimeError("a bug")
    headers = {**fakes.auth("trader"), "X-Request-Id": "req-500"}
    answer = await call(client, ONE, headers=headers)
    assert answer.status == 500
    assert _rid(answer) == "req-500"
    [bug] = [x for x in lines.all() if "exc" in x]
    assert bug["request_id"] == "req-500"
    assert "RuntimeError: a bug" in bug["exc"]


async def test_lines_logged_after_the_middleware_keep_the_id(
    fakes: Fakes, aiohttp_client: AiohttpClient, lines: Lines
) -> None:
    """#13 item 5: what is logged about a request after the middleware has returned (here
    while its answer is prepared; aiohttp logs a failed write there) still carries its id."""
    app = fakes.app()

    async def late(_request: web.Request, _response: web.StreamResponse) -> None:
        logging.getLogger("rocars.test").warning("preparing the answer")

    app.on_response_prepare.append(late)
    client = await aiohttp_client(app)
    await call(client, STATUS, headers={"X-Request-Id": "req-late"})
    [line] = [x for x in lines.all() if x["logger"] == "rocars.test"]
    assert line["request_id"] == "req-late"
