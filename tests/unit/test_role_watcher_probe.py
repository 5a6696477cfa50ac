"""failover.role.RoleWatcher asks the member's own PostgreSQL whenever the leader key is this
member's, and follows its answer: while the local Patroni is silent, "primary" keeps the node
active; silence for PG_SILENCE_LIMIT_S makes it standby even though Patroni says primary
(#14 item 3)."""

from __future__ import annotations

from typing import Any, cast

from failover.role import RoleWatcher
from failover.role_rule import PG_SILENCE_LIMIT_S
from kernel.errors import PatroniUnavailable
from replication.etcd_gateway import KeyValue
from replication.patroni_rest import MemberView


class Patroni:
    def __init__(self, view: MemberView | None) -> None:
        self.view = view

    async def member(self, base_url: str) -> MemberView:
        if self.view is None:
            raise PatroniUnavailable("frozen")
        return self.view


class Etcd:
    def __init__(self, holder: str | None) -> None:
        self.holder = holder

    async def get(self, key: str) -> KeyValue | None:
        return None if self.holder is None else KeyValue(key, self.holder.encode(), 7)


class Probe:
    def __init__(self, answer: bool | None) -> None:
        self.answer = answer
        self.asked = 0

    async def __call__(self) -> bool | None:
        self.asked += 1
        return self.answer


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


PRIMARY = MemberView(role="primary", state="running", paused=False)


def _watcher(
    patroni: Patroni, holder: str | None, probe: Probe, clock: Clock | None = None
) -> RoleWatcher:
    return RoleWatcher(
        patroni=cast(Any, patroni),
        patroni_url="https://127.0.0.1:1",
        etcd=cast(Any, Etcd(holder)),
        leader_key="/service/rocars/leader",
        my_member="pg-A",
        interval_s=0.25,
        pg_primary=probe,
        clock=clock or Clock(),
    )


async def test_a_silent_patroni_of_the_key_holder_asks_postgres_and_stays_active() -> None:
    """Patroni frozen, key ours: PostgreSQL is asked, and its "primary" keeps the node
    active; its "in recovery" or silence makes it standby."""
    for answer, role in ((True, "active"), (False, "standby"), (None, "standby")):
        probe = Probe(answer)
        decision = await _watcher(Patroni(None), "pg-A", probe).cycle()
        assert (decision.role, probe.asked) == (role, 1), answer


async def test_postgres_is_asked_only_while_the_key_is_this_members() -> None:
    """The key holder asks its PostgreSQL once a cycle, also when Patroni answers; a node
    whose key is another member's (or unknown) asks nothing and is standby."""
    probe = Probe(True)
    assert (await _watcher(Patroni(PRIMARY), "pg-A", probe).cycle()).role == "active"
    assert probe.asked == 1
    assert (await _watcher(Patroni(None), "pg-B", probe).cycle()).role == "standby"
    assert (await _watcher(Patroni(PRIMARY), None, probe).cycle()).role == "standby"
    assert probe.asked == 1


async def test_own_postgres_silent_past_the_limit_makes_the_primarys_node_standby() -> None:
    """#14 item 3 (node -> PostgreSQL cut): Patroni says primary, the key is ours, but our
    PostgreSQL does not answer us: active until PG_SILENCE_LIMIT_S of silence, then standby
    saying so; one answer makes it active again and restarts the count."""
    clock, probe = Clock(), Probe(None)
    watcher = _watcher(Patroni(PRIMARY), "pg-A", probe, clock)
    assert (await watcher.cycle()).role == "active"  # silent since now
    clock.now = PG_SILENCE_LIMIT_S - 0.01
    assert (await watcher.cycle()).role == "active"
    clock.now = PG_SILENCE_LIMIT_S
    decision = await watcher.cycle()
    assert decision.role == "standby"
    assert "not reached it for 3.0 s" in decision.reason
    probe.answer = True
    clock.now += 1
    assert (await watcher.cycle()).role == "active"
    probe.answer = None
    clock.now += 1
    assert (await watcher.cycle()).role == "active"  # a new silence starts from zero
    clock.now += PG_SILENCE_LIMIT_S
    assert (await watcher.cycle()).role == "standby"
