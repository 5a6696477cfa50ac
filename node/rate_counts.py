"""Rate-limit counts coalesced into one Redis call per round trip (#11).

Every authenticated request counts itself in Redis (node.ratelimit, node.redis_client). One
call per request made that count a fifth of the node's CPU per submission under load. Here
requests that arrive while a call is out wait for the next one, which carries all of them:
one script call per round trip, whatever the concurrency. At low load nothing waits: the first
request starts a call at once.

Each request still gets the count it would have had alone, in arrival order: a call that adds
`total` to a counter and returns its new value `v` gives the requests of that counter, in
order, `v - total + (their cost and the costs before theirs)`. So node.ratelimit's rule, and
who is refused, are unchanged.

A failed or timed-out call fails every request it carried with the same exception; the caller
(`RedisClient._guarded`) turns it into RedisUnavailable, and the rate limit fails open.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class CountGroup:
    """One counter's share of a call: add `cost` to `current_key`, read `previous_key`."""

    current_key: str
    previous_key: str
    cost: int


# One call: the groups in, (current after adding, previous) per group out, in the same order.
SendCounts = Callable[[Sequence[CountGroup]], Awaitable[Sequence[tuple[int, int]]]]

_Waiter = tuple[int, "asyncio.Future[tuple[int, int]]"]


class CountBatcher:
    """Coalesces concurrent counts (see the module docstring). `deadline_s` bounds each call,
    so a silent Redis cannot hold the requests queued behind it."""

    def __init__(self, send: SendCounts, *, deadline_s: float) -> None:
        self._send = send
        self._deadline_s = deadline_s
        self._pending: dict[tuple[str, str], list[_Waiter]] = {}
        self._task: asyncio.Task[None] | None = None
        self.calls = 0  # how many calls were made (for the tests and the curious)

    async def count(self, current_key: str, previous_key: str, cost: int) -> tuple[int, int]:
        """Add `cost` to `current_key`; return (its count including this request, the count
        of `previous_key`)."""
        future: asyncio.Future[tuple[int, int]] = asyncio.get_running_loop().create_future()
        self._pending.setdefault((current_key, previous_key), []).append((cost, future))
        if self._task is None:
            self._task = asyncio.create_task(self._drain(), name="rate-limit counts")
        return await future

    async def _drain(self) -> None:
        try:
            while self._pending:
                batch, self._pending = self._pending, {}
                await self._call(batch)
        finally:
            self._task = None

    async def _call(self, batch: dict[tuple[str, str], list[_Waiter]]) -> None:
        keys = list(batch)
        groups = [CountGroup(c, p, sum(cost for cost, _ in batch[(c, p)])) for c, p in keys]
        self.calls += 1
        try:
            async with asyncio.timeout(self._deadline_s):
                results = await self._send(groups)
        except BaseException as exc:
            for key in keys:
                for _, future in batch[key]:
                    if future.done():
                        continue
                    if isinstance(exc, Exception):  # handed to every request it carried
                        future.set_exception(exc)
                    else:  # the node is stopping: its requests stop too
                        future.cancel()
            if not isinstance(exc, Exception):
                raise
            return
        for key, group, (current, previous) in zip(keys, groups, results, strict=True):
            running = current - group.cost
            for cost, future in batch[key]:
                running += cost
                if not future.done():  # its request gave up waiting (a timeout)
                    future.set_result((running, previous))
