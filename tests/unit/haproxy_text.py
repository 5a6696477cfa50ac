"""Reading a rendered haproxy.cfg in the configuration tests: its sections, and the JSON of a
`string "..."` argument (HAProxy's own problem+json pages)."""

from __future__ import annotations

import json
import re
from typing import Any


def sections(text: str) -> dict[str, list[str]]:
    """Each section header (`backend nodes`) with its stripped, non-empty lines."""
    out: dict[str, list[str]] = {}
    current = ""
    for line in text.splitlines():
        if line and not line.startswith(" "):
            current = line.strip()
            out[current] = []
        elif line.strip():
            out[current].append(line.strip())
    return out


def string_arg(line: str) -> Any:
    """The JSON document in an HAProxy `string "..."` argument."""
    m = re.search(r' string "((?:[^"\\]|\\.)*)"', line)
    assert m is not None, line
    return json.loads(re.sub(r"\\(.)", r"\1", m.group(1)))
