"""Form fields in, the API's request documents out; the API's problems back to the fields.

A form posts text. It becomes the very JSON document an API client would send (numbers as
numbers, the local Hong Kong time with its offset), which is then validated by the API's own
models and rules; whatever they refuse comes back as the problem's `errors` and is shown
beside the field it names.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterable, Mapping
from typing import Any

from aiohttp import web

from node.problems import Problem
from node.schemas import AMENDABLE
from node.writes import CHANNEL_IDEMPOTENCY_KEY

HK_OFFSET = "+08:00"
# The 8 items of an e-ACI submission (and where they go), in the order of the form; an
# amendment may change what the API lets it change (node.schemas.AMENDABLE).
CONSIGNMENT_FIELDS = ("direction", "lbcp", *AMENDABLE)
AMEND_FIELDS = AMENDABLE
IDEMPOTENCY_FIELD = "idem"


def text(form: Mapping[str, Any], name: str) -> str:
    value = form.get(name)
    return value.strip() if isinstance(value, str) else ""


def number_or_text(value: str) -> int | str:
    """An integer when the text is plain ASCII digits; else the text, for the model to refuse
    with its own message."""
    return int(value) if value.isascii() and value.isdigit() and len(value) <= 9 else value


def local_time(value: str) -> str:
    """A `datetime-local` value ("2030-01-07T16:00") as ISO 8601 in Hong Kong time; text that
    is not one is passed on as typed, for the model to refuse."""
    if len(value) in (16, 19) and value[10:11] == "T":
        return value + HK_OFFSET
    return value


def consignment_doc(
    form: Mapping[str, Any], names: Iterable[str] = CONSIGNMENT_FIELDS
) -> dict[str, Any]:
    """The API document for the fields of `names` that were filled in (a blank field is left
    out: the model then names it as required, or the amendment leaves it unchanged)."""
    doc: dict[str, Any] = {}
    for name in names:
        value = text(form, name)
        if not value:
            continue
        if name == "package_count":
            doc[name] = number_or_text(value)
        elif name == "expected_at":
            doc[name] = local_time(value)
        else:
            doc[name] = value
    airport, flight = text(form, "itfs_airport").upper(), text(form, "itfs_flight").upper()
    if "direction" in names and (airport or flight):
        doc["itfs"] = {"airport": airport, "flight": flight}
    return doc


def body_of(doc: Mapping[str, Any]) -> bytes:
    """The request body an API client would have sent (what idempotency fingerprints)."""
    return json.dumps(doc, sort_keys=True).encode()


def field_errors(problem: Problem) -> dict[str, str]:
    """The problem's errors by form field (`itfs.airport` -> `itfs_airport`); several on one
    field are joined."""
    out: dict[str, str] = {}
    for err in problem.errors or []:
        name = err.get("field", "body").replace(".", "_")
        if name.startswith("ccrns["):
            name = "ccrns"
        msg = err.get("message", "")
        out[name] = f"{out[name]}; {msg}" if name in out else msg
    return out


def new_token() -> str:
    """A form's idempotency token: the same form sent twice (a double click, a reload) is one
    write, answered twice (node.writes)."""
    return secrets.token_urlsafe(18)


def with_idempotency(request: web.Request, token: str) -> web.Request:
    """The request, carrying the form's token as its Idempotency-Key for the write path
    (node.writes; scoped to the account there, so one visitor's token means nothing to
    another)."""
    if token and len(token) <= 64 and token.isascii() and token.isprintable():
        request[CHANNEL_IDEMPOTENCY_KEY] = f"web:{token}"
    return request


def answer_of(response: web.Response) -> dict[str, Any]:
    """The JSON document a write path answered with."""
    assert response.text is not None
    doc: dict[str, Any] = json.loads(response.text)
    return doc


def accepted(response: web.Response) -> dict[str, Any]:
    """A write path's answer; a refusal (also one replayed from an earlier identical form) is
    raised as the problem it was."""
    doc = answer_of(response)
    if response.status >= 400:
        raise Problem(
            response.status,
            str(doc.get("title", "")),
            str(doc.get("detail", "")),
            errors=doc.get("errors"),
        )
    return doc
