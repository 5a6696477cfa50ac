"""#12 item 3: etcd's RBAC on the shared session cluster. Without credentials nobody writes
Patroni's leader key or the contingency state; each user writes only its own keys; root's
password is nowhere but the secrets folder; the cluster stays healthy and Prometheus still
scrapes etcd (its /metrics is not behind etcd's authentication).

Writes are probed with a compare-and-swap whose compare cannot hold (an impossible
mod_revision): etcd checks the permissions of every operation of a transaction before it
evaluates the compare, so a permitted user gets "not written" and a forbidden one "permission
denied", and the running cluster's keys are never changed.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import aiohttp
import psutil
import pytest

from deploy import control_tls, etcd_auth
from deploy.harness import LocalCluster
from kernel.names import (
    CONTINGENCY_STATE_KEY,
    DRILL_RESULTS_KEY,
    WRITE_HEARTBEAT_KEY,
    leader_key,
)
from replication.etcd_gateway import EtcdGateway, EtcdRefused

pytestmark = pytest.mark.integration

NEVER = 2**62  # a mod_revision no key has


def _as(s: aiohttp.ClientSession, cluster: LocalCluster, user: str | None) -> EtcdGateway:
    if user is None:
        return EtcdGateway(
            s,
            cluster.topo.etcd_urls(),
            ssl=control_tls.context(cluster.state, etcd_auth.cert_of(etcd_auth.OPERATOR_USER)),
        )
    return etcd_auth.gateway(s, cluster.topo, cluster.state, user)


async def _may_write(gw: EtcdGateway, key: str) -> bool:
    refusal: EtcdRefused | None = None
    try:
        written = await gw.put_if(key, "probe", mod_revision=NEVER)
    except EtcdRefused as exc:
        refusal = exc
    if refusal is not None:
        assert "permission denied" in refusal.error, refusal
        return False
    assert written is False
    return True


async def test_without_credentials_etcd_refuses_the_leader_and_contingency_keys(
    cluster: LocalCluster,
) -> None:
    """#12 item 3: with the right address but no credentials, a plain put of Patroni's
    leader key or of /rocars/contingency/state is refused, and so is reading them."""
    async with cluster.session() as s:
        anon = _as(s, cluster, None)
        for key in (leader_key(cluster.topo.name), CONTINGENCY_STATE_KEY):
            with pytest.raises(EtcdRefused, match="user name is empty"):
                await anon.put(key, "intruder")
            with pytest.raises(EtcdRefused, match="user name is empty"):
                await anon.get(key)
        # The keys are intact: Patroni's leader is still a member, read as the operator.
        kv = await _as(s, cluster, etcd_auth.OPERATOR_USER).get(leader_key(cluster.topo.name))
        assert kv is not None
        assert kv.value.decode().startswith("pg-")


async def test_the_node_reads_its_two_polled_keys_in_one_transaction(
    cluster: LocalCluster,
) -> None:
    """The contingency runtime's poll (every 0.25 s on each node): the node's user reads the
    mode and the write heartbeat in one read-only transaction, getting what reading each alone
    gets (the heartbeat moves every 2 s, so a later single read is at least as new); without
    credentials the transaction is refused like a plain read."""
    keys = [CONTINGENCY_STATE_KEY, WRITE_HEARTBEAT_KEY]
    async with cluster.session() as s:
        node = _as(s, cluster, etcd_auth.NODE_USER)
        both = await node.get_many(keys)
        alone = [await node.get(k) for k in keys]
        assert both[1] is not None  # the active node's write probe keeps the heartbeat
        for many, single in zip(both, alone, strict=True):
            assert (many is None) == (single is None)
            if many is not None and single is not None:
                assert many.key == single.key
                assert single.mod_revision >= many.mod_revision
        with pytest.raises(EtcdRefused, match="user name is empty"):
            await _as(s, cluster, None).get_many(keys)


async def test_each_user_writes_only_its_own_keys(cluster: LocalCluster) -> None:
    """#12 item 3: the node's user writes the contingency state but not Patroni's leader key;
    Patroni's user writes its leader key but not the contingency state; the operator writes
    the contingency state and the drill results but not the leader key."""
    leader = leader_key(cluster.topo.name)
    async with cluster.session() as s:
        node = _as(s, cluster, etcd_auth.NODE_USER)
        patroni = _as(s, cluster, etcd_auth.PATRONI_USER)
        operator = _as(s, cluster, etcd_auth.OPERATOR_USER)
        assert await _may_write(node, CONTINGENCY_STATE_KEY)
        assert not await _may_write(node, leader)
        assert not await _may_write(node, DRILL_RESULTS_KEY)
        assert await _may_write(patroni, leader)
        assert not await _may_write(patroni, CONTINGENCY_STATE_KEY)
        assert await _may_write(operator, CONTINGENCY_STATE_KEY)
        assert await _may_write(operator, DRILL_RESULTS_KEY)
        assert not await _may_write(operator, leader)
        assert await node.get(leader) is not None  # the node reads the leader key


async def test_only_root_administers_users_and_authentication(cluster: LocalCluster) -> None:
    """#12 item 3: the node's (and the operator's) user cannot add a user, grant a role or
    switch authentication off."""
    async with cluster.session() as s:
        for user in (etcd_auth.NODE_USER, etcd_auth.OPERATOR_USER, etcd_auth.PATRONI_USER):
            gw = _as(s, cluster, user)
            for path, body in (
                ("/v3/auth/user/add", {"name": "intruder", "password": "x"}),
                ("/v3/auth/user/grant", {"user": user, "role": "root"}),
                ("/v3/auth/disable", {}),
            ):
                with pytest.raises(EtcdRefused, match="permission denied"):
                    await gw.call(path, body)
        root = _as(s, cluster, etcd_auth.ROOT_USER)
        users = (await root.call("/v3/auth/user/list", {})).get("users", [])
        assert sorted(users) == ["operator", "patroni", "rocars-node", "root"]


def _text_files(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file() and not p.is_symlink()]


async def test_root_password_is_only_in_the_secrets_folder(cluster: LocalCluster) -> None:
    """#12 item 3 ("root disabled for daily use"): the root password is in no generated file
    outside the secrets folder (etcd, Patroni, node, Redis, Prometheus configuration, logs)
    and in no process's command line; the node's configuration names the file of its own
    password and holds no password."""
    state = cluster.state
    root_pw = state.secret_file("etcd-root").read_text().strip()
    node_pw = state.secret_file("etcd-node").read_text().strip()
    files = [p for p in _text_files(state.config) if state.secrets_dir not in p.parents]
    files += _text_files(state.logs)
    files += [state.member_dir(site) / "patroni.yaml" for site in cluster.topo.data_sites]
    holding = [p for p in files if root_pw.encode() in p.read_bytes()]
    assert holding == []
    node_cfg = state.node_config("A").read_text()
    assert str(state.secret_file("etcd-node")) in node_cfg
    assert node_pw not in node_cfg
    argv = [" ".join(p.info["cmdline"] or []) for p in psutil.process_iter(["cmdline"])]
    assert [a for a in argv if root_pw in a or node_pw in a] == []


async def _prometheus_etcd_targets(s: aiohttp.ClientSession, prom: str) -> list[dict[str, Any]]:
    async with s.get(f"{prom}/api/v1/targets?state=active") as r:
        doc = await r.json()
    return [t for t in doc["data"]["activeTargets"] if t["labels"]["job"] == "etcd"]


async def test_cluster_healthy_and_etcd_metrics_open_to_prometheus(cluster: LocalCluster) -> None:
    """#12 item 3: with authentication on, etcd's /metrics (on its client port) answers
    without credentials and Prometheus' three etcd targets are up; every member is healthy
    and `rocars cluster status` is happy."""
    async with cluster.session() as s:
        for url in cluster.topo.etcd_urls():
            async with s.get(f"{url}/metrics") as r:
                assert r.status == 200
                assert "etcd_server_has_leader 1" in await r.text()
        statuses = await _as(s, cluster, etcd_auth.NODE_USER).member_statuses()
        assert all(m.healthy for m in statuses), statuses
        prom = cluster.topo.monitoring_url("prometheus")
        deadline = time.monotonic() + 60
        targets = await _prometheus_etcd_targets(s, prom)
        while time.monotonic() < deadline and not (
            len(targets) == 3 and all(t["health"] == "up" for t in targets)
        ):
            await asyncio.sleep(0.5)
            targets = await _prometheus_etcd_targets(s, prom)
        assert [t["health"] for t in targets] == ["up"] * 3, targets
    code, doc = cluster.status()
    assert code == 0, doc
