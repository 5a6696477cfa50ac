"""The nemesis's schedule (#14 item 4, chaos-tests/nemesis.py `schedule`): pure, so a failing
run is replayed from its seed.

chaos-tests is not a package (its modules import each other by bare name), so nemesis.py is
loaded by file path with that folder on sys.path for the load; nothing is started.
"""

from __future__ import annotations

import importlib.util
import itertools
import sys
from pathlib import Path
from types import ModuleType

import pytest

CHAOS_DIR = Path(__file__).resolve().parents[2] / "chaos-tests"


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("rocars_nemesis", CHAOS_DIR / "nemesis.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["rocars_nemesis"] = module  # dataclasses resolve their module through it
    sys.path.append(str(CHAOS_DIR))
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(CHAOS_DIR))
    return module


nemesis = _load()
SEEDS = range(40)


def test_same_seed_same_schedule_and_seeds_differ() -> None:
    """#14 item 4: the schedule is a function of seed, duration and catalogue: the same seed
    gives the same faults at the same times held as long, and different seeds differ."""
    for seed in SEEDS:
        a = nemesis.schedule(seed, 300, nemesis.CATALOGUE)
        assert a == nemesis.schedule(seed, 300, nemesis.CATALOGUE)
    plans = {tuple(nemesis.schedule(seed, 300, nemesis.CATALOGUE)) for seed in SEEDS}
    assert len(plans) == len(SEEDS)


@pytest.mark.parametrize("duration", [60.0, 300.0, 1800.0])
def test_gaps_are_10_to_30_s_and_every_fault_heals_within_the_duration(duration: float) -> None:
    """#14 item 4: the first fault starts 10-30 s in and each next one 10-30 s after the
    previous one's start; each is held within its kind's range and healed by the end; the
    schedule is as full as it can be (the next draw would not have fitted, so there is at
    most 30 s plus the longest hold left over)."""
    longest_hold = max(f.hold_s[1] for f in nemesis.CATALOGUE)
    holds = {f.name: f.hold_s for f in nemesis.CATALOGUE}
    for seed in SEEDS:
        plan = nemesis.schedule(seed, duration, nemesis.CATALOGUE)
        assert plan
        starts = [0.0] + [p.at_s for p in plan]
        gaps = [b - a for a, b in itertools.pairwise(starts)]
        assert all(10.0 - 1e-6 <= g <= 30.0 + 1e-6 for g in gaps), gaps
        for p in plan:
            low, high = holds[p.fault]
            assert low - 1e-6 <= p.hold_s <= high + 1e-6
            assert p.at_s + p.hold_s <= duration
        assert duration - plan[-1].at_s <= 30.0 + longest_hold


def test_faults_are_drawn_from_the_whole_catalogue() -> None:
    """#14 item 4: over many seeds every kind of the catalogue is chosen, and only those."""
    seen = {p.fault for seed in SEEDS for p in nemesis.schedule(seed, 300, nemesis.CATALOGUE)}
    assert seen == {f.name for f in nemesis.CATALOGUE}


def test_a_duration_too_short_for_any_fault_gives_an_empty_schedule() -> None:
    """A run shorter than the smallest gap plus hold has nothing to apply."""
    assert nemesis.schedule(7, 12.0, [nemesis.Fault("x", (3.0, 5.0))]) == []
