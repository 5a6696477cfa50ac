"""The batch body parser (node.batch_body) against hostile input: it stops at item 10,001
without reading on, bounds nesting, values per item, token and line lengths, and answers every
malformed body with a 4xx naming `body` or the CSV row, never an exception of its own."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from typing import Any

import pytest

from node import batch_body
from node.batch_body import MAX_DEPTH, MAX_ITEMS, parse_batch, take
from node.problems import Problem

CSV_HEADER = b"direction,lbcp,package_count,itfs.airport,itfs.flight\n"


class Endless(io.RawIOBase):
    """A body that never ends: `head`, then `unit` repeated forever; counts what was read."""

    def __init__(self, head: bytes, unit: bytes) -> None:
        self.head, self.unit, self.read_bytes = head, unit, 0

    def readable(self) -> bool:
        return True

    def readinto(self, buf: Any) -> int:
        data = self.head or self.unit * max(1, len(buf) // len(self.unit))
        self.head = b""
        n = min(len(buf), len(data))
        buf[:n] = data[:n]
        self.read_bytes += n
        return n


def refused(body: bytes, *, csv_body: bool = False) -> Problem:
    with pytest.raises(Problem) as caught:
        parse_batch(body, csv_body=csv_body)
    return caught.value


def fields(p: Problem) -> list[str]:
    return [e["field"] for e in p.errors or []]


# --- the 10,001st item --------------------------------------------------------------------------


def test_take_stops_at_the_item_after_the_cap() -> None:
    """#10 item 2: `take` pulls exactly max + 1 items from an endless source, then refuses."""
    pulled = 0

    def endless() -> Iterator[int]:
        nonlocal pulled
        while True:
            pulled += 1
            yield pulled

    with pytest.raises(Problem) as caught:
        take(endless(), 5)
    assert caught.value.status == 422
    assert caught.value.errors == [{"field": "body", "message": "at most 5 consignments"}]
    assert pulled == 6


@pytest.mark.parametrize(
    ("csv_body", "head", "unit"),
    [
        pytest.param(False, b"[", b"{},", id="json"),
        pytest.param(True, b"a\n", b"x\n", id="csv-one-cell-rows"),
    ],
)
def test_an_endless_batch_is_refused_after_reading_little_of_it(
    csv_body: bool, head: bytes, unit: bytes
) -> None:
    """#10 item 2: a body with endless items is refused 422 at item 10,001, having read only
    the first few hundred KiB of it (nothing after the cap is parsed or kept)."""
    stream = Endless(head, unit)
    items = batch_body.csv_items if csv_body else batch_body.json_items
    with pytest.raises(Problem) as caught:
        take(items(io.BufferedReader(stream)))
    assert caught.value.status == 422
    assert "body" in fields(caught.value)
    assert stream.read_bytes < 512 * 1024, stream.read_bytes


def test_exactly_the_cap_is_accepted() -> None:
    """#10 item 2: 10,000 items pass (JSON and CSV); the 10,001st is refused."""
    assert len(parse_batch(b"[" + b",".join([b"{}"] * MAX_ITEMS) + b"]", csv_body=False)) == 10_000
    assert len(parse_batch(b"a\n" + b"x\n" * MAX_ITEMS, csv_body=True)) == 10_000
    assert refused(b"a\n" + b"x\n" * (MAX_ITEMS + 1), csv_body=True).status == 422


# --- JSON ---------------------------------------------------------------------------------------


def test_json_items_come_out_as_json_loads_makes_them() -> None:
    """Objects, arrays, numbers (floats as floats), strings, null, duplicate keys (the last
    wins): the same values json.loads gives."""
    body = b'[{"a": 1, "b": 1.5, "c": [true, null, "x"], "a": 2}, "s", 3, [[1], {}]]'
    assert parse_batch(body, csv_body=False) == json.loads(body)


@pytest.mark.parametrize(
    ("body", "status"),
    [
        pytest.param(b"", 400, id="empty"),
        pytest.param(b"   ", 400, id="blank"),
        pytest.param(b"[{},", 400, id="truncated"),
        pytest.param(b"[{}] [{}]", 400, id="two-documents"),
        pytest.param(b"[{}] x", 400, id="trailing-garbage"),
        pytest.param(b'[{"a": "\xff"}]', 400, id="not-utf8"),
        pytest.param(b'{"a": "\xff"}', 400, id="object-and-malformed"),
        pytest.param(b'{"items": []}', 422, id="object"),
        pytest.param(b'"text"', 422, id="string"),
        pytest.param(b"[]", 422, id="empty-array"),
    ],
)
def test_malformed_or_wrong_json_is_4xx_naming_body(body: bytes, status: int) -> None:
    """#10 item 3: malformed JSON is 400 (even when the top level is already the wrong type),
    a document that is not a non-empty array is 422; both name `body`."""
    p = refused(body)
    assert p.status == status
    assert fields(p) == ["body"]


