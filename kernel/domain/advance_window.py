"""The advance-submission window for an e-ACI.

ROCARS requires cargo information to be submitted no more than 14 days and at least 30 minutes
before the cargo crosses; both bounds are inclusive. The lead time is measured from the
submission time (``now``) to the expected arrival/departure (``expected_at``).
"""

from __future__ import annotations

from datetime import datetime, timedelta

MIN_LEAD = timedelta(minutes=30)
MAX_LEAD = timedelta(days=14)


def _is_aware(dt: datetime) -> bool:
    return dt.tzinfo is not None and dt.utcoffset() is not None


def describe_duration(delta: timedelta) -> str:
    """A short human form such as '29 min 59 s' or '14 d 1 min' (sign and fractions dropped)."""
    total = abs(int(delta.total_seconds()))
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, seconds = divmod(rest, 60)
    units = ((days, "d"), (hours, "h"), (minutes, "min"), (seconds, "s"))
    parts = [f"{n} {unit}" for n, unit in units if n]
    return " ".join(parts) or "0 s"


def check_advance_window(
    expected_at: datetime,
    now: datetime,
    *,
    min_lead: timedelta = MIN_LEAD,
    max_lead: timedelta = MAX_LEAD,
) -> str | None:
    """None when ``expected_at`` lies within [now + min_lead, now + max_lead], else why not."""
    # A naive `now` is a server bug, not the submitter's fault: raise instead of answering 4xx.
    if not _is_aware(now):
        raise ValueError("now must be timezone-aware")
    if min_lead > max_lead:
        raise ValueError("min_lead must not exceed max_lead")
    if not _is_aware(expected_at):
        return "expected_at must include a time zone offset (for example +08:00 or Z)"
    lead = expected_at - now
    if lead < timedelta(0):
        return f"expected_at is in the past ({describe_duration(lead)} before the submission)"
    if lead < min_lead:
        return (
            f"expected_at must be at least {describe_duration(min_lead)} after the submission;"
            f" it is only {describe_duration(lead)} after"
        )
    if lead > max_lead:
        return (
            f"expected_at must be at most {describe_duration(max_lead)} after the submission;"
            f" it is {describe_duration(lead)} after"
        )
    return None
