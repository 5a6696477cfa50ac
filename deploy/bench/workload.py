"""What the bench sends: valid consignments, its own accounts, and the bundles whose trucks the
arrival decisions are about (made through the API before the load starts)."""

from __future__ import annotations

import asyncio
import json
import math
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp

from deploy import admin
from deploy.state import StateDir
from deploy.topology import Topology
from kernel.errors import RocarsError

LBCP = "LMC"
# Inside the advance window (30 min .. 14 days) for any run shorter than a day.
EXPECTED_IN = timedelta(hours=6)
# Each trader account takes at most this many submissions a second of the offer, well under
# the per-account rate limit (node.config rate_limit_per_s, 1000), so a 429 the bench sees is
# shedding, never the runaway-client limit.
PER_ACCOUNT_RATE = 400.0


def consignment(now: datetime, n: int = 0) -> dict[str, Any]:
    """A valid consignment expected EXPECTED_IN after `now`."""
    return {
        "direction": "import",
        "lbcp": LBCP,
        "package_count": 1 + n % 40,
        "package_description": "cartons on two pallets",
        "article_description": "cotton shirts, printed, assorted sizes",
        "consignor_name": "Shenzhen Garment Works Ltd",
        "consignor_address": "88 Bao'an Road, Shenzhen",
        "consignee_name": "Kowloon Retail Ltd",
        "consignee_address": "12 Nathan Road, Tsim Sha Tsui, Kowloon",
        "expected_at": (now + EXPECTED_IN).astimezone(UTC).isoformat(),
    }


def traders_for(rate: float) -> int:
    """How many trader accounts spread `rate` submissions a second under the account limit."""
    return max(1, math.ceil(rate / PER_ACCOUNT_RATE))


@dataclass(frozen=True)
class Accounts:
    traders: list[tuple[int, str]]  # (account id, API key)
    officer: str
    trucker: str


async def make_account(topo: Topology, state: StateDir, kind: str, name: str) -> tuple[int, str]:
    """A fresh approved account: (its id, its API key)."""
    a = await admin.admin_create_account(
        topo, state, kind=kind, name=name, trader_kind="shipper" if kind == "trader" else None
    )
    return int(a["id"]), str(a["api_key"])


async def make_traders(topo: Topology, state: StateDir, n: int, name: str) -> list[tuple[int, str]]:
    return [await make_account(topo, state, "trader", f"{name} trader {i}") for i in range(n)]


async def make_accounts(topo: Topology, state: StateDir, *, traders: int, run: str) -> Accounts:
    return Accounts(
        traders=await make_traders(topo, state, traders, f"bench {run}"),
        officer=(await make_account(topo, state, "officer", f"bench {run} officer"))[1],
        trucker=(await make_account(topo, state, "trucker", f"bench {run} trucker"))[1],
    )


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


_PLATE = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"


def bench_vrns(count: int) -> list[str]:
    """`count` distinct VRNs, each "B" and 7 random letters and digits: 36**7 plates, so a
    set-up does not meet a truck an earlier run left with a bundle in progress (a 2-byte tag
    per set-up, 65,536 of them, met one in a state folder with 76 set-ups' bundles open: 409)."""
    vrns: dict[str, None] = {}
    while len(vrns) < count:
        vrns["B" + "".join(secrets.choice(_PLATE) for _ in range(7))] = None
    return list(vrns)


async def make_bundles(
    session: aiohttp.ClientSession, api: str, accounts: Accounts, *, count: int, run: str
) -> list[str]:
    """`count` open bundles of one consignment each at LBCP; returns their VRNs."""
    now = datetime.now(UTC)
    items = [consignment(now, i) for i in range(count)]
    async with session.post(
        f"{api}/v1/consignments:batch", json=items, headers=auth(accounts.traders[0][1])
    ) as r:
        doc = await r.json()
        if r.status != 200 or doc.get("accepted") != count:
            raise RocarsError(f"bench set-up: batch of {count} answered {r.status}: {doc}")
    ccrns = [res["ccrn"] for res in doc["results"]]
    vrns = bench_vrns(count)
    sem = asyncio.Semaphore(8)

    async def bundle(vrn: str, ccrn: str) -> None:
        async with (
            sem,
            session.post(
                f"{api}/v1/bundles",
                json={"vrn": vrn, "lbcp": LBCP, "ccrns": [ccrn]},
                headers={**auth(accounts.trucker), "Idempotency-Key": f"bench-{run}-{vrn}"},
            ) as r,
        ):
            if r.status != 201:
                raise RocarsError(
                    f"bench set-up: bundle {vrn} answered {r.status}: {await r.text()}"
                )

    await asyncio.gather(*(bundle(v, c) for v, c in zip(vrns, ccrns, strict=True)))
    return vrns


def body_bytes(doc: Any) -> bytes:
    return json.dumps(doc, separators=(",", ":")).encode()
