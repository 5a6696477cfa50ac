"""The phone channel on the running cluster (issue 16): calls placed by an Asterisk stand-in
(agi_standin) through HAProxy's FastAGI entry to the active node, bundles checked in the
database and through the API."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from agi_standin import place_call
from apikit import Account, Accounts, Api, new_vrn, submit
from prometheus_client.parser import text_string_to_metric_families

from deploy.admin import leader_site
from deploy.harness import LocalCluster
from node.phone.keypad import encode_mark

pytestmark = pytest.mark.integration
PIN = "314159"


async def _trucker(new_account: Callable[[str], Account], api: Api) -> Account:
    trucker = new_account("trucker")
    r = await api.call("PUT", "/v1/accounts/me/phone-pin", trucker.key, json={"pin": PIN})
    assert r.status == 200, r.text
    return trucker


def _entry(cluster: LocalCluster) -> tuple[str, int]:
    port = cluster.topo.entry.phone_port
    assert port is not None
    return cluster.topo.entry_host(), port


def _keys(trucker: Account, vrn: str, menu: str, *entries: str) -> list[str]:
    return [f"{trucker.id}#", f"{PIN}#", f"{encode_mark(vrn)}#", "1#", f"{menu}#", *entries]


async def _phone_calls(cluster: LocalCluster, outcome: str) -> float:
    """The active node's `rocars_phone_calls_total` for `outcome` (0 before the first)."""
    site = await leader_site(cluster.topo)
    async with cluster.session() as s, s.get(f"{cluster.topo.node_url(site)}/metrics") as r:
        text = await r.text()
    for family in text_string_to_metric_families(text):
        if family.name == "rocars_phone_calls":
            for sample in family.samples:
                if sample.name.endswith("_total") and sample.labels["outcome"] == outcome:
                    return sample.value
    return 0.0


async def _bundles(db: psycopg.AsyncConnection[Any], vrn: str) -> list[dict[str, Any]]:
    cur = await db.execute(
        "SELECT b.id, b.empty, b.trucker_id, array_remove(array_agg(i.ccrn ORDER BY i.ccrn), NULL)"
        " FROM bundles b LEFT JOIN bundle_items i ON i.bundle_id = b.id WHERE b.vrn = %s"
        " GROUP BY b.id ORDER BY b.id",
        (vrn,),
    )
    return [
        {"id": r[0], "empty": r[1], "trucker_id": r[2], "ccrns": list(r[3])}
        for r in await cur.fetchall()
    ]


async def test_a_full_call_bundles_two_ccrns(
    cluster: LocalCluster,
    api: Api,
    accounts: Accounts,
    new_account: Callable[[str], Account],
    db: psycopg.AsyncConnection[Any],
) -> None:
    """#16 call: account, PIN, a mark spelled on the keypad and read back, LBCP 1 (LMC), two
    CCRNs with `#` after each and `##` at the end make one bundle through the API's write path;
    freshly submitted cargo is told to cross after a time, said twice, and ROCARS_RESULT
    carries it as the API's not_before."""
    trucker = await _trucker(new_account, api)
    a = await submit(api, accounts.trader.key)
    b = await submit(api, accounts.trader.key)
    vrn = new_vrn()
    call = await place_call(
        *_entry(cluster), _keys(trucker, vrn, "1", f"{a['ccrn']}#", f"{b['ccrn']}#", "#")
    )
    assert call.played()[:6] == [
        "rocars/welcome",
        "rocars/enter-account",
        "rocars/enter-pin",
        "rocars/enter-vehicle",
        "rocars/you-entered",
        "rocars/confirm-vehicle",
    ]
    assert call.said("ALPHA") == [vrn]
    assert call.played().count("rocars/enter-ccrn") == 3
    assert call.result is not None, call.commands
    assert call.result.startswith("cross_after:")
    assert len(call.said("TIME")) == 2
    assert call.hung_up_by_server
    [made] = await _bundles(db, vrn)
    assert made["trucker_id"] == trucker.id
    assert sorted(made["ccrns"]) == sorted([a["ccrn"], b["ccrn"]])
    r = await api.get(f"/v1/bundles/{made['id']}", trucker.key)
    assert r.json["instruction"] == "cross_after"
    not_before = datetime.fromisoformat(r.json["not_before"])
    assert call.result == "cross_after:" + not_before.astimezone(UTC).isoformat().replace(
        "+00:00", "Z"
    )
    assert int(call.said("TIME")[0]) == int(not_before.timestamp())


async def test_an_empty_truck_crosses_now(
    cluster: LocalCluster,
    api: Api,
    new_account: Callable[[str], Account],
    db: psycopg.AsyncConnection[Any],
) -> None:
    """#16 call: `0` at the first CCRN prompt declares an empty truck: bundled, cross now (said
    twice)."""
    trucker = await _trucker(new_account, api)
    vrn = new_vrn()
    before = await _phone_calls(cluster, "cross_now")
    call = await place_call(*_entry(cluster), _keys(trucker, vrn, "4", "0#"))
    assert call.result == "cross_now", call.commands
    assert call.played().count("rocars/cross-now") == 2
    assert await _phone_calls(cluster, "cross_now") == before + 1
    [made] = await _bundles(db, vrn)
    assert made["empty"] is True
    assert made["ccrns"] == []


