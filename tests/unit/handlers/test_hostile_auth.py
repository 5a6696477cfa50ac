"""Hostile credentials and what every answer says about itself, in process (issue #10): a bearer
that is not printable ASCII is a 401 (never a 500), a repeated wrong key costs one store lookup,
and every answer carries nosniff, no-store where it matters and no aiohttp/Python banner."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any

import pytest
from handler_fakes import Fakes, operational_error
from problem_checks import PROBLEM_JSON, Client, assert_problem, call
from route_table import AUTHENTICATED, BY_KEY, Route, rid

from node import appkeys, auth, background
from node.account import Account
from node.ratelimit import RateDecision
from node.stores import StoredAccount

ACTIVATE = BY_KEY[("POST", "/v1/contingency/activate")]
STATUS = BY_KEY[("GET", "/v1/status")]
LIVE = BY_KEY[("GET", "/health/live")]

# Raw bytes after "Bearer ": what aiohttp hands over as surrogate-escaped text (a lone Latin-1
# byte, bytes that are not UTF-8 after a key's prefix), real UTF-8, and the one control byte
# HTTP lets through in a header value (a tab; the parser refuses the others before any route).
HOSTILE_BEARERS = {
    "latin1-byte": b"\xe9",
    "invalid-utf8-after-prefix": b"rk_deadbeef_\xff\xfe",
    "utf8-e-acute": b"rk_deadbeef_caf\xc3\xa9",
    "tab-inside": b"rk_deadbeef_ab\tcd",
}


@dataclass(frozen=True)
class RawAnswer:
    status: int
    headers: dict[str, str]
    body: Any


async def raw_call(client: Client, route: Route, authorization: bytes) -> RawAnswer:
    """`route` with its valid body and an Authorization header of exactly these bytes (an HTTP
    client library would refuse to send them)."""
    assert client.server.port is not None
    body = route.data() or b""
    head = (
        f"{route.method} {route.url} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
    ).encode()
    reader, writer = await asyncio.open_connection("127.0.0.1", client.server.port)
    try:
        writer.write(head + b"Authorization: Bearer " + authorization + b"\r\n\r\n" + body)
        await writer.drain()
        raw = await reader.read()
    finally:
        writer.close()
        await writer.wait_closed()
    head_bytes, _, payload = raw.partition(b"\r\n\r\n")
    status_line, *lines = head_bytes.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return RawAnswer(int(status_line.split()[1]), headers, json.loads(payload) if payload else None)


@pytest.mark.parametrize("bearer", HOSTILE_BEARERS.values(), ids=HOSTILE_BEARERS.keys())
@pytest.mark.parametrize("route", AUTHENTICATED, ids=rid)
async def test_a_bearer_that_is_not_printable_ascii_is_401_naming_authorization(
    fakes: Fakes, client: Client, route: Route, bearer: bytes
) -> None:
    """#10 item 3: a non-ASCII byte (or a tab) in the bearer is a 401 problem naming
    Authorization on every authenticated route, never a 500, and nobody is asked about it."""
    answer = await raw_call(client, route, bearer)
    assert answer.status == 401, answer
    assert answer.headers["content-type"].startswith(PROBLEM_JSON), answer
    assert answer.body["detail"] == "an API key is printable ASCII only", answer
    assert [e["field"] for e in answer.body["errors"]] == ["Authorization"]
    assert answer.headers["www-authenticate"].startswith("Bearer")
    assert fakes.accounts.lookups == 0


def _unknown_key() -> str:
    key, _, _ = auth.new_api_key()
    return key


async def test_a_repeated_wrong_key_costs_one_lookup(fakes: Fakes, client: Client) -> None:
    """#10 item 5: a well-formed key the store does not know, sent again and again, is looked
    up once; so is a known prefix with a wrong secret."""
    wrong = _unknown_key()
    officer = fakes.keys["officer"]
    forged = officer[:-4] + ("AAAA" if not officer.endswith("AAAA") else "BBBB")
    for key in (wrong, forged):
        before = fakes.accounts.lookups
        for _ in range(20):
            answer = await call(client, ACTIVATE, headers={"Authorization": f"Bearer {key}"})
            assert_problem(answer, 401, field="Authorization")
            assert answer.body["detail"] == "the API key is not valid"
        assert fakes.accounts.lookups == before + 1


async def test_a_remembered_miss_lasts_miss_ttl_s_then_the_new_key_works(
    fakes: Fakes, client: Client
) -> None:
    """#10 item 5: a key that reaches the node's database after it was refused (an approval
    not yet replicated) is refused for at most MISS_TTL_S, then works."""
    fakes.pool.error = operational_error  # activation audits to the journal
    key, prefix, digest = auth.new_api_key()
    headers = {"Authorization": f"Bearer {key}"}
    assert_problem(await call(client, ACTIVATE, headers=headers), 401, field="Authorization")
    fakes.accounts.by_prefix[prefix] = StoredAccount(
        Account(99, "officer", "new", "active"), digest
    )
    assert_problem(await call(client, ACTIVATE, headers=headers), 401, field="Authorization")
    assert fakes.accounts.lookups == 1
    client.app[appkeys.MISSED_KEYS][digest] -= auth.MISS_TTL_S  # the lifetime has passed
    answer = await call(client, ACTIVATE, headers=headers)
    assert answer.status == 200, answer
    assert fakes.accounts.lookups == 2


async def test_a_miss_from_the_key_cache_is_not_remembered(fakes: Fakes, client: Client) -> None:
    """#10 item 5: with the database down, a key missing from the on-disk key cache is refused
    (as unverifiable: 503, retry) but not remembered, so it works as soon as the database
    answers again."""
    fakes.pool.error = operational_error
    await background.refresh_keycache_once(fakes.accounts, client.app[appkeys.KEYCACHE])
    late_key, _ = fakes.accounts.add("officer")  # approved after the key cache was written
    headers = {"Authorization": f"Bearer {late_key}"}
    fakes.accounts.down = True
    answer = await call(client, ACTIVATE, headers=headers)
    assert_problem(answer, 503)
    assert "key cache" in answer.body["detail"]
    assert len(client.app[appkeys.MISSED_KEYS]) == 0
    fakes.accounts.down = False
    assert (await call(client, ACTIVATE, headers=headers)).status == 200


async def test_remembered_misses_are_bounded(
    fakes: Fakes, client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """#10 item 5: a flood of distinct wrong keys keeps at most MISS_CAPACITY digests, the
    oldest going first."""
    monkeypatch.setattr(auth, "MISS_CAPACITY", 3)
    keys = [_unknown_key() for _ in range(5)]
    for key in keys:
        await call(client, ACTIVATE, headers={"Authorization": f"Bearer {key}"})
    missed = client.app[appkeys.MISSED_KEYS]
    assert list(missed) == [auth.hash_key(k) for k in keys[2:]]
    await call(client, ACTIVATE, headers={"Authorization": f"Bearer {keys[0]}"})
    assert fakes.accounts.lookups == 6  # the evicted one was asked about again


def _assert_safe_headers(headers: dict[str, str], *, no_store: bool) -> None:
    assert headers.get("X-Content-Type-Options") == "nosniff", headers
    assert headers.get("Server") == "rocars", headers
    if no_store:
        assert headers.get("Cache-Control") == "no-store", headers


async def test_a_successful_v1_answer_is_not_stored_nor_sniffed(
    fakes: Fakes, client: Client
) -> None:
    """#10 items 4 and 6: an authenticated success, and every /v1 answer, say no-store and
    nosniff, and the Server header names no library or version."""
    fakes.pool.error = operational_error
    answer = await call(client, ACTIVATE, headers=fakes.auth("officer"))
    assert answer.status == 200, answer
    _assert_safe_headers(answer.headers, no_store=True)
    status = await call(client, STATUS)
    assert status.status == 200, status
    _assert_safe_headers(status.headers, no_store=True)
    live = await call(client, LIVE)
    _assert_safe_headers(live.headers, no_store=False)


async def test_problem_404_and_429_answers_are_not_stored_nor_sniffed(
    fakes: Fakes, client: Client
) -> None:
    """#10 items 4 and 6: a 401, a 404 outside /v1 and a 429 carry no-store, nosniff and the
    plain Server value."""
    unauthorized = await call(client, ACTIVATE, headers={"Authorization": "Bearer nope"})
    assert_problem(unauthorized, 401)
    _assert_safe_headers(unauthorized.headers, no_store=True)
    missing = await call(client, LIVE, url="/no/such/page")
    assert_problem(missing, 404)
    _assert_safe_headers(missing.headers, no_store=True)
    fakes.redis.decision = RateDecision(False, 1001.0, 1000, 2, 1500)
    limited = await call(client, ACTIVATE, headers=fakes.auth("officer"))
    assert_problem(limited, 429)
    _assert_safe_headers(limited.headers, no_store=True)


async def test_no_answer_names_aiohttp_or_python(client: Client) -> None:
    """#10 item 6: across answers of every kind (health, metrics, openapi, problems), the
    Server header is the constant `rocars`, which aiohttp does not overwrite."""
    for url in ("/health/live", "/health", "/metrics", "/openapi.json", "/v1/status", "/x"):
        async with client.get(url) as resp:
            await resp.read()
            assert resp.headers.getall("Server") == ["rocars"], (url, resp.headers)
            assert resp.headers["X-Content-Type-Options"] == "nosniff", url
