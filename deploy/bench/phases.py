"""The bench's phases by name, one spelling for both ends: the runner enters each as it starts
it (node RSS read per phase, deploy.bench.memory) and the report shows a row for each."""

from __future__ import annotations

CLOSED_LOOP = "closed loop"
FLOOR = "latency floor"
OPEN_LOOP = "open loop"
OVERLOAD = "overload"
BATCH = "batch"
RSS_PHASES = (CLOSED_LOOP, FLOOR, OPEN_LOOP, OVERLOAD, BATCH)
