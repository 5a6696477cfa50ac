"""The request metrics (rocars_http_requests_total, rocars_http_request_duration_seconds)
move with every answer, labelled by route template, and /metrics exposes them with the
gauges brought up to date."""

from __future__ import annotations

from aiohttp import web
from handler_fakes import Fakes, operational_error
from problem_checks import AiohttpClient, Client, call
from route_table import BY_KEY, CCRN

from monitoring.metrics import NodeMetrics
from node import appkeys

STATUS = BY_KEY[("GET", "/v1/status")]
ONE = BY_KEY[("GET", "/v1/consignments/{ccrn}")]
CLEARANCE = BY_KEY[("POST", "/v1/contingency/clearances")]


def _sample(client: Client, name: str, **labels: str) -> float:
    value = client.app[appkeys.METRICS].registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


async def test_requests_are_counted_by_method_route_and_status(
    fakes: Fakes, client: Client
) -> None:
    """Each answer adds one to its (method, route, status) series and one observation to its
    route's latency histogram."""
    for _ in range(2):
        await call(client, STATUS)
    await call(client, ONE)  # no credentials: 401
    assert (
        _sample(
            client, "rocars_http_requests_total", method="GET", route="/v1/status", status="200"
        )
        == 2
    )
    assert (
        _sample(
            client,
            "rocars_http_requests_total",
            method="GET",
            route="/v1/consignments/{ccrn}",
            status="401",
        )
        == 1
    )
    assert (
        _sample(
            client, "rocars_http_request_duration_seconds_count", method="GET", route="/v1/status"
        )
        == 2
    )
    assert (
        _sample(
            client, "rocars_http_request_duration_seconds_sum", method="GET", route="/v1/status"
        )
        > 0
    )


async def test_the_route_label_is_the_template_never_the_path(fakes: Fakes, client: Client) -> None:
    """Two CCRNs make one series (bounded cardinality); a path no route serves is counted
    under 'unmatched'."""
    await call(client, ONE, url=f"/v1/consignments/{CCRN}")
    await call(client, ONE, url="/v1/consignments/1000000000000023")
    await call(client, ONE, url="/v1/no/such/thing/123")
    samples = [
        s
        for metric in client.app[appkeys.METRICS].registry.collect()
        if metric.name == "rocars_http_requests"
        for s in metric.samples
        if s.name == "rocars_http_requests_total"
    ]
    routes = {s.labels["route"] for s in samples}
    assert routes == {"/v1/consignments/{ccrn}", "unmatched"}
    assert (
        _sample(client, "rocars_http_requests_total", method="GET", route="unmatched", status="404")
        == 1
    )


async def test_outages_are_counted_with_their_status(fakes: Fakes, client: Client) -> None:
    """A 503 from a database outage is counted as 503 (what the problem middleware answered,
    not the exception the handler raised)."""
    fakes.pool.error = operational_error
    await call(client, ONE, headers=fakes.auth("officer"))
    assert (
        _sample(
            client,
            "rocars_http_requests_total",
            method="GET",
            route="/v1/consignments/{ccrn}",
            status="503",
        )
        == 1
    )


async def test_metrics_exposes_request_series_and_up_to_date_gauges(
    fakes: Fakes, client: Client
) -> None:
    """/metrics answers in Prometheus text format: the request counter with its _total name,
    the latency buckets, and the gauges of role, manual mode, journal backlog and Redis."""
    fakes.role.set("standby")
    await call(client, BY_KEY[("POST", "/v1/contingency/activate")], headers=fakes.auth("officer"))
    answer = await call(client, CLEARANCE, headers=fakes.auth("officer"))
    assert answer.status == 202  # journalled on the standby
    async with client.get("/metrics") as resp:
        assert resp.status == 200
        assert resp.content_type == "text/plain"
        text = await resp.text()
    lines = text.splitlines()
    assert "# TYPE rocars_http_requests_total counter" in lines
    assert "# TYPE rocars_http_request_duration_seconds histogram" in lines
    assert any(
        line.startswith("rocars_http_request_duration_seconds_bucket{")
        and 'route="/v1/contingency/clearances"' in line
        for line in lines
    )
    assert "rocars_contingency_manual 1.0" in lines
    assert "rocars_contingency_journal_pending 1.0" in lines
    assert 'rocars_node_role{role="active",site="A"} 1.0' in lines  # set when the app started
    assert "rocars_redis_up 1.0" in lines
    assert 'rocars_redis_primary{address="127.0.0.1:6379"} 1.0' in lines
    # No `_created` series beside the counters and histograms (#11 target 5: nothing reads
    # them, and each one is a series more in Prometheus's memory).
    assert not [line for line in lines if "_created" in line.split("{")[0].split(" ")[0]]


async def test_every_declared_metric_has_a_sample_after_startup_and_a_request(
    fakes: Fakes, client: Client
) -> None:
    """No metric is declared and left without a series: after the node started, answered one
    request and was scraped once, every metric family has at least one sample."""
    await call(client, STATUS)
    async with client.get("/metrics") as resp:
        assert resp.status == 200
    empty = [m.name for m in client.app[appkeys.METRICS].registry.collect() if not m.samples]
    assert empty == []


async def test_a_redirect_is_counted_with_its_own_status(
    fakes: Fakes, aiohttp_client: AiohttpClient
) -> None:
    """An HTTPException below 400 (a redirect) passes through the error boundary untouched and
    is counted with its status, not as a 500."""

    async def moved(request: web.Request) -> web.StreamResponse:
        raise web.HTTPFound("/v1/status")

    app = fakes.app()
    app.router.add_get("/moved", moved)
    client = await aiohttp_client(app)
    response = await client.get("/moved", allow_redirects=False)
    assert response.status == 302
    assert (
        _sample(client, "rocars_http_requests_total", method="GET", route="/moved", status="302")
        == 1
    )


def test_one_route_keeps_a_series_per_status() -> None:
    """The series kept per (method, route, status) for speed never mix: a route's 201s and
    409s stay apart, and its latency histogram takes both."""
    m = NodeMetrics()
    for status, seconds in ((201, 0.002), (201, 0.003), (409, 0.5)):
        m.observe_request("POST", "/v1/consignments", status, seconds)

    def sample(name: str, **labels: str) -> float | None:
        return m.registry.get_sample_value(
            name, {"method": "POST", "route": "/v1/consignments", **labels}
        )

    assert sample("rocars_http_requests_total", status="201") == 2
    assert sample("rocars_http_requests_total", status="409") == 1
    assert sample("rocars_http_request_duration_seconds_count") == 3
    assert sample("rocars_http_request_duration_seconds_bucket", le="0.005") == 2
