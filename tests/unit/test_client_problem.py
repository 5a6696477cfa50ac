"""node.client.ApiError (pure part of the client): how a problem document and its headers turn
into the wait before a retry and a one-line message for the caller."""

from __future__ import annotations

from typing import Any

import pytest

from kernel.errors import RocarsError
from node.client import ApiError, ClientError


def err(problem: dict[str, Any] | None = None, **headers: str) -> ApiError:
    return ApiError(503, problem or {}, {k.replace("_", "-"): v for k, v in headers.items()})


def test_an_api_error_is_a_project_error() -> None:
    """Callers can catch ApiError as a client error, and that as the project's root error."""
    assert isinstance(err(), ClientError)
    assert isinstance(err(), RocarsError)


def test_retry_after_ms_is_preferred_to_the_header() -> None:
    """The problem's `retry_after_ms` (sub-second, sent during a failover) wins over the
    whole-second header."""
    assert err({"retry_after_ms": 250}, Retry_After="2").retry_after == 0.25


@pytest.mark.parametrize("raw", ["Wed, 21 Oct 2015 07:28:00 GMT", "soon", ""])
def test_a_retry_after_that_is_not_seconds_is_ignored(raw: str) -> None:
    """An HTTP-date or other text in Retry-After is not a number of seconds: no hint (the
    client's own backoff applies) rather than an error."""
    assert err(Retry_After=raw).retry_after is None


@pytest.mark.parametrize(("raw", "seconds"), [("2", 2.0), ("0", 0.0), ("1.5", 1.5), ("-1", None)])
def test_retry_after_header_in_seconds(raw: str, seconds: float | None) -> None:
    """A non-negative number of seconds is taken as given; a negative one is ignored."""
    assert err(Retry_After=raw).retry_after == seconds


def test_no_hint_at_all_means_no_retry_after() -> None:
    """Neither the extension nor the header: None."""
    assert err().retry_after is None


def test_message_gives_status_title_and_detail() -> None:
    """The message reads `<status> <title>: <detail>`, without repeating a detail that only
    restates the title, and falls back to "HTTP error" without a title."""
    assert str(err({"title": "Service Unavailable", "detail": "standby"})) == (
        "503 Service Unavailable: standby"
    )
    assert str(err({"title": "Gone", "detail": "Gone"})) == "503 Gone"
    assert str(err()) == "503 HTTP error"


def test_message_lists_each_field_error() -> None:
    """Field errors are listed by field (or pointer, or name) with their message; an error
    that is not an object is shown as it is, so nothing the server said is dropped."""
    problem = {
        "title": "Unprocessable Content",
        "errors": [
            {"field": "vrn", "message": "too long"},
            {"pointer": "/ccrns/0", "detail": "bad check digit"},
            {"name": "lbcp"},
            {},
            "body is not JSON",
        ],
    }
    assert str(ApiError(422, problem, {})) == (
        "422 Unprocessable Content [vrn: too long; /ccrns/0: bad check digit; lbcp; ?; "
        "body is not JSON]"
    )


def test_an_empty_or_malformed_error_list_adds_nothing() -> None:
    """An empty list, or `errors` that is not a list, leaves the message as status and title."""
    assert str(err({"title": "Bad", "errors": []})) == "503 Bad"
    assert str(err({"title": "Bad", "errors": "oops"})) == "503 Bad"


def test_headers_are_copied() -> None:
    """The error keeps its own copy of the headers: later changes to the response's mapping do
    not alter what the caller inspects."""
    headers = {"Retry-After": "2"}
    e = ApiError(503, {}, headers)
    headers["Retry-After"] = "9"
    assert e.headers == {"Retry-After": "2"}
