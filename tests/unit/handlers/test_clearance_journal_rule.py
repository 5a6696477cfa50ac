"""A clearance this node cannot write to PostgreSQL goes to its journal only while manual
clearance is in force at the LBCP, or while the node cannot read whether it is: the journal is
manual mode's store, imported when manual mode is switched off. Found by the nemesis (#14 item
4): with manual mode off, HAProxy briefly saw no active node and sent a clearance to the
standby, which journalled it (202) where nothing would ever import it. In process, through the
real app factory with the handler fakes (the node is standby; its database is down)."""

from __future__ import annotations

import pytest
from handler_fakes import Fakes
from problem_checks import AiohttpClient, Client

from contingency.state import may_journal
from node import appkeys
from node.app import create_app

URL = "/v1/contingency/clearances"
BODY = {"lbcp": "LMC", "vrn": "AB1234", "decision": "release", "documents": ["manifest 1"]}


def test_the_rule() -> None:
    """Manual mode, or a state the node cannot read: journal; normal mode known: refuse."""
    assert may_journal("manual", state_known=True)
    assert may_journal("manual", state_known=False)
    assert may_journal("normal", state_known=False)
    assert not may_journal("normal", state_known=True)


@pytest.fixture
async def standby(fakes: Fakes, aiohttp_client: AiohttpClient) -> Client:
    fakes.role.set("standby")
    return await aiohttp_client(create_app(fakes.config(), fakes.deps()))


async def _clear(node: Client, fakes: Fakes, key: str) -> tuple[int, dict[str, object]]:
    headers = fakes.auth("officer") | {"Idempotency-Key": key}
    async with node.post(URL, json=BODY, headers=headers) as r:
        return r.status, await r.json(content_type=None)


def _journalled(node: Client) -> int:
    return len(node.app[appkeys.JOURNAL].pending_clearances())


async def test_normal_mode_known_refuses_with_a_retry_and_journals_nothing(
    standby: Client, fakes: Fakes
) -> None:
    """#14 item 4: manual mode off (read from etcd): the standby answers 503 problem+json
    with Retry-After and a detail saying why and to retry under the same key; nothing is
    journalled."""
    await fakes.contingency.refresh()
    status, doc = await _clear(standby, fakes, "k1")
    assert status == 503, doc
    assert "manual clearance is not in force at LMC" in str(doc["detail"])
    assert "same Idempotency-Key" in str(doc["detail"])
    assert _journalled(standby) == 0


async def test_manual_mode_at_the_lbcp_journals(standby: Client, fakes: Fakes) -> None:
    """#14 item 4: with manual clearance in force (all LBCPs, or this one) the standby
    journals the clearance (202), as before; manual mode elsewhere only still refuses."""
    await fakes.contingency.activate(actor="officer:1", reason="t", lbcps=["MKT"], message="m")
    await fakes.contingency.refresh()  # as the node's loop does every 0.25 s
    assert (await _clear(standby, fakes, "k2"))[0] == 503
    await fakes.contingency.activate(actor="officer:1", reason="t", lbcps=None, message="m")
    await fakes.contingency.refresh()
    status, doc = await _clear(standby, fakes, "k3")
    assert (status, doc["stored"]) == (202, "journal")
    assert _journalled(standby) == 1


async def test_an_unreadable_state_journals(standby: Client, fakes: Fakes) -> None:
    """#14 item 4: etcd unreachable, so the node cannot tell the mode: it journals (202), as
    an officer's record must never be refused while the system is failing."""
    await fakes.contingency.refresh()
    fakes.etcd.down = True
    await fakes.contingency.refresh()
    status, doc = await _clear(standby, fakes, "k4")
    assert (status, doc["stored"]) == (202, "journal")
