"""The phone call's pure state machine (issue 16): for each situation, the exact AGI actions.
No sockets and no mocks: events in, actions out."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from kernel.domain.ccrn import make_ccrn
from node.phone import dialogue as d
from node.phone.keypad import encode_mark

T0 = datetime(2030, 1, 7, 15, 30, tzinfo=UTC)  # 23:30 in Hong Kong
C1, C2 = make_ccrn(1), make_ccrn(2)
TYPO = C1[:-1] + str((int(C1[-1]) + 1) % 10)
VRN = "AB123"
OK = d.PinChecked("ok", 42, ("XY9", "ZZ1"))


def drive(events: list[d.Event], call: d.Call | None = None) -> tuple[d.Call, list[d.Action]]:
    """Run `events` from a fresh call; the last state and every action, in order."""
    if call is None:
        call, actions = d.start(T0)
    else:
        actions = []
    out = list(actions)
    for ev in events:
        call, actions = d.step(call, ev)
        out += actions
    return call, out


def keys(text: str, timed_out: bool = False) -> d.Keys:
    return d.Keys(text, timed_out)


TO_VEHICLE: list[d.Event] = [keys("42"), keys("314159"), OK]
TO_LBCP: list[d.Event] = [*TO_VEHICLE, keys(encode_mark(VRN)), keys("1")]
TO_CCRN: list[d.Event] = [*TO_LBCP, keys("1"), d.ModeChecked(False)]


def prompts(actions: list[d.Action]) -> list[str]:
    return [a.prompt for a in actions if isinstance(a, d.GetData | d.StreamFile)]


def test_a_whole_call_with_two_ccrns() -> None:
    """#16 items 1-5: every step of a call that bundles two CCRNs, in order, ending with the
    result set first, the time said twice and a hang-up."""
    not_before = T0 + timedelta(minutes=30)
    call, actions = drive(
        [
            *TO_CCRN,
            keys(C1),
            d.CcrnChecked(None),
            keys(C2),
            d.CcrnChecked(None),
            keys(""),
            d.BundleMade("cross_after", not_before),
        ]
    )
    request = d.BundleRequest(42, VRN, "LMC", (C1, C2), False, "2030-01-07")
    assert actions == [
        d.StreamFile("welcome"),
        d.GetData("enter-account"),
        d.GetData("enter-pin", 8),
        d.VerifyPin("42", "314159"),
        d.GetData("enter-vehicle"),
        d.StreamFile("you-entered"),
        d.SayAlpha(VRN),
        d.GetData("confirm-vehicle", 1),
        d.GetData("enter-lbcp", 1),
        d.CheckMode("LMC"),
        d.GetData("enter-ccrn"),
        d.CheckCcrn(42, VRN, "LMC", C1),
        d.StreamFile("ccrn-accepted"),
        d.GetData("enter-ccrn"),
        d.CheckCcrn(42, VRN, "LMC", C2),
        d.StreamFile("ccrn-accepted"),
        d.GetData("enter-ccrn"),
        d.MakeBundle(replace(request, day="2030-01-07")),
        d.SetVariable("ROCARS_RESULT", "cross_after:2030-01-07T16:00:00Z"),
        d.StreamFile("cross-after"),
        d.SayTime(not_before),
        d.StreamFile("cross-after"),
        d.SayTime(not_before),
        d.StreamFile("goodbye"),
        d.Hangup(),
    ]
    assert call.stage == "ended"
    assert call.result == "cross_after:2030-01-07T16:00:00Z"


def test_the_bundle_day_is_the_hong_kong_date() -> None:
    """#16 idempotency: the key's day is the call's date in Hong Kong (UTC+8), not UTC's."""
    call, _ = d.start(datetime(2030, 1, 7, 16, 30, tzinfo=UTC))  # 00:30 on the 8th in HK
    call, actions = drive([*TO_CCRN, keys("0")], call=call)
    [make] = [a for a in actions if isinstance(a, d.MakeBundle)]
    assert make.request.day == "2030-01-08"


