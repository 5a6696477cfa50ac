"""The node's Redis adapter: one client for the Sentinel-managed primary, used as a cache and a
signal bus, never as the source of truth (DESIGN.md section 2).

Serves the pure core `node.ratelimit` (per-account sliding-window counters). Rules of the road:

- The primary is found through Sentinel (redis-py's `master_for`): every new connection asks a
  Sentinel where the primary is, so after a failover the node follows the new primary without a
  restart. A background probe asks Sentinel every `probe_interval_s` and writes a heartbeat key,
  so the node also follows when it has no traffic (the standby) and also when the old primary
  was demoted rather than killed (idle connections to it are dropped once Sentinel names
  another primary; a write on one still open gets READONLY and reconnects).
- Short socket timeouts and no backoff: a dead or frozen primary costs a request at most about
  `2 * timeout_s`, and after a failure requests skip Redis for `backoff_s` (or until the probe
  succeeds again), so an outage costs one slow request per node, not one per request.
- Every redis-py error is translated here into `RedisUnavailable` (`raise ... from`); callers
  decide what "unavailable" means for them (the rate limit fails open).
- #12 item 3: the node logs in to Redis and to Sentinel as its own ACL users (`auth`), and may
  run only what it uses here: `ACL_COMMANDS` on `ACL_KEYS` (deploy.redis_acl renders them into
  the generated configuration, so the two cannot drift apart). Passwords are read from their
  files at each new connection: never in the node's configuration, argv or environment, and a
  rotated password is used without a restart.
- #12 item 2: TLS only, to Sentinel and to Redis (neither has a plain port), with the node's
  client certificate (both require one) and only the system's CA trusted (`TlsConnection`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from redis.asyncio import ConnectionPool, Redis
from redis.asyncio.connection import SSLConnection
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool, SentinelManagedConnection
from redis.backoff import NoBackoff
from redis.credentials import CredentialProvider
from redis.exceptions import RedisError

from kernel import tls
from kernel.errors import RedisUnavailable
from node import ratelimit
from node.config import RedisAuthSettings, RedisTlsSettings
from node.rate_counts import CountBatcher, CountGroup

log = logging.getLogger("rocars.redis")
T = TypeVar("T")
HEARTBEAT_TTL_MS = 10_000
HEARTBEAT_KEY_PREFIX = "rocars:heartbeat:"


@dataclass(frozen=True)
class RedisView:
    """What the node currently believes about Redis, for /health and /metrics."""

    master_name: str
    primary: str | None  # host:port of the primary the client uses (as Sentinel last said)
    ok: bool | None  # did the last operation succeed (None: nothing tried yet)
    errors_total: int
    last_error: str | None
    last_error_age_s: float | None
    last_ok_age_s: float | None


# The rate-limit count, one command and one round trip, atomic: add to this window's counter,
# renew its expiry, read the previous window's. (It replaced a MULTI/EXEC pipeline of the same
# three commands: five commands to pack and five replies to parse per request, 12% of the
# node's CPU in a submission profile, #11.)
# redis-py sends EVALSHA and loads the script on NOSCRIPT (a new primary after a failover).
# Several counters in one call (node.rate_counts): KEYS are (current, previous) pairs, ARGV
# the counters' time to live then one cost per pair; the answer is (current, previous) pairs.
_COUNT_LUA = """
local out = {}
for i = 1, #KEYS, 2 do
  local current = redis.call('INCRBY', KEYS[i], ARGV[(i + 1) / 2 + 1])
  redis.call('PEXPIRE', KEYS[i], ARGV[1])
  out[#out + 1] = current
  out[#out + 1] = tonumber(redis.call('GET', KEYS[i + 1]) or '0')
end
return out
"""

# What the node's Redis user may do (#12 item 3), and nothing more: the script above by its
# digest, loading it again after a failover (NOSCRIPT), the three commands it runs (ACL checks
# commands inside scripts too) and the heartbeat's SET. Keys: the rate-limit counters (read
# and written) and the heartbeats (written only).
ACL_COMMANDS = ("evalsha", "script|load", "incrby", "pexpire", "get", "set")
RATE_LIMIT_KEYS = f"%RW~{ratelimit.KEY_PREFIX}:*"
ACL_KEYS = (RATE_LIMIT_KEYS, f"%W~{HEARTBEAT_KEY_PREFIX}*")
# On Sentinel: finding the primary (redis-py's discovery asks SENTINEL MASTERS).
SENTINEL_ACL_COMMANDS = ("sentinel|masters", "sentinel|get-master-addr-by-name")


class FilePassword(CredentialProvider):
    """A user name and the file holding its password, read at each new connection."""

    def __init__(self, username: str, password_file: Path) -> None:
        self.username = username
        self.password_file = password_file

    def get_credentials(self) -> tuple[str, str]:
        return self.username, self.password_file.read_text().strip()

    async def get_credentials_async(self) -> tuple[str, str]:
        return self.get_credentials()  # a few bytes from a local file: not worth a thread


# A context, or what builds one for each new connection.
TlsSource = ssl.SSLContext | Callable[[], ssl.SSLContext]


class TlsConnection(SSLConnection):
    """redis-py's TLS connection with our own context (kernel.tls): only the system's CA is
    trusted, TLS 1.2 or later, the address dialled checked against the certificate. redis-py's
    own context would also trust every public CA of the host (and cost 60 ms a connection to
    load them)."""

    def __init__(self, *, tls_source: TlsSource, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.tls_source = tls_source

    def _connection_arguments(self) -> Mapping[str, Any]:
        src = self.tls_source
        return {
            "host": self.host,
            "port": self.port,
            "ssl": src if isinstance(src, ssl.SSLContext) else src(),
        }


class SentinelManagedTlsConnection(SentinelManagedConnection, TlsConnection):
    """A connection to the primary Sentinel names, over TLS like every other."""


def tls_redis(host: str, port: int, source: TlsSource, **kwargs: Any) -> Redis:
    """A client of one Redis or Sentinel over TLS (`TlsConnection`); `kwargs` are the
    connection's (socket timeouts, login, protocol, retry)."""
    pool = ConnectionPool(
        connection_class=TlsConnection, host=host, port=port, tls_source=source, **kwargs
    )
    return Redis.from_pool(pool)


def file_tls(settings: RedisTlsSettings) -> Callable[[], ssl.SSLContext]:
    """Contexts built from the node's files at each new connection (about a millisecond), so
    a rotated certificate or CA bundle is used without a restart."""

    def build() -> ssl.SSLContext:
        return tls.client_context(settings.ca_file, cert=settings.cert_file, key=settings.key_file)

    return build


class RedisClient:
    def __init__(
        self,
        sentinels: Sequence[tuple[str, int]],
        master_name: str,
        *,
        name: str,
        timeout_s: float = 0.25,
        backoff_s: float = 1.0,
        on_error: Callable[[RedisUnavailable], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        auth: RedisAuthSettings | None = None,
        tls_settings: RedisTlsSettings | None = None,
    ) -> None:
        self.master_name = master_name
        self.name = name
        self.timeout_s = timeout_s
        self.backoff_s = backoff_s
        self._on_error = on_error
        self._clock = clock
        self._wall = wall_clock
        socket_opts: dict[str, Any] = {
            "socket_timeout": timeout_s,
            "socket_connect_timeout": timeout_s,
        }
        redis_auth: dict[str, Any] = {}
        sentinel_auth: dict[str, Any] = {}
        if auth is not None:
            redis_auth["credential_provider"] = FilePassword(auth.username, auth.password_file)
            sentinel_auth["credential_provider"] = FilePassword(
                auth.sentinel_username, auth.sentinel_password_file
            )
        # redis-py's default Retry (10 attempts, exponential backoff) would turn a dead Sentinel
        # or primary into seconds of waiting. A Sentinel that does not answer is skipped at once;
        # a command on a broken connection is retried once on a fresh one, which asks Sentinel
        # for the primary again (that is how a failover is followed).
        sentinel_kwargs = {**socket_opts, **sentinel_auth, "retry": Retry(NoBackoff(), 0)}
        addresses = [(h, int(p)) for h, p in sentinels]
        primary_tls: dict[str, Any] = {}
        if tls_settings is not None:
            source = file_tls(tls_settings)
            primary_tls = {"connection_class": SentinelManagedTlsConnection, "tls_source": source}
        self._sentinel = Sentinel(  # type: ignore[no-untyped-call]
            [] if tls_settings is not None else addresses,
            sentinel_kwargs=sentinel_kwargs,
            **socket_opts,
            **redis_auth,
            **primary_tls,
            retry=Retry(NoBackoff(), 1),
        )
        if tls_settings is not None:
            # redis-py makes its Sentinel clients with its own TLS (see TlsConnection): ours.
            self._sentinel.sentinels = [
                tls_redis(h, p, source, **sentinel_kwargs) for h, p in addresses
            ]
        self._client: Redis = self._sentinel.master_for(master_name)
        self._count = self._client.register_script(_COUNT_LUA)
        self._counts = CountBatcher(self._count_many, deadline_s=2 * self.timeout_s)
        self.errors_total = 0
        self.ok: bool | None = None
        self.last_error: str | None = None
        self.last_error_at: float | None = None
        self.last_ok_at: float | None = None
        self._skip_until = 0.0
        self._last_primary: str | None = None
        self._stopping = False

    @property
    def probe_deadline_s(self) -> float:
        """Longest a probe may take: up to three Sentinels and a reconnect, each `timeout_s`."""
        return max(1.0, 6 * self.timeout_s)

    # -- state ---------------------------------------------------------------------------

    @property
    def _pool(self) -> SentinelConnectionPool:
        pool = self._client.connection_pool
        assert isinstance(pool, SentinelConnectionPool)
        return pool

    @property
    def primary(self) -> str | None:
        """host:port of the primary this node's client believes in (None before discovery)."""
        addr = self._pool.master_address
        if not addr:
            return None
        host, port = addr
        return f"{host}:{port}"

    def view(self) -> RedisView:
        now = self._clock()
        return RedisView(
            master_name=self.master_name,
            primary=self.primary,
            ok=self.ok,
            errors_total=self.errors_total,
            last_error=self.last_error,
            last_error_age_s=None if self.last_error_at is None else now - self.last_error_at,
            last_ok_age_s=None if self.last_ok_at is None else now - self.last_ok_at,
        )

    def _succeeded(self) -> None:
        if self.ok is not True:
            log.warning("Redis reachable: primary %s (%s)", self.primary, self.master_name)
        primary = self.primary
        if self._last_primary is not None and primary != self._last_primary:
            log.warning("Redis primary is now %s (was %s)", primary, self._last_primary)
        self._last_primary = primary
        self.ok = True
        self.last_ok_at = self._clock()
        self._skip_until = 0.0

    def _failed(self, what: str, exc: BaseException) -> RedisUnavailable:
        now = self._clock()
        if self.ok is not False:
            log.warning("Redis %s failed (primary %s): %r", what, self.primary, exc)
        self.ok = False
        self.errors_total += 1
        self.last_error = f"{what}: {type(exc).__name__}: {exc}"
        self.last_error_at = now
        self._skip_until = now + self.backoff_s
        err = RedisUnavailable(f"Redis {what} failed: {exc}")
        if self._on_error is not None:
            self._on_error(err)
        return err

    async def _guarded(
        self, what: str, op: Callable[[], Awaitable[T]], *, deadline_s: float, skip: bool
    ) -> T:
        if skip and self._clock() < self._skip_until:
            raise RedisUnavailable(f"Redis skipped for a moment after: {self.last_error}")
        try:
            async with asyncio.timeout(deadline_s):
                result = await op()
        except (RedisError, OSError) as exc:  # TimeoutError is an OSError
            raise self._failed(what, exc) from exc
        self._succeeded()
        return result

    # -- operations ----------------------------------------------------------------------

    async def count_request(
        self, account_id: int, *, limit: int, cost: int = 1, paid: int = 0
    ) -> ratelimit.RateDecision:
        """Count `cost` units of a request of `account_id` that already counted `paid` (a
        batch: 1 when it authenticated, its other items now) and decide it, as a request of
        weight `paid + cost`, against `limit` per window (node.ratelimit).
        Raises RedisUnavailable (quickly) when Redis cannot answer."""
        now = self._wall()
        w = ratelimit.window_at(now)
        current_key = ratelimit.counter_key(account_id, w.index)
        previous_key = ratelimit.counter_key(account_id, w.index - 1)

        async def op() -> tuple[int, int]:
            return await self._counts.count(current_key, previous_key, cost)

        current, previous = await self._guarded(
            "rate-limit count", op, deadline_s=2 * self.timeout_s, skip=True
        )
        return ratelimit.decide(
            limit=limit, current=current, previous=previous, fraction=w.fraction, cost=paid + cost
        )

    async def _count_many(self, groups: Sequence[CountGroup]) -> list[tuple[int, int]]:
        keys = [key for g in groups for key in (g.current_key, g.previous_key)]
        args = [ratelimit.counter_ttl_ms(), *(g.cost for g in groups)]
        flat = await self._count(keys=keys, args=args)
        return [(int(flat[i]), int(flat[i + 1])) for i in range(0, len(flat), 2)]

    async def probe(self) -> None:
        """Ask Sentinel for the primary (dropping idle connections to an old one), then prove it
        takes writes with a heartbeat key. Never skipped: this is what clears a failure."""

        async def op() -> None:
            try:
                await self._pool.get_master_address()  # type: ignore[no-untyped-call]
            except RedisError as exc:
                # No Sentinel answered: keep using the primary we know, if it still works.
                log.debug("Sentinel discovery failed: %r", exc)
            await self._client.set(
                f"{HEARTBEAT_KEY_PREFIX}{self.name}", repr(self._wall()), px=HEARTBEAT_TTL_MS
            )

        await self._guarded("probe", op, deadline_s=self.probe_deadline_s, skip=False)

    async def run(self, interval_s: float) -> None:
        """Probe until `stop()` (a background task of the node). The flag, not only the task's
        cancellation, ends the loop: a cancel that lands inside the client's own timeout
        handling must not leave the node unable to shut down."""
        while not self._stopping:
            with contextlib.suppress(RedisUnavailable):
                await self.probe()
            await asyncio.sleep(interval_s)

    def stop(self) -> None:
        self._stopping = True

    async def aclose(self) -> None:
        self.stop()
        try:
            try:
                await self._client.aclose()
            finally:
                await self._sentinel.aclose()
        except (RedisError, OSError) as exc:
            raise RedisUnavailable(f"closing the Redis client: {exc}") from exc
