"""The latency floor's verdicts (deploy.bench.floor) and its rows in the bench's table."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

import pytest

from deploy.bench import report
from deploy.bench.floor import (
    Judged,
    arrivals_alone,
    curl_arrivals,
    highest_held,
    judge,
    parse_curl,
)
from deploy.bench.openloop import Target
from kernel.errors import RocarsError

HELD = Judged(True, ())
FAILED = Judged(False, ("arrival p99 12.0 ms > 10",))


def kind(p99: float, *, offered: int = 100, ok: int = 100) -> dict[str, Any]:
    return {"offered": offered, "ok": ok, "latency": {"p99": p99}}


def test_a_step_within_both_bounds_holds() -> None:
    """Submissions at 50 ms and arrivals at 10 ms, every request 2xx: target 2 held."""
    assert judge({"submission": kind(50.0), "arrival": kind(10.0)}) == HELD


def test_each_bound_broken_is_named() -> None:
    """A p99 over its bound fails the step, and the verdict says which kind and by how much."""
    verdict = judge({"submission": kind(50.1), "arrival": kind(12.0)})
    assert not verdict.held
    assert verdict.why_not == ("submission p99 50.1 ms > 50", "arrival p99 12.0 ms > 10")


def test_requests_not_answered_2xx_fail_a_fast_step() -> None:
    """Sheds or errors fail the step even when what was answered was fast: target 2 asks for no
    errors, and a service that refuses half its offer is not holding its latencies."""
    verdict = judge({"submission": kind(5.0, offered=100, ok=97), "arrival": kind(3.0)})
    assert verdict == Judged(False, ("3 not answered 2xx",))


def test_a_kind_with_no_answer_fails_rather_than_passing_empty() -> None:
    """A kind that got no 2xx (or was not offered) has no p99 to meet: not held."""
    assert judge({"submission": kind(5.0)}).why_not == ("no arrival answered",)
    assert judge({"submission": kind(5.0), "arrival": kind(0.0, ok=0)}).why_not == (
        "no arrival answered",
        "100 not answered 2xx",
    )


def test_highest_held_is_the_top_of_the_unbroken_run_from_below() -> None:
    """The largest fraction held with every smaller one held too, whatever order the steps
    come in; a step that held above a failed one does not count."""
    assert highest_held([(0.3, HELD), (0.1, HELD), (0.6, FAILED)]) == 0.3
    assert highest_held([(0.1, HELD), (0.3, FAILED), (0.6, HELD)]) == 0.1
    assert highest_held([(0.1, HELD), (0.3, HELD), (0.6, HELD)]) == 0.6


def test_highest_held_is_none_when_the_smallest_step_fails() -> None:
    """Not even a tenth of the offer within bounds: None, not the smallest fraction."""
    assert highest_held([(0.1, FAILED), (0.3, HELD)]) is None
    assert highest_held([]) is None


def _doc() -> dict[str, Any]:
    step = {
        "kinds": {
            "submission": kind(9.5),
            "arrival": {**kind(14.25), "latency": {"p50": 6.5, "p99": 14.25}},
        },
        "machine_busy_cores": 0.61,
    }
    return {
        "floor": {
            "commit": {
                "synchronous": {"p50": 0.74, "p99": 4.78},
                "local": {"p50": 0.47, "p99": 1.56},
            },
            "arrival_alone": {
                "paced": {"p50": 6.51, "p99": 12.9},
                "back_to_back": {"p50": 3.63, "p99": 8.83},
                "paced_rate": 20.0,
            },
            "by_percent": {"10": step},
            "highest_held": 0.0,
        }
    }


def test_the_table_shows_the_commit_floor_and_each_step() -> None:
    """One row per commit figure and per step's figure, with target 2's bounds beside them."""
    text = report.table(_doc(), None)
    assert "commit alone, synchronous: p99 ms" in text
    assert "4.78" in text
    assert "commit alone, primary's flush only: p50 ms" in text
    (arrival,) = [ln for ln in text.splitlines() if ln.startswith("target 2 at 10%: arrival p99")]
    assert arrival.split()[-4:] == ["14.25", "-", "<=", "10"]  # this run, no previous, target
    assert "target 2's latencies held up to, share of its offer" in text
    (paced,) = [
        ln for ln in text.splitlines() if ln.startswith("arrival alone from curl, at 20/s: p99")
    ]
    assert "12.90" in paced
    assert "arrival alone from curl, back to back: p50 ms" in text


def test_a_run_without_the_floor_has_no_floor_rows() -> None:
    """The CI smoke of an older document (or a run that skipped it) shows no empty floor rows."""
    assert "commit alone" not in report.table({}, None)
    assert "arrival alone" not in report.table({}, None)
    assert "target 2 at" not in report.table({}, None)


def target(api: str = "https://127.0.0.1:1", ca: str | None = "/pki/ca.pem") -> Target:
    return Target(
        api=api,
        run="r1",
        trader_keys=("t",),
        officer_key="officer-key",
        consignment=b"",
        lbcp="LMC",
        vrns=("B1", "B2"),
        ca=ca,
    )


def test_the_curl_config_sends_each_arrival_once_with_trucks_in_turn() -> None:
    """One transfer per arrival, separated by `next` (none after the last, which curl would
    read as a transfer without a URL), trucks in turn, a key each, and the CA repeated per
    transfer since `next` resets it; JSON quotes escaped for curl's quoted strings."""
    text = curl_arrivals(target(), 3)
    blocks = text.split("next\n")
    assert len(blocks) == 3
    assert not text.endswith("next\n")
    assert [b.count('url = "https://127.0.0.1:1/v1/lbcp/LMC/arrivals"') for b in blocks] == [
        1,
        1,
        1,
    ]
    assert ['"vrn\\":\\"B1' in b for b in blocks] == [True, False, True]
    assert [f"Idempotency-Key: bench-r1-curl-{i}" in b for i, b in enumerate(blocks)] == [True] * 3
    assert all('cacert = "/pki/ca.pem"' in b for b in blocks)
    assert "cacert" not in curl_arrivals(target(ca=None), 1)