@pytest.mark.parametrize(
    ("outcome", "expected"),
    [
        (
            d.BundleMade("cross_now"),
            ["cross_now", "cross-now", "cross-now", "goodbye"],
        ),
        (
            d.BundleMade("refused", reason="conflict"),
            ["failed:conflict", "bundle-refused", "goodbye"],
        ),
        (
            d.BundleMade("refused"),
            ["failed:refused", "bundle-refused", "goodbye"],
        ),
        (
            d.BundleMade("unavailable"),
            ["failed:unavailable", "service-unavailable", "goodbye"],
        ),
    ],
)
def test_bundle_outcomes(outcome: d.BundleMade, expected: list[str]) -> None:
    """#16 item 4: cross now read twice; a refusal or an outage said once; the result first."""
    _, actions = drive([*TO_CCRN, keys("0"), outcome])
    tail = actions[actions.index(d.MakeBundle(d.BundleRequest(42, VRN, "LMC", (), True,
                                                              "2030-01-07"))) + 1 :]  # fmt: skip
    assert tail[0] == d.SetVariable("ROCARS_RESULT", expected[0])
    assert prompts(tail) == expected[1:]
    assert tail[-1] == d.Hangup()


@pytest.mark.parametrize(
    ("events", "said", "result"),
    [
        # Three wrong PINs in one call: locked (the store locks at the same count).
        (
            [keys("42"), keys("1"), d.PinChecked("wrong")] * 3,
            ["wrong-pin", "wrong-pin", "locked", "goodbye"],
            "failed:locked",
        ),
        # Already locked by earlier calls: the first try ends the call.
        (
            [keys("42"), keys("314159"), d.PinChecked("locked")],
            ["locked", "goodbye"],
            "failed:locked",
        ),
        # The database is unreachable.
        (
            [keys("42"), keys("314159"), d.PinChecked("unavailable")],
            ["service-unavailable", "goodbye"],
            "failed:unavailable",
        ),
        # Nothing keyed, three times.
        (
            [keys("", True)] * 3,
            ["no-input", "no-input", "no-input", "goodbye"],
            "failed:no_input",
        ),
    ],
)
def test_identification(events: list[d.Event], said: list[str], result: str) -> None:
    """#16 item 1: wrong PINs, a lock, an outage and silence each end the call their way."""
    call, actions = drive(events)
    assert [p for p in prompts(actions) if not p.startswith(("enter-", "welcome"))] == said
    assert call.result == result
    assert actions[-1] == d.Hangup()


def test_a_wrong_pin_asks_for_the_account_again() -> None:
    """#16 item 1: after a wrong PIN both account and PIN are asked again (a wrong PIN and an
    unknown account are one answer), and a right one then goes on to the vehicle."""
    call, actions = drive([keys("42"), keys("1"), d.PinChecked("wrong"), keys("42"),
                           keys("314159"), OK])  # fmt: skip
    assert prompts(actions)[3:] == ["wrong-pin", "enter-account", "enter-pin", "enter-vehicle"]
    assert call.stage == "vehicle"
    assert call.wrong_pins == 1


@pytest.mark.parametrize(
    ("entries", "said", "vrn"),
    [
        ([encode_mark(VRN)], [], VRN),
        (["212"], ["invalid-vehicle"], None),  # half a character
        (["*1"], [], "XY9"),
        (["*2"], [], "ZZ1"),
        (["*3"], ["unknown-short-code"], None),
        (["*3", "*2"], ["unknown-short-code"], "ZZ1"),
        (["11", encode_mark(VRN)], ["invalid-vehicle"], VRN),
    ],
)
def test_the_vehicle(entries: list[str], said: list[str], vrn: str | None) -> None:
    """#16 item 2: a spelled mark or a known short code is read back for confirmation;
    anything else is refused with its reason and asked again."""
    call, actions = drive([*TO_VEHICLE, *(keys(e) for e in entries)])
    after = prompts(actions)[prompts(actions).index("enter-vehicle") + 1 :]
    assert [p for p in after if p not in ("enter-vehicle",)][: len(said)] == said
    if vrn is None:
        assert call.stage == "vehicle"
    else:
        assert call.stage == "confirm"
        assert actions[-3:] == [
            d.StreamFile("you-entered"),
            d.SayAlpha(vrn),
            d.GetData("confirm-vehicle", 1),
        ]


