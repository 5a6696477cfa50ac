"""A Jepsen-style history of what clients did and what they were told (#14 item 2).

Every client operation is two events: `invoke` when it is sent, then one completion:

- `ok`: a 2xx answer; the operation happened, with the answer as its result;
- `fail`: a definite refusal (a 4xx: the transaction rolled back, nothing was written);
- `info`: no definite answer (gave up after retries, a 5xx, a dropped connection): it may or
  may not have happened, and the checker must allow both, but never twice.

An operation with an invoke and no completion (the recorder was cancelled) counts as `info`.
Beside the operations the history keeps `role` events: samples of the cluster's role facts
(`deploy.drills.role_facts`: the leader key and its revision, each node's /health role), which
the checker uses for promise I3.

Each event carries a monotonic time (`t`, seconds, comparable within one history: real-time
order of operations) and a wall time (`wall`, Unix seconds: compared with the database's
timestamps). Saved as JSON Lines, one event a line, so a long run can be inspected with jq.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from node.client import NODE_HEADER, ApiError, ClientError, Response

ROLE_HEADER = "X-Rocars-Role"
# What a workload does; the checker knows what each one writes.
Kind = Literal["submit", "batch", "amend", "bundle", "arrival", "clearance"]
KINDS: tuple[Kind, ...] = ("submit", "batch", "amend", "bundle", "arrival", "clearance")
Outcome = Literal["ok", "fail", "info"]
OUTCOMES: tuple[Outcome, ...] = ("ok", "fail", "info")


@dataclass(frozen=True)
class Invoke:
    id: int  # the operation's number in its history
    process: int  # the client that sent it (one operation at a time each)
    account: int  # the account it was sent as
    kind: Kind
    key: str | None  # its Idempotency-Key (None for a write the API takes without one)
    input: Mapping[str, Any]
    t: float
    wall: float


@dataclass(frozen=True)
class Completion:
    id: int
    type: Outcome
    t: float
    wall: float
    result: Any = None  # the answer's JSON body (ok) or problem document (fail)
    status: int | None = None
    node: str | None = None  # the site that answered (X-Rocars-Node), when one did
    role: str | None = None  # that node's role as it answered (X-Rocars-Role)
    error: str | None = None


@dataclass(frozen=True)
class RoleSample:
    t: float
    wall: float
    leader: str | None  # the member holding the leader key; None when nobody holds it
    revision: int  # the key's mod_revision (unchanged means nobody took the lock meanwhile)
    roles: Mapping[str, str] = field(default_factory=dict)  # site -> /health role
    error: str | None = None  # set when etcd gave no quorum answer (leader then unknown)


@dataclass(frozen=True)
class Operation:
    """An invoke with its completion; `type` is `info` when it never completed."""

    invoke: Invoke
    completion: Completion | None

    @property
    def id(self) -> int:
        return self.invoke.id

    @property
    def kind(self) -> Kind:
        return self.invoke.kind

    @property
    def type(self) -> Outcome:
        return self.completion.type if self.completion is not None else "info"

    @property
    def start(self) -> float:
        return self.invoke.t

    @property
    def end(self) -> float:
        """When it completed; an unfinished operation is open until the end of time."""
        return self.completion.t if self.completion is not None else float("inf")

    @property
    def result(self) -> Any:
        return self.completion.result if self.completion is not None else None


Event = Invoke | Completion | RoleSample


def _event_doc(e: Event) -> dict[str, Any]:
    tag = "invoke" if isinstance(e, Invoke) else "role" if isinstance(e, RoleSample) else "done"
    return {"event": tag, **asdict(e)}


def _event_of(doc: dict[str, Any]) -> Event:
    tag = doc.pop("event")
    if tag == "invoke":
        return Invoke(**doc)
    if tag == "role":
        return RoleSample(**doc)
    if tag == "done":
        return Completion(**doc)
    raise ValueError(f"unknown history event {tag!r}")


def header(headers: Mapping[str, str], name: str) -> str | None:
    """A header by its name in any case: HAProxy passes names on in lower case, and the
    client keeps them as received."""
    wanted = name.lower()
    return next((v for k, v in headers.items() if k.lower() == wanted), None)


def classify(exc: BaseException) -> Outcome:
    """What an exception from `node.client` says about the operation: a 4xx is a definite
    refusal (`fail`); anything else (gave up on 503s or timeouts, a 500) leaves it unknown."""
    if isinstance(exc, ApiError) and 400 <= exc.status < 500:
        return "fail"
    return "info"


class History:
    """The events of one run, in the order they happened; append-only, not thread-safe (one
    asyncio loop records it)."""

    def __init__(
        self,
        events: Iterable[Event] = (),
        *,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.events: list[Event] = list(events)
        self._clock, self._wall = clock, wall
        self._next = 1 + max((e.id for e in self.events if isinstance(e, Invoke)), default=0)

    # -- recording ---------------------------------------------------------------------------

    def invoke(
        self,
        process: int,
        account: int,
        kind: Kind,
        key: str | None,
        input: Mapping[str, Any],
    ) -> int:
        op = Invoke(self._next, process, account, kind, key, input, self._clock(), self._wall())
        self._next += 1
        self.events.append(op)
        return op.id

    def complete(self, op_id: int, outcome: Outcome, **fields: Any) -> Completion:
        done = Completion(op_id, outcome, self._clock(), self._wall(), **fields)
        self.events.append(done)
        return done

    def sample(
        self,
        leader: str | None,
        revision: int,
        roles: Mapping[str, str] | None = None,
        *,
        error: str | None = None,
    ) -> None:
        self.events.append(
            RoleSample(self._clock(), self._wall(), leader, revision, dict(roles or {}), error)
        )

    async def call(
        self,
        process: int,
        account: int,
        kind: Kind,
        key: str | None,
        input: Mapping[str, Any],
        send: Callable[[], Awaitable[Response]],
    ) -> Completion:
        """Record `send()` as one operation: its invoke, then ok / fail / info by what came
        back. Cancellation leaves the operation open (counted as info)."""
        op_id = self.invoke(process, account, kind, key, input)
        try:
            resp = await send()
        except ApiError as exc:
            return self.complete(
                op_id,
                classify(exc),
                result=exc.problem,
                status=exc.status,
                node=header(exc.headers, NODE_HEADER),
                role=header(exc.headers, ROLE_HEADER),
                error=str(exc),
            )
        except ClientError as exc:
            return self.complete(op_id, "info", error=f"{type(exc).__name__}: {exc}")
        return self.complete(
            op_id,
            "ok",
            result=resp.body,
            status=resp.status,
            node=header(resp.headers, NODE_HEADER),
            role=header(resp.headers, ROLE_HEADER),
        )

    # -- reading -----------------------------------------------------------------------------

    def operations(self) -> list[Operation]:
        """Every operation, in invoke order."""
        done = {e.id: e for e in self.events if isinstance(e, Completion)}
        return [Operation(e, done.get(e.id)) for e in self.events if isinstance(e, Invoke)]

    def samples(self) -> list[RoleSample]:
        return sorted((e for e in self.events if isinstance(e, RoleSample)), key=lambda s: s.t)

    def started_wall(self) -> float | None:
        """The wall time of the first event (what the database's clocks are compared with)."""
        return min((e.wall for e in self.events), default=None)

    # -- JSON Lines --------------------------------------------------------------------------

    def lines(self) -> Iterator[str]:
        for e in self.events:
            yield json.dumps(_event_doc(e), separators=(",", ":"), default=str)

    def save(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", encoding="utf-8") as f:
            for line in self.lines():
                f.write(line + "\n")
        return path

    @classmethod
    def load(cls, path: Path) -> History:
        with path.open(encoding="utf-8") as f:
            return cls(_event_of(json.loads(line)) for line in f if line.strip())
