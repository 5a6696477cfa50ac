"""Counting what the domain requests came to (monitoring.outcomes): `counted(pick)` wraps a
handler so that each of its answers adds one to the counter `pick(metrics)` holds for its
outcome, whether the handler returned or raised. An exception is counted with the status the
error boundary (node.problems) will answer it with. Cost per request: one dictionary lookup,
one counter increment and one note in the last hour's write history (the SRE page's plot).
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Awaitable, Callable

from aiohttp import web

from kernel.errors import RocarsError
from monitoring.metrics import NodeMetrics, OutcomeCounters
from monitoring.outcomes import Outcome, outcome_of
from node import appkeys
from node.driver_errors import translate
from node.problems import Problem, answer_for

Handler = Callable[[web.Request], Awaitable[web.Response]]
Pick = Callable[[NodeMetrics], OutcomeCounters]


def status_of(exc: BaseException) -> int:
    """The HTTP status node.problems.problem_middleware answers `exc` with."""
    if isinstance(exc, Problem | web.HTTPException):
        return exc.status
    kernel = exc if isinstance(exc, RocarsError) else translate(exc)
    return 500 if kernel is None else answer_for(type(kernel)).status


def replayed(response: web.StreamResponse) -> bool:
    return response.headers.get("Idempotent-Replayed") == "true"


def counted(pick: Pick) -> Callable[[Handler], Handler]:
    def wrap(handler: Handler) -> Handler:
        @functools.wraps(handler)
        async def counting(request: web.Request) -> web.Response:
            metrics = request.app[appkeys.METRICS]
            counters = pick(metrics)
            started = time.perf_counter()
            outcome: Outcome = "error"
            try:
                response = await handler(request)
                outcome = outcome_of(response.status, replayed=replayed(response))
            except asyncio.CancelledError:
                outcome = "cancelled"
                raise
            except Exception as exc:
                outcome = outcome_of(status_of(exc))
                raise
            finally:
                counters[outcome].inc()
                # The SRE page's last hour of writes (monitoring.write_history).
                metrics.write_history.note(outcome, time.perf_counter() - started)
            return response

        return counting

    return wrap
