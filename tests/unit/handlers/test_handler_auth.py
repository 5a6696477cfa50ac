"""Authentication through the account store seam: the short cache, the key cache when the
database is down (officers must still be able to switch manual mode on, I4), and the rate
limit that fails open when Redis is gone."""

from __future__ import annotations

from handler_fakes import Fakes, operational_error
from problem_checks import AiohttpClient, Client, assert_problem, call
from route_table import BY_KEY

from failover.role_rule import RoleFacts
from node import appkeys, background

ACTIVATE = BY_KEY[("POST", "/v1/contingency/activate")]
RULES = BY_KEY[("GET", "/v1/risk-rules")]


async def _fill_keycache(fakes: Fakes, client: Client) -> None:
    keycache = client.app[appkeys.KEYCACHE]
    assert await background.refresh_keycache_once(fakes.accounts, keycache) == len(
        fakes.accounts.by_prefix
    )


async def test_a_known_key_is_looked_up_once_then_cached(fakes: Fakes, client: Client) -> None:
    """Within the cache's lifetime a key is checked against the store once, not per request."""
    fakes.pool.error = operational_error  # activation audits to the journal
    for _ in range(3):
        answer = await call(client, ACTIVATE, headers=fakes.auth("officer"))
        assert answer.status == 200, answer
    assert fakes.accounts.lookups == 1


async def test_a_key_with_a_known_prefix_but_wrong_secret_is_401(
    fakes: Fakes, client: Client
) -> None:
    """The prefix only finds the row; the whole key's hash must match."""
    key = fakes.keys["officer"]
    forged = key[:-4] + ("AAAA" if not key.endswith("AAAA") else "BBBB")
    answer = await call(client, ACTIVATE, headers={"Authorization": f"Bearer {forged}"})
    assert_problem(answer, 401, field="Authorization")
    assert answer.body["detail"] == "the API key is not valid"


async def test_with_the_database_down_an_officer_in_the_key_cache_can_switch_manual_mode_on(
    fakes: Fakes, client: Client
) -> None:
    """The store failing (database down) sends authentication to the node's key cache; an
    officer found there activates manual mode."""
    await _fill_keycache(fakes, client)
    fakes.accounts.down = True
    fakes.pool.error = operational_error
    answer = await call(client, ACTIVATE, headers=fakes.auth("officer"))
    assert answer.status == 200, answer
    assert answer.body["audited_to"] == "journal"
    assert answer.body["mode"] == "manual"
    assert fakes.accounts.lookups == 1  # tried the database first


async def test_with_the_database_down_a_key_not_in_the_cache_is_refused(
    fakes: Fakes, client: Client
) -> None:
    """A key the key cache cannot verify is refused, never waved through because the database
    could not be asked: as unavailable (503 with Retry-After, so a client retries), not as an
    invalid key (401, which a client takes as final although the key may be good)."""
    await _fill_keycache(fakes, client)
    late_key, _ = fakes.accounts.add("officer")  # created after the cache was written
    fakes.accounts.down = True
    answer = await call(client, ACTIVATE, headers={"Authorization": f"Bearer {late_key}"})
    assert_problem(answer, 503)
    assert answer.headers["Retry-After"]
    assert "key cache" in answer.body["detail"]


async def test_a_suspended_account_in_the_key_cache_is_refused(
    fakes: Fakes, client: Client
) -> None:
    """The key cache verifies active accounts only: a suspended account's key is refused
    while the database is down (as unverifiable, 503)."""
    key, _ = fakes.accounts.add("officer", status="suspended")
    await _fill_keycache(fakes, client)
    fakes.accounts.down = True
    answer = await call(client, ACTIVATE, headers={"Authorization": f"Bearer {key}"})
    assert_problem(answer, 503)


async def test_when_patroni_says_postgresql_is_stopped_the_store_is_not_asked(
    fakes: Fakes, client: Client
) -> None:
    """The local Patroni reporting its PostgreSQL stopped sends authentication straight to the
    key cache: no request waits for a pool timeout to find the database down."""
    await _fill_keycache(fakes, client)
    fakes.role.facts = RoleFacts("pg-A", "replica", "stopped", "pg-B", True)
    fakes.role.set("standby")
    answer = await call(client, ACTIVATE, headers=fakes.auth("officer"))
    assert answer.status == 200, answer
    assert fakes.accounts.lookups == 0


async def test_with_redis_down_requests_pass_unchecked_and_are_counted(
    fakes: Fakes, client: Client
) -> None:
    """Redis unreachable: the rate limit fails open (the request is served) and
    rocars_rate_limit_fail_open_total counts it."""
    fakes.redis.down = True
    fakes.pool.error = operational_error
    answer = await call(client, RULES, headers=fakes.auth("officer"))
    assert answer.status == 503  # got past authentication and the limit to the database
    registry = client.app[appkeys.METRICS].registry
    assert registry.get_sample_value("rocars_rate_limit_fail_open_total") == 1.0
    assert fakes.redis.counted == []


async def test_every_authenticated_request_is_counted_against_its_account(
    fakes: Fakes, client: Client
) -> None:
    """The limit counts per account id, once per request."""
    for _ in range(2):
        await call(client, ACTIVATE, headers=fakes.auth("officer"))
    officer = fakes.accounts.by_prefix[fakes.keys["officer"].split("_")[1]].account
    assert fakes.redis.counted == [officer.id, officer.id]


async def test_a_limit_of_zero_switches_the_rate_limit_off(
    fakes: Fakes, aiohttp_client: AiohttpClient
) -> None:
    """rate_limit_per_s 0: Redis is not asked at all."""
    fakes.pool.error = operational_error
    client = await aiohttp_client(fakes.app(rate_limit_per_s=0))
    answer = await call(client, ACTIVATE, headers=fakes.auth("officer"))
    assert answer.status == 200, answer
    assert fakes.redis.counted == []
