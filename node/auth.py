"""API keys and roles. Keys are random and high-entropy, so a plain SHA-256 of the whole key is a
safe stored form (no slow KDF needed); the short prefix finds the row without scanning.
Accounts come from the app's `AccountStore` (node.stores: PostgreSQL in production); when the
database is down, or the local Patroni says it is, from the node's key cache on disk instead.

Every authenticated request is also counted against its account's rate limit (`node.ratelimit`,
counters in Redis). Over the limit: 429 with `Retry-After`. Redis unreachable: the request goes
through unchecked and `rocars_rate_limit_fail_open_total` counts it (Redis degrades speed and
protection, never correctness or availability).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import secrets
import time

from aiohttp import web

from kernel.errors import DatabaseUnavailable, RedisUnavailable
from node import appkeys
from node.account import Account
from node.problems import Problem
from node.stores import StoredAccount

_CACHE_TTL_S = 5.0


def new_api_key() -> tuple[str, str, str]:
    """A fresh key and its stored form: (key, prefix, sha256 hex)."""
    prefix = secrets.token_hex(4)
    key = f"rk_{prefix}_{secrets.token_urlsafe(24)}"
    return key, prefix, hash_key(key)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def _parse_bearer(header: str | None) -> str:
    if not header:
        raise Problem(
            401,
            "Unauthorized",
            "an API key is required: send 'Authorization: Bearer <api key>'",
            errors=[{"field": "Authorization", "message": "header missing"}],
            headers={"WWW-Authenticate": 'Bearer realm="rocars"'},
        )
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Problem(
            401,
            "Unauthorized",
            "the Authorization header must be 'Bearer <api key>'",
            errors=[{"field": "Authorization", "message": "not 'Bearer <api key>'"}],
            headers={"WWW-Authenticate": 'Bearer realm="rocars"'},
        )
    return token.strip()


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


async def _from_key_cache(request: web.Request, key: str) -> StoredAccount:
    # Database down: the node's on-disk cache of key hashes. A key it cannot verify is
    # refused, never waved through.
    cached = await asyncio.to_thread(request.app[appkeys.KEYCACHE].verify, key)
    if cached is None:
        raise Problem(
            401,
            "Unauthorized",
            "the database is unreachable and this key is not in the node's key"
            " cache, so it cannot be verified",
            errors=[{"field": "Authorization", "message": "cannot verify key"}],
            headers={"WWW-Authenticate": 'Bearer realm="rocars"'},
        )
    account = Account(int(cached.account_id), cached.role, cached.name, cached.status)
    return StoredAccount(account, cached.key_sha256)


async def _lookup(request: web.Request, key: str) -> StoredAccount | None:
    prefix = _prefix_of(key)
    if prefix is None:
        return None
    if _database_presumed_down(request):
        return await _from_key_cache(request, key)
    try:
        return await request.app[appkeys.ACCOUNTS].find(prefix)
    except DatabaseUnavailable:
        return await _from_key_cache(request, key)


async def authenticate(request: web.Request) -> Account:
    key = _parse_bearer(request.headers.get("Authorization"))
    digest = hash_key(key)
    cache = request.app[appkeys.ACCOUNT_CACHE]
    hit = cache.get(digest)
    now = time.monotonic()
    if hit is not None and now - hit[0] < _CACHE_TTL_S:
        account = hit[1]
    else:
        found = await _lookup(request, key)
        if found is None or not hmac.compare_digest(found.key_sha256, digest):
            raise Problem(
                401,
                "Unauthorized",
                "the API key is not valid",
                errors=[{"field": "Authorization", "message": "unknown API key"}],
                headers={"WWW-Authenticate": 'Bearer realm="rocars", error="invalid_token"'},
            )
        account = found.account
        cache[digest] = (now, account)
    if account.status != "active":
        raise Problem(403, "Forbidden", "this account is suspended")
    await enforce_rate_limit(request, account)
    return account


async def enforce_rate_limit(request: web.Request, account: Account) -> None:
    limit = request.app[appkeys.CONFIG].rate_limit_per_s
    if limit <= 0:
        return
    metrics = request.app[appkeys.METRICS]
    try:
        decision = await request.app[appkeys.REDIS].count_request(account.id, limit=limit)
    except RedisUnavailable:
        metrics.rate_limit_fail_open.inc()
        return
    if not decision.allowed:
        metrics.rate_limited.inc()
        raise Problem(
            429,
            "Too Many Requests",
            f"this account is limited to {limit} requests per second; retry after"
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
    account = await authenticate(request)
    if kinds and account.kind not in kinds:
        raise Problem(
            403,
            "Forbidden",
            f"this operation is for {' or '.join(kinds)} accounts, not {account.kind}",
        )
    return account
