"""The authenticated caller, as every handler and the write path see it."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Account:
    id: int
    kind: str
    name: str
    status: str

    @property
    def actor(self) -> str:
        return f"{self.kind}:{self.id}"
