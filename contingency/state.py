"""Manual-clearance contingency mode: the state machine stored in etcd (pure core, DESIGN §4).

Plain values in, plain values out; no I/O and no clock (every time is passed in). The etcd
adapter reads the document with :func:`from_dict`, applies :func:`activate` or
:func:`deactivate`, and writes :func:`to_dict` back with a compare-and-swap. The document's form
(fields, types, ISO 8601 times) is declared once as pydantic models; the frozen values below
check its content, so a value built in code and one read from etcd obey the same rules.

Errors: bad input or a damaged document raises :class:`~kernel.errors.InvalidInput` whose
``field`` names the culprit (``history[2].at``) and whose message starts with it; a change the
current state does not allow (releasing what is not manual) raises
:class:`~kernel.errors.InvalidTransition`.

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
from collections.abc import Callable, Iterable
from dataclasses import dataclass, fields
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Final, Literal, TypeAlias, TypeVar

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    StrictInt,
    StrictStr,
    StringConstraints,
    ValidationError,
)
from pydantic_core import ErrorDetails

# The mode is what the gate rule takes; re-exported for the adapters that read it here.
from kernel.domain.gate import Mode as Mode
from kernel.domain.lbcp import DEFAULT_LBCPS
from kernel.errors import InvalidInput, InvalidTransition

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


def _invalid(field: str, detail: str) -> InvalidInput:
    return InvalidInput(f"{field}: {detail}", field=field)


def _text(field: str, value: object, limit: int) -> str:
    if not isinstance(value, str):
        raise _invalid(field, f"must be a string, got {type(value).__name__}")
    text = value.strip()
    if not text:
        raise _invalid(field, "must not be blank")
    if len(text) > limit:
        raise _invalid(field, f"longer than {limit} characters")
    return text


def _aware(field: str, value: object) -> datetime:
    if not isinstance(value, datetime):
        raise _invalid(field, f"must be a datetime, got {type(value).__name__}")
    if value.utcoffset() is None:
        raise _invalid(field, "must be timezone-aware")
    return value.astimezone(UTC)


def _codes(field: str, value: object, known: frozenset[str] | None) -> frozenset[str]:
    # A bare string is iterable too; "LMC" would silently become {"L", "M", "C"}.
    if isinstance(value, str | bytes) or not isinstance(value, Iterable):
        raise _invalid(field, f"must be a set of LBCP codes, got {type(value).__name__}")
    codes = frozenset(value)
    for code in sorted(codes, key=repr):
        if not isinstance(code, str) or not _CODE.fullmatch(code):
            raise _invalid(field, f"{code!r} is not an LBCP code")
        if known is not None and code not in known:
            raise _invalid(field, f"unknown LBCP {code!r}, known: {sorted(known)}")
    return codes


def _requested(field: str, value: object, known: frozenset[str]) -> Scope:
    if value is None:
        return None
    codes = _codes(field, value, known)
    if not codes:
        raise _invalid(field, "must name at least one LBCP, or be None for all")
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
            raise _invalid("action", f"must be one of {sorted(_ACTIONS)}, got {self.action!r}")
        object.__setattr__(self, "actor", _text("actor", self.actor, ACTOR_MAX))
        object.__setattr__(self, "reason", _text("reason", self.reason, REASON_MAX))
        object.__setattr__(self, "at", _aware("at", self.at))
        object.__setattr__(self, "lbcps", _scope("lbcps", self.lbcps))
        object.__setattr__(self, "scope", _scope("scope", self.scope))
        if self.lbcps is not None and not self.lbcps:
            raise _invalid("lbcps", "must name at least one LBCP, or be None for all")
        _check_message(self.scope, self.message)


def _check_message(scope: Scope, message: object) -> None:
    if not isinstance(message, str):
        raise _invalid("message", f"must be a string, got {type(message).__name__}")
    if scope == frozenset():
        if message:
            raise _invalid("message", "must be empty in normal mode")
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
            raise _invalid("actor", "actor, reason and at are set together or not at all")
        if self.actor is not None:
            object.__setattr__(self, "actor", _text("actor", self.actor, ACTOR_MAX))
            object.__setattr__(self, "reason", _text("reason", self.reason, REASON_MAX))
            object.__setattr__(self, "at", _aware("at", self.at))
        _check_message(self.scope, self.message)
        if (self.since is None) != (self.mode == "normal"):
            raise _invalid("since", "must be set exactly while in manual mode")
        if self.since is not None:
            object.__setattr__(self, "since", _aware("since", self.since))
            if self.actor is None:
                raise _invalid("actor", "manual mode needs who switched it on, and why")
        window = self.last_window
        if window is not None and (not isinstance(window, ManualWindow) or window.end is None):
            raise _invalid("last_window", "must be an ended ManualWindow")
        history = tuple(self.history)
        if len(history) > HISTORY_LIMIT or not all(isinstance(c, Change) for c in history):
            raise _invalid("history", f"at most {HISTORY_LIMIT} Change entries")
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
        raise InvalidTransition("mode: already normal, nothing to deactivate")
    if requested is None:
        scope: frozenset[str] = frozenset()
    else:
        current = known if state.scope is None else state.scope
        if not_manual := requested - current:
            raise InvalidTransition(f"lbcps: {sorted(not_manual)} not in manual mode")
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


def may_journal(mode: Mode, state_known: bool) -> bool:
    """Whether a clearance this node cannot write to PostgreSQL may go to its journal.

    The journal is manual mode's store: reconciliation imports it when manual mode is switched
    off. A clearance journalled while the LBCP is in normal mode would wait for a deactivation
    that may never come, so then the node refuses it (503: retry, the active node writes it).
    While the node cannot read the state at all (etcd unreachable), it journals: the system is
    failing, and an officer's record must never be refused then."""
    return mode == "manual" or not state_known


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
            raise _invalid(name, f"must be a finite number of seconds, got {value!r}")
    if isinstance(threshold_s, bool) or not isinstance(threshold_s, int | float):
        raise _invalid("threshold_s", f"must be a number, got {threshold_s!r}")
    if not (math.isfinite(threshold_s) and threshold_s > 0):
        raise _invalid("threshold_s", f"must be a finite number > 0, got {threshold_s!r}")
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


