"""The one planned switchover (failover.switchover) against fakes of Patroni and etcd: the order
of its steps, what it asks Patroni, and how it waits for the candidate to lead."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from failover.switchover import LeaderWait, SwitchoverRefused, switchover
from kernel.errors import EtcdUnavailable, RocarsError
from replication.etcd_gateway import KeyValue

KEY = "/service/rocars/leader"


@dataclass
class FakePatroni:
    answer: tuple[int, str] = (200, 'Successfully switched over to "pg-B"')
    log: list[str] = field(default_factory=list)

    async def switchover(self, base_url: str, *, leader: str, candidate: str) -> tuple[int, str]:
        self.log.append(f"POST {base_url}/switchover leader={leader} candidate={candidate}")
        return self.answer


@dataclass
class FakeEtcd:
    """Answers each read of the leader key with the next holder (None: no key, an exception:
    raised); the last one repeats."""

    holders: list[str | Exception | None]
    reads: int = 0

    async def get(self, key: str) -> KeyValue | None:
        assert key == KEY
        holder = self.holders[min(self.reads, len(self.holders) - 1)]
        self.reads += 1
        if isinstance(holder, Exception):
            raise holder
        return None if holder is None else KeyValue(key, holder.encode(), self.reads)


async def _run(patroni: FakePatroni, **kwargs: Any) -> str:
    return await switchover(
        "B",
        leader="A",
        patroni=patroni,  # type: ignore[arg-type]
        patroni_url="http://a:8008",
        **kwargs,
    )


async def test_checkpoint_comes_before_the_request_naming_leader_and_candidate() -> None:
    """The leader is checkpointed first, then Patroni is asked to move from pg-A to pg-B; the
    progress lines say so and Patroni's answer is returned."""
    patroni = FakePatroni()
    lines: list[str] = []

    async def checkpoint() -> None:
        patroni.log.append("CHECKPOINT")

    answer = await _run(patroni, checkpoint=checkpoint, progress=lines.append)
    assert patroni.log == [
        "CHECKPOINT",
        "POST http://a:8008/switchover leader=pg-A candidate=pg-B",
    ]
    assert answer == 'Successfully switched over to "pg-B"'
    assert lines == [
        "CHECKPOINT on pg-A",
        "asking Patroni to switch over from pg-A to pg-B",
        'Patroni answered 200: Successfully switched over to "pg-B"',
    ]


async def test_without_checkpoint_only_the_request_is_made() -> None:
    """The controller's switchover (no database access) goes straight to Patroni."""
    patroni = FakePatroni()
    await _run(patroni)
    assert patroni.log == ["POST http://a:8008/switchover leader=pg-A candidate=pg-B"]


async def test_a_refusal_by_patroni_raises_with_its_answer() -> None:
    """Any answer but 200 is a refusal that carries Patroni's status and message."""
    patroni = FakePatroni(answer=(412, "candidate name does not match with sync_standby"))
    with pytest.raises(SwitchoverRefused) as info:
        await _run(patroni)
    assert str(info.value) == (
        "Patroni refused the switchover to pg-B (412): "
        "candidate name does not match with sync_standby"
    )


async def test_wait_returns_once_the_candidate_holds_the_leader_key() -> None:
    """With a wait, the leader key is read until it names the candidate; an etcd error or an
    empty key on the way is read again, not fatal."""
    etcd = FakeEtcd(["pg-A", EtcdUnavailable("blip"), None, "pg-B"])
    lines: list[str] = []
    wait = LeaderWait(etcd, KEY, timeout_s=5, interval_s=0)  # type: ignore[arg-type]
    await _run(FakePatroni(), wait=wait, progress=lines.append)
    assert etcd.reads == 4
    assert lines[-1].startswith("pg-B holds the leader key (")


async def test_wait_gives_up_naming_the_last_holder() -> None:
    """When the candidate never takes the key, the wait ends after its timeout naming who
    holds it."""
    etcd = FakeEtcd(["pg-A"])
    wait = LeaderWait(etcd, KEY, timeout_s=0.05, interval_s=0.01)  # type: ignore[arg-type]
    with pytest.raises(RocarsError) as info:
        await _run(FakePatroni(), wait=wait)
    assert str(info.value) == "pg-B did not take the leader key within 0s (last holder: pg-A)"
    assert etcd.reads >= 2


async def test_no_wait_after_a_refusal() -> None:
    """A refused request never waits for a leader that will not come."""
    etcd = FakeEtcd(["pg-A"])
    wait = LeaderWait(etcd, KEY, timeout_s=5, interval_s=0)  # type: ignore[arg-type]
    with pytest.raises(SwitchoverRefused):
        await _run(FakePatroni(answer=(503, "Switchover failed")), wait=wait)
    assert etcd.reads == 0
