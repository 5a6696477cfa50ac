"""kernel.names: Patroni member names and etcd key paths, spelled in one place."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kernel import names
from kernel.names import leader_key, member_name, member_site


def test_member_name_prefixes_the_site() -> None:
    """A site's Patroni member is `pg-<site>`."""
    assert member_name("A") == "pg-A"
    assert member_name("witness") == "pg-witness"


@given(st.text(min_size=1))
def test_member_site_inverts_member_name(site: str) -> None:
    """Any non-empty site code survives the round trip through its member name."""
    assert member_site(member_name(site)) == site


@pytest.mark.parametrize("member", [None, "", "pg-", "A", "pg_A", "PG-A", "xpg-A", "etcd-A"])
def test_member_site_is_none_for_no_or_foreign_names(member: str | None) -> None:
    """No member, a bare prefix, or a name that is not ours (wrong case, other separator, other
    component) has no site: callers never read a site out of a stranger's name."""
    assert member_site(member) is None


def test_leader_key_under_the_patroni_namespace() -> None:
    """Patroni's leader key is `<namespace><scope>/leader`, by default under /service/."""
    assert leader_key("rocars") == "/service/rocars/leader"
    assert leader_key("rocars", namespace="/custom/") == "/custom/rocars/leader"
    assert leader_key("rocars").startswith(names.PATRONI_NAMESPACE)


def test_project_keys_live_apart_from_patroni() -> None:
    """The contingency state and the write heartbeat are distinct keys under /rocars/, outside
    Patroni's namespace, so neither can collide with a key Patroni writes."""
    keys = {names.CONTINGENCY_STATE_KEY, names.WRITE_HEARTBEAT_KEY}
    assert len(keys) == 2
    for key in keys:
        assert key.startswith("/rocars/")
        assert not key.startswith(names.PATRONI_NAMESPACE)
