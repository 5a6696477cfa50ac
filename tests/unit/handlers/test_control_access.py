"""Who may read a node's /metrics and detailed /health (node.control_access, #12 item 3), on the
real app factory in process."""

from __future__ import annotations

from pathlib import Path

import pytest
from handler_fakes import Fakes
from problem_checks import AiohttpClient

from node.control_access import ControlAccess

KEY = "mk_" + "7" * 40
OTHER_NETWORK = ["192.0.2.0/24"]  # the test client (127.0.0.1) is not on it


async def test_loopback_reads_the_control_pages_when_it_is_a_monitoring_network(
    fakes: Fakes, aiohttp_client: AiohttpClient
) -> None:
    """#12 item 3: a caller on the monitoring networks (the default: loopback) reads /metrics
    and /health without any key."""
    client = await aiohttp_client(fakes.app())
    for path in ("/metrics", "/health"):
        r = await client.get(path)
        assert r.status == 200, path


async def test_a_caller_off_the_monitoring_networks_needs_the_key(
    fakes: Fakes, aiohttp_client: AiohttpClient, tmp_path: Path
) -> None:
    """#12 item 3: off the monitoring networks, /metrics and /health answer 403 problem+json
    without the key or with a wrong one, 200 with `Authorization: Bearer <key>`; the probes
    and the public notice stay open to anyone."""
    key_file = tmp_path / "monitoring-key.password"
    key_file.write_text(KEY + "\n")
    client = await aiohttp_client(
        fakes.app(monitoring_networks=OTHER_NETWORK, monitoring_key_file=key_file)
    )
    for path in ("/metrics", "/health"):
        for headers in ({}, {"Authorization": "Bearer mk_wrong"}, {"Authorization": KEY}):
            r = await client.get(path, headers=headers)
            assert r.status == 403, (path, headers)
            assert r.content_type == "application/problem+json"
            doc = await r.json()
            assert "monitoring" in doc["detail"]
            assert KEY not in await r.text()
        r = await client.get(path, headers={"Authorization": f"Bearer {KEY}"})
        assert r.status == 200, path
    for path in ("/health/live", "/health/ready", "/v1/status"):
        r = await client.get(path)
        assert r.status in (200, 503), path  # never refused for who asks


async def test_without_a_key_file_only_the_networks_open_the_pages(
    fakes: Fakes, aiohttp_client: AiohttpClient
) -> None:
    """No key configured: no Authorization header opens the pages off the networks."""
    client = await aiohttp_client(fakes.app(monitoring_networks=OTHER_NETWORK))
    r = await client.get("/metrics", headers={"Authorization": "Bearer "})
    assert r.status == 403


@pytest.mark.parametrize(
    ("remote", "authorization", "allowed"),
    [
        ("10.1.2.3", None, True),
        ("10.1.3.3", None, False),
        ("::1", None, False),
        ("not-an-address", None, False),
        (None, f"Bearer {KEY}", True),
        ("10.1.3.3", f"bearer  {KEY} ", True),
        ("10.1.3.3", f"Basic {KEY}", False),
        ("10.1.3.3", KEY, False),
    ],
)
def test_the_rule(remote: str | None, authorization: str | None, allowed: bool) -> None:
    """On a listed network, or a Bearer key equal to the configured one (scheme in any case),
    and nothing else."""
    access = ControlAccess.of(["10.1.2.0/24"], KEY)
    assert access.allows(remote, authorization) is allowed
