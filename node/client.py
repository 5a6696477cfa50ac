"""Async client for the rocars HTTP API, used by drills, tests and benchmarks.

Every write carries one `Idempotency-Key` for the whole logical call, reused on every retry, so a
write retried across a failover is applied exactly once by the server (promise I2). Transient
failures (connection errors, timeouts, 502/503/504, and 429 from the per-account rate limit) are
retried with jittered exponential backoff until `deadline_s`; a `Retry-After` is the minimum wait.
Each call is logged in `RocarsClient.attempts` so drills can compute RTO and count the errors
clients saw.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self
from urllib.parse import quote

import aiohttp
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt
from tenacity.wait import wait_exponential

from kernel.errors import RocarsError

WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# 429 too: the rate limit refuses before anything is written, and says when to come back.
RETRY_STATUSES = frozenset({429, 502, 503, 504})
NODE_HEADER = "X-Rocars-Node"
# ClientPayloadError covers a connection dropped mid-body; replaying is safe because writes
# carry an idempotency key and reads have no effect.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    aiohttp.ClientConnectionError,
    aiohttp.ClientPayloadError,
    TimeoutError,
)


class ClientError(RocarsError):
    """Base of everything the client raises; aiohttp's own errors never reach callers."""


class ApiError(ClientError):
    """The server answered non-2xx; `problem` is its RFC 9457 problem document (or {})."""

    def __init__(self, status: int, problem: dict[str, Any], headers: Mapping[str, str]) -> None:
        self.status = status
        self.problem = problem
        self.headers = dict(headers)
        super().__init__(self._describe())

    @property
    def retry_after(self) -> float | None:
        """Seconds the server asks us to wait: the problem's `retry_after_ms` extension when
        present (sub-second, sent during a failover), else the Retry-After header."""
        ms = self.problem.get("retry_after_ms")
        if isinstance(ms, int | float) and not isinstance(ms, bool) and 0 <= ms <= 3_600_000:
            return ms / 1000
        raw = self.headers.get("Retry-After")
        try:
            value = float(raw) if raw is not None else None
        except ValueError:
            return None  # an HTTP-date; the server only sends seconds
        return value if value is not None and value >= 0 else None

    def _describe(self) -> str:
        title = self.problem.get("title") or "HTTP error"
        text = f"{self.status} {title}"
        detail = self.problem.get("detail")
        if detail and detail != title:
            text += f": {detail}"
        errors = self.problem.get("errors")
        if isinstance(errors, list) and errors:
            parts = []
            for err in errors:
                if isinstance(err, dict):
                    name = err.get("field") or err.get("pointer") or err.get("name") or "?"
                    msg = err.get("message") or err.get("detail") or ""
                    parts.append(f"{name}: {msg}" if msg else str(name))
                else:
                    parts.append(str(err))
            text += " [" + "; ".join(parts) + "]"
        return text


class Unavailable(ClientError):
    """No usable answer before the deadline; `__cause__` is the last failure seen."""


@dataclass(frozen=True)
class Response:
    status: int
    headers: dict[str, str]
    body: Any
    node: str | None


@dataclass
class CallRecord:
    """One logical call; times come from the client's injected clock."""

    method: str
    path: str
    idempotency_key: str | None
    started: float
    ended: float | None = None
    attempts: int = 0
    errors: list[str] = field(default_factory=list)
    status: int | None = None
    node: str | None = None


def _is_transient(exc: BaseException) -> bool:
    if isinstance(exc, ApiError):
        return exc.status in RETRY_STATUSES
    return isinstance(exc, TRANSIENT_ERRORS)


def _describe(exc: BaseException) -> str:
    return str(exc) if isinstance(exc, ApiError) else f"{type(exc).__name__}: {exc}"


def _seg(value: str) -> str:
    # Identifiers go into the path; quoting stops a hostile value from reaching another route.
    return quote(value, safe="")


