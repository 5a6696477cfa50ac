"""One exception hierarchy for the whole project.

Third-party errors (aiohttp, psycopg, redis, sqlite3) are translated once, where they enter the
project (the adapters, or the service's error boundary in `node.problems`) with `raise ... from`,
so callers catch these and never a library's own types. The HTTP status each class answers is
chosen in one table, `node.problems.STATUS_OF`; the CLI prints the message and exits non-zero.
"""

from __future__ import annotations


class RocarsError(Exception):
    """Base of every error this project raises on purpose."""


class ConfigError(RocarsError):
    """Configuration or topology is invalid; the message says what to fix."""


class InvalidInput(RocarsError):
    """A value given by a caller is not acceptable (HTTP 422); `field` names it."""

    def __init__(self, message: str, *, field: str = "body") -> None:
        super().__init__(message)
        self.field = field


class InvalidTransition(RocarsError):
    """The request is well formed but the current state does not allow it (HTTP 409), e.g.
    switching manual mode off when it is not on."""


class ComponentUnavailable(RocarsError):
    """A component (etcd, Patroni, PostgreSQL, Redis) did not answer in time (HTTP 503)."""


class EtcdUnavailable(ComponentUnavailable):
    """No etcd member answered, or none could give a quorum answer."""


class PatroniUnavailable(ComponentUnavailable):
    """The Patroni REST API did not answer."""


class RedisUnavailable(ComponentUnavailable):
    """Redis (or every Sentinel) did not answer in time, or the node skips it for a moment
    after a failure. Redis is optional: callers degrade (fail open), never fail the request."""


class DatabaseUnavailable(ComponentUnavailable):
    """This node's PostgreSQL member could not be reached, or no pooled connection came in
    time. Retry shortly: a failover may be under way."""


class DatabaseReadOnly(DatabaseUnavailable):
    """This node's PostgreSQL member is no longer the primary (it refused a write)."""


class JournalError(RocarsError):
    """The manual-clearance journal (SQLite on local disk) cannot be used as asked."""


class LaunchError(RocarsError):
    """The local system could not be started; the message names the component and the cause."""


class DrillError(RocarsError):
    """A drill could not prepare or restore the cluster around its fault."""
