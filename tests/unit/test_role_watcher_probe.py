"""failover.role.RoleWatcher asks the member's own PostgreSQL only while the local Patroni is
silent and the leader key is this member's, and follows its answer (#14 item 3)."""

from __future__ import annotations

from typing import Any, cast

from failover.role import RoleWatcher
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


def _watcher(patroni: Patroni, holder: str | None, probe: Probe) -> RoleWatcher:
    return RoleWatcher(
        patroni=cast(Any, patroni),
        patroni_url="https://127.0.0.1:1",
        etcd=cast(Any, Etcd(holder)),
        leader_key="/service/rocars/leader",
        my_member="pg-A",
        interval_s=0.25,
        pg_primary=probe,
    )


async def test_a_silent_patroni_of_the_key_holder_asks_postgres_and_stays_active() -> None:
    """Patroni frozen, key ours: PostgreSQL is asked, and its "primary" keeps the node
    active; its "in recovery" or silence makes it standby."""
    for answer, role in ((True, "active"), (False, "standby"), (None, "standby")):
        probe = Probe(answer)
        decision = await _watcher(Patroni(None), "pg-A", probe).cycle()
        assert (decision.role, probe.asked) == (role, 1), answer


async def test_postgres_is_not_asked_when_patroni_answers_or_the_key_is_another_members() -> None:
    """Normal running costs no probe; a silent Patroni whose key moved is standby unasked."""
    primary = MemberView(role="primary", state="running", paused=False)
    probe = Probe(True)
    assert (await _watcher(Patroni(primary), "pg-A", probe).cycle()).role == "active"
    assert (await _watcher(Patroni(None), "pg-B", probe).cycle()).role == "standby"
    assert probe.asked == 0
