"""A state folder removed without `cluster down --purge` leaves PostgreSQL's data behind, made
with passwords nobody has any more: `cluster up` on a new state folder at that path refuses at
once and says what to delete, instead of a Patroni that fails to log in until the timeout."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from deploy import launcher
from deploy import state as state_module
from deploy.state import DEFAULT_TOPOLOGY, StateDir
from deploy.topology import load_topology
from kernel.errors import LaunchError


@pytest.fixture
def state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> StateDir:
    # As root the runtime folder is under /var/lib/rocars: keep it in the test's folder.
    monkeypatch.setattr(state_module, "RUNTIME_BASE", tmp_path / "runtime")
    return StateDir(tmp_path / "var")


def _leave_data(state: StateDir, member: str = "pg-A") -> None:
    data = state.runtime / member / "data"
    data.mkdir(parents=True)
    (data / "PG_VERSION").write_text("15\n")


def test_data_without_the_passwords_it_was_made_with_is_orphaned(state: StateDir) -> None:
    """A member's data folder in the runtime folder and no passwords in the state folder: the
    runtime folder is named; with no data, nothing is."""
    assert state.orphaned_database() is None
    _leave_data(state, "pg-B")
    assert state.orphaned_database() == state.runtime


def test_data_of_this_state_folder_is_not_orphaned(state: StateDir) -> None:
    """Once the state folder has its passwords (now, or where versions before #12 item 4 kept
    them) the data is its own."""
    _leave_data(state)
    state.secrets()
    assert state.orphaned_database() is None
    (state.secrets_dir / "secrets.json").unlink()
    state.config.mkdir(parents=True, exist_ok=True)
    (state.config / "secrets.json").write_text("{}")
    assert state.orphaned_database() is None


def test_up_refuses_before_writing_anything(state: StateDir) -> None:
    """`cluster up` stops before it generates a password, a certificate or a file, and says
    which folder to delete and how to avoid it next time."""
    _leave_data(state)
    progress: list[str] = []
    with pytest.raises(LaunchError) as exc:
        asyncio.run(launcher.up(load_topology(DEFAULT_TOPOLOGY), state, progress.append))
    message = str(exc.value)
    assert str(state.runtime) in message
    assert "cluster down --purge" in message
    assert "delete" in message
    assert not state.secrets_dir.exists()
    assert not state.pki.exists()
    assert progress == []
