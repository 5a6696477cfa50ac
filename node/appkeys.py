"""Typed application keys, all in one module (aiohttp's AppKey pattern)."""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

import aiohttp
from aiohttp import web

from contingency.journal import Journal
from contingency.keycache import KeyCache
from contingency.runtime import ContingencyRuntime
from failover.controller import FailoverController
from monitoring.metrics import NodeMetrics
from node.config import NodeConfig
from node.deps import NodeDeps, RedisPort, RoleView
from node.group_commit import GroupCommit
from node.stores import AccountStore, ConnectionPool
from replication.etcd_gateway import EtcdGateway
from replication.patroni_rest import PatroniRest

if TYPE_CHECKING:
    from node.account import Account

CONFIG = web.AppKey("config", NodeConfig)
# What create_app was given instead of opening its own (node.deps).
DEPS = web.AppKey("deps", NodeDeps)
HTTP = web.AppKey("http", aiohttp.ClientSession)
ETCD = web.AppKey("etcd", EtcdGateway)
PATRONI = web.AppKey("patroni", PatroniRest)
ROLE: web.AppKey[RoleView] = web.AppKey("role")
# Present only while the node's background loops run (not in in-process tests).
CONTROLLER = web.AppKey("controller", FailoverController)
CONTINGENCY = web.AppKey("contingency", ContingencyRuntime)
JOURNAL = web.AppKey("journal", Journal)
KEYCACHE = web.AppKey("keycache", KeyCache)
METRICS = web.AppKey("metrics", NodeMetrics)
POOL: web.AppKey[ConnectionPool] = web.AppKey("pool")
# Submissions waiting for their shared statement (node.group_commit, node.api.consignments).
SUBMISSIONS: web.AppKey[GroupCommit[Any, tuple[int, dict[str, Any], str]]] = web.AppKey(
    "submissions"
)
ACCOUNTS: web.AppKey[AccountStore] = web.AppKey("accounts")
REDIS: web.AppKey[RedisPort] = web.AppKey("redis")
STARTED_AT = web.AppKey("started_at", float)
# sha256(api key) -> (monotonic time cached, Account); short-lived, to keep hot paths off the DB.
ACCOUNT_CACHE: web.AppKey[dict[str, tuple[float, Account]]] = web.AppKey("account_cache")
# sha256(api key) -> monotonic time the database did not know it; oldest first (node.auth).
MISSED_KEYS: web.AppKey[OrderedDict[str, float]] = web.AppKey("missed_keys")
# Batches parsed at once on this node: each holds up to 10 MiB of body and its items in memory.
BATCH_SLOTS = web.AppKey("batch_slots", asyncio.Semaphore)
# Wall clock (UTC, aware), injectable so tests can pin "now".
CLOCK: web.AppKey[Callable[[], datetime]] = web.AppKey("clock")