def test_curl_lines_give_latency_of_2xx_statuses_and_connections() -> None:
    """Times of 2xx answers only; every status counted (000: no answer at all); new
    connections summed, so a probe that lost keep-alive shows it."""
    alone = parse_curl("200 0.004 1\n200 0.002 0\n503 0.001 0\n000 5.0 1\n")
    assert (alone.latency.count, alone.latency.max) == (2, 4.0)
    assert alone.statuses == {"000": 1, "200": 2, "503": 1}
    assert alone.connections == 2


def test_a_line_curl_did_not_write_is_an_error_not_a_zero() -> None:
    """Anything but curl's three fields (a changed write-out, an error text) stops the bench
    instead of being read as a fast answer."""
    with pytest.raises(RocarsError, match="unexpected line from curl"):
        parse_curl("200 0.004\n")


class _Recorder(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as HAProxy answers
    seen: ClassVar[list[tuple[str, str, str, bytes]]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        key, bearer = self.headers["Idempotency-Key"], self.headers["Authorization"]
        self.seen.append((self.path, key, bearer, body))
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def recorder() -> Iterator[str]:
    _Recorder.seen = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.mark.parametrize("rate", [None, 1000.0])
def test_curl_reads_the_config_and_keeps_one_connection(recorder: str, rate: float | None) -> None:
    """The real curl, fed the config on stdin, back to back and paced: each arrival POSTed
    once with its body, key and bearer, all on one kept-alive connection."""
    alone = arrivals_alone(target(api=recorder, ca=None), 4, rate)
    assert alone.statuses == {"200": 4}
    assert alone.latency.count == 4
    assert alone.connections == 1
    assert [s[0] for s in _Recorder.seen] == ["/v1/lbcp/LMC/arrivals"] * 4
    assert [s[1] for s in _Recorder.seen] == [f"bench-r1-curl-{i}" for i in range(4)]
    assert {s[2] for s in _Recorder.seen} == {"Bearer officer-key"}
    assert [s[3] for s in _Recorder.seen] == [b'{"vrn":"B1"}', b'{"vrn":"B2"}'] * 2


def test_an_arrival_nobody_answered_is_status_000_not_a_time() -> None:
    """Nothing listening: curl's line says 000, which counts as a status and adds no latency."""
    alone = arrivals_alone(target(api="http://127.0.0.1:9", ca=None), 1, None)
    assert alone.statuses == {"000": 1}
    assert alone.latency.count == 0


def test_curl_that_writes_nothing_says_why() -> None:
    """curl that sent no transfer at all (here: a config of none) is an error carrying curl's
    own message, not an empty reading."""
    with pytest.raises(RocarsError, match=r"curl sent no arrival: .*no URL"):
        arrivals_alone(target(api="http://127.0.0.1:9", ca=None), 0, None)
