"""Tests for contingency.override: manual mode forced on one node when etcd is unreachable."""

from __future__ import annotations

import json
import os
import stat
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from contingency.override import (
    CORRUPT_ACTOR,
    READ_LIMIT,
    Override,
    clear_override,
    read_override,
    write_override,
)
from contingency.state import LBCP_CODES, NORMAL, effective_mode

T0 = datetime(2025, 3, 1, 2, 0, tzinfo=UTC)


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "run" / "contingency-override.json"


def _write(path: Path, **kw: Any) -> Override:
    args: dict[str, Any] = {
        "actor": "officer-17",
        "reason": "etcd unreachable from site A",
        "lbcps": None,
        "at": T0,
    }
    return write_override(path, **{**args, **kw})


def test_no_file_means_no_override(path: Path) -> None:
    """Only a missing file (or missing directory) means there is no override."""
    assert read_override(path) is None


def test_written_override_reads_back(path: Path) -> None:
    """What write_override returns is exactly what read_override finds."""
    written = _write(path, lbcps=["SBC", "LMC"], at=T0.astimezone(timezone(timedelta(hours=8))))
    assert written == Override(
        "officer-17", "etcd unreachable from site A", frozenset({"LMC", "SBC"}), T0
    )
    assert read_override(path) == written


def test_override_for_all_lbcps_covers_every_lbcp(path: Path) -> None:
    """lbcps=None forces manual mode at every LBCP, through state.effective_mode too."""
    _write(path, lbcps=None)
    override = read_override(path)
    assert override is not None
    assert override.lbcps is None
    assert not override.corrupt
    for lbcp in sorted(LBCP_CODES):
        assert override.covers(lbcp)
        assert effective_mode(NORMAL, lbcp, override.covers(lbcp)) == "manual"


def test_override_for_some_lbcps_covers_only_those(path: Path) -> None:
    """An override listing LBCPs forces manual mode there and nowhere else."""
    _write(path, lbcps=["HZMB"])
    override = read_override(path)
    assert override is not None
    assert override.covers("HZMB")
    assert not override.covers("LMC")


def test_file_is_world_readable_and_written_whole(path: Path) -> None:
    """The file is mode 0644 (the node may run as another user) and no temp file is left."""
    _write(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert [p.name for p in path.parent.iterdir()] == [path.name]


def test_clear_removes_the_override(path: Path) -> None:
    """clear_override removes the file (True), then there is nothing to clear (False)."""
    _write(path)
    assert clear_override(path) is True
    assert read_override(path) is None
    assert clear_override(path) is False


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"{half a docu",
        b"\xff\xfe garbage",
        b"null",
        b'{"version": 1}',
        b'{"version": 1, "actor": "o", "reason": "r", "lbcps": ["XXX"], '
        b'"at": "2025-03-01T02:00:00+00:00"}',
        b'{"version": 1, "actor": "o", "reason": "r", "lbcps": [["LMC"]], '
        b'"at": "2025-03-01T02:00:00+00:00"}',
        b'{"version": 1, "actor": "o", "reason": "r", "lbcps": [], '
        b'"at": "2025-03-01T02:00:00+00:00"}',
        b'{"version": 1, "actor": "o", "reason": "r", "lbcps": null, "at": "yesterday"}',
        b'{"version": true, "actor": "o", "reason": "r", "lbcps": null, '
        b'"at": "2025-03-01T02:00:00+00:00"}',
        b"[" * 50_000,
        b" " * (READ_LIMIT + 1),
    ],
)
def test_corrupt_file_forces_manual_everywhere(path: Path, content: bytes) -> None:
    """A file that does not validate is an ACTIVE override for every LBCP, flagged corrupt."""
    path.parent.mkdir(parents=True)
    path.write_bytes(content)
    override = read_override(path)
    assert override is not None
    assert override.corrupt
    assert override.lbcps is None
    assert override.actor == CORRUPT_ACTOR
    assert str(path) in override.reason
    assert "every LBCP" in override.reason
    assert override.at.utcoffset() == timedelta(0)


def test_corrupt_override_narrowed_file_still_forces_all(path: Path) -> None:
    """A damaged file that named one LBCP still forces all: its list cannot be trusted."""
    _write(path, lbcps=["MKT"])
    doc = json.loads(path.read_bytes())
    doc["reason"] = ""
    path.write_text(json.dumps(doc))
    override = read_override(path)
    assert override is not None
    assert override.corrupt
    assert override.covers("LMC")


def test_unreadable_path_forces_manual_everywhere(path: Path) -> None:
    """A path that exists but cannot be read as a file (a directory) fails towards manual."""
    path.mkdir(parents=True)
    override = read_override(path)
    assert override is not None
    assert override.corrupt
    assert override.lbcps is None


@pytest.mark.parametrize(
    ("kw", "field"),
    [
        ({"reason": "  "}, "reason"),
        ({"actor": ""}, "actor"),
        ({"reason": "x" * 1001}, "reason"),
        ({"lbcps": ["NOPE"]}, "lbcps"),
        ({"lbcps": []}, "lbcps"),
        ({"lbcps": "LMC"}, "lbcps"),
        ({"at": datetime(2025, 3, 1)}, "at"),
    ],
)
def test_write_refuses_invalid_input_and_leaves_file(
    path: Path, kw: dict[str, Any], field: str
) -> None:
    """Invalid input raises ValueError naming the field and leaves any existing file alone."""
    _write(path, lbcps=["STK"])
    before = path.read_bytes()
    with pytest.raises(ValueError, match=f"^{field}:"):
        _write(path, **kw)
    assert path.read_bytes() == before


def test_failed_write_leaves_previous_override_whole(
    path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A write that fails before the rename leaves the previous override and no temp file."""
    _write(path, lbcps=["STK"])
    before = path.read_bytes()

    def broken_replace(src: str, dst: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="No space left"):
        _write(path, lbcps=None)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert os.listdir(path.parent) == [path.name]