class RocarsClient:
    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        *,
        session: aiohttp.ClientSession | None = None,
        deadline_s: float = 60.0,
        request_timeout_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        backoff_initial_s: float = 0.05,
        backoff_max_s: float = 1.0,
        rng: random.Random | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key
        self.deadline_s = deadline_s
        self.attempts: deque[CallRecord] = deque(maxlen=10_000)
        self._session = session
        self._owns_session = session is None
        self._timeout = aiohttp.ClientTimeout(total=request_timeout_s)
        self._clock = clock
        self._sleep = sleep
        self._backoff = wait_exponential(multiplier=backoff_initial_s, max=backoff_max_s)
        self._rng = rng or random.Random()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        if self._owns_session and self._session is not None:
            await self._session.close()
            self._session = None

    def _get_session(self) -> aiohttp.ClientSession:
        # Created lazily so the session is bound to the running loop, not the constructor's.
        if self._session is None:
            self._session = aiohttp.ClientSession()
        return self._session

    async def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        data: bytes | str | None = None,
        headers: Mapping[str, str] | None = None,
        idempotency_key: str | None = None,
        retry: bool = True,
    ) -> Response:
        """Send one logical call, retrying transient failures; raise ApiError on non-2xx."""
        method = method.upper()
        hdrs = {"Accept": "application/json, application/problem+json"}
        if self.api_key:
            hdrs["Authorization"] = f"Bearer {self.api_key}"
        hdrs.update(headers or {})
        key = None
        if method in WRITE_METHODS:
            key = idempotency_key or str(uuid.uuid4())
            hdrs["Idempotency-Key"] = key
        record = CallRecord(method, path, key, started=self._clock())
        self.attempts.append(record)

        def stop(state: RetryCallState) -> bool:
            return self._clock() - record.started >= self.deadline_s

        def wait(state: RetryCallState) -> float:
            ceiling = self._backoff(state)
            # Equal jitter: spreads clients out after a failover without ever waiting ~0.
            delay = self._rng.uniform(ceiling / 2, ceiling)
            exc = state.outcome.exception() if state.outcome else None
            if isinstance(exc, ApiError) and exc.retry_after is not None:
                delay = max(delay, exc.retry_after)
            remaining = self.deadline_s - (self._clock() - record.started)
            return max(0.0, min(delay, remaining))

        async def attempt() -> Response:
            record.attempts += 1
            record.status = None
            try:
                return await self._send(method, path, hdrs, json, data, record)
            except Exception as exc:
                record.errors.append(_describe(exc))
                raise

        retrying = AsyncRetrying(
            stop=stop if retry else stop_after_attempt(1),
            wait=wait,
            retry=retry_if_exception(_is_transient),
            sleep=self._sleep,
            reraise=True,
        )
        try:
            return await retrying(attempt)
        except ApiError as exc:
            if retry and exc.status in RETRY_STATUSES:
                raise Unavailable(
                    f"{method} {path}: gave up after {record.attempts} attempts; last: {exc}"
                ) from exc
            raise
        except TRANSIENT_ERRORS as exc:
            raise Unavailable(
                f"{method} {path}: gave up after {record.attempts} attempts; last: {_describe(exc)}"
            ) from exc
        except aiohttp.ClientError as exc:
            raise ClientError(f"{method} {path}: {_describe(exc)}") from exc
        finally:
            record.ended = self._clock()

    async def _send(
        self,
        method: str,
        path: str,
        headers: dict[str, str],
        json_body: Any,
        data: bytes | str | None,
        record: CallRecord,
    ) -> Response:
        session = self._get_session()
        async with session.request(
            method,
            self.base_url + path,
            json=json_body,
            data=data,
            headers=headers,
            timeout=self._timeout,
        ) as resp:
            raw = await resp.read()
            resp_headers = dict(resp.headers)
            # HAProxy passes header names on in lower case: look up case-insensitively.
            record.node = resp.headers.get(NODE_HEADER)
            status = resp.status
            ctype = resp.content_type
        record.status = status
        text = raw.decode("utf-8", errors="replace")
        body: Any = text or None
        if text and (ctype == "application/json" or ctype.endswith("+json")):
            # A broken JSON body stays as text: still worth showing to the caller.
            with contextlib.suppress(ValueError):
                body = json.loads(text)
        if not 200 <= status < 300:
            problem = body if isinstance(body, dict) else {"detail": text} if text else {}
            raise ApiError(status, problem, resp_headers)
        return Response(status, resp_headers, body, record.node)

    async def _object(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        resp = await self.request(method, path, **kwargs)
        if resp.body is None:
            return {}
        if not isinstance(resp.body, dict):
            raise ClientError(f"{method} {path}: expected a JSON object, got {resp.body!r:.200}")
        return resp.body

    async def submit_consignment(
        self, body: dict[str, Any], *, idempotency_key: str | None = None
    ) -> dict[str, Any]:
        return await self._object(
            "POST", "/v1/consignments", json=body, idempotency_key=idempotency_key
        )

    async def get_consignment(self, ccrn: str) -> dict[str, Any]:
        return await self._object("GET", f"/v1/consignments/{_seg(ccrn)}")

    async def amend_consignment(
        self, ccrn: str, changes: dict[str, Any], *, idempotency_key: str | None = None
    ) -> dict[str, Any]:
        path = f"/v1/consignments/{_seg(ccrn)}"
        return await self._object("PATCH", path, json=changes, idempotency_key=idempotency_key)

    async def cancel_consignment(
        self, ccrn: str, *, idempotency_key: str | None = None
    ) -> dict[str, Any]:
        path = f"/v1/consignments/{_seg(ccrn)}"
        return await self._object("DELETE", path, idempotency_key=idempotency_key)

    async def list_consignments(self, **params: str | int) -> dict[str, Any]:
        query = "&".join(f"{_seg(k)}={_seg(str(v))}" for k, v in params.items())
        return await self._object("GET", "/v1/consignments" + (f"?{query}" if query else ""))

    async def create_bundle(
        self, body: dict[str, Any], *, idempotency_key: str | None = None
    ) -> dict[str, Any]:
        return await self._object("POST", "/v1/bundles", json=body, idempotency_key=idempotency_key)

    async def arrival(
        self, lbcp: str, vrn: str, *, idempotency_key: str | None = None
    ) -> dict[str, Any]:
        path = f"/v1/lbcp/{_seg(lbcp)}/arrivals"
        return await self._object("POST", path, json={"vrn": vrn}, idempotency_key=idempotency_key)

    async def health(self) -> dict[str, Any]:
        """The health document; a failing node's 503 is an answer here, not an error."""
        try:
            return await self._object("GET", "/health", retry=False)
        except ApiError as exc:
            if exc.status == 503 and "status" in exc.problem:
                return exc.problem
            raise
