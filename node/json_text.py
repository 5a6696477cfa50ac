"""JSON text of answers and of the write statements' parameters, encoded by orjson (#11).

A submission encodes its answer and its row four or five times (the answer, the statement's
items, versions, audit and idempotency records); the standard library's encoder spends about
6 us on each of those dictionaries, orjson about 1 us (measured here), and the node's Python
is what limits a node's throughput. The text is UTF-8 without insignificant whitespace, which
any JSON reader (and PostgreSQL's jsonb) reads as the standard encoder's ASCII. A value of no
JSON type raises TypeError, as json.dumps does.
"""

from __future__ import annotations

import orjson


def dumps(value: object) -> str:
    """`value` as JSON text."""
    return orjson.dumps(value).decode()
