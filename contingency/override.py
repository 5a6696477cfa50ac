"""The local override file: manual mode forced on one node when etcd is unreachable (adapter).

Serves :func:`contingency.state.effective_mode` (its ``local_override`` argument): an officer
on a node's host runs ``rocars contingency activate --local --reason ...``, which calls
:func:`write_override`; the node calls :func:`read_override` and honours it at once. The
override can only add manual mode, never take it away (see :mod:`contingency.state`).

Failing safe: a file that exists but cannot be read or does not validate is treated as an
override ACTIVE for every LBCP, with ``corrupt`` set and a reason saying so. A half-written or
damaged override most likely means someone was trying to force manual mode; reading it as
"no override" would silently send trucks through normal clearance while the system may be
down, whereas an unnecessary manual mode only costs officers time and is visible at once.
For the same reason an empty file (``touch``) forces manual mode. Only a missing file means
"no override", so :func:`clear_override` removes the file rather than writing "off" into it.

Blocking: small file I/O with fsyncs; async callers wrap calls in ``asyncio.to_thread``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

from contingency.state import ACTOR_MAX, LBCP_CODES, REASON_MAX
from kernel.files import fsync_directory, write_atomically

OVERRIDE_VERSION: Final = 1
# World-readable: the node may run as another user than the officer's shell, and nothing in
# the file is secret. (An unreadable file would still force manual mode, but as "corrupt".)
OVERRIDE_MODE: Final = 0o644
# Anything bigger is not something write_override produced.
READ_LIMIT: Final = 64 * 1024
CORRUPT_ACTOR: Final = "unknown (unreadable local override file)"

_FIELDS: Final = frozenset({"version", "actor", "reason", "lbcps", "at"})


@dataclass(frozen=True)
class Override:
    """A local override in force: manual mode for ``lbcps`` (None: every LBCP) on this node."""

    actor: str
    reason: str
    lbcps: frozenset[str] | None
    at: datetime
    corrupt: bool = False  # True: the file was unreadable and is honoured for every LBCP

    def covers(self, lbcp: str) -> bool:
        """Whether this override forces manual mode at ``lbcp``."""
        return self.lbcps is None or lbcp in self.lbcps


# --- validation (each error names its field) -------------------------------------------------


def _text(name: str, value: object, limit: int) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{name}: must be a non-blank string")
    text = value.strip()
    if len(text) > limit:
        raise ValueError(f"{name}: longer than {limit} characters")
    return text


def _lbcps(value: object, known: frozenset[str]) -> frozenset[str] | None:
    if value is None:
        return None
    # A bare string is iterable too; "LMC" must not become {"L", "M", "C"}.
    if isinstance(value, str | bytes) or not isinstance(value, Iterable):
        raise ValueError("lbcps: must be a list of LBCP codes, or None for all")
    items = list(value)
    if not all(isinstance(c, str) for c in items):
        raise ValueError("lbcps: every LBCP code must be a string")
    codes = frozenset(items)
    if not codes:
        raise ValueError("lbcps: must name at least one LBCP, or be None for all")
    unknown = sorted(repr(c) for c in codes if c not in known)
    if unknown:
        raise ValueError(f"lbcps: unknown LBCP {', '.join(unknown)}, known: {sorted(known)}")
    return codes


def _aware(value: datetime) -> datetime:
    if not isinstance(value, datetime) or value.utcoffset() is None:
        raise ValueError("at: must be a timezone-aware datetime")
    return value.astimezone(UTC)


def _parse(data: bytes, known: frozenset[str]) -> Override:
    doc = json.loads(data)
    if not isinstance(doc, dict) or set(doc) != _FIELDS:
        raise ValueError(f"document: must be an object with keys {sorted(_FIELDS)}")
    if type(doc["version"]) is not int or doc["version"] != OVERRIDE_VERSION:
        raise ValueError(f"version: unsupported {doc['version']!r}")
    if not isinstance(doc["at"], str):
        raise ValueError("at: must be an ISO 8601 string")
    return Override(
        actor=_text("actor", doc["actor"], ACTOR_MAX),
        reason=_text("reason", doc["reason"], REASON_MAX),
        lbcps=_lbcps(doc["lbcps"], known),
        at=_aware(datetime.fromisoformat(doc["at"])),
    )


# --- the file --------------------------------------------------------------------------------


def _corrupt(path: Path, why: str, at: datetime) -> Override:
    reason = (
        f"local override file {path} is unreadable ({why}); manual clearance is forced at "
        "every LBCP on this node until the file is fixed or removed"
    )
    return Override(CORRUPT_ACTOR, reason[:REASON_MAX], None, at, corrupt=True)


def read_override(path: Path, *, known: frozenset[str] = LBCP_CODES) -> Override | None:
    """The override in force on this node; None only when there is no file at ``path``."""
    try:
        with open(path, "rb") as f:
            st = os.fstat(f.fileno())
            data = f.read(READ_LIMIT + 1)
    except FileNotFoundError:
        return None
    except OSError as exc:  # a directory, no permission, I/O error: fail towards manual
        try:
            at = datetime.fromtimestamp(os.stat(path).st_mtime, UTC)
        except OSError:
            at = datetime.now(UTC)
        return _corrupt(path, str(exc), at)
    modified = datetime.fromtimestamp(st.st_mtime, UTC)
    if len(data) > READ_LIMIT:
        return _corrupt(path, f"larger than {READ_LIMIT} bytes", modified)
    try:
        return _parse(data, known)
    # JSON and Unicode errors are ValueErrors; absurd nesting is a RecursionError.
    except (ValueError, RecursionError) as exc:
        return _corrupt(path, str(exc) or type(exc).__name__, modified)


def write_override(
    path: Path,
    *,
    actor: str,
    reason: str,
    lbcps: Iterable[str] | None,
    at: datetime,
    known: frozenset[str] = LBCP_CODES,
) -> Override:
    """Force manual mode on this node for ``lbcps`` (None: every LBCP); returns what was written.

    Validation errors raise ValueError naming the field, before the file is touched.
    """
    override = Override(
        actor=_text("actor", actor, ACTOR_MAX),
        reason=_text("reason", reason, REASON_MAX),
        lbcps=_lbcps(lbcps, known),
        at=_aware(at),
    )
    doc = {
        "version": OVERRIDE_VERSION,
        "actor": override.actor,
        "reason": override.reason,
        "lbcps": None if override.lbcps is None else sorted(override.lbcps),
        "at": override.at.isoformat(),
    }
    data = json.dumps(doc, ensure_ascii=False, indent=1).encode("utf-8")
    write_atomically(Path(path), data, mode=OVERRIDE_MODE)
    return override


def clear_override(path: Path) -> bool:
    """Remove the override (back to whatever etcd says); False if there was none."""
    path = Path(path)
    try:
        os.unlink(path)
    except FileNotFoundError:
        return False
    # Without this a power cut could bring the removed override back.
    fsync_directory(path.parent)
    return True
