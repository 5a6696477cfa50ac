"""Names shared by every layer: Patroni member names and the etcd keys the project reads and
writes. One place, so that a site code, a member name and a key path cannot drift apart."""

from __future__ import annotations

PATRONI_NAMESPACE = "/service/"
MEMBER_PREFIX = "pg-"
READ_REPLICA_SUFFIX = "-replica"
# Manual clearance mode (contingency.state documents it) and the active node's write heartbeat.
CONTINGENCY_STATE_KEY = "/rocars/contingency/state"
WRITE_HEARTBEAT_KEY = "/rocars/heartbeat/write"
# When the failover controller last asked for a switchover (it waits a while between two).
LAST_SWITCHOVER_KEY = "/rocars/failover/last_switchover"
# The last failover drill of each scenario, JSON (monitoring.drill_results): written by the
# drills (deploy/drills), exported by every node.
DRILL_RESULTS_KEY = "/rocars/drills/last"
# A key nobody writes: reading it with quorum tells that etcd has a working majority.
QUORUM_PROBE_KEY = "/rocars/ping"


def member_name(site: str) -> str:
    """The Patroni member of a site: `A` -> `pg-A`."""
    return f"{MEMBER_PREFIX}{site}"


def read_replica_key(site: str) -> str:
    """A site's read replica (#17 item 5) where a site code names a member (its member name,
    `pg-B-replica`; its folder): a key no site can have, since site codes hold no dash."""
    return f"{site}{READ_REPLICA_SUFFIX}"


def member_site(member: str | None) -> str | None:
    """The site of a Patroni member name (`pg-A` -> `A`); None for None or a foreign name."""
    if member is None or not member.startswith(MEMBER_PREFIX):
        return None
    return member[len(MEMBER_PREFIX) :] or None


def leader_key(cluster: str, namespace: str = PATRONI_NAMESPACE) -> str:
    """Patroni's leader key in etcd for a cluster scope."""
    return f"{namespace}{cluster}/leader"
