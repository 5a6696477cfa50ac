"""What a drill's fault touched: the site it hit and what it froze or cut off, so that
`cluster_ops.restore` can undo exactly that afterwards."""

from __future__ import annotations

from dataclasses import dataclass, field

from deploy.state import StateDir
from deploy.topology import Topology


@dataclass
class Context:
    topo: Topology
    state: StateDir
    site: str  # the active site the fault hits
    other: str
    frozen: list[int]
    partitioned: list[str] = field(default_factory=list)
