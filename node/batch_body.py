"""Batch bodies, item by item: a JSON array (ijson's event stream) or a CSV (the csv module over
a lazy line source), stopping at item `MAX_ITEMS + 1`, so no body can make the node build more
than `MAX_ITEMS` items however many it holds (#10 item 2).

Everything here is synchronous, CPU-bound work: the batch route runs it in a worker thread
(`run_off_loop`), never on the event loop. Every failure is a `Problem` (4xx) naming `body` (a
JSON error says which item in its detail) or a CSV row (`body[row 17]`: the header is row 1, as
a spreadsheet counts).

What bounds the work, besides the body cap of the route:
- JSON: nesting depth (`MAX_DEPTH`, the batch array being level 1) and values per item
  (`MAX_ITEM_VALUES`): `[[[[...` or one item of a million values stops at once, and ijson's
  events build nothing we did not ask for. The parser is fed `_JSON_READ` bytes at a time from
  Python (its C code holds the interpreter lock for each whole call, so one call must stay
  short), and a stretch of `MAX_JSON_QUIET` bytes without an event (a 10 MiB string) is refused:
  yajl rescans an unfinished token on every chunk, which made such a string cost seconds.
- CSV: characters per line (`MAX_CSV_LINE`; one C call parses a whole line, holding the
  interpreter lock), characters per cell (`MAX_CSV_CELL`, the csv module's field_size_limit,
  for quoted cells spanning lines), and blank rows (skipped, but at most `MAX_ITEMS` of them).
"""

from __future__ import annotations

import asyncio
import csv
import io
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, BinaryIO, TypeVar

import ijson  # type: ignore[import-untyped]

from node.problems import Problem

T = TypeVar("T")

MAX_ITEMS = 10_000
MAX_DEPTH = 8  # the batch array (1), an item (2), its `itfs` (3): room to spare
MAX_ITEM_VALUES = 256  # a consignment is about 15 values
MAX_CSV_LINE = 64 * 1024  # characters; a consignment row is at most a few thousand
MAX_CSV_CELL = 32 * 1024  # characters; the longest field (article_description) is 2000
_JSON_READ = 16 * 1024  # bytes handed to the JSON parser at a time (it holds the GIL on each)
MAX_JSON_QUIET = 128 * 1024  # bytes without a single JSON event: a string, number or gap

# The csv module's limit is process-wide; nothing else in the node reads CSV.
csv.field_size_limit(MAX_CSV_CELL)

# At most two batches are parsed at once (the nodes have two cores); more wait their turn here
# instead of taking the default executor's threads from the rest of the node.
_EXECUTOR = ThreadPoolExecutor(max_workers=2, thread_name_prefix="rocars-batch")


async def run_off_loop(fn: Callable[[], T]) -> T:
    """`fn()` in the batch worker threads, so the event loop keeps answering meanwhile."""
    return await asyncio.get_running_loop().run_in_executor(_EXECUTOR, fn)


def too_many(max_items: int = MAX_ITEMS) -> Problem:
    return Problem(
        422,
        "Unprocessable Content",
        f"a batch holds at most {max_items} consignments",
        type_="https://rocars.example/problems/validation",
        errors=[{"field": "body", "message": f"at most {max_items} consignments"}],
    )


def _bad_request(detail: str, field: str, message: str) -> Problem:
    return Problem(400, "Bad Request", detail, errors=[{"field": field, "message": message}])


def take(items: Iterator[Any], max_items: int = MAX_ITEMS) -> list[Any]:
    """The items of a batch: refused when empty, and at item `max_items + 1` without reading on."""
    out: list[Any] = []
    for item in items:
        if len(out) == max_items:
            raise too_many(max_items)
        out.append(item)
    if not out:
        raise Problem(
            422,
            "Unprocessable Content",
            "the batch is empty",
            type_="https://rocars.example/problems/validation",
            errors=[{"field": "body", "message": "the batch is empty"}],
        )
    return out


def parse_batch(body: bytes, *, csv_body: bool, max_items: int = MAX_ITEMS) -> list[Any]:
    """The items of a batch body (JSON array, or CSV with `csv_body`), at most `max_items`."""
    if not body and not csv_body:
        raise _bad_request("a JSON body is required", "body", "empty body")
    stream = io.BytesIO(body)
    return take(csv_items(stream) if csv_body else json_items(stream), max_items)


# --- JSON ------------------------------------------------------------------------------------


def _json_error(exc: ijson.JSONError, index: int | None) -> Problem:
    raw = exc.args[0] if exc.args else ""
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
    first = (text.splitlines() or ["malformed JSON"])[0][:200]
    where = "" if index is None else f" (in item {index})"
    return _bad_request(f"the body is not valid JSON{where}: {first}", "body", "malformed JSON")


def _json_events(stream: BinaryIO) -> Iterator[tuple[str, Any]]:
    """ijson's events (start_map, map_key, string, ...), parsed a chunk per call."""
    events = ijson.sendable_list()
    parser = ijson.basic_parse_coro(events, use_float=True)
    quiet = 0
    while chunk := stream.read(_JSON_READ):
        parser.send(chunk)
        quiet = 0 if events else quiet + len(chunk)
        if quiet > MAX_JSON_QUIET:
            raise _bad_request(
                f"the body has more than {MAX_JSON_QUIET} bytes without a JSON value ending"
                " (a string, number or run of whitespace that long)",
                "body",
                "a JSON value too long",
            )
        yield from events
        del events[:]
    parser.close()  # a truncated document raises here
    yield from events


