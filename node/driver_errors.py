"""Database driver errors -> the kernel errors they mean: the one translation table (as httpx's
`_exceptions.py` maps httpcore's errors to its own). The service's error boundary
(`node.problems`) translates whatever a handler lets through; code that must act on an outage
itself (the stores, the contingency fallbacks) wraps its database calls in `translated()` and
catches the kernel class. Nothing else catches a driver's types."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Final

import psycopg
from psycopg import errors as pg_errors
from psycopg_pool import PoolTimeout

from kernel.errors import DatabaseReadOnly, DatabaseUnavailable, RocarsError

# First match wins, so a subclass comes before its base (PoolTimeout is an OperationalError).
TRANSLATIONS: Final[tuple[tuple[type[Exception], type[RocarsError], str], ...]] = (
    (
        pg_errors.ReadOnlySqlTransaction,
        DatabaseReadOnly,
        "the database member of this site is no longer the primary; retry shortly",
    ),
    (
        PoolTimeout,
        DatabaseUnavailable,
        "the database is not reachable from this node; retry shortly",
    ),
    (
        psycopg.OperationalError,
        DatabaseUnavailable,
        "the database is not reachable from this node; retry shortly",
    ),
)


def translate(exc: BaseException) -> RocarsError | None:
    """The kernel error a third-party error means, or None when it is not an outage we know
    (a kernel error is already translated; anything else is a bug)."""
    for source, target, message in TRANSLATIONS:
        if isinstance(exc, source):
            return target(message)
    return None


@contextlib.contextmanager
def translated() -> Iterator[None]:
    """Raise the kernel error (`raise ... from`) for any error `TRANSLATIONS` knows, for call
    sites that act on an outage instead of answering it."""
    try:
        yield
    except Exception as exc:
        kernel = translate(exc)
        if kernel is None:
            raise
        raise kernel from exc
