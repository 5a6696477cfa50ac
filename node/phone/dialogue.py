"""The whole phone call as a pure state machine (issue 16): keys and facts in, AGI actions out.

`step(call, event)` returns the next state and what to do; it opens no socket, reads no
clock (the call's start time is given to `start`) and asks the stores nothing itself: when
it needs a fact it ends its action list with a query (`VerifyPin`, `CheckMode`, `CheckCcrn`,
`MakeBundle`), and the driver (node.phone.agi_server) answers it with the matching event.
Every action list ends with exactly one thing to wait for: a `GetData` (answered by `Keys`),
a query, or `Hangup`.

The call, step by step:
1. welcome; account number, then the 6-digit PIN (one verdict for an unknown account and a
   wrong PIN, so the phone cannot tell which accounts exist); the store counts wrong PINs and
   locks phone access after 3 (kernel.domain.phone_pin); a locked account hears so and the
   call ends.
2. the vehicle: a mark spelled on the keypad, or `*` and a short code (node.phone.keypad);
   read back (SAY ALPHA) and confirmed with 1, or keyed again after 2.
3. the LBCP from a one-digit menu in the configured order; where manual clearance is in force
   the caller hears so and what to do, and the call ends without a bundle.
4. CCRNs one at a time, `#` after each and `#` alone when done (so `##` after the last), each
   checked as it is keyed: the check digit here first, then existence, state and LBCP by the
   store; `0` as the first entry declares an empty truck.
5. the bundle through the API's write path; the answer (cross now, or cross after a time said
   with SAY TIME) read twice. `ROCARS_RESULT` is set before anything is said about the end, so
   a caller hanging up early still leaves the dialplan an answer.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Literal

from kernel.domain.ccrn import CCRN_LENGTH, validate_ccrn
from kernel.domain.lbcp import DEFAULT_LBCPS, to_hk
from kernel.domain.phone_pin import PIN_LENGTH
from node.phone import keypad

RESULT_VARIABLE = "ROCARS_RESULT"
# Every prompt the call can play, by name (`rocars/<name>`): deploy/phone_prompts.py renders
# each one, so a name used here and missing there fails its test.
ASKED = (
    "enter-account",
    "enter-pin",
    "enter-vehicle",
    "confirm-vehicle",
    "enter-lbcp",
    "enter-ccrn",
)
# Why a CCRN is refused, as the store (node.phone.calls) or this module says it.
CcrnRefusal = Literal[
    "check-digit", "invalid", "repeated", "unknown", "cancelled", "other-lbcp", "bundled",
    "too-late",
]  # fmt: skip
CCRN_REFUSALS: tuple[CcrnRefusal, ...] = (
    "check-digit",
    "invalid",
    "repeated",
    "unknown",
    "cancelled",
    "other-lbcp",
    "bundled",
    "too-late",
)
MAX_TRIES = 3  # unanswered or unusable entries in a row before the call ends
MAX_CCRN_REFUSALS = 5  # refused CCRNs in a row before the call ends
MAX_CCRNS = 30  # a phone bundle; the API takes more
ENTRY_TIMEOUT_MS = 10_000
# Larger than any entry, so the `#` that ends one is always taken by the same GET DATA (with
# maxdigits reached Asterisk stops listening and a late `#` would end the next prompt).
MAX_KEYS = 24


# -- actions (what the driver does) --------------------------------------------------------


@dataclass(frozen=True)
class GetData:
    prompt: str  # without the rocars/ folder
    max_digits: int = MAX_KEYS
    timeout_ms: int = ENTRY_TIMEOUT_MS


@dataclass(frozen=True)
class StreamFile:
    prompt: str


@dataclass(frozen=True)
class SayAlpha:
    text: str


@dataclass(frozen=True)
class SayTime:
    at: datetime


@dataclass(frozen=True)
class SetVariable:
    name: str
    value: str


@dataclass(frozen=True)
class Hangup:
    pass


@dataclass(frozen=True)
class VerifyPin:
    account: str  # as keyed: the store decides whether it is an account at all
    pin: str


@dataclass(frozen=True)
class CheckMode:
    lbcp: str


@dataclass(frozen=True)
class CheckCcrn:
    account_id: int
    vrn: str
    lbcp: str
    ccrn: str


@dataclass(frozen=True)
class BundleRequest:
    """The bundle the call asks for: what `POST /v1/bundles` would carry, plus who and when."""

    account_id: int
    vrn: str
    lbcp: str
    ccrns: tuple[str, ...]
    empty: bool
    day: str  # the call's Hong Kong date, ISO

    def body(self) -> dict[str, object]:
        """The API request body (node.schemas.BundleIn) this bundle is."""
        return {"vrn": self.vrn, "lbcp": self.lbcp, "ccrns": list(self.ccrns), "empty": self.empty}


@dataclass(frozen=True)
class MakeBundle:
    request: BundleRequest


Query = VerifyPin | CheckMode | CheckCcrn | MakeBundle
Action = GetData | StreamFile | SayAlpha | SayTime | SetVariable | Hangup | Query


# -- events (what the driver reports) ------------------------------------------------------


@dataclass(frozen=True)
class Keys:
    """A GET DATA answer: the digits keyed (without the ending #), and whether it timed out."""

    digits: str
    timed_out: bool = False


@dataclass(frozen=True)
class PinChecked:
    verdict: Literal["ok", "wrong", "locked", "unavailable"]
    account_id: int | None = None
    vehicles: tuple[str, ...] = ()  # the account's vehicles, short code 1 first


@dataclass(frozen=True)
class ModeChecked:
    manual: bool | None  # None: the mode cannot be read


@dataclass(frozen=True)
class CcrnChecked:
    refusal: CcrnRefusal | Literal["unavailable"] | None


@dataclass(frozen=True)
class BundleMade:
    outcome: Literal["cross_now", "cross_after", "refused", "unavailable"]
    not_before: datetime | None = None
    reason: str = ""  # refused: a short token for ROCARS_RESULT


Event = Keys | PinChecked | ModeChecked | CcrnChecked | BundleMade


# -- state ---------------------------------------------------------------------------------

Stage = Literal["account", "pin", "verify", "vehicle", "confirm", "lbcp", "mode", "ccrn",
                "check", "bundle", "ended"]  # fmt: skip


@dataclass(frozen=True)
class Call:
    started_at: datetime
    lbcps: tuple[str, ...] = tuple(DEFAULT_LBCPS)
    stage: Stage = "account"
    tries: int = 0  # unusable entries in a row at this prompt
    wrong_pins: int = 0
    account_text: str = ""
    account_id: int | None = None
    vehicles: tuple[str, ...] = ()
    vrn: str = ""
    lbcp: str = ""
    ccrns: tuple[str, ...] = ()
    pending_ccrn: str = ""
    refusals: int = 0
    result: str | None = None  # ROCARS_RESULT once set


Step = tuple[Call, list[Action]]


def start(started_at: datetime, lbcps: tuple[str, ...] = tuple(DEFAULT_LBCPS)) -> Step:
    """A new call, answered at `started_at` (aware)."""
    if started_at.tzinfo is None:
        raise ValueError("started_at must be timezone-aware")
    if not 1 <= len(lbcps) <= 9:
        raise ValueError("the LBCP menu has 1-9 entries")
    call = Call(started_at=started_at, lbcps=lbcps)
    return call, [StreamFile("welcome"), GetData("enter-account")]


def iso_utc(at: datetime) -> str:
    """The form of `cross_after:<ISO>`: UTC with a Z, as the API writes times."""
    return at.astimezone(UTC).isoformat().replace("+00:00", "Z")


def idempotency_key(request: BundleRequest, generation: int) -> str:
    """The call's Idempotency-Key: the same inputs on the same day give the same key, so a
    call cut after the bundle was made and keyed again is answered from the first bundle.
    `generation` is how many bundles of this vehicle at this LBCP have ended (the store
    counts them): once the truck has crossed, the same inputs make a new bundle."""
    facts = [
        request.account_id,
        request.vrn,
        request.lbcp,
        sorted(request.ccrns),
        request.empty,
        request.day,
        generation,
    ]
    digest = hashlib.sha256(json.dumps(facts, separators=(",", ":")).encode()).hexdigest()
    return f"phone-{digest[:40]}"


def _end(call: Call, result: str, *prompts: str) -> Step:
    """Set the result first (a hang-up during the prompts still leaves it), say, hang up."""
    actions: list[Action] = [SetVariable(RESULT_VARIABLE, result)]
    actions += [StreamFile(p) for p in prompts]
    actions.append(Hangup())
    return replace(call, stage="ended", result=result), actions


def _unavailable(call: Call) -> Step:
    return _end(call, "failed:unavailable", "service-unavailable", "goodbye")


def _retry(call: Call, prompt: str, *say: str, limit: int = MAX_TRIES) -> Step:
    """The same prompt again after `say`, unless that was the last try."""
    tries = call.tries + 1
    if tries >= limit:
        return _end(call, "failed:no_input", "no-input", "goodbye")
    return replace(call, tries=tries), [*(StreamFile(s) for s in say), GetData(prompt)]


def _read_back(call: Call) -> list[Action]:
    return [StreamFile("you-entered"), SayAlpha(call.vrn), GetData("confirm-vehicle", 1)]


def _bundle(call: Call, *, empty: bool) -> Step:
    assert call.account_id is not None
    request = BundleRequest(
        account_id=call.account_id,
        vrn=call.vrn,
        lbcp=call.lbcp,
        ccrns=() if empty else call.ccrns,
        empty=empty,
        day=to_hk(call.started_at).date().isoformat(),
    )
    return replace(call, stage="bundle", tries=0), [MakeBundle(request)]


def _on_account(call: Call, ev: Keys) -> Step:
    if not ev.digits:
        return _retry(call, "enter-account", "no-input")
    return replace(call, stage="pin", account_text=ev.digits, tries=0), [
        GetData("enter-pin", PIN_LENGTH + 2)
    ]


def _on_pin(call: Call, ev: Keys) -> Step:
    if not ev.digits:
        return _retry(call, "enter-pin", "no-input")
    return replace(call, stage="verify", tries=0), [VerifyPin(call.account_text, ev.digits)]


def _on_verified(call: Call, ev: PinChecked) -> Step:
    if ev.verdict == "unavailable":
        return _unavailable(call)
    if ev.verdict == "locked":
        return _end(call, "failed:locked", "locked", "goodbye")
    if ev.verdict == "wrong":
        wrong = call.wrong_pins + 1
        if wrong >= MAX_TRIES:  # the store locks the account at the same count
            return _end(replace(call, wrong_pins=wrong), "failed:locked", "locked", "goodbye")
        return replace(call, stage="account", wrong_pins=wrong, account_text=""), [
            StreamFile("wrong-pin"),
            GetData("enter-account"),
        ]
    assert ev.account_id is not None
    nxt = replace(call, stage="vehicle", account_id=ev.account_id, vehicles=ev.vehicles)
    return nxt, [GetData("enter-vehicle")]


def _on_vehicle(call: Call, ev: Keys) -> Step:
    if not ev.digits:
        return _retry(call, "enter-vehicle", "no-input")
    entry = keypad.decode_vehicle(ev.digits)
    if isinstance(entry, keypad.BadEntry):
        return _retry(call, "enter-vehicle", "invalid-vehicle")
    if isinstance(entry, keypad.ShortCode):
        if entry.number > len(call.vehicles):
            return _retry(call, "enter-vehicle", "unknown-short-code")
        vrn = call.vehicles[entry.number - 1]
    else:
        vrn = entry.vrn
    nxt = replace(call, stage="confirm", vrn=vrn, tries=0)
    return nxt, _read_back(nxt)


def _on_confirm(call: Call, ev: Keys) -> Step:
    if ev.digits == "1":
        return replace(call, stage="lbcp", tries=0), [GetData("enter-lbcp", 1)]
    if ev.digits == "2":
        return replace(call, stage="vehicle", vrn="", tries=0), [GetData("enter-vehicle")]
    tries = call.tries + 1
    if tries >= MAX_TRIES:
        return _end(call, "failed:no_input", "no-input", "goodbye")
    say = "no-input" if not ev.digits else "invalid-choice"
    return replace(call, tries=tries), [StreamFile(say), *_read_back(call)]


def _on_lbcp(call: Call, ev: Keys) -> Step:
    lbcp = keypad.menu_choice(ev.digits, call.lbcps)
    if lbcp is None:
        return _retry(call, "enter-lbcp", "no-input" if not ev.digits else "invalid-choice")
    return replace(call, stage="mode", lbcp=lbcp, tries=0), [CheckMode(lbcp)]


def _on_mode(call: Call, ev: ModeChecked) -> Step:
    if ev.manual is None:
        return _unavailable(call)
    if ev.manual:
        return _end(
            call,
            "failed:manual_mode",
            "manual-mode",
            f"lbcp-{call.lbcp.lower()}",
            "manual-mode-action",
            "goodbye",
        )
    return replace(call, stage="ccrn"), [GetData("enter-ccrn")]


def _refuse_ccrn(call: Call, refusal: str) -> Step:
    refusals = call.refusals + 1
    if refusals >= MAX_CCRN_REFUSALS:
        return _end(call, "failed:ccrn_refused", f"ccrn-{refusal}", "goodbye")
    nxt = replace(call, stage="ccrn", refusals=refusals, pending_ccrn="")
    return nxt, [StreamFile(f"ccrn-{refusal}"), GetData("enter-ccrn")]


def _on_ccrn(call: Call, ev: Keys) -> Step:
    digits = keypad.ccrn_keys(ev.digits)
    if not digits:
        if ev.timed_out:
            return _retry(call, "enter-ccrn", "no-input")
        if call.ccrns:  # `#` alone after the last CCRN: done
            return _bundle(call, empty=False)
        return _retry(call, "enter-ccrn", "ccrn-needed")
    if digits == "0" and not call.ccrns:
        return _bundle(call, empty=True)
    error = validate_ccrn(digits)
    if error is not None:
        # Check digit first: a full-length number of digits whose check digit is wrong.
        wrong_check = len(digits) == CCRN_LENGTH and digits.isdigit()
        return _refuse_ccrn(call, "check-digit" if wrong_check else "invalid")
    if digits in call.ccrns:
        return _refuse_ccrn(call, "repeated")
    assert call.account_id is not None
    nxt = replace(call, stage="check", pending_ccrn=digits, tries=0)
    return nxt, [CheckCcrn(call.account_id, call.vrn, call.lbcp, digits)]


def _on_checked(call: Call, ev: CcrnChecked) -> Step:
    if ev.refusal == "unavailable":
        return _unavailable(call)
    if ev.refusal is not None:
        return _refuse_ccrn(call, ev.refusal)
    ccrns = (*call.ccrns, call.pending_ccrn)
    nxt = replace(call, stage="ccrn", ccrns=ccrns, pending_ccrn="", refusals=0)
    if len(ccrns) >= MAX_CCRNS:
        done, actions = _bundle(nxt, empty=False)
        return done, [StreamFile("too-many-ccrns"), *actions]
    return nxt, [StreamFile("ccrn-accepted"), GetData("enter-ccrn")]


def _on_bundle(call: Call, ev: BundleMade) -> Step:
    if ev.outcome == "unavailable":
        return _unavailable(call)
    if ev.outcome == "refused":
        return _end(call, f"failed:{ev.reason or 'refused'}", "bundle-refused", "goodbye")
    if ev.outcome == "cross_now":
        return _end(call, "cross_now", "cross-now", "cross-now", "goodbye")
    assert ev.not_before is not None
    result = f"cross_after:{iso_utc(ev.not_before)}"
    ended, actions = _end(call, result)
    said: list[Action] = [StreamFile("cross-after"), SayTime(ev.not_before)] * 2
    return ended, [actions[0], *said, StreamFile("goodbye"), actions[-1]]


_EXPECTS: dict[Stage, type] = {
    "account": Keys,
    "pin": Keys,
    "verify": PinChecked,
    "vehicle": Keys,
    "confirm": Keys,
    "lbcp": Keys,
    "mode": ModeChecked,
    "ccrn": Keys,
    "check": CcrnChecked,
    "bundle": BundleMade,
}


def step(call: Call, event: Event) -> Step:
    """The call after `event`, and what to do next. An event the stage does not wait for is a
    bug in the driver: ValueError."""
    expected = _EXPECTS.get(call.stage)
    if expected is None or not isinstance(event, expected):
        raise ValueError(f"stage {call.stage} does not take {type(event).__name__}")
    if isinstance(event, Keys):
        handler = {
            "account": _on_account,
            "pin": _on_pin,
            "vehicle": _on_vehicle,
            "confirm": _on_confirm,
            "lbcp": _on_lbcp,
            "ccrn": _on_ccrn,
        }[call.stage]
        return handler(call, event)
    if isinstance(event, PinChecked):
        return _on_verified(call, event)
    if isinstance(event, ModeChecked):
        return _on_mode(call, event)
    if isinstance(event, CcrnChecked):
        return _on_checked(call, event)
    return _on_bundle(call, event)


def prompts() -> tuple[str, ...]:
    """Every prompt name the call may play or ask with."""
    said = {
        "welcome",
        "no-input",
        "wrong-pin",
        "locked",
        "you-entered",
        "invalid-vehicle",
        "unknown-short-code",
        "invalid-choice",
        "manual-mode",
        "manual-mode-action",
        "ccrn-accepted",
        "ccrn-needed",
        "too-many-ccrns",
        "cross-now",
        "cross-after",
        "bundle-refused",
        "service-unavailable",
        "goodbye",
    }
    said |= {f"ccrn-{r}" for r in CCRN_REFUSALS}
    said |= {f"lbcp-{code.lower()}" for code in DEFAULT_LBCPS}
    return (*ASKED, *sorted(said))
