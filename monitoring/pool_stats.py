"""psycopg_pool's own statistics (`get_stats()`), read at scrape time: how full the node's
database pool is and how long requests waited for a connection. `get_stats` (not `pop_stats`)
so the counters only grow, whoever scrapes; they start at zero with the pool."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping

from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

PoolStats = Callable[[], Mapping[str, int]]

# (psycopg_pool's key, metric name, help, scale to the metric's unit)
_Row = tuple[str, str, str, float]
_GAUGES: tuple[_Row, ...] = (
    ("pool_min", "rocars_db_pool_min_connections", "Connections the pool keeps open at least", 1),
    ("pool_max", "rocars_db_pool_max_connections", "Connections the pool opens at most", 1),
    ("pool_size", "rocars_db_pool_connections", "Connections open now, lent or idle", 1),
    ("pool_available", "rocars_db_pool_idle_connections", "Connections idle in the pool now", 1),
    (
        "requests_waiting",
        "rocars_db_pool_requests_waiting",
        "Requests waiting for a connection now",
        1,
    ),
)
_COUNTERS: tuple[_Row, ...] = (
    ("requests_num", "rocars_db_pool_requests", "Connections asked of the pool", 1),
    (
        "requests_queued",
        "rocars_db_pool_requests_queued",
        "Requests that had to wait for a connection",
        1,
    ),
    (
        "requests_wait_ms",
        "rocars_db_pool_wait_seconds",
        "Time requests spent waiting for a connection",
        0.001,
    ),
    (
        "requests_errors",
        "rocars_db_pool_request_errors",
        "Requests that got no connection (timeout or error)",
        1,
    ),
    ("usage_ms", "rocars_db_pool_usage_seconds", "Time connections spent lent out", 0.001),
    ("returns_bad", "rocars_db_pool_returns_bad", "Connections returned broken", 1),
    ("connections_num", "rocars_db_pool_connects", "Connection attempts to the database", 1),
    (
        "connections_ms",
        "rocars_db_pool_connect_seconds",
        "Time spent opening connections",
        0.001,
    ),
    (
        "connections_errors",
        "rocars_db_pool_connect_errors",
        "Connection attempts that failed",
        1,
    ),
    (
        "connections_lost",
        "rocars_db_pool_connections_lost",
        "Connections found broken by the pool's check",
        1,
    ),
)


class PoolCollector(Collector):
    """Nothing until `watch` is given the pool's `get_stats` (a fake pool has none)."""

    def __init__(self) -> None:
        self._stats: PoolStats | None = None

    def watch(self, stats: PoolStats | None) -> None:
        self._stats = stats

    def collect(self) -> Iterator[Metric]:
        if self._stats is None:
            return
        stats = self._stats()
        for key, name, doc, scale in _GAUGES:
            yield GaugeMetricFamily(name, doc, value=stats.get(key, 0) * scale)
        for key, name, doc, scale in _COUNTERS:
            yield CounterMetricFamily(name, doc, value=stats.get(key, 0) * scale)
