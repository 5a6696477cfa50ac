"""The outcome of a domain request (a submission, a bundle change, an arrival) as one word, from
the HTTP status it was answered with: the `outcome` label of the domain counters in
monitoring.metrics. A fixed, small set, so every series can be created up front.
"""

from __future__ import annotations

from typing import Final, Literal

Outcome = Literal[
    "accepted",  # 2xx, done now
    "replayed",  # 2xx, the first answer of a repeated Idempotency-Key
    "invalid",  # 4xx for the request's content (400, 413, 415, 422, ...)
    "denied",  # 401, 403
    "not_found",  # 404
    "conflict",  # 409: the state does not allow it (cancelled, already bundled, ...)
    "rate_limited",  # 429
    "unavailable",  # 502-504: standby node, database or component down, node busy
    "cancelled",  # the client went away before the answer (499 in the request counter)
    "error",  # any other 5xx: a bug
]
OUTCOMES: Final[tuple[Outcome, ...]] = (
    "accepted",
    "replayed",
    "invalid",
    "denied",
    "not_found",
    "conflict",
    "rate_limited",
    "unavailable",
    "cancelled",
    "error",
)
_BY_STATUS: Final[dict[int, Outcome]] = {
    401: "denied",
    403: "denied",
    404: "not_found",
    409: "conflict",
    429: "rate_limited",
    499: "cancelled",
    502: "unavailable",
    503: "unavailable",
    504: "unavailable",
}


def outcome_of(status: int, *, replayed: bool = False) -> Outcome:
    """The outcome word of an answer with HTTP `status`."""
    if 200 <= status < 300:
        return "replayed" if replayed else "accepted"
    found = _BY_STATUS.get(status)
    if found is not None:
        return found
    return "invalid" if 400 <= status < 500 else "error"
