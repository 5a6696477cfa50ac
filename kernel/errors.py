"""One exception hierarchy for the whole project.

Third-party errors (aiohttp, psycopg, redis) are translated at the adapter boundary with
`raise ... from`, so callers catch these and never a library's own types.
"""

from __future__ import annotations


class RocarsError(Exception):
    """Base of every error this project raises on purpose."""


class ConfigError(RocarsError):
    """Configuration or topology is invalid; the message says what to fix."""


class ComponentUnavailable(RocarsError):
    """A component (etcd, Patroni, PostgreSQL, Redis) did not answer in time."""


class EtcdUnavailable(ComponentUnavailable):
    """No etcd member answered, or none could give a quorum answer."""


class PatroniUnavailable(ComponentUnavailable):
    """The Patroni REST API did not answer."""


class RedisUnavailable(ComponentUnavailable):
    """Redis (or every Sentinel) did not answer in time, or the node skips it for a moment
    after a failure. Redis is optional: callers degrade (fail open), never fail the request."""


class LaunchError(RocarsError):
    """The local system could not be started; the message names the component and the cause."""
