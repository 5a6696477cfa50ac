"""Where etcd's raft leader should be: the pure rule, over every combination that matters."""

from __future__ import annotations

import itertools

import pytest

from failover.etcd_placement import decide_placement
from replication.etcd_gateway import MemberStatus

URLS = {"A": "http://a:2379", "B": "http://b:2379", "C": "http://c:2379"}
IDS = {"A": "1", "B": "2", "C": "3"}
WITNESS = URLS["C"]


def members(
    leader: str | None, down: tuple[str, ...] = (), split: bool = False
) -> list[MemberStatus]:
    out = []
    for site, url in URLS.items():
        if site in down:
            out.append(MemberStatus(url=url, healthy=False, error="refused"))
            continue
        lid = IDS[leader] if leader else None
        if split and site == "A":
            lid = IDS["A"]
        out.append(MemberStatus(url=url, healthy=True, member_id=IDS[site], leader_id=lid))
    return out


def decide(**kw: object) -> tuple[bool, str]:
    args: dict[str, object] = {
        "active": True,
        "members": members("A"),
        "witness_url": WITNESS,
        "now": 1000.0,
        "last_move_at": None,
        "min_interval_s": 30.0,
    }
    args.update(kw)
    p = decide_placement(**args)  # type: ignore[arg-type]
    return p.move, p.reason


@pytest.mark.parametrize("leader", ["A", "B"])
def test_a_data_site_leader_is_handed_to_the_witness(leader: str) -> None:
    """All three healthy and agreeing, the leader on A or B: move it to the witness."""
    move, reason = decide(members=members(leader))
    assert move
    assert reason == "etcd's leader is on a data site: hand it to the witness."


def test_a_witness_leader_stays() -> None:
    """Already on the witness: nothing to do."""
    assert decide(members=members("C")) == (False, "etcd's leader is on the witness.")


def test_only_the_active_node_moves_it() -> None:
    """The standby never moves it, so two nodes never race to."""
    assert decide(active=False)[0] is False


@pytest.mark.parametrize("down", ["A", "B", "C"])
def test_a_member_down_leaves_the_leader_be(down: str) -> None:
    """With one of three members down a leadership transfer could cost quorum: never then."""
    move, reason = decide(members=members("A", down=(down,)))
    assert not move
    assert URLS[down] in reason


def test_members_that_disagree_mean_an_election_is_on() -> None:
    """Members naming different leaders (or none) are mid-election: wait."""
    assert decide(members=members("B", split=True))[0] is False
    assert decide(members=members(None))[0] is False


def test_moves_are_spaced_by_the_minimum_interval() -> None:
    """After a move, the next one waits min_interval_s (a flapping leader is not chased)."""
    assert decide(last_move_at=990.0)[0] is False
    assert decide(last_move_at=960.0)[0] is True


def test_exhaustive_never_moves_unless_every_condition_holds() -> None:
    """Over every combination: a move happens exactly when the node is active, all members
    are healthy and agree, the leader is not the witness and the interval has passed."""
    for active, leader, down, split, last in itertools.product(
        [True, False], ["A", "B", "C", None], [(), ("A",), ("C",)], [False, True], [None, 990.0]
    ):
        move, _ = decide(active=active, members=members(leader, down, split), last_move_at=last)
        agree = leader is not None and not (split and "A" not in down and leader != "A")
        expected = active and not down and agree and leader != "C" and last is None
        assert move == expected, (active, leader, down, split, last)


def test_a_witness_out_of_view_is_never_the_target() -> None:
    """The witness URL missing from the member list (misconfigured) or reporting no member id
    (it cannot be addressed in a transfer): nothing is moved, and the reason names the URL."""
    without_witness = [m for m in members("A") if m.url != WITNESS]
    assert decide(members=without_witness) == (
        False,
        f"the witness member {WITNESS} is not in view.",
    )
    anonymous = [
        MemberStatus(url=m.url, healthy=True, member_id=None, leader_id=m.leader_id)
        if m.url == WITNESS
        else m
        for m in members("A")
    ]
    assert decide(members=anonymous)[0] is False
    assert WITNESS in decide(members=anonymous)[1]
