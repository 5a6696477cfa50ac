"""Credentials never reach a log line in clear (#10 item 6): `redact` rewrites the secrets a
message may carry, and `RedactingFilter` applies it to every record a handler emits.

Redacted: bearer and basic credentials (`Authorization: Bearer ...`, however quoted), rocars
API keys (`rk_<prefix>_<secret>`: the prefix, which only names the account row, is kept), and
passwords in connection strings (`scheme://user:password@host`, libpq's `password=...`,
`"password": "..."` in a dict or JSON). The node and the CLI install the filter on the root
logger's handlers where they configure logging (`install`).
"""

from __future__ import annotations

import logging
import re
from typing import Final

MASK: Final = "[REDACTED]"

_RULES: Final[tuple[tuple[re.Pattern[str], str], ...]] = (
    # HTTP credentials: the scheme stays, the token goes (to the end of the token); before the
    # API-key rule, so `Bearer rk_...` is masked whole.
    (re.compile(r"\b(Bearer|Basic|Digest)(\s+)[^\s'\",;}\]]+", re.IGNORECASE), rf"\1\2{MASK}"),
    # rocars API keys anywhere, keeping the 8-hex-digit prefix when there is one.
    (re.compile(r"\brk_([0-9a-f]{8}_)?[A-Za-z0-9_\-]+"), rf"rk_\1{MASK}"),
    # URL user information: scheme://user:password@host.
    (
        re.compile(r"(\b[a-z][a-z0-9+.\-]*://[^\s:/@'\"]*:)[^\s@/'\"]+@", re.IGNORECASE),
        rf"\1{MASK}@",
    ),
    # password=... (libpq key/value, query strings) and "password": "..." (dicts, JSON).
    (
        re.compile(
            r"""(\b(?:password|passwd|pwd|secret|api_key|token)\s*=\s*)('[^']*'|[^\s&'",;]+)""",
            re.IGNORECASE,
        ),
        rf"\1{MASK}",
    ),
    (
        re.compile(
            r"""(['"](?:password|passwd|secret|api_key|token|authorization)['"]\s*:\s*)"""
            r"""(['"])(?:\\.|(?!\2).)*\2""",
            re.IGNORECASE,
        ),
        rf"\1\2{MASK}\2",
    ),
)


def redact(text: str) -> str:
    """`text` with every credential it holds replaced by MASK."""
    for pattern, replacement in _RULES:
        text = pattern.sub(replacement, text)
    return text


class RedactingFilter(logging.Filter):
    """Rewrites each record's message (merged with its args), its traceback and its stack text
    through `redact`. Attach it to handlers: a filter on a logger misses its children's
    records."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except (TypeError, ValueError):  # a malformed call: log what it was, redacted
            message = f"{record.msg!r} % {record.args!r}"
        record.msg, record.args = redact(message), None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


def install(logger: logging.Logger | None = None) -> None:
    """Add one RedactingFilter to each handler of `logger` (the root logger by default) that
    does not have one yet; call it right after logging is configured."""
    for handler in (logger or logging.getLogger()).handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter())
