"""node.json_text: the JSON text of answers and statement parameters (orjson) reads back as
the same document the standard library would have written, and refuses what is not JSON."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from node import json_text

ANSWER = {
    "ccrn": "2000000000000000",
    "status": "submitted",
    "version": 1,
    "package_count": 12,
    "risk_draw": 0.1234567890123,
    "itfs": None,
    "selection_reasons": [],
    "consignee_name": "九龍貨運有限公司",  # non-ASCII: UTF-8 text, not \u escapes
    "nested": [{"a": True, "b": False}],
}


def test_text_reads_back_as_the_same_document() -> None:
    """Every JSON type, nesting, non-ASCII and a float's shortest repr round-trip, and the
    text is what json.dumps writes minus its whitespace and ASCII escapes."""
    text = json_text.dumps(ANSWER)
    assert json.loads(text) == ANSWER
    assert text == json.dumps(ANSWER, separators=(",", ":"), ensure_ascii=False)


def test_what_is_not_json_is_refused_with_type_error() -> None:
    """A set (or any other non-JSON value) raises TypeError, as json.dumps does, instead of
    being written some other way."""
    with pytest.raises(TypeError):
        json_text.dumps({"reasons": {"a"}})


def test_a_datetime_is_written_as_rfc3339() -> None:
    """Unlike json.dumps, a datetime is written (as RFC 3339), so no answer depends on it
    failing."""
    assert (
        json_text.dumps({"at": datetime(2026, 12, 2, tzinfo=UTC)})
        == '{"at":"2026-12-02T00:00:00+00:00"}'
    )