def test_nesting_is_capped() -> None:
    """#10 item 2: `[[[[...` (10 MiB of it) stops at once with 400 naming body; MAX_DEPTH levels
    pass, one more does not."""
    assert refused(b"[" * (10 * 1024 * 1024)).status == 400
    ok = b"[" * MAX_DEPTH + b"]" * MAX_DEPTH
    assert parse_batch(ok, csv_body=False) == json.loads(ok)
    deep = refused(b"[" * (MAX_DEPTH + 1) + b"]" * (MAX_DEPTH + 1))
    assert deep.status == 400
    assert fields(deep) == ["body"]
    assert "item 0" in deep.detail


def test_values_per_item_are_capped() -> None:
    """#10 item 2: one item of a million values is refused at value 257, naming the item."""
    p = refused(b'[{}, {"a": [' + b"1," * 1_000_000 + b"1]}]")
    assert p.status == 400
    assert "item 1" in p.detail


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b'["' + b"x" * (10 * 1024 * 1024) + b'"]', id="10MiB-string"),
        pytest.param(b"[" + b" " * (10 * 1024 * 1024) + b"]", id="10MiB-whitespace"),
        pytest.param(b"[" + b"1" * (10 * 1024 * 1024) + b"]", id="10MiB-number"),
    ],
)
def test_a_token_longer_than_the_quiet_limit_is_refused(body: bytes) -> None:
    """#10 item 2: a single 10 MiB string, number or gap is refused after 128 KiB (the
    parser would rescan it on every chunk: seconds of CPU)."""
    p = refused(body)
    assert p.status == 400
    assert fields(p) == ["body"]


# --- CSV ----------------------------------------------------------------------------------------


def test_csv_keeps_the_columns_semantics() -> None:
    """Header row of field names; `itfs.` columns fill `itfs`; package_count becomes a number
    only when it is ASCII digits; empty cells are left out; extra cells are kept aside (for
    validation to refuse); a BOM and CRLF line ends are accepted; blank rows are skipped; a
    repeated header name keeps its last cell, as csv.DictReader did."""
    body = (
        b"\xef\xbb\xbf" + CSV_HEADER.replace(b"\n", b"\r\n") + b"import,HKG, 12 ,HKG,CX1\r\n"
        b"\r\n"
        b"export,,\xc2\xb2,,,surplus\r\n"
        b'export,"a, ""quoted""\nlbcp",3\n'
    )
    assert parse_batch(body, csv_body=True) == [
        {
            "direction": "import",
            "lbcp": "HKG",
            "package_count": 12,
            "itfs": {"airport": "HKG", "flight": "CX1"},
        },
        {"direction": "export", "package_count": "\u00b2", "__extra_cells__": ["surplus"]},
        {"direction": "export", "lbcp": 'a, "quoted"\nlbcp', "package_count": 3},
    ]
    assert parse_batch(b"a,a\nx,y\n", csv_body=True) == [{"a": "y"}]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        pytest.param(
            b"a\n" + b"x," * (batch_body.MAX_CSV_LINE // 2 + 1) + b"\n", "body[row 2]", id="line"
        ),
        pytest.param(
            b'a\nok\nok\n"' + b"x\n" * 20_000 + b'"\n', "body[row 4]", id="cell-over-field-limit"
        ),
        pytest.param(b"a,b\nx,y\nx\ry,z\n", "body[row 3]", id="bare-cr-in-unquoted-cell"),
        pytest.param(b"a,b\nx,y\nx\x00y,z\n", "body[row 3]", id="nul"),
        pytest.param(b"a\n" + b"\n" * (MAX_ITEMS + 1), f"body[row {MAX_ITEMS + 2}]", id="blanks"),
        pytest.param(b"a\n\xff\xfe\n", "body", id="not-utf8"),
        pytest.param(b"", "body", id="empty"),
        pytest.param(b"\nx\n", "body", id="blank-header"),
    ],
)
def test_malformed_csv_is_400_naming_the_row(body: bytes, field: str) -> None:
    """#10 item 3: what made `_csv.Error` a 500 (a cell over the field size limit, a bare CR in
    an unquoted cell), a NUL, an overlong line, too many blank rows, bad UTF-8 or no header: a
    400 naming the row (the header is row 1) or the body."""
    p = refused(body, csv_body=True)
    assert p.status == 400
    assert fields(p) == [field], p.errors
