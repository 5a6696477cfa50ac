"""API keys and roles. Keys are random and high-entropy, so a plain SHA-256 of the whole key is a
safe stored form (no slow KDF needed); the short prefix finds the row without scanning.
Accounts come from the app's `AccountStore` (node.stores: PostgreSQL in production); when the
database is down, or the local Patroni says it is, from the node's key cache on disk instead.

Every authenticated request is also counted against its account's rate limit (`node.ratelimit`,
counters in Redis). Over the limit: 429 with `Retry-After`. Redis unreachable: the request goes
through unchecked and `rocars_rate_limit_fail_open_total` counts it (Redis degrades speed and
protection, never correctness or availability).

A key the database did not know is remembered (its SHA-256 only) for `MISS_TTL_S`, at most
`MISS_CAPACITY` of them (`appkeys.MISSED_KEYS`), so a client repeating a wrong key costs no
query. That is safe because keys are random and never reused: a digest that missed can only
start to match if its key was created after the lookup, i.e. a key just approved and used on a
node whose database has not yet replayed the new row (replication lag, well under a second).
Such a key is refused on that node for at most `MISS_TTL_S`; approval itself never waits (the
approving node reads its own row). Misses from the on-disk key cache (database down) are not
remembered: that cache may simply be older than a freshly approved key.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import secrets
import time
from collections import OrderedDict

from aiohttp import web

from kernel.errors import DatabaseUnavailable, RedisUnavailable
from monitoring import logs
from node import appkeys, ratelimit
from node.account import Account
from node.problems import Problem

_CACHE_TTL_S = 5.0
MISS_TTL_S = 5.0
MISS_CAPACITY = 10_000
_REALM = 'Bearer realm="rocars"'


def _missed_recently(missed: OrderedDict[str, float], digest: str, now: float) -> bool:
    at = missed.get(digest)
    if at is None:
        return False
    if now - at < MISS_TTL_S:
        return True
    del missed[digest]
    return False


def _remember_miss(missed: OrderedDict[str, float], digest: str, now: float) -> None:
    # All entries share one lifetime, so the oldest is also the nearest to expiry: a flood of
    # distinct wrong keys evicts the oldest, and memory stays bounded by MISS_CAPACITY.
    missed.pop(digest, None)
    missed[digest] = now
    while len(missed) > MISS_CAPACITY:
        missed.popitem(last=False)


def new_api_key() -> tuple[str, str, str]:
    """A fresh key and its stored form: (key, prefix, sha256 hex)."""
    prefix = secrets.token_hex(4)
    key = f"rk_{prefix}_{secrets.token_urlsafe(24)}"
    return key, prefix, hash_key(key)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def _is_key_text(token: str) -> bool:
    # Keys are visible ASCII (0x21-0x7E). Anything else (a raw byte over 0x7F arrives as a
    # surrogate-escaped character that cannot even be encoded) is refused before it is hashed.
    # ASCII and printable is 0x20-0x7E; without the space, 0x21-0x7E (str methods: C loops).
    return token.isascii() and token.isprintable() and " " not in token


def _parse_bearer(header: str | None) -> str:
    if not header:
        raise Problem(
            401,
            "Unauthorized",
            "an API key is required: send 'Authorization: Bearer <api key>'",
            errors=[{"field": "Authorization", "message": "header missing"}],
            headers={"WWW-Authenticate": _REALM},
        )
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise Problem(
            401,
            "Unauthorized",
            "the Authorization header must be 'Bearer <api key>'",
            errors=[{"field": "Authorization", "message": "not 'Bearer <api key>'"}],
            headers={"WWW-Authenticate": _REALM},
        )
    if not _is_key_text(token):
        raise Problem(
            401,
            "Unauthorized",
            "an API key is printable ASCII only",
            errors=[{"field": "Authorization", "message": "not printable ASCII"}],
            headers={"WWW-Authenticate": f'{_REALM}, error="invalid_token"'},
        )
    return token


def _prefix_of(key: str) -> str | None:
    parts = key.split("_")
    if len(parts) < 3 or parts[0] != "rk" or len(parts[1]) != 8:
        return None
    return parts[1]


def _database_presumed_down(request: web.Request) -> bool:
    """The local Patroni says its PostgreSQL is not running (or Patroni is gone): do not make
    every request wait for a pool timeout to find that out."""
    facts = request.app[appkeys.ROLE].facts
    if facts is None:
        return False
    return facts.local_role is None or facts.local_state not in ("running", "streaming")


async def _from_key_cache(request: web.Request, key: str) -> Account:
    # Database down: the node's on-disk cache of key hashes. A key it cannot verify is
    # refused, never waved through, and not remembered as a miss (see the module's text).
    # Refused as unavailable (503, retry), not as invalid (401): the key may well be good,
    # and a client that took a 401 for an answer would give up on a write that an earlier,
    # unanswered attempt may have stored (#14: the history checker found one).
    cached = await asyncio.to_thread(request.app[appkeys.KEYCACHE].verify, key)
    if cached is None:
        raise DatabaseUnavailable(
            "the database is unreachable and this key is not in the node's key cache, so it"
            " cannot be verified now"
        )
    return Account(int(cached.account_id), cached.role, cached.name, cached.status)


def _unknown_key() -> Problem:
    return Problem(
        401,
        "Unauthorized",
        "the API key is not valid",
        errors=[{"field": "Authorization", "message": "unknown API key"}],
        headers={"WWW-Authenticate": f'{_REALM}, error="invalid_token"'},
    )


async def _lookup(request: web.Request, key: str, digest: str) -> Account:
    """The account holding `key`, or 401. Only a miss the database answered is remembered."""
    prefix = _prefix_of(key)
    if prefix is None:
        raise _unknown_key()  # not a key's shape: refused without asking anyone
    missed = request.app[appkeys.MISSED_KEYS]
    if _missed_recently(missed, digest, time.monotonic()):
        raise _unknown_key()
    if _database_presumed_down(request):
        return await _from_key_cache(request, key)
    try:
        found = await request.app[appkeys.ACCOUNTS].find(prefix)
    except DatabaseUnavailable:
        return await _from_key_cache(request, key)
    if found is None or not hmac.compare_digest(found.key_sha256, digest):
        _remember_miss(missed, digest, time.monotonic())
        raise _unknown_key()
    return found.account


async def authenticate(request: web.Request) -> Account:
    return await account_for_key(request, _parse_bearer(request.headers.get("Authorization")))


async def account_for_key(request: web.Request, key: str) -> Account:
    """The active account holding `key`, counted against its rate limit: what every channel
    (the API's bearer header, the web pages' session, node.web.session) authenticates with."""
    if not _is_key_text(key):
        raise _unknown_key()
    digest = hash_key(key)
    cache = request.app[appkeys.ACCOUNT_CACHE]
    hit = cache.get(digest)
    now = time.monotonic()
    if hit is not None and now - hit[0] < _CACHE_TTL_S:
        account = hit[1]
    else:
        account = await _lookup(request, key, digest)
        cache[digest] = (now, account)
    logs.bind_account(account.id)  # on the request's log lines from here on (never the key)
    if account.status != "active":
        raise Problem(403, "Forbidden", "this account is suspended")
    await enforce_rate_limit(request, account)
    return account


# What the request has counted against its account so far (node.ratelimit: a batch counts 1
# when it authenticates, then the rest of its weight).
RATE_PAID = web.RequestKey("rocars.rate_paid", int)


async def enforce_rate_limit(request: web.Request, account: Account, cost: int = 1) -> None:
    """Count this request as `cost` requests in all (a batch: its item count), capped at the
    limit (`node.ratelimit.weight`); what it already counted is not counted again."""
    limit = request.app[appkeys.CONFIG].rate_limit_per_s
    if limit <= 0:
        return
    paid = request.get(RATE_PAID, 0)
    weight = ratelimit.weight(cost, limit)
    if weight <= paid:
        return
    metrics = request.app[appkeys.METRICS]
    try:
        decision = await request.app[appkeys.REDIS].count_request(
            account.id, limit=limit, cost=weight - paid, paid=paid
        )
    except RedisUnavailable:
        metrics.rate_limit_fail_open.inc()
        return
    request[RATE_PAID] = weight
    if not decision.allowed:
        metrics.rate_limited.inc()
        counts = f" (this one counts as {weight})" if weight > 1 else ""
        raise Problem(
            429,
            "Too Many Requests",
            f"this account is limited to {limit} requests per second{counts}; retry after"
            f" {decision.retry_after_s} s",
            type_="https://rocars.example/problems/rate-limited",
            headers={"Retry-After": str(decision.retry_after_s)},
            # retry_after_ms: the exact wait, which node/client.py prefers to the header.
            extra={
                "limit_per_s": limit,
                "retry_after_s": decision.retry_after_s,
                "retry_after_ms": decision.retry_after_ms,
            },
        )


async def require(request: web.Request, *kinds: str) -> Account:
    return require_kind(await authenticate(request), *kinds)


def require_kind(account: Account, *kinds: str) -> Account:
    """`account`, or 403 when it is none of `kinds` (no kinds: any)."""
    if kinds and account.kind not in kinds:
        raise Problem(
            403,
            "Forbidden",
            f"this operation is for {' or '.join(kinds)} accounts, not {account.kind}",
        )
    return account
