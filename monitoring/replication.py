"""Replication as the active node sees it, for rocars_sync_standby_streaming,
rocars_replication_lag_bytes{standby} and rocars_replication_lag_seconds{standby}; read from
Patroni's REST API, because the node's own database role may not read pg_stat_replication's
details (they need pg_read_all_stats, which deploy.pg_roles gives only to the monitoring role).

- streaming: the local member's `GET /patroni`, which on the primary lists its walsenders live
  (Patroni reads pg_stat_replication as superuser for each call): 1 when one of them is a
  synchronous standby in state `streaming`. A standby that died drops out within
  wal_sender_timeout.
- lag in bytes: the local member's `GET /cluster`, per replica (`replay_lag`, else `lag`):
  Patroni's own figure, what `patronictl list` shows, refreshed every Patroni loop.
- lag in seconds: each replica's own `GET /patroni`, as postgres_exporter's pg_replication_lag
  computes it: 0 when the replica has replayed all it received, else now minus the commit time
  of the last transaction it replayed. A replica whose REST API does not answer gets no series.

With no replica at all there are no lag series, only rocars_sync_standby_streaming 0: "no
standby" is a state of its own, not a lag of zero. Only the node whose local member is the
primary exports any of these (`observe_replication` answers None elsewhere), so a standby node
never reports "no synchronous standby" for a cluster it does not lead.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

import aiohttp
from prometheus_client.metrics_core import GaugeMetricFamily, Metric

REPLICATION_SAMPLE_INTERVAL_S: Final = 5.0
MAX_STANDBYS: Final = 8
# pg_stat_replication.sync_state of a standby whose flush the primary's commits wait for.
SYNCHRONOUS: Final = ("sync", "quorum")
_REPLICA_ROLES: Final = ("sync_standby", "quorum_standby", "replica")
_TIMEOUT: Final = aiohttp.ClientTimeout(total=1.0, connect=0.5)


@dataclass(frozen=True)
class StandbyLag:
    """One replica (its Patroni member name) and how far behind the primary it is; None where
    it could not be learnt."""

    name: str
    lag_bytes: float | None
    lag_seconds: float | None


@dataclass(frozen=True)
class ReplicationView:
    sync_streaming: bool
    standbys: tuple[StandbyLag, ...]


def sync_streaming(primary_status: dict[str, Any]) -> bool:
    """Whether the primary's `GET /patroni` lists a synchronous standby that streams."""
    senders = primary_status.get("replication") or []
    return any(
        isinstance(s, dict) and s.get("state") == "streaming" and s.get("sync_state") in SYNCHRONOUS
        for s in senders
    )


def _number(value: Any) -> float | None:
    # Patroni writes "unknown" for a lag it cannot compute.
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def replica_lag_seconds(replica_status: dict[str, Any], now: datetime) -> float | None:
    """A replica's lag in time from its own `GET /patroni` (see the module docstring)."""
    xlog = replica_status.get("xlog")
    if not isinstance(xlog, dict):
        return None
    received, replayed = xlog.get("received_location"), xlog.get("replayed_location")
    if received is not None and received == replayed:
        return 0.0
    stamp = xlog.get("replayed_timestamp")
    if not isinstance(stamp, str):
        return None
    try:
        at = datetime.fromisoformat(stamp)
    except ValueError:
        return None
    if at.tzinfo is None:
        return None
    return max(0.0, (now - at).total_seconds())


async def _get(session: aiohttp.ClientSession, url: str) -> dict[str, Any] | None:
    try:
        async with session.get(url, timeout=_TIMEOUT) as r:
            data = await r.json(content_type=None)
    except (aiohttp.ClientError, TimeoutError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _status_url(api_url: str) -> str:
    # A member's api_url is its REST address with /patroni already (Patroni's own convention).
    return api_url if api_url.rstrip("/").endswith("/patroni") else api_url.rstrip("/") + "/patroni"


async def observe_replication(
    session: aiohttp.ClientSession, patroni_url: str, now: datetime
) -> ReplicationView | None:
    """Replication seen from the local Patroni at `patroni_url`; None when its member is not
    the primary or does not answer."""
    status = await _get(session, f"{patroni_url}/patroni")
    if status is None or status.get("role") != "primary":
        return None
    cluster = await _get(session, f"{patroni_url}/cluster") or {}
    standbys = []
    members = [m for m in cluster.get("members") or [] if isinstance(m, dict)]
    for m in members:
        if m.get("role") not in _REPLICA_ROLES or not isinstance(m.get("name"), str):
            continue
        lag_bytes = _number(m.get("replay_lag", m.get("lag")))
        seconds = None
        if isinstance(m.get("api_url"), str):
            own = await _get(session, _status_url(m["api_url"]))
            seconds = None if own is None else replica_lag_seconds(own, now)
        standbys.append(StandbyLag(m["name"], lag_bytes, seconds))
        if len(standbys) == MAX_STANDBYS:
            break
    return ReplicationView(sync_streaming(status), tuple(standbys))


def replication_families(view: ReplicationView | None) -> list[Metric]:
    if view is None:
        return []
    streaming = GaugeMetricFamily(
        "rocars_sync_standby_streaming",
        "1 when a synchronous standby streams from the primary (seen by the active node)",
        value=1 if view.sync_streaming else 0,
    )
    lag_bytes = GaugeMetricFamily(
        "rocars_replication_lag_bytes",
        "WAL bytes the standby has not replayed yet (Patroni's replay lag)",
        labels=["standby"],
    )
    lag_seconds = GaugeMetricFamily(
        "rocars_replication_lag_seconds",
        "Seconds the standby's replay is behind: 0 when it replayed all it received, else the"
        " age of the last transaction it replayed",
        labels=["standby"],
    )
    for s in view.standbys:
        if s.lag_bytes is not None:
            lag_bytes.add_metric([s.name], s.lag_bytes)
        if s.lag_seconds is not None:
            lag_seconds.add_metric([s.name], s.lag_seconds)
    return [f for f in (streaming, lag_bytes, lag_seconds) if f.samples]
