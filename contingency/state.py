"""Manual-clearance contingency mode: the state machine stored in etcd (pure core, DESIGN §4).

Plain values in, plain values out; no I/O and no clock (every time is passed in). The etcd
adapter reads the document with :func:`from_dict`, applies :func:`activate` or
:func:`deactivate`, and writes :func:`to_dict` back with a compare-and-swap.

Choices this module makes, each on the safe side of I4 ("contingency is always reachable"):

* **Scope.** ``None`` means *all* LBCPs (including any configured later); a frozenset means
  exactly those LBCPs; the empty frozenset means normal mode.
* **Activating again widens.** A second activation adds its LBCPs to those already in manual
  mode (union); it never releases one. Releasing is a deliberate act with its own reason, so an
  officer switching LMC on can never silently switch off SBC that a colleague put in manual.
  A repeated activation still records who, when and why, and replaces the public message.
* **Deactivation is explicit, by a person.** It may release a subset; releasing an LBCP that is
  not in manual mode is refused rather than ignored, so the caller learns the state moved.
* **Nothing here ever returns to normal by itself.** There is no automatic deactivation:
  :func:`recommendation` and :func:`auto_activate_allowed` only ever point towards manual.
* **Local override** (forced manual on one node while etcd is unreachable) wins towards manual
  in :func:`effective_mode` and can never force normal.
* Times are timezone-aware :class:`~datetime.datetime` values, stored in UTC (DESIGN §1).
  Transitions do not insist that time moves forward: officers' nodes may disagree by a second,
  and refusing a switch-on for that would break I4.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final, Literal, TypeAlias, TypeVar

from kernel.domain.lbcp import DEFAULT_LBCPS

Mode = Literal["normal", "manual"]
Action = Literal["activate", "deactivate"]
# None: every LBCP; frozenset(): none (normal mode); otherwise exactly these codes.
Scope: TypeAlias = frozenset[str] | None

# The configured default (DESIGN §1); callers with their own configuration pass ``known``.
LBCP_CODES: Final[frozenset[str]] = frozenset(DEFAULT_LBCPS)
HISTORY_LIMIT: Final = 20
LATE_GRACE: Final = timedelta(hours=2)
DOC_VERSION: Final = 1
ACTOR_MAX: Final = 128
REASON_MAX: Final = 1000
MESSAGE_MAX: Final = 2000

_T = TypeVar("_T")
_CODE = re.compile(r"[A-Z]{2,8}")
_ACTIONS: frozenset[str] = frozenset({"activate", "deactivate"})


# --- field checks (each error names its field, so a 4xx can point at it: I5) ----------------


def _text(field: str, value: object, limit: int) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{field}: must be a string, got {type(value).__name__}")
    text = value.strip()
    if not text:
        raise ValueError(f"{field}: must not be blank")
    if len(text) > limit:
        raise ValueError(f"{field}: longer than {limit} characters")
    return text


def _aware(field: str, value: object) -> datetime:
    if not isinstance(value, datetime):
        raise ValueError(f"{field}: must be a datetime, got {type(value).__name__}")
    if value.utcoffset() is None:
        raise ValueError(f"{field}: must be timezone-aware")
    return value.astimezone(UTC)


def _codes(field: str, value: object, known: frozenset[str] | None) -> frozenset[str]:
    # A bare string is iterable too; "LMC" would silently become {"L", "M", "C"}.
    if isinstance(value, str | bytes) or not isinstance(value, Iterable):
        raise ValueError(f"{field}: must be a set of LBCP codes, got {type(value).__name__}")
    codes = frozenset(value)
    for code in sorted(codes, key=repr):
        if not isinstance(code, str) or not _CODE.fullmatch(code):
            raise ValueError(f"{field}: {code!r} is not an LBCP code")
        if known is not None and code not in known:
            raise ValueError(f"{field}: unknown LBCP {code!r}, known: {sorted(known)}")
    return codes


def _requested(field: str, value: object, known: frozenset[str]) -> Scope:
    if value is None:
        return None
    codes = _codes(field, value, known)
    if not codes:
        raise ValueError(f"{field}: must name at least one LBCP, or be None for all")
    return codes


def _scope(field: str, value: object) -> Scope:
    return None if value is None else _codes(field, value, None)


# --- values ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ManualWindow:
    """A period of manual mode; ``end`` None while it is still going on."""

    start: datetime
    end: datetime | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "start", _aware("start", self.start))
        if self.end is not None:
            object.__setattr__(self, "end", _aware("end", self.end))


@dataclass(frozen=True)
class Change:
    """One entry of the bounded history: who asked for what, and what scope resulted."""

    action: Action
    actor: str
    reason: str
    at: datetime
    lbcps: Scope  # what was asked for; None: all
    scope: Scope  # the scope after the change; frozenset(): back to normal
    message: str  # the public notice after the change ("" once normal)

    def __post_init__(self) -> None:
        if self.action not in _ACTIONS:
            raise ValueError(f"action: must be one of {sorted(_ACTIONS)}, got {self.action!r}")
        object.__setattr__(self, "actor", _text("actor", self.actor, ACTOR_MAX))
        object.__setattr__(self, "reason", _text("reason", self.reason, REASON_MAX))
        object.__setattr__(self, "at", _aware("at", self.at))
        object.__setattr__(self, "lbcps", _scope("lbcps", self.lbcps))
        object.__setattr__(self, "scope", _scope("scope", self.scope))
        if self.lbcps is not None and not self.lbcps:
            raise ValueError("lbcps: must name at least one LBCP, or be None for all")
        _check_message(self.scope, self.message)


def _check_message(scope: Scope, message: object) -> None:
    if not isinstance(message, str):
        raise ValueError(f"message: must be a string, got {type(message).__name__}")
    if scope == frozenset():
        if message:
            raise ValueError("message: must be empty in normal mode")
    else:
        _text("message", message, MESSAGE_MAX)


@dataclass(frozen=True)
class ContingencyState:
    """Manual clearance mode as stored in etcd.

    ``actor``/``reason``/``at`` describe the latest change (all None only before the first
    one); ``since`` is when the current manual period began; ``last_window`` is the most recent
    manual period that has ended, kept so the late-submission grace after it can be decided
    from this document alone even when the history has rolled over.
    """

    scope: Scope = frozenset()
    actor: str | None = None
    reason: str | None = None
    at: datetime | None = None
    message: str = ""
    since: datetime | None = None
    last_window: ManualWindow | None = None
    history: tuple[Change, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "scope", _scope("scope", self.scope))
        changed = (self.actor, self.reason, self.at)
        if any(v is None for v in changed) and any(v is not None for v in changed):
            raise ValueError("actor: actor, reason and at are set together or not at all")
        if self.actor is not None:
            object.__setattr__(self, "actor", _text("actor", self.actor, ACTOR_MAX))
            object.__setattr__(self, "reason", _text("reason", self.reason, REASON_MAX))
            object.__setattr__(self, "at", _aware("at", self.at))
        _check_message(self.scope, self.message)
        if (self.since is None) != (self.mode == "normal"):
            raise ValueError("since: must be set exactly while in manual mode")
        if self.since is not None:
            object.__setattr__(self, "since", _aware("since", self.since))
            if self.actor is None:
                raise ValueError("actor: manual mode needs who switched it on, and why")
        window = self.last_window
        if window is not None and (not isinstance(window, ManualWindow) or window.end is None):
            raise ValueError("last_window: must be an ended ManualWindow")
        history = tuple(self.history)
        if len(history) > HISTORY_LIMIT or not all(isinstance(c, Change) for c in history):
            raise ValueError(f"history: at most {HISTORY_LIMIT} Change entries")
        object.__setattr__(self, "history", history)

    @property
    def mode(self) -> Mode:
        return "normal" if self.scope == frozenset() else "manual"

    def covers(self, lbcp: str) -> bool:
        """Whether ``lbcp`` is in manual mode according to this (etcd) state."""
        return self.scope is None or lbcp in self.scope

    @property
    def windows(self) -> tuple[ManualWindow, ...]:
        """The last ended manual period and the current one, for :func:`late_flags_suppressed`."""
        current = () if self.since is None else (ManualWindow(self.since),)
        ended = () if self.last_window is None else (self.last_window,)
        return ended + current


NORMAL: Final = ContingencyState()


# --- transitions -----------------------------------------------------------------------------


def _with_history(history: tuple[Change, ...], change: Change) -> tuple[Change, ...]:
    return (*history, change)[-HISTORY_LIMIT:]


def activate(
    state: ContingencyState,
    *,
    actor: str,
    reason: str,
    lbcps: frozenset[str] | None,
    at: datetime,
    message: str,
    known: frozenset[str] = LBCP_CODES,
) -> ContingencyState:
    """Switch manual mode on for ``lbcps`` (None: all), widening any scope already manual."""
    actor = _text("actor", actor, ACTOR_MAX)
    reason = _text("reason", reason, REASON_MAX)
    message = _text("message", message, MESSAGE_MAX)
    at = _aware("at", at)
    requested = _requested("lbcps", lbcps, known)
    if requested is None or state.scope is None:
        scope: Scope = None
    else:
        scope = state.scope | requested
    since = state.since if state.since is not None else at
    change = Change("activate", actor, reason, at, requested, scope, message)
    return ContingencyState(
        scope=scope,
        actor=actor,
        reason=reason,
        at=at,
        message=message,
        since=since,
        last_window=state.last_window,
        history=_with_history(state.history, change),
    )


def deactivate(
    state: ContingencyState,
    *,
    actor: str,
    reason: str,
    at: datetime,
    lbcps: frozenset[str] | None = None,
    known: frozenset[str] = LBCP_CODES,
) -> ContingencyState:
    """Release ``lbcps`` (None: all) from manual mode; back to normal once none is left.

    Releasing part of an all-LBCPs scope turns it into the explicit list of the other known
    LBCPs, so an LBCP configured afterwards starts in normal mode.
    """
    actor = _text("actor", actor, ACTOR_MAX)
    reason = _text("reason", reason, REASON_MAX)
    at = _aware("at", at)
    requested = _requested("lbcps", lbcps, known)
    start = state.since  # set exactly while in manual mode
    if start is None:
        raise ValueError("mode: already normal, nothing to deactivate")
    if requested is None:
        scope: frozenset[str] = frozenset()
    else:
        current = known if state.scope is None else state.scope
        if not_manual := requested - current:
            raise ValueError(f"lbcps: {sorted(not_manual)} not in manual mode")
        scope = current - requested
    if scope:
        message, since, last_window = state.message, state.since, state.last_window
    else:
        message, since, last_window = "", None, ManualWindow(start, at)
    change = Change("deactivate", actor, reason, at, requested, scope, message)
    return ContingencyState(
        scope=scope,
        actor=actor,
        reason=reason,
        at=at,
        message=message,
        since=since,
        last_window=last_window,
        history=_with_history(state.history, change),
    )


# --- reading the state -----------------------------------------------------------------------


def effective_mode(state: ContingencyState, lbcp: str, local_override: bool) -> Mode:
    """The mode a node applies at ``lbcp``: etcd's state, forced to manual by a local override.

    The override exists for a node that cannot reach etcd; it can only add manual mode, never
    take it away, so a stale or missing override cannot switch an LBCP back to normal.
    """
    return "manual" if local_override or state.covers(lbcp) else "normal"


@dataclass(frozen=True)
class Recommendation:
    """Whether manual mode is recommended, with one sentence saying why."""

    recommended: bool
    reason: str


def _secs(value: float) -> str:
    text = f"{value:.3f}".rstrip("0")
    return text + "0" if text.endswith(".") else text


def recommendation(
    now: float, last_write_ok_at: float, threshold_s: float = 60.0
) -> Recommendation:
    """Recommend manual mode when no node has written successfully for ``threshold_s`` seconds.

    ``last_write_ok_at`` is the latest successful write by any node, on the same clock as
    ``now``; the caller seeds it with its own start time, so a cluster that never manages a
    write is still recommended for manual mode once the threshold has passed.
    """
    for name, value in (("now", now), ("last_write_ok_at", last_write_ok_at)):
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
        ):
            raise ValueError(f"{name}: must be a finite number of seconds, got {value!r}")
    if isinstance(threshold_s, bool) or not isinstance(threshold_s, int | float):
        raise ValueError(f"threshold_s: must be a number, got {threshold_s!r}")
    if not (math.isfinite(threshold_s) and threshold_s > 0):
        raise ValueError(f"threshold_s: must be a finite number > 0, got {threshold_s!r}")
    quiet = now - last_write_ok_at
    if quiet >= threshold_s:
        return Recommendation(
            True,
            f"no node could write for {_secs(quiet)}s >= {_secs(threshold_s)}s: "
            "manual clearance mode is recommended.",
        )
    return Recommendation(
        False,
        f"last successful write {_secs(quiet)}s ago < {_secs(threshold_s)}s: "
        "manual clearance mode is not recommended.",
    )


def auto_activate_allowed(policy_enabled: bool, recommended: bool, state: ContingencyState) -> bool:
    """Whether the system may switch every LBCP to manual on its own.

    Only with the policy switched on, only when recommended, and only when that changes
    something (not every LBCP is manual yet). There is deliberately no counterpart that goes
    back to normal: only a person does that, with :func:`deactivate`.
    """
    return policy_enabled and recommended and state.scope is not None


def late_flags_suppressed(
    at: datetime, windows: Iterable[ManualWindow], grace: timedelta = LATE_GRACE
) -> bool:
    """Whether a late-submission flag at ``at`` is suppressed by manual mode.

    True from the start of a manual period until ``grace`` (2 hours) after it ended, end
    exclusive: trade users could not submit while the system was down, and need time to catch
    up before lateness counts against them again.
    """
    at = _aware("at", at)
    for window in windows:
        if window.start <= at and (window.end is None or at < window.end + grace):
            return True
    return False


# --- serialisation ---------------------------------------------------------------------------


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat()


def _codes_doc(scope: Scope) -> list[str] | None:
    return None if scope is None else sorted(scope)


def _change_doc(change: Change) -> dict[str, object]:
    return {
        "action": change.action,
        "actor": change.actor,
        "reason": change.reason,
        "at": _iso(change.at),
        "lbcps": _codes_doc(change.lbcps),
        "scope": _codes_doc(change.scope),
        "message": change.message,
    }


def to_dict(state: ContingencyState) -> dict[str, object]:
    """The state as a JSON-able dict (the etcd document); read back with :func:`from_dict`."""
    window = state.last_window
    return {
        "version": DOC_VERSION,
        "mode": state.mode,
        "scope": _codes_doc(state.scope),
        "actor": state.actor,
        "reason": state.reason,
        "at": None if state.at is None else _iso(state.at),
        "message": state.message,
        "since": None if state.since is None else _iso(state.since),
        "last_window": None
        if window is None or window.end is None
        else {"start": _iso(window.start), "end": _iso(window.end)},
        "history": [_change_doc(c) for c in state.history],
    }


_STATE_FIELDS = frozenset(
    ("version", "mode", "scope", "actor", "reason", "at", "message", "since", "last_window")
) | {"history"}
_CHANGE_FIELDS = frozenset({"action", "actor", "reason", "at", "lbcps", "scope", "message"})
_WINDOW_FIELDS = frozenset({"start", "end"})


def _object(path: str, value: object, fields: frozenset[str]) -> Mapping[str, object]:
    if not isinstance(value, Mapping):
        raise ValueError(f"{path or 'document'}: must be an object, got {type(value).__name__}")
    prefix = f"{path}." if path else ""
    for key in value:
        if key not in fields:
            raise ValueError(f"{prefix}{key}: unknown field")
    for key in sorted(fields):
        if key not in value:
            raise ValueError(f"{prefix}{key}: missing")
    return value


def _read_time(path: str, value: object) -> datetime:
    if not isinstance(value, str):
        raise ValueError(f"{path}: must be an ISO 8601 string, got {type(value).__name__}")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"{path}: not an ISO 8601 timestamp: {value[:40]!r}") from None
    return _aware(path, parsed)


def _read_opt_time(path: str, value: object) -> datetime | None:
    return None if value is None else _read_time(path, value)


def _read_scope(path: str, value: object, known: frozenset[str] | None) -> Scope:
    if value is None:
        return None
    if not isinstance(value, list):
        raise ValueError(f"{path}: must be a list of LBCP codes or null")
    codes = _codes(path, value, known)
    if len(codes) != len(value):
        raise ValueError(f"{path}: lists an LBCP twice")
    return codes


def _read_str(path: str, value: object) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{path}: must be a string, got {type(value).__name__}")
    return value


def _read_opt_str(path: str, value: object) -> str | None:
    return None if value is None else _read_str(path, value)


def _build(path: str, build: Callable[..., _T], **kwargs: object) -> _T:
    # Constructor checks run on values already type-checked above; prefix their field name
    # with the path so nested errors still say where they are (history[3].message: ...).
    try:
        return build(**kwargs)
    except ValueError as exc:
        raise ValueError(f"{path}.{exc}" if path else str(exc)) from None


def _read_change(path: str, doc: object) -> Change:
    # History records past facts: an LBCP since removed from the configuration must not make
    # the whole document unreadable (and contingency unreachable), so only its form is checked.
    d = _object(path, doc, _CHANGE_FIELDS)
    return _build(
        path,
        Change,
        action=_read_str(f"{path}.action", d["action"]),
        actor=_read_str(f"{path}.actor", d["actor"]),
        reason=_read_str(f"{path}.reason", d["reason"]),
        at=_read_time(f"{path}.at", d["at"]),
        lbcps=_read_scope(f"{path}.lbcps", d["lbcps"], None),
        scope=_read_scope(f"{path}.scope", d["scope"], None),
        message=_read_str(f"{path}.message", d["message"]),
    )


def from_dict(doc: object, *, known: frozenset[str] = LBCP_CODES) -> ContingencyState:
    """Read a document written by :func:`to_dict`, refusing anything it would not write.

    Raises ValueError whose message starts with the offending field (``history[2].at: ...``).
    The live ``scope`` must use LBCPs in ``known``; history entries only need well-formed codes.
    """
    d = _object("", doc, _STATE_FIELDS)
    version = d["version"]
    if isinstance(version, bool) or not isinstance(version, int) or version != DOC_VERSION:
        raise ValueError(f"version: unsupported {version!r}, expected {DOC_VERSION}")
    scope = _read_scope("scope", d["scope"], known)
    mode = d["mode"]
    if mode not in ("normal", "manual"):
        raise ValueError(f"mode: must be 'normal' or 'manual', got {mode!r}")
    if (mode == "normal") != (scope == frozenset()):
        raise ValueError(f"mode: {mode!r} does not match scope {d['scope']!r}")
    window: ManualWindow | None = None
    if d["last_window"] is not None:
        w = _object("last_window", d["last_window"], _WINDOW_FIELDS)
        window = ManualWindow(
            _read_time("last_window.start", w["start"]), _read_time("last_window.end", w["end"])
        )
    history = d["history"]
    if not isinstance(history, list):
        raise ValueError("history: must be a list")
    if len(history) > HISTORY_LIMIT:
        raise ValueError(f"history: more than {HISTORY_LIMIT} entries")
    return _build(
        "",
        ContingencyState,
        scope=scope,
        actor=_read_opt_str("actor", d["actor"]),
        reason=_read_opt_str("reason", d["reason"]),
        at=_read_opt_time("at", d["at"]),
        message=_read_str("message", d["message"]),
        since=_read_opt_time("since", d["since"]),
        last_window=window,
        history=tuple(_read_change(f"history[{i}]", c) for i, c in enumerate(history)),
    )
