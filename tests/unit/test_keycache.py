"""Tests for contingency.keycache: officers' keys verified from disk while PostgreSQL is down."""

from __future__ import annotations

import json
import os
import stat
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from contingency.keycache import CachedAccount, KeyCache, hash_api_key
from kernel.files import write_atomically

T0 = datetime(2025, 3, 1, 2, 0, tzinfo=UTC)
OFFICER_KEY = "rk_3f9a1c_" + "q" * 40
TRADER_KEY = "rk_77b2e0_" + "t" * 40
SUSPENDED_KEY = "rk_0c0c0c_" + "s" * 40


def _account(key: str, **kw: Any) -> CachedAccount:
    args: dict[str, Any] = {
        "key_id": key[:9],
        "key_sha256": hash_api_key(key),
        "role": "officer",
        "account_id": "17",
        "name": "Officer Chan",
        "status": "active",
    }
    return CachedAccount(**{**args, **kw})


ACCOUNTS = (
    _account(OFFICER_KEY),
    _account(TRADER_KEY, role="trader", account_id="501", name="Acme Forwarding"),
    _account(SUSPENDED_KEY, account_id="18", name="Officer Wong", status="suspended"),
)


@pytest.fixture
def cache(tmp_path: Path) -> KeyCache:
    c = KeyCache(tmp_path / "keys" / "keycache.json")
    c.refresh(ACCOUNTS, at=T0)
    return c


def test_hash_is_hex_sha256_of_the_full_key() -> None:
    """Keys are stored as the lowercase hex SHA-256 of the whole key (a known test vector)."""
    assert hash_api_key("abc") == (
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    )


def test_verify_accepts_an_active_key(cache: KeyCache) -> None:
    """The right key of an active account returns that account."""
    assert cache.verify(OFFICER_KEY) == ACCOUNTS[0]
    assert cache.verify(TRADER_KEY) == ACCOUNTS[1]
    assert cache.problem is None


@pytest.mark.parametrize(
    "key", [OFFICER_KEY[:-1] + "x", OFFICER_KEY + " ", OFFICER_KEY.upper(), "", "rk_"]
)
def test_verify_refuses_a_wrong_key(cache: KeyCache, key: str) -> None:
    """Any key that is not exactly a cached one is refused."""
    assert cache.verify(key) is None


def test_verify_refuses_a_suspended_account(cache: KeyCache) -> None:
    """A correct key of a suspended account is refused."""
    assert cache.verify(SUSPENDED_KEY) is None


def test_verify_refuses_any_status_but_active(tmp_path: Path) -> None:
    """Statuses other than exactly 'active' (pending, Active, ...) are refused: fail closed."""
    cache = KeyCache(tmp_path / "k.json")
    keys = [f"key-{i}-" + "z" * 30 for i in range(3)]
    statuses = ["pending", "Active", "revoked"]
    cache.refresh([_account(k, status=s) for k, s in zip(keys, statuses, strict=True)], at=T0)
    assert [cache.verify(k) for k in keys] == [None, None, None]


def test_refreshed_at_is_reported_in_utc(tmp_path: Path) -> None:
    """refreshed_at is the refresh time, in UTC, as read back from the file."""
    cache = KeyCache(tmp_path / "k.json")
    assert cache.refreshed_at is None
    cache.refresh(ACCOUNTS, at=T0.astimezone(timezone(timedelta(hours=8))))
    refreshed_at = cache.refreshed_at
    assert refreshed_at is not None
    assert refreshed_at == T0
    assert refreshed_at.utcoffset() == timedelta(0)


def test_missing_file_refuses_everything(tmp_path: Path) -> None:
    """Without a cache file every key is refused and problem says why."""
    cache = KeyCache(tmp_path / "absent.json")
    assert cache.verify(OFFICER_KEY) is None
    assert cache.problem is not None
    assert "No such file" in cache.problem


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"{not json",
        b"\xff\xfe\x00garbage",
        b"[]",
        b'{"version": 2, "refreshed_at": "2025-03-01T02:00:00+00:00", "accounts": []}',
        b'{"version": true, "refreshed_at": "2025-03-01T02:00:00+00:00", "accounts": []}',
        b'{"version": 1, "refreshed_at": "2025-03-01T02:00:00", "accounts": []}',
        b"[" * 100_000,
    ],
)
def test_corrupt_file_refuses_everything(cache: KeyCache, content: bytes) -> None:
    """A file that does not parse or validate verifies nobody, not even a key it once held."""
    cache.path.write_bytes(content)
    assert cache.verify(OFFICER_KEY) is None
    assert cache.problem is not None
    assert cache.refreshed_at is None


