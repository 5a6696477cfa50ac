"""The node's whole HTTP surface in process: `create_app(config, deps)` with the fakes of
handler_fakes.py, served by pytest-aiohttp's test server. No cluster, no processes."""

from __future__ import annotations

from pathlib import Path

import pytest
from handler_fakes import Fakes
from problem_checks import AiohttpClient, Client


@pytest.fixture
def fakes(tmp_path: Path) -> Fakes:
    """Fresh fakes per test; change them before or during the test (they are read live)."""
    return Fakes(tmp_path)


@pytest.fixture
async def client(fakes: Fakes, aiohttp_client: AiohttpClient) -> Client:
    """A test client of the node built from `fakes` (active role, every account kind)."""
    return await aiohttp_client(fakes.app())
