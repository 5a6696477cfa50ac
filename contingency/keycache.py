"""On-disk cache of hashed API keys, so officers can be verified with PostgreSQL down (adapter).

Serves I4 ("contingency is always reachable"): activating manual mode must work when both
PostgreSQL members are down, yet an unverifiable key must be refused, never waved through. Each
node keeps this file and the node rewrites it with :meth:`KeyCache.refresh` while the database
is up; :meth:`KeyCache.verify` answers from it alone. The cores it serves are the switching in
:mod:`contingency.state` (who may activate) and the clearance journal (who recorded a truck).

Fail closed, always: a missing, unreadable, corrupt or foreign-writable file verifies nobody
(:attr:`KeyCache.problem` says why). Only accounts whose status is exactly ``active`` pass.

Blocking: every method does file I/O (a ``stat`` per verify, an fsync per refresh). Async
callers wrap each call in ``asyncio.to_thread``, as with :mod:`contingency.journal`.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import stat
import threading
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

from kernel.files import write_atomically

CACHE_VERSION: Final = 1
ACTIVE: Final = "active"
CACHE_MODE: Final = 0o600

_HEX = frozenset("0123456789abcdef")


# --- values ----------------------------------------------------------------------------------


def hash_api_key(api_key: str) -> str:
    """The lowercase hex SHA-256 of the full API key, as stored in the cache.

    API keys are long random tokens, not passwords chosen by people: nobody can guess one, so a
    slow salted KDF (which only slows the guessing of low-entropy secrets) would add nothing but
    latency to every request. A plain SHA-256 keeps a stolen cache file from revealing any key.
    """
    return hashlib.sha256(api_key.encode("utf-8")).hexdigest()


def _text(name: str, value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{name}: must be a non-blank string, got {value!r:.60}")
    return value


@dataclass(frozen=True)
class CachedAccount:
    """One account as the cache knows it; ``key_id`` names the key in logs, never the secret."""

    key_id: str
    key_sha256: str
    role: str
    account_id: str
    name: str
    status: str

    def __post_init__(self) -> None:
        for f in fields(self):
            _text(f.name, getattr(self, f.name))
        digest = self.key_sha256.lower()
        if len(digest) != 64 or not set(digest) <= _HEX:
            raise ValueError("key_sha256: must be 64 hex digits (SHA-256 of the API key)")
        object.__setattr__(self, "key_sha256", digest)


_ACCOUNT_FIELDS: Final = frozenset(f.name for f in fields(CachedAccount))
_DOC_FIELDS: Final = frozenset({"version", "refreshed_at", "accounts"})


@dataclass(frozen=True)
class _Snapshot:
    """What one version of the file says; ``problem`` set means it verifies nobody."""

    identity: tuple[int, ...] | None
    by_hash: dict[str, CachedAccount] = field(default_factory=dict)
    refreshed_at: datetime | None = None
    problem: str | None = None


def _identity(st: os.stat_result) -> tuple[int, ...]:
    # os.replace always brings a new inode, so a refresh is seen even within one mtime tick.
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def _index(accounts: Iterable[CachedAccount]) -> dict[str, CachedAccount]:
    by_hash: dict[str, CachedAccount] = {}
    for i, account in enumerate(accounts):
        if not isinstance(account, CachedAccount):
            raise ValueError(f"accounts[{i}]: must be a CachedAccount")
        if account.key_sha256 in by_hash:
            # Two accounts behind one key: whichever we picked, someone gets the wrong rights.
            raise ValueError(f"accounts[{i}]: key_sha256 shared with another account")
        by_hash[account.key_sha256] = account
    return by_hash


def _parse(data: bytes) -> tuple[dict[str, CachedAccount], datetime]:
    doc = json.loads(data)
    if not isinstance(doc, dict) or set(doc) != _DOC_FIELDS:
        raise ValueError(f"document: must be an object with keys {sorted(_DOC_FIELDS)}")
    if type(doc["version"]) is not int or doc["version"] != CACHE_VERSION:
        raise ValueError(f"version: unsupported {doc['version']!r}")
    at = doc["refreshed_at"]
    if not isinstance(at, str):
        raise ValueError("refreshed_at: must be an ISO 8601 string")
    refreshed_at = datetime.fromisoformat(at)
    if refreshed_at.utcoffset() is None:
        raise ValueError("refreshed_at: must carry a UTC offset")
    raw = doc["accounts"]
    if not isinstance(raw, list):
        raise ValueError("accounts: must be a list")
    accounts = []
    for i, entry in enumerate(raw):
        if not isinstance(entry, dict) or set(entry) != _ACCOUNT_FIELDS:
            raise ValueError(f"accounts[{i}]: must have keys {sorted(_ACCOUNT_FIELDS)}")
        try:
            accounts.append(CachedAccount(**entry))
        except ValueError as exc:
            raise ValueError(f"accounts[{i}].{exc}") from None
    return _index(accounts), refreshed_at.astimezone(UTC)


# --- the cache -------------------------------------------------------------------------------


class KeyCache:
    """The node's key cache file at ``path``; re-read whenever the file changes on disk.

    Re-reading on change (one ``stat`` per verify) lets a separate process, such as the
    ``rocars contingency`` command, see the node's latest refresh without restarting.
    """

    def __init__(self, path: Path) -> None:
        self._path = Path(path)
        self._lock = threading.Lock()
        self._snapshot = _Snapshot(identity=None, problem="not read yet")

    @property
    def path(self) -> Path:
        return self._path

    @property
    def refreshed_at(self) -> datetime | None:
        """When the file was last refreshed from the database; None if it is not usable."""
        return self._current().refreshed_at

    @property
    def problem(self) -> str | None:
        """Why the cache refuses every key (missing, corrupt, ...), or None when it is usable."""
        return self._current().problem

    def refresh(self, entries: Iterable[CachedAccount], *, at: datetime | None = None) -> None:
        """Replace the cache with ``entries`` (all accounts, every status), atomically.

        Invalid entries (or two accounts with one key) raise ValueError before the file is
        touched, so a bad refresh leaves the previous cache in place.
        """
        when = datetime.now(UTC) if at is None else at
        if when.utcoffset() is None:
            raise ValueError("at: must be timezone-aware")
        by_hash = _index(entries)
        doc = {
            "version": CACHE_VERSION,
            "refreshed_at": when.astimezone(UTC).isoformat(),
            "accounts": [asdict(a) for a in by_hash.values()],
        }
        data = json.dumps(doc, ensure_ascii=False, indent=1).encode("utf-8")
        with self._lock:
            write_atomically(self._path, data, mode=CACHE_MODE)

    def verify(self, api_key: str) -> CachedAccount | None:
        """The active account holding ``api_key``; None if unknown, not active or unverifiable."""
        if not isinstance(api_key, str) or not api_key:
            return None
        digest = hash_api_key(api_key)
        # Looking the digest up in a dict is not constant-time, but all it could leak is how the
        # SHA-256 of a key the caller already holds compares with stored digests, which reveals
        # nothing usable about another key (see hash_api_key). compare_digest makes the deciding
        # comparison constant-time anyway, should the index ever be keyed by something else.
        found = self._current().by_hash.get(digest)
        if found is None or not hmac.compare_digest(found.key_sha256, digest):
            return None
        return found if found.status == ACTIVE else None

    def _current(self) -> _Snapshot:
        with self._lock:
            try:
                st = os.stat(self._path)
            except OSError as exc:
                self._snapshot = _Snapshot(identity=None, problem=f"cannot stat: {exc}")
                return self._snapshot
            if self._snapshot.identity != _identity(st):
                self._snapshot = self._load()
            return self._snapshot

    def _load(self) -> _Snapshot:
        identity: tuple[int, ...] | None = None
        try:
            with open(self._path, "rb") as f:
                st = os.fstat(f.fileno())
                identity = _identity(st)
                if not stat.S_ISREG(st.st_mode):
                    return _Snapshot(identity, problem="not a regular file")
                if st.st_mode & 0o022:
                    # Anyone who can write the file can add their own key to it.
                    return _Snapshot(identity, problem="writable by group or others")
                by_hash, refreshed_at = _parse(f.read())
        # JSON and Unicode errors are ValueErrors; absurd nesting is a RecursionError.
        except (OSError, ValueError, RecursionError) as exc:
            return _Snapshot(identity, problem=f"unusable key cache {self._path}: {exc}")
        return _Snapshot(identity, by_hash=by_hash, refreshed_at=refreshed_at)