def test_one_bad_entry_refuses_the_whole_file(cache: KeyCache) -> None:
    """A single malformed account makes the whole file untrusted, good entries included."""
    doc = json.loads(cache.path.read_bytes())
    doc["accounts"][1]["key_sha256"] = "not-hex"
    cache.path.write_text(json.dumps(doc))
    assert cache.verify(OFFICER_KEY) is None
    assert cache.problem is not None
    assert "accounts[1].key_sha256" in cache.problem


def test_file_writable_by_others_refuses_everything(cache: KeyCache) -> None:
    """A cache others can write (and so add their own key to) verifies nobody."""
    os.chmod(cache.path, 0o622)
    assert cache.verify(OFFICER_KEY) is None
    assert cache.problem is not None
    assert "writable" in cache.problem


def test_refresh_writes_mode_0600_and_no_stray_files(cache: KeyCache) -> None:
    """The cache file is readable by its owner only, and no temporary file is left behind."""
    assert stat.S_IMODE(cache.path.stat().st_mode) == 0o600
    assert [p.name for p in cache.path.parent.iterdir()] == ["keycache.json"]


def test_refresh_replaces_accounts(cache: KeyCache) -> None:
    """After a refresh without an account, its key is refused; new keys are accepted."""
    new_key = "rk_new000_" + "n" * 40
    cache.refresh([ACCOUNTS[1], _account(new_key, account_id="19")], at=T0 + timedelta(hours=1))
    assert cache.verify(OFFICER_KEY) is None
    assert cache.verify(new_key) is not None
    assert cache.refreshed_at == T0 + timedelta(hours=1)


def test_another_instance_sees_a_refresh(cache: KeyCache) -> None:
    """A second KeyCache on the same file (the CLI process) sees refreshes without restarting."""
    reader = KeyCache(cache.path)
    assert reader.verify(OFFICER_KEY) is not None
    cache.refresh(ACCOUNTS[1:], at=T0 + timedelta(minutes=1))
    assert reader.verify(OFFICER_KEY) is None


def test_failed_refresh_leaves_previous_file_whole(
    cache: KeyCache, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A refresh that fails mid-write leaves the old cache intact and no partial file."""
    before = cache.path.read_bytes()

    def broken_fsync(fd: int) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "fsync", broken_fsync)
    with pytest.raises(OSError, match="Input/output error"):
        cache.refresh([_account("rk_other0_" + "o" * 40)], at=T0)
    monkeypatch.undo()
    assert cache.path.read_bytes() == before
    assert [p.name for p in cache.path.parent.iterdir()] == ["keycache.json"]
    assert cache.verify(OFFICER_KEY) == ACCOUNTS[0]


def test_refresh_with_a_shared_key_is_refused_before_writing(cache: KeyCache) -> None:
    """Two accounts with one key hash are refused and the previous cache stays in place."""
    before = cache.path.read_bytes()
    twin = _account(OFFICER_KEY, account_id="99", name="Someone Else")
    with pytest.raises(ValueError, match="shared"):
        cache.refresh([ACCOUNTS[0], twin], at=T0)
    assert cache.path.read_bytes() == before


@pytest.mark.parametrize(
    ("kw", "field"),
    [
        ({"key_sha256": "abc"}, "key_sha256"),
        ({"key_sha256": "g" * 64}, "key_sha256"),
        ({"role": " "}, "role"),
        ({"status": None}, "status"),
    ],
)
def test_malformed_account_is_refused(kw: dict[str, Any], field: str) -> None:
    """A cache entry with a malformed field raises ValueError naming it."""
    with pytest.raises(ValueError, match=f"^{field}:"):
        _account(OFFICER_KEY, **kw)


# --- kernel.files: the durable write the cache relies on -------------------------------------


def test_write_atomically_never_shows_a_partial_file(tmp_path: Path) -> None:
    """write_atomically swaps whole files: the target holds old or new bytes, with the mode set."""
    target = tmp_path / "sub" / "f.json"
    write_atomically(target, b"old", mode=0o640)
    write_atomically(target, b"new" * 1000, mode=0o600)
    assert target.read_bytes() == b"new" * 1000
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert [p.name for p in target.parent.iterdir()] == ["f.json"]


def test_write_atomically_failure_keeps_the_old_target_and_no_temporary(tmp_path: Path) -> None:
    """A write that cannot be renamed into place raises and leaves no temporary file behind."""
    target = tmp_path / "taken"
    (target / "inside").mkdir(parents=True)  # a non-empty directory cannot be replaced by a file
    with pytest.raises(IsADirectoryError):
        write_atomically(target, b"new")
    assert target.is_dir()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken"]