@pytest.mark.parametrize(
    ("answer", "stage", "last"),
    [
        ("1", "lbcp", d.GetData("enter-lbcp", 1)),
        ("2", "vehicle", d.GetData("enter-vehicle")),
        ("3", "confirm", d.GetData("confirm-vehicle", 1)),
        ("", "confirm", d.GetData("confirm-vehicle", 1)),
    ],
)
def test_confirming_the_vehicle(answer: str, stage: str, last: d.Action) -> None:
    """#16 item 2: 1 confirms, 2 keys the mark again, anything else reads it back again."""
    call, actions = drive([*TO_VEHICLE, keys(encode_mark(VRN)), keys(answer)])
    assert call.stage == stage
    assert actions[-1] == last


@pytest.mark.parametrize(
    ("digit", "lbcp"),
    [("1", "LMC"), ("2", "MKT"), ("3", "STK"), ("4", "SBC"), ("5", "HYW"), ("6", "HZMB")],
)
def test_the_lbcp_menu_in_the_default_order(digit: str, lbcp: str) -> None:
    """#16 item 3: menu digits 1-6 are LMC, MKT, STK, SBC, HYW, HZMB by default."""
    _, actions = drive([*TO_LBCP, keys(digit)])
    assert actions[-1] == d.CheckMode(lbcp)


def test_the_lbcp_menu_follows_the_configured_order() -> None:
    """#16 item 3: a configured order changes what each digit means; a digit past it is
    refused."""
    call, _ = d.start(T0, ("HZMB", "LMC"))
    call, actions = drive([*TO_LBCP, keys("1")], call=call)
    assert actions[-1] == d.CheckMode("HZMB")
    call, _ = d.start(T0, ("HZMB", "LMC"))
    call, actions = drive([*TO_LBCP, keys("3")], call=call)
    assert prompts(actions)[-2:] == ["invalid-choice", "enter-lbcp"]


def test_manual_mode_is_announced_and_ends_the_call() -> None:
    """#16 item 6: manual clearance at the chosen LBCP: the result, what is in force where,
    what to do, goodbye; no CCRN is asked."""
    call, actions = drive([*TO_LBCP, keys("6"), d.ModeChecked(True)])
    assert actions[-6:] == [
        d.SetVariable("ROCARS_RESULT", "failed:manual_mode"),
        d.StreamFile("manual-mode"),
        d.StreamFile("lbcp-hzmb"),
        d.StreamFile("manual-mode-action"),
        d.StreamFile("goodbye"),
        d.Hangup(),
    ]
    assert call.result == "failed:manual_mode"


@pytest.mark.parametrize(
    ("entry", "said"),
    [
        (TYPO, "ccrn-check-digit"),  # check digit first, before any lookup
        (C1[:-1], "ccrn-invalid"),  # 15 digits
        (C1 + "0", "ccrn-invalid"),  # 17 digits
        ("*" + C1[1:], "ccrn-invalid"),
    ],
)
def test_malformed_ccrns_are_refused_before_any_lookup(entry: str, said: str) -> None:
    """#16 item 3: the check digit (and the form) is judged as keyed, without asking the store."""
    call, actions = drive([*TO_CCRN, keys(entry)])
    assert actions[-2:] == [d.StreamFile(said), d.GetData("enter-ccrn")]
    assert not any(isinstance(a, d.CheckCcrn) for a in actions)
    assert call.refusals == 1


@pytest.mark.parametrize("refusal", ["unknown", "cancelled", "other-lbcp", "bundled", "too-late"])
def test_store_refusals_are_said(refusal: d.CcrnRefusal) -> None:
    """#16 item 3: existence, state and LBCP are the store's answer; each has its own prompt."""
    call, actions = drive([*TO_CCRN, keys(C1), d.CcrnChecked(refusal)])
    assert actions[-2:] == [d.StreamFile(f"ccrn-{refusal}"), d.GetData("enter-ccrn")]
    assert call.ccrns == ()


def test_a_ccrn_keyed_twice_is_refused() -> None:
    """#16 item 3: the same CCRN twice in one call is refused the second time."""
    _, actions = drive([*TO_CCRN, keys(C1), d.CcrnChecked(None), keys(C1)])
    assert actions[-2:] == [d.StreamFile("ccrn-repeated"), d.GetData("enter-ccrn")]