async def test_a_wrong_check_digit_is_refused_as_keyed(
    cluster: LocalCluster,
    api: Api,
    accounts: Accounts,
    new_account: Callable[[str], Account],
    db: psycopg.AsyncConnection[Any],
) -> None:
    """#16 call: a CCRN with a wrong check digit is refused at once with its spoken reason, the
    caller keys the next one, and only the good CCRN is bundled."""
    trucker = await _trucker(new_account, api)
    good = (await submit(api, accounts.trader.key))["ccrn"]
    typo = good[:-1] + str((int(good[-1]) + 1) % 10)
    vrn = new_vrn()
    call = await place_call(*_entry(cluster), _keys(trucker, vrn, "1", f"{typo}#", f"{good}#", "#"))
    played = call.played()
    assert "rocars/ccrn-check-digit" in played
    assert played.index("rocars/ccrn-check-digit") < played.index("rocars/ccrn-accepted")
    assert call.result is not None
    assert call.result.startswith("cross_after:")
    [made] = await _bundles(db, vrn)
    assert made["ccrns"] == [good]


async def test_three_wrong_pins_lock_phone_access(
    cluster: LocalCluster,
    api: Api,
    new_account: Callable[[str], Account],
    db: psycopg.AsyncConnection[Any],
) -> None:
    """#16 identification: three wrong PINs end the call and lock phone access for 15 minutes:
    a call with the right PIN right after is refused too; a new PIN (set over the API) lifts it."""
    trucker = await _trucker(new_account, api)
    wrong = [f"{trucker.id}#", "000000#"] * 3
    call = await place_call(*_entry(cluster), wrong)
    assert call.result == "failed:locked", call.commands
    assert call.played().count("rocars/wrong-pin") == 2
    assert call.played()[-2:] == ["rocars/locked", "rocars/goodbye"]
    cur = await db.execute(
        "SELECT locked_until - now() FROM phone_pins WHERE account_id = %s", (trucker.id,)
    )
    row = await cur.fetchone()
    assert row is not None
    assert timedelta(minutes=14) < row[0] <= timedelta(minutes=15)
    again = await place_call(*_entry(cluster), _keys(trucker, new_vrn(), "4", "0#"))
    assert again.result == "failed:locked"
    assert "rocars/enter-vehicle" not in again.played()
    cur = await db.execute("SELECT pin_hash FROM phone_pins WHERE account_id = %s", (trucker.id,))
    stored = await cur.fetchone()
    assert stored is not None
    assert PIN not in stored[0]
    assert stored[0].startswith("scrypt$")


async def test_a_call_in_manual_mode_is_told_what_to_do(
    cluster: LocalCluster,
    api: Api,
    accounts: Accounts,
    new_account: Callable[[str], Account],
    db: psycopg.AsyncConnection[Any],
) -> None:
    """#16 item 6: with manual clearance in force at the chosen LBCP the call says so, names
    the LBCP and what to do, makes no bundle and answers failed:manual_mode."""
    trucker = await _trucker(new_account, api)
    vrn = new_vrn()
    r = await api.post(
        "/v1/contingency/activate",
        accounts.officer.key,
        json={"reason": "phone channel test", "lbcps": ["HZMB"]},
    )
    assert r.status == 200, r.text
    try:
        call = await place_call(*_entry(cluster), _keys(trucker, vrn, "6", "0#"))
    finally:
        r = await api.post(
            "/v1/contingency/deactivate",
            accounts.officer.key,
            json={"reason": "phone channel test done"},
        )
        assert r.status == 200, r.text
    assert call.result == "failed:manual_mode", call.commands
    assert call.played()[-4:] == [
        "rocars/manual-mode",
        "rocars/lbcp-hzmb",
        "rocars/manual-mode-action",
        "rocars/goodbye",
    ]
    assert "rocars/enter-ccrn" not in call.played()
    assert await _bundles(db, vrn) == []


async def test_a_call_cut_and_keyed_again_makes_one_bundle(
    cluster: LocalCluster,
    api: Api,
    accounts: Accounts,
    new_account: Callable[[str], Account],
    db: psycopg.AsyncConnection[Any],
) -> None:
    """#16 item 6: a call cut half-way makes nothing; one cut after the bundle was made but
    before its answer was heard, keyed again, is answered from that bundle: one bundle only,
    the same answer."""
    trucker = await _trucker(new_account, api)
    a = (await submit(api, accounts.trader.key))["ccrn"]
    b = (await submit(api, accounts.trader.key))["ccrn"]
    vrn = new_vrn()
    keys = _keys(trucker, vrn, "1", f"{a}#", f"{b}#", "#")
    half = await place_call(*_entry(cluster), list(keys), cut_after_prompts=6)
    assert half.result is None
    assert await _bundles(db, vrn) == []
    first = await place_call(*_entry(cluster), list(keys), cut_at="STREAM FILE rocars/cross")
    assert first.result is not None
    assert first.result.startswith("cross_after:")
    assert len(await _bundles(db, vrn)) == 1
    again = await place_call(*_entry(cluster), list(keys))
    assert again.result == first.result
    assert "rocars/bundle-refused" not in again.played()
    [made] = await _bundles(db, vrn)
    assert sorted(made["ccrns"]) == sorted([a, b])


async def test_the_standby_node_refuses_calls(
    cluster: LocalCluster, api: Api, new_account: Callable[[str], Account]
) -> None:
    """#16 item 6: the standby's FastAGI server answers a call with "service unavailable",
    failed:unavailable and a hang-up, asking for nothing (the dialplan retries via the entry)."""
    trucker = await _trucker(new_account, api)
    leader = await leader_site(cluster.topo)
    standby = next(s for s in cluster.topo.data_sites if s != leader)
    site = cluster.topo.sites[standby]
    assert site.phone is not None
    call = await place_call(site.host, site.phone.port, _keys(trucker, new_vrn(), "4", "0#"))
    assert call.result == "failed:unavailable"
    assert call.played() == ["rocars/service-unavailable"]
    assert call.hung_up_by_server
    assert not [c for c in call.commands if c.startswith("GET DATA")]
