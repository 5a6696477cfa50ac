"""Typed application keys, all in one module (aiohttp's AppKey pattern)."""

from __future__ import annotations

import aiohttp
from aiohttp import web
from psycopg_pool import AsyncConnectionPool

from failover.role import RoleWatcher
from monitoring.metrics import NodeMetrics
from node.config import NodeConfig
from replication.etcd_gateway import EtcdGateway
from replication.patroni_rest import PatroniRest

CONFIG = web.AppKey("config", NodeConfig)
HTTP = web.AppKey("http", aiohttp.ClientSession)
ETCD = web.AppKey("etcd", EtcdGateway)
PATRONI = web.AppKey("patroni", PatroniRest)
ROLE = web.AppKey("role", RoleWatcher)
METRICS = web.AppKey("metrics", NodeMetrics)
POOL = web.AppKey("pool", AsyncConnectionPool)
STARTED_AT = web.AppKey("started_at", float)