def test_five_refusals_in_a_row_end_the_call() -> None:
    """#16 item 3: a caller keying refused CCRNs is not kept forever."""
    call, actions = drive([*TO_CCRN, *[keys(TYPO)] * 5])
    assert call.result == "failed:ccrn_refused"
    assert actions[-1] == d.Hangup()


@pytest.mark.parametrize(
    ("entries", "last"),
    [
        (["0"], "bundle-empty"),  # an empty truck
        ([""], "ccrn-needed"),  # `#` alone before any CCRN
        (["", ""], "ccrn-needed"),
        ([("", True)], "no-input"),  # silence
    ],
)
def test_the_first_ccrn_entry(entries: list[str | tuple[str, bool]], last: str) -> None:
    """#16 item 3: `0` first is an empty truck; `#` alone first asks for a CCRN; silence asks
    again."""
    events = [keys(*e) if isinstance(e, tuple) else keys(e) for e in entries]
    _, actions = drive([*TO_CCRN, *events])
    if last == "bundle-empty":
        assert actions[-1] == d.MakeBundle(d.BundleRequest(42, VRN, "LMC", (), True, "2030-01-07"))
    else:
        assert actions[-2:] == [d.StreamFile(last), d.GetData("enter-ccrn")]


def test_zero_after_a_ccrn_is_no_empty_truck() -> None:
    """#16 item 3: `0` means an empty truck only as the first entry."""
    _, actions = drive([*TO_CCRN, keys(C1), d.CcrnChecked(None), keys("0")])
    assert actions[-2:] == [d.StreamFile("ccrn-invalid"), d.GetData("enter-ccrn")]


def test_an_outage_while_checking_a_ccrn_ends_the_call() -> None:
    """#16: the store unreachable mid-call: "unavailable", and the dialplan may retry."""
    call, _ = drive([*TO_CCRN, keys(C1), d.CcrnChecked("unavailable")])
    assert call.result == "failed:unavailable"


def test_the_idempotency_key_is_the_calls_inputs() -> None:
    """#16 item 4: the same inputs give the same key whatever the CCRN order; any input, the
    day or the vehicle's count of ended bundles changes it."""
    base = d.BundleRequest(42, VRN, "LMC", (C1, C2), False, "2030-01-07")
    key = d.idempotency_key(base, 0)
    assert key == d.idempotency_key(replace(base, ccrns=(C2, C1)), 0)
    others = [
        d.idempotency_key(replace(base, account_id=43), 0),
        d.idempotency_key(replace(base, vrn="AB124"), 0),
        d.idempotency_key(replace(base, lbcp="MKT"), 0),
        d.idempotency_key(replace(base, ccrns=(C1,)), 0),
        d.idempotency_key(replace(base, day="2030-01-08"), 0),
        d.idempotency_key(base, 1),
    ]
    assert key not in others
    assert len(set(others)) == len(others)
    assert key.startswith("phone-")
    assert len(key) <= 200


def test_an_event_the_stage_does_not_wait_for_is_a_bug() -> None:
    """The driver must answer each query with its own event."""
    call, _ = d.start(T0)
    with pytest.raises(ValueError, match="does not take"):
        d.step(call, d.ModeChecked(False))


def test_every_prompt_the_call_uses_is_listed() -> None:
    """#16 item 5: the six GET DATA prompts by their exact names, and every prompt any path
    plays is in `prompts()` (which deploy/phone_prompts.py renders)."""
    assert d.ASKED == (
        "enter-account",
        "enter-pin",
        "enter-vehicle",
        "confirm-vehicle",
        "enter-lbcp",
        "enter-ccrn",
    )
    listed = set(d.prompts())
    paths = [
        [*TO_CCRN, keys(C1), d.CcrnChecked(None), keys(""), d.BundleMade("cross_now")],
        [*TO_LBCP, keys("6"), d.ModeChecked(True)],
        [keys("", True)] * 3,
        [keys("42"), keys("1"), d.PinChecked("wrong")] * 3,
    ]
    for events in paths:
        _, actions = drive(events)
        assert set(prompts(actions)) <= listed