# --- the etcd document -----------------------------------------------------------------------
# Old documents must keep loading: a running cluster holds one at CONTINGENCY_STATE_KEY.


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat()


def _from_iso(value: object) -> object:
    # pydantic's own parser also reads Unix times ("1740794400"); the document holds ISO 8601.
    if not isinstance(value, str):
        raise ValueError(f"must be an ISO 8601 string, got {type(value).__name__}")
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"not an ISO 8601 timestamp: {value[:40]!r}") from None


def _no_repeats(codes: list[str]) -> list[str]:
    if len(set(codes)) != len(codes):
        raise ValueError("lists an LBCP twice")
    return codes


def _supported(version: int) -> int:
    if version != DOC_VERSION:
        raise ValueError(f"unsupported {version!r}, expected {DOC_VERSION}")
    return version


_Time = Annotated[AwareDatetime, BeforeValidator(_from_iso), PlainSerializer(_iso)]
_Code = Annotated[StrictStr, StringConstraints(pattern=f"^{_CODE.pattern}$")]
_Codes = Annotated[list[_Code], AfterValidator(_no_repeats), PlainSerializer(sorted)]


class _Document(BaseModel):
    # Exactly what to_dict writes: every field present, nothing unknown, nothing coerced.
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)


class _WindowDoc(_Document):
    start: _Time
    end: _Time


class _ChangeDoc(_Document):
    action: Action
    actor: StrictStr
    reason: StrictStr
    at: _Time
    lbcps: _Codes | None
    scope: _Codes | None
    message: StrictStr


class _StateDoc(_Document):
    version: Annotated[StrictInt, AfterValidator(_supported)]
    mode: Mode
    scope: _Codes | None
    actor: StrictStr | None
    reason: StrictStr | None
    at: _Time | None
    message: StrictStr
    since: _Time | None
    last_window: _WindowDoc | None
    history: list[_ChangeDoc] = Field(max_length=HISTORY_LIMIT)


def _values(value: ManualWindow | Change | ContingencyState) -> dict[str, Any]:
    return {f.name: getattr(value, f.name) for f in fields(value)}


def to_dict(state: ContingencyState) -> dict[str, object]:
    """The state as a JSON-able dict (the etcd document); read back with :func:`from_dict`."""
    window = state.last_window
    doc = {
        **_values(state),
        "version": DOC_VERSION,
        "mode": state.mode,
        "last_window": None if window is None else _WindowDoc.model_construct(**_values(window)),
        "history": [_ChangeDoc.model_construct(**_values(c)) for c in state.history],
    }
    # Built from values that checked themselves already; the serialisers above format them.
    return _StateDoc.model_construct(**doc).model_dump(mode="json")


_WORDS: Final = {"missing": "missing", "extra_forbidden": "unknown field"}


def _document_error(error: ErrorDetails) -> InvalidInput:
    # Worded as the values word theirs: the path first (history[2].at: ...), then what is wrong.
    path = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error["loc"]).lstrip(".")
    if error["type"] == "model_type":
        detail = f"must be an object, got {type(error['input']).__name__}"
    else:
        detail = _WORDS.get(error["type"]) or str(error.get("ctx", {}).get("error", error["msg"]))
    return _invalid(path or "document", detail)


def _build(path: str, build: Callable[..., _T], **kwargs: Any) -> _T:
    # The values check their own content; prefix the field they name with where they sit.
    try:
        return build(**kwargs)
    except InvalidInput as exc:
        raise InvalidInput(f"{path}.{exc}", field=f"{path}.{exc.field}") from None


def from_dict(doc: object, *, known: frozenset[str] = LBCP_CODES) -> ContingencyState:
    """Read a document written by :func:`to_dict`, refusing anything it would not write.

    Raises InvalidInput naming the offending field (``history[2].at``), the first one found.
    The live ``scope`` must use LBCPs in ``known``; history entries only need well-formed codes:
    an LBCP since removed from the configuration must not make the whole document unreadable
    (and contingency unreachable).
    """
    try:
        d = _StateDoc.model_validate(doc)
    except ValidationError as exc:
        raise _document_error(exc.errors(include_url=False)[0]) from None
    scope = None if d.scope is None else _codes("scope", d.scope, known)
    if (d.mode == "normal") != (scope == frozenset()):
        raise _invalid("mode", f"{d.mode!r} does not match scope {d.scope!r}")
    w = d.last_window
    return ContingencyState(
        scope=scope,
        actor=d.actor,
        reason=d.reason,
        at=d.at,
        message=d.message,
        since=d.since,
        last_window=None if w is None else _build("last_window", ManualWindow, **dict(w)),
        history=tuple(_build(f"history[{i}]", Change, **dict(c)) for i, c in enumerate(d.history)),
    )
