"""Typed application keys, all in one module (aiohttp's AppKey pattern)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING

import aiohttp
from aiohttp import web
from psycopg_pool import AsyncConnectionPool

from contingency.journal import Journal
from contingency.keycache import KeyCache
from contingency.runtime import ContingencyRuntime
from failover.controller import FailoverController
from failover.role import RoleWatcher
from monitoring.metrics import NodeMetrics
from node.config import NodeConfig
from node.redis_client import RedisClient
from replication.etcd_gateway import EtcdGateway
from replication.patroni_rest import PatroniRest

if TYPE_CHECKING:
    from node.account import Account

CONFIG = web.AppKey("config", NodeConfig)
HTTP = web.AppKey("http", aiohttp.ClientSession)
ETCD = web.AppKey("etcd", EtcdGateway)
PATRONI = web.AppKey("patroni", PatroniRest)
ROLE = web.AppKey("role", RoleWatcher)
CONTROLLER = web.AppKey("controller", FailoverController)
CONTINGENCY = web.AppKey("contingency", ContingencyRuntime)
JOURNAL = web.AppKey("journal", Journal)
KEYCACHE = web.AppKey("keycache", KeyCache)
METRICS = web.AppKey("metrics", NodeMetrics)
POOL = web.AppKey("pool", AsyncConnectionPool)
REDIS = web.AppKey("redis", RedisClient)
STARTED_AT = web.AppKey("started_at", float)
# sha256(api key) -> (monotonic time cached, Account); short-lived, to keep hot paths off the DB.
ACCOUNT_CACHE: web.AppKey[dict[str, tuple[float, Account]]] = web.AppKey("account_cache")
# Wall clock (UTC, aware), injectable so tests can pin "now".
CLOCK: web.AppKey[Callable[[], datetime]] = web.AppKey("clock")
