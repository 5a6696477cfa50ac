"""API keys and roles. Keys are random and high-entropy, so a plain SHA-256 of the whole key is a
safe stored form (no slow KDF needed); the short prefix finds the row without scanning.

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
from typing import Any

import psycopg
from aiohttp import web
from psycopg.rows import dict_row
from psycopg_pool import PoolTimeout

from kernel.errors import RedisUnavailable
from node import appkeys
from node.account import Account
from node.problems import Problem

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


async def _from_key_cache(request: web.Request, key: str) -> dict[str, Any]:
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
    return {
        "id": int(cached.account_id),
        "kind": cached.role,
        "name": cached.name,
        "status": cached.status,
        "key_hash": cached.key_sha256,
    }


async def authenticate(request: web.Request) -> Account:
    key = _parse_bearer(request.headers.get("Authorization"))
    digest = hash_key(key)
    cache = request.app[appkeys.ACCOUNT_CACHE]
    hit = cache.get(digest)
    now = time.monotonic()
    if hit is not None and now - hit[0] < _CACHE_TTL_S:
        account = hit[1]
    else:
        prefix = _prefix_of(key)
        row = None
        if prefix is not None:
            if _database_presumed_down(request):
                row = await _from_key_cache(request, key)
            else:
                try:
                    async with request.app[appkeys.POOL].connection(timeout=2) as conn:
                        cur = conn.cursor(row_factory=dict_row)
                        await cur.execute(
                            "SELECT id, kind, name, status, key_hash FROM accounts"
                            " WHERE key_prefix = %s",
                            (prefix,),
                        )
                        row = await cur.fetchone()
                except (PoolTimeout, psycopg.OperationalError):
                    row = await _from_key_cache(request, key)
        if row is None or not hmac.compare_digest(row["key_hash"], digest):
            raise Problem(
                401,
                "Unauthorized",
                "the API key is not valid",
                errors=[{"field": "Authorization", "message": "unknown API key"}],
                headers={"WWW-Authenticate": 'Bearer realm="rocars", error="invalid_token"'},
            )
        account = Account(row["id"], row["kind"], row["name"], row["status"])
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
