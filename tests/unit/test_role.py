"""The node's role rule: active only when the local member holds the leader key read with
quorum AND is the running primary, by Patroni's word or, while Patroni is silent, by its own
PostgreSQL's; every other combination is standby, with a reason."""

from __future__ import annotations

import itertools
from dataclasses import replace

from failover.role_rule import PG_SILENCE_LIMIT_S, RoleFacts, decide_role

ROLES = (None, "primary", "replica", "uninitialized")
STATES = (None, "running", "streaming", "stopped", "starting")
HOLDERS = (None, "pg-A", "pg-B")


def test_active_exactly_when_running_primary_holds_the_key() -> None:
    """Over every combination, active iff the key is ours and known and either Patroni says
    primary/running or Patroni is silent and PostgreSQL itself says primary (#14 item 3)."""
    for role, state, holder, known, paused, pg_primary in itertools.product(
        ROLES, STATES, HOLDERS, (True, False), (True, False), (None, True, False)
    ):
        facts = RoleFacts("pg-A", role, state, holder, known, paused, pg_primary)
        d = decide_role(facts)
        ours = holder == "pg-A" and known
        by_patroni = role == "primary" and state == "running"
        by_postgres = role is None and pg_primary is True
        want = ours and (by_patroni or by_postgres)
        assert (d.role == "active") == want, facts
        assert d.reason
        assert "\n" not in d.reason


def test_frozen_patroni_reads_as_standby_unless_postgres_says_primary() -> None:
    """A local Patroni that does not answer (SIGSTOP) makes the node standby when its
    PostgreSQL did not answer either or is in recovery."""
    for pg_primary in (None, False):
        d = decide_role(RoleFacts("pg-A", None, None, "pg-A", True, local_pg_primary=pg_primary))
        assert d.role == "standby"
        assert "did not answer" in d.reason


def test_frozen_patroni_of_the_key_holding_primary_keeps_writing() -> None:
    """#14 item 3: Patroni frozen for less than ttl, the key still ours (quorum) and PostgreSQL
    itself the primary: active, saying why that is safe."""
    d = decide_role(RoleFacts("pg-A", None, None, "pg-A", True, local_pg_primary=True))
    assert d.role == "active"
    assert "did not answer" in d.reason
    assert "synchronous standby" in d.reason


def test_frozen_patroni_of_a_zombie_primary_is_standby() -> None:
    """Patroni frozen past ttl: the key expired or moved to the promoted standby, while the old
    PostgreSQL still says primary (the zombie of DESIGN.md section 6): standby."""
    for holder in (None, "pg-B"):
        d = decide_role(RoleFacts("pg-A", None, None, holder, True, local_pg_primary=True))
        assert d.role == "standby"


def test_no_quorum_in_etcd_reads_as_standby() -> None:
    """Without a quorum answer for the leader key, a primary-looking member is not trusted."""
    d = decide_role(RoleFacts("pg-A", "primary", "running", None, False))
    assert d.role == "standby"
    assert "quorum" in d.reason


def test_zombie_primary_without_the_key_is_standby() -> None:
    """A member still running as primary after the key moved on is not active."""
    d = decide_role(RoleFacts("pg-A", "primary", "running", "pg-B", True))
    assert d.role == "standby"
    assert "held by pg-B" in d.reason


def test_legacy_master_role_counts_as_primary() -> None:
    """Older Patroni versions call the primary "master": a running master holding the key is
    active just as a running primary is."""
    d = decide_role(RoleFacts("pg-A", "master", "running", "pg-A", True))
    assert d.role == "active"
    assert d.reason == "pg-A is the running primary and holds the leader key"


def test_an_unheld_leader_key_is_named_nobody() -> None:
    """With a quorum answer that no member holds the key (no leader yet), the reason says
    "nobody" rather than printing None."""
    d = decide_role(RoleFacts("pg-A", "primary", "running", None, True))
    assert d.role == "standby"
    assert d.reason == "the leader key is held by nobody, not pg-A"


def test_key_holder_that_is_not_a_running_primary_says_what_it_is() -> None:
    """Holding the key is not enough: a member still starting (or a replica) stays standby and
    the reason gives its role/state."""
    d = decide_role(RoleFacts("pg-A", "primary", "starting", "pg-A", True))
    assert d.role == "standby"
    assert "primary/starting" in d.reason


def test_a_primary_its_node_cannot_reach_is_standby_from_the_limit_on() -> None:
    """#14 item 3 (node -> PostgreSQL cut): Patroni says running primary and the key is ours,
    but the node's own PostgreSQL has been silent to it: active below PG_SILENCE_LIMIT_S,
    standby from it on, naming how long."""
    base = RoleFacts("pg-A", "primary", "running", "pg-A", True)
    for silent, role in ((None, "active"), (0.0, "active"), (2.99, "active"), (3.0, "standby")):
        d = decide_role(replace(base, local_pg_silent_s=silent))
        assert d.role == role, silent
    d = decide_role(replace(base, local_pg_silent_s=PG_SILENCE_LIMIT_S + 7))
    assert "has not reached it for 10.0 s" in d.reason
