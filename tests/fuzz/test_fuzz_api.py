"""#10 Tests: schemathesis against the live cluster's own /openapi.json, through the HAProxy
entry point, with an officer, a trader and a trucker key.

Every operation is fuzzed with generated requests, positive (valid by the document) and
negative (invalid by it), and statefully along the document's OpenAPI links (a consignment's
CCRN into its reads, amendments, cancellation, ITFS and selection; a bundle's id into its
reads, cancellation and inspection; a registration into approval, an approval's account into
suspension; a rule into its update). Each answer must pass the CHECKS of conftest.py: no 5xx,
a documented status and media type, a body that fits the documented schema, documented
required headers (Retry-After on 429 and 503).

Two sizes: `make test`/`make integration` run the subset (markers `fuzz` and `integration`:
a few examples per operation and a few stateful scenarios, under a minute on the fuzz run's
own cluster, conftest.py); `make fuzz` runs the long one (markers `fuzz` and `slow`), at least
10,000 requests, and prints the requests per operation and the statuses at the end.

Which key: the first account kind in the operation's `x-rocars-roles` (officer for officer
routes, trader for trader routes, trucker for trucker routes; public operations go without).

What the run keeps from sabotaging itself, deliberately:
- Suspension: `POST /v1/accounts/{id}/suspend` and `.../reinstate` are never generated with the
  ids of the fuzzer's own three accounts (a schemathesis `filter_path_parameters` hook); any
  other id, including accounts the fuzzer's own approvals created, is fair game.
- Manual clearance: each `POST /v1/contingency/activate` that answers 200 is followed at once by
  a deactivation as the officer (which must answer 200 and leave the public notice "normal"), so
  the rest of the run fuzzes normal mode. Those follow-up requests are not counted as fuzz.
- Rate limit: the cluster's configured limit (1,000 requests per second per account) is far
  above what one sequential fuzzer sends; a 429 is a documented answer all the same.
- Nothing else is excluded: every operation of the document is generated, HEAD excepted
  (aiohttp's twin of each GET, not listed in the document).
"""

from __future__ import annotations

from typing import Any

import pytest
import schemathesis
from fuzzkit import TALLY, Caller
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.errors import FlakyStrategyDefinition
from schemathesis import GenerationMode
from schemathesis.specs.openapi.schemas import OpenApiSchema

from node.api.openapi import build

# One test item per operation of the document (the one built in process: the live one is the
# same, tests/unit/handlers/test_openapi_contract.py checks it is served as built).
LABELS = [f"{m.upper()} {path}" for path, item in build()["paths"].items() for m in item]
LONG_RUN_REQUESTS = 10_000
COMMON: dict[str, Any] = {
    "deadline": None,
    "database": None,
    "suppress_health_check": list(HealthCheck),
    "phases": [Phase.explicit, Phase.generate],
}


def send(case: schemathesis.Case, caller: Caller) -> None:
    response = case.call(headers=caller.headers_for(case), session=caller.session)
    caller.after(case, response)
    case.validate_response(response)


def fuzz_operation(
    fuzz_schema: OpenApiSchema, label: str, caller: Caller, *, max_examples: int
) -> None:
    """Positive and negative cases of one operation. (schemathesis' own pytest
    parametrization, `from_fixture(...).parametrize()`, breaks on pytest 9: it reads the
    removed `Function._nodeid`; this drives the same strategies with Hypothesis directly.)"""
    method, path = label.split(" ", 1)
    operation = fuzz_schema[path][method]
    strategy = st.one_of(
        operation.as_strategy(GenerationMode.POSITIVE),
        operation.as_strategy(GenerationMode.NEGATIVE),
    )

    @given(case=strategy)
    @settings(max_examples=max_examples, **COMMON)
    def run(case: schemathesis.Case) -> None:
        send(case, caller)

    run()


def run_stateful(fuzz_schema: OpenApiSchema, caller: Caller, **hypothesis: Any) -> None:
    machine = fuzz_schema.as_state_machine()

    class Fuzz(machine):  # type: ignore[valid-type, misc]
        def get_call_kwargs(self, case: schemathesis.Case) -> dict[str, Any]:
            return {"headers": caller.headers_for(case), "session": caller.session}

        def after_call(self, response: schemathesis.Response, case: schemathesis.Case) -> None:
            super().after_call(response, case)
            caller.after(case, response)

    Fuzz.run(settings=settings(**COMMON, **hypothesis))


def run_stateful_rounds(
    fuzz_schema: OpenApiSchema, caller: Caller, *, scenarios: int, per_round: int, steps: int
) -> int:
    """`scenarios` stateful scenarios in rounds of `per_round`, each round with fresh
    randomness. Which links can be followed depends on the live answers, so Hypothesis may
    find that a choice sequence it replays leads elsewhere than before and give up with
    FlakyStrategyDefinition: that says the generator is not deterministic, not that a check
    failed (a failed check raises its own error), so the round is counted and the next one
    starts. Returns the rounds that ended that way."""
    flaky = 0
    for _ in range(scenarios // per_round):
        try:
            run_stateful(fuzz_schema, caller, max_examples=per_round, stateful_step_count=steps)
        except FlakyStrategyDefinition:
            flaky += 1
    return flaky


@pytest.mark.fuzz
@pytest.mark.integration
@pytest.mark.parametrize("label", LABELS)
def test_fuzz_subset(fuzz_schema: OpenApiSchema, caller: Caller, label: str) -> None:
    """#10 Tests (CI subset): a few generated requests per operation; every answer passes the
    checks (no 5xx, documented status, media type, schema and headers)."""
    fuzz_operation(fuzz_schema, label, caller, max_examples=8)


@pytest.mark.fuzz
@pytest.mark.integration
def test_fuzz_stateful_subset(fuzz_schema: OpenApiSchema, caller: Caller) -> None:
    """#10 Tests (CI subset): a few stateful scenarios along the document's links pass the
    same checks."""
    run_stateful(fuzz_schema, caller, max_examples=5, stateful_step_count=6)


@pytest.mark.fuzz
@pytest.mark.slow
@pytest.mark.parametrize("label", LABELS)
def test_fuzz_long(fuzz_schema: OpenApiSchema, caller: Caller, label: str) -> None:
    """#10 Tests (`make fuzz`): hundreds of generated requests per operation pass the checks."""
    fuzz_operation(fuzz_schema, label, caller, max_examples=400)


@pytest.mark.fuzz
@pytest.mark.slow
def test_fuzz_stateful_long(fuzz_schema: OpenApiSchema, caller: Caller) -> None:
    """#10 Tests (`make fuzz`): many stateful scenarios along the links pass the checks."""
    before = TALLY.total
    flaky = run_stateful_rounds(fuzz_schema, caller, scenarios=200, per_round=20, steps=10)
    print(f"stateful: {TALLY.total - before} requests, {flaky} of 10 rounds cut short as flaky")
    # Most rounds must run whole: a generator that cannot replay at all fuzzes nothing.
    assert flaky <= 5, f"{flaky} of 10 stateful rounds ended as FlakyStrategyDefinition"


@pytest.mark.fuzz
@pytest.mark.slow
def test_fuzz_long_run_sent_at_least_10000_requests() -> None:
    """#10 Tests (`make fuzz`, runs last): the long run sent at least 10,000 requests and
    reached every operation of the document."""
    assert TALLY.total >= LONG_RUN_REQUESTS, TALLY.lines()
    assert set(LABELS) <= set(TALLY.by_operation), TALLY.lines()
