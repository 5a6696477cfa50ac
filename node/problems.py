"""RFC 9457 problem details, and the service's one error boundary.

An error reaches HTTP in two steps, each one table read in one place (as httpx's
`_exceptions.py` maps httpcore's errors to its own):

1. `node.driver_errors.TRANSLATIONS`: a third-party error (psycopg, psycopg_pool) becomes the
   `kernel.errors` class it means. The middleware translates whatever a handler lets through;
   code that must act on an outage itself wraps its database calls in `translated()` and
   catches the kernel class. Nothing else catches a driver's types.
2. `STATUS_OF`: a kernel error becomes a problem document (status, type, headers, extensions).
   A database outage answers exactly what a standby node answers to a write: 503 with
   `Retry-After` and the finer `retry_after_ms`, or, while manual clearance is in force, the
   notice telling the user to present documents instead.

Every error leaves the service as application/problem+json. Validation failures list every
offending field in `errors`. An unexpected exception is logged and answered 500 without
internals; it is a bug, and tests treat any 5xx other than 503 as a failure.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from aiohttp import web

from contingency.journal import JournalConflict
from kernel.errors import (
    ComponentUnavailable,
    ConfigError,
    DatabaseReadOnly,
    DatabaseUnavailable,
    DrillError,
    EtcdUnavailable,
    InvalidInput,
    InvalidTransition,
    JournalError,
    LaunchError,
    PatroniUnavailable,
    RedisUnavailable,
    RocarsError,
)
from node import appkeys
from node.driver_errors import translate

PROBLEM_JSON = "application/problem+json"
PROBLEMS = "https://rocars.example/problems/"
log = logging.getLogger("rocars.http")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

RETRY_AFTER_S = 1
# Retry-After only counts whole seconds, while a switchover is over in about two; clients that
# read the problem document get the finer hint (an RFC 9457 extension member).
RETRY_AFTER_MS = 200


class Problem(Exception):
    """Raise from a handler to answer with a problem document."""

    def __init__(
        self,
        status: int,
        title: str,
        detail: str = "",
        *,
        type_: str = "about:blank",
        errors: list[dict[str, str]] | None = None,
        headers: dict[str, str] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(detail or title)
        self.status = status
        self.title = title
        self.detail = detail
        self.type = type_
        self.errors = errors
        self.headers = headers or {}
        self.extra = extra or {}

    def response(self, instance: str | None = None) -> web.Response:
        body: dict[str, Any] = {
            "type": self.type,
            "title": self.title,
            "status": self.status,
            "detail": self.detail or self.title,
        }
        if instance:
            body["instance"] = instance
        if self.errors is not None:
            body["errors"] = self.errors
        body.update(self.extra)
        return web.Response(
            status=self.status,
            text=json.dumps(body),
            content_type=PROBLEM_JSON,
            headers=self.headers,
        )


# --- 2. kernel errors -> problem documents ----------------------------------------------------


@dataclass(frozen=True)
class Answer:
    """How one error class answers over HTTP."""

    status: int
    title: str
    type_: str = "about:blank"
    detail: str = "{error}"  # formatted with the error's message
    retry_after_s: int | None = None
    retry_after_ms: int | None = None
    # Database outages: while manual clearance is in force, tell the user to present documents.
    manual_notice: bool = False


_OUTAGE = Answer(503, "Service Unavailable", PROBLEMS + "unavailable", retry_after_s=RETRY_AFTER_S)
_DATABASE = Answer(
    503,
    "Service Unavailable",
    PROBLEMS + "not-writable",
    retry_after_s=RETRY_AFTER_S,
    retry_after_ms=RETRY_AFTER_MS,
    manual_notice=True,
)
_BUG = Answer(500, "Internal Server Error", detail="an unexpected error was logged")

# Every class of kernel.errors (and the journal's) has its own row, so adding a class means
# choosing its answer here (tests/unit/test_problems.py checks that none is missing).
STATUS_OF: Final[Mapping[type[RocarsError], Answer]] = {
    InvalidInput: Answer(422, "Unprocessable Content", PROBLEMS + "validation"),
    InvalidTransition: Answer(409, "Conflict", PROBLEMS + "conflict"),
    DatabaseReadOnly: _DATABASE,
    DatabaseUnavailable: _DATABASE,
    EtcdUnavailable: _OUTAGE,
    PatroniUnavailable: _OUTAGE,
    RedisUnavailable: _OUTAGE,
    ComponentUnavailable: _OUTAGE,
    JournalConflict: Answer(409, "Conflict", PROBLEMS + "journal-conflict"),
    JournalError: Answer(
        503,
        "Service Unavailable",
        PROBLEMS + "journal-unavailable",
        "the manual-clearance journal of this node cannot be used: {error}",
        retry_after_s=RETRY_AFTER_S,
    ),
    # Operations errors (CLI, launcher, drills) have no business inside a request.
    ConfigError: _BUG,
    LaunchError: _BUG,
    DrillError: _BUG,
    RocarsError: _BUG,
}


def answer_for(cls: type[RocarsError]) -> Answer:
    """The row of the nearest class in `cls`'s ancestry (RocarsError's row at worst)."""
    for klass in cls.__mro__:
        if issubclass(klass, RocarsError) and klass in STATUS_OF:
            return STATUS_OF[klass]
    raise TypeError(f"{cls.__name__} is not a RocarsError")


def not_writable(detail: str, request: web.Request | None = None) -> Problem:
    """503 for "this node cannot write now": a standby, a read-only or unreachable database.
    With `request`, the manual-clearance notice replaces the retry hint while manual mode is
    in force (it lasts minutes to hours: no sub-second hint, Retry-After stands)."""
    answer = _DATABASE
    extra: dict[str, Any] = {"retry_after_ms": answer.retry_after_ms}
    if request is not None and appkeys.CONTINGENCY in request.app:
        rt = request.app[appkeys.CONTINGENCY]
        if rt.any_manual:
            since = rt.since()
            detail = (
                f"{detail}. Manual customs clearance is in effect"
                + (f" since {since.isoformat()}" if since else "")
                + ": present your cargo documents to a customs officer at the boundary"
                " control point; electronic submission resumes when the system is back."
            )
            extra = {"mode": "manual", "since": since.isoformat() if since else None}
    return Problem(
        answer.status,
        answer.title,
        detail,
        type_=answer.type_,
        headers={"Retry-After": str(answer.retry_after_s)},
        extra=extra,
    )


def problem_of(exc: RocarsError, request: web.Request | None = None) -> Problem:
    """The problem document `exc` answers with, by `STATUS_OF`."""
    answer = answer_for(type(exc))
    detail = answer.detail.format(error=exc)
    if answer.manual_notice:
        return not_writable(detail, request)
    headers = {} if answer.retry_after_s is None else {"Retry-After": str(answer.retry_after_s)}
    extra = {} if answer.retry_after_ms is None else {"retry_after_ms": answer.retry_after_ms}
    errors = None
    if isinstance(exc, InvalidInput):
        errors = [{"field": exc.field, "message": str(exc)}]
    return Problem(
        answer.status,
        answer.title,
        detail,
        type_=answer.type_,
        errors=errors,
        headers=headers,
        extra=extra,
    )


def _kernel_answer(request: web.Request, exc: RocarsError) -> web.Response:
    problem = problem_of(exc, request)
    if problem.status >= 500 and problem.status != 503:
        log.error("unhandled error on %s %s", request.method, request.path, exc_info=exc)
    elif problem.status == 503:
        log.warning("%s %s: %s: %s", request.method, request.path, type(exc).__name__, exc)
    return problem.response(request.path)


@web.middleware
async def problem_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except Problem as p:
        return p.response(request.path)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        headers = {k: v for k, v in exc.headers.items() if k.lower() in ("allow", "retry-after")}
        # aiohttp's only 413 is a request.read() over client_max_size: name the body.
        too_large = [{"field": "body", "message": "too large"}] if exc.status == 413 else None
        return Problem(
            exc.status,
            exc.reason,
            exc.text if exc.text and exc.text != exc.reason else "",
            headers=headers,
            errors=too_large,
        ).response(request.path)
    except RocarsError as exc:
        return _kernel_answer(request, exc)
    except Exception as exc:
        kernel = translate(exc)
        if kernel is not None:
            kernel.__cause__ = exc
            return _kernel_answer(request, kernel)
        log.exception("unhandled error on %s %s", request.method, request.path)
        return Problem(500, "Internal Server Error", "an unexpected error was logged").response(
            request.path
        )