def json_items(stream: BinaryIO) -> Iterator[Any]:
    """The items of a JSON array, built one at a time from ijson's events."""
    events = _json_events(stream)
    index: int | None = None  # of the item being read, for the error message
    try:
        first = next(events, None)
        if first is None or first[0] != "start_array":
            for _ in events:  # malformed anywhere is 400, as when the whole body was parsed
                pass
            raise Problem(
                422,
                "Unprocessable Content",
                "the batch must be a JSON array of consignments",
                type_="https://rocars.example/problems/validation",
                errors=[{"field": "body", "message": "must be a JSON array of consignments"}],
            )
        index = 0
        for event, value in events:  # an item's first event; _json_item reads the rest
            if event == "end_array":
                break
            yield _json_item(event, value, events, index)
            index += 1  # noqa: SIM113 (the loop runs over events, not items)
        index = None
        for _ in events:  # only the parser's complaint about trailing content can come
            pass
    except ijson.JSONError as exc:
        raise _json_error(exc, index) from exc


def _json_item(event: str, value: Any, events: Iterator[tuple[str, Any]], index: int) -> Any:
    """One item, from its first event on; containers are built here with the depth and size
    caps (ijson's own builders have neither)."""
    if event not in ("start_map", "start_array"):
        return value
    root: Any = {} if event == "start_map" else []
    stack: list[Any] = [root]
    keys: list[str] = [""]
    values = 1
    for event, value in events:
        if event == "map_key":
            keys[-1] = value
            continue
        if event in ("end_map", "end_array"):
            stack.pop()
            keys.pop()
            if not stack:
                return root
            continue
        values += 1
        if values > MAX_ITEM_VALUES:
            raise _bad_request(
                f"item {index} of the batch holds more than {MAX_ITEM_VALUES} JSON values",
                "body",
                f"item {index}: more than {MAX_ITEM_VALUES} values",
            )
        new: Any = {} if event == "start_map" else [] if event == "start_array" else value
        parent = stack[-1]
        if isinstance(parent, list):
            parent.append(new)
        else:
            parent[keys[-1]] = new
        if event in ("start_map", "start_array"):
            if len(stack) + 2 > MAX_DEPTH:  # + the batch array, + this container
                raise _bad_request(
                    f"item {index} of the batch is nested more than {MAX_DEPTH} levels deep",
                    "body",
                    "JSON nested too deeply",
                )
            stack.append(new)
            keys.append("")
    raise AssertionError("unreachable: ijson reports a truncated document as premature EOF")


# --- CSV -------------------------------------------------------------------------------------


class _Lines:
    """The body's lines, decoded lazily (UTF-8, a BOM dropped), split on LF only (CRLF ends a
    line too, a bare CR stays inside it: the csv module refuses it in an unquoted cell), each at
    most `MAX_CSV_LINE` characters and without NUL."""

    def __init__(self, stream: BinaryIO, rows: Callable[[], int]) -> None:
        self._text = io.TextIOWrapper(stream, encoding="utf-8-sig", newline="\n")
        self._row = rows
        self.number = 0

    def __iter__(self) -> Iterator[str]:
        return self

    def __next__(self) -> str:
        try:
            line = self._text.readline(MAX_CSV_LINE + 1)
        except UnicodeDecodeError as exc:
            raise _bad_request("the CSV body is not UTF-8", "body", "not UTF-8") from exc
        if not line:
            raise StopIteration
        self.number += 1
        if len(line) > MAX_CSV_LINE:
            raise self.bad(f"line {self.number} is longer than {MAX_CSV_LINE} characters")
        if "\0" in line:
            raise self.bad(f"line {self.number} holds a NUL character")
        return line

    def bad(self, message: str, row: int | None = None) -> Problem:
        field = f"body[row {self._row() if row is None else row}]"
        return _bad_request(f"the CSV body is malformed: {message}", field, message)


def _csv_item(header: list[str], cells: list[str]) -> dict[str, Any]:
    item: dict[str, Any] = {}
    # As csv.DictReader pairs them: a repeated header name keeps its last cell.
    for name, cell in dict(zip(header, cells, strict=False)).items():
        if cell == "":
            continue
        if name == "package_count":
            # isdigit() alone accepts "²", which int() refuses: ASCII digits only.
            n = cell.strip()
            item[name] = int(n) if n.isascii() and n.isdigit() else cell
        elif name.startswith("itfs."):
            item.setdefault("itfs", {})[name.removeprefix("itfs.")] = cell
        else:
            item[name] = cell
    if len(cells) > len(header):  # more cells than header fields
        item["__extra_cells__"] = cells[len(header) :]
    return item


def csv_items(stream: BinaryIO) -> Iterator[dict[str, Any]]:
    """The rows of a CSV after its header row (field names; `itfs.airport` fills `itfs`),
    as items: empty cells are left out, extra cells land in `__extra_cells__` (refused by
    validation as an unknown field), `package_count` is a number when it is ASCII digits."""
    rows = 0  # records read, the header and blank rows included

    def row() -> int:
        return rows + 1  # the one being read

    lines = _Lines(stream, row)
    reader = csv.reader(lines)
    blanks = 0
    try:
        header = next(reader, [])
        rows += 1
        if not header:
            raise _bad_request(
                "the CSV needs a header row naming the fields", "body", "missing header row"
            )
        for cells in reader:
            rows += 1
            if not cells:  # a blank line (csv.DictReader skips them too)
                blanks += 1
                if blanks > MAX_ITEMS:
                    raise lines.bad(f"more than {MAX_ITEMS} blank rows", rows)
                continue
            yield _csv_item(header, cells)
    except csv.Error as exc:
        raise lines.bad(f"{exc} (line {lines.number})") from exc
