"""Request bodies in, typed values out; every failure is a 4xx problem naming the fields.

Body caps (#10 item 2): the application's `client_max_size` is `MAX_BODY`, so every
`request.read()` anywhere stops at 1 MiB (aiohttp raises HTTPRequestEntityTooLarge, which the
error boundary answers as a 413 problem naming `body`). A route allowed more (the batch, 10 MiB)
passes its own `limit` to `read_body`, which then streams the body itself. A declared
Content-Length over the cap is refused before a byte is read; a chunked body is cut off as soon
as it crosses the cap.

JSON bodies over `OFF_LOOP_JSON` bytes are parsed and validated in a worker thread, so a large
or hostile body does not hold the event loop.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any, TypeVar

from aiohttp import web
from pydantic import BaseModel, ValidationError

from node.problems import Problem

M = TypeVar("M", bound=BaseModel)
MAX_BODY = 1024 * 1024  # 1 MiB for single requests; batch submission has its own limit
OFF_LOOP_JSON = 64 * 1024


def field_errors(exc: ValidationError, *, prefix: str = "") -> list[dict[str, str]]:
    out = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "body"
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown field"
        elif err["type"] == "missing":
            msg = "field required"
        out.append({"field": f"{prefix}{loc}", "message": msg})
    return out


def invalid(
    errors: list[dict[str, str]], detail: str = "the request has invalid fields"
) -> Problem:
    return Problem(
        422,
        "Unprocessable Content",
        detail,
        type_="https://rocars.example/problems/validation",
        errors=errors,
    )


async def read_body(request: web.Request, *, limit: int = MAX_BODY) -> bytes:
    """The body, at most `limit` bytes (413 naming `body` beyond)."""
    if request.content_length is not None and request.content_length > limit:
        raise too_large(limit)
    if limit <= request.client_max_size:
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge as exc:
            raise too_large(min(limit, request.client_max_size)) from exc
        if len(body) > limit:
            raise too_large(limit)
        return body
    # More than the application allows request.read(): read the stream here, with this cap.
    buf = bytearray()
    async for chunk in request.content.iter_any():
        buf.extend(chunk)
        if len(buf) > limit:
            raise too_large(limit)
    return bytes(buf)


def too_large(limit: int) -> Problem:
    return Problem(
        413,
        "Content Too Large",
        f"the body is larger than {limit} bytes",
        errors=[{"field": "body", "message": f"at most {limit} bytes"}],
    )


def parse_json(body: bytes) -> Any:
    if not body:
        raise Problem(
            400,
            "Bad Request",
            "a JSON body is required",
            errors=[{"field": "body", "message": "empty body"}],
        )
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise Problem(
            400,
            "Bad Request",
            f"the body is not valid JSON: {exc}",
            errors=[{"field": "body", "message": "malformed JSON"}],
        ) from exc
    except RecursionError as exc:  # hostile nesting such as '[[[[...' exhausts the stack
        raise Problem(
            400,
            "Bad Request",
            "the body is nested too deeply",
            errors=[{"field": "body", "message": "JSON nested too deeply"}],
        ) from exc


def parse_model(model: type[M], data: Any, *, prefix: str = "") -> M:
    if not isinstance(data, dict):
        raise invalid([{"field": prefix.rstrip(".") or "body", "message": "must be a JSON object"}])
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise invalid(field_errors(exc, prefix=prefix)) from exc


async def load_json(body: bytes) -> Any:
    """`parse_json`, in a worker thread when the body is large."""
    if len(body) <= OFF_LOOP_JSON:
        return parse_json(body)
    return await asyncio.to_thread(parse_json, body)


async def read_model(request: web.Request, model: type[M]) -> tuple[bytes, M]:
    body = await read_body(request)
    if len(body) <= OFF_LOOP_JSON:
        return body, parse_model(model, parse_json(body))
    return body, await asyncio.to_thread(lambda: parse_model(model, parse_json(body)))
