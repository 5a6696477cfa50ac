"""#11 target 1: against the real Redis (TLS, the nodes' ACL user), concurrent rate-limit
counts share calls (node.rate_counts) and every request still gets a distinct count, as if
counted one by one."""

from __future__ import annotations

import asyncio
import random

import pytest

from deploy.harness import LocalCluster
from node import ratelimit
from node.config import load_node_config
from node.redis_client import RedisClient

pytestmark = pytest.mark.integration


async def test_concurrent_counts_are_distinct_and_share_calls(cluster: LocalCluster) -> None:
    """200 counts of two counters at once: each counter's requests get exactly the counts
    1..100, none repeated or skipped (the multi-counter script adds and answers per counter),
    in fewer calls than requests; the previous window's counter is read, not written."""
    cfg = load_node_config(cluster.state.node_config(cluster.topo.data_sites[0]))
    bus = RedisClient(
        cfg.redis_sentinels,
        cfg.redis_master_name,
        name="rate-counts-test",
        auth=cfg.redis_auth,
        tls_settings=cfg.redis_tls,
    )
    run = random.randrange(10**9)
    keys = [ratelimit.counter_key(-(run + i), 1) for i in range(2)]
    previous = [ratelimit.counter_key(-(run + i), 0) for i in range(2)]
    try:
        assert (await bus.count_request(-9, limit=1000)).allowed  # connected, script loaded
        before = bus._counts.calls
        which = [i % 2 for i in range(200)]
        counts = await asyncio.gather(*(bus._counts.count(keys[i], previous[i], 1) for i in which))
        calls = bus._counts.calls - before
        again = await bus._counts.count(previous[0], keys[0], 1)
    finally:
        await bus.aclose()
    for i in range(2):
        mine = [c for w, c in zip(which, counts, strict=True) if w == i]
        assert sorted(current for current, _ in mine) == list(range(1, 101))
        assert {prev for _, prev in mine} == {0}
    assert again == (1, 100)
    assert calls < 200, f"{calls} calls for 200 requests: nothing was shared"
