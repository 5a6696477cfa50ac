"""deploy.harness.SharedCluster: a session fixture's cluster stopped right after the last test
that uses it, with stand-ins for pytest's items and for the cluster's context manager."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from deploy.harness import LocalCluster, SharedCluster


@dataclass(eq=False)
class Item:
    path: Path
    fixturenames: list[str] = field(default_factory=list)


@dataclass
class Started:
    closed: int = 0

    @contextlib.contextmanager
    def cluster(self) -> Iterator[LocalCluster]:
        try:
            yield cast(LocalCluster, object())
        finally:
            self.closed += 1


def _run(shared: SharedCluster, items: list[Item], started: Started) -> list[int]:
    """Run `items` as pytest would, the fixture set up by the first user and torn down at the
    session's end; the number of stops seen after each test."""
    seen = []
    set_up = False
    with contextlib.ExitStack() as session:
        for item in items:
            if shared.fixture in item.fixturenames and not set_up:
                session.enter_context(shared.running(started.cluster()))
                set_up = True
            shared.test_done(cast(Any, item), cast(Any, items))
            seen.append(started.closed)
    seen.append(started.closed)
    return seen


def test_the_cluster_stops_right_after_its_last_user(tmp_path: Path) -> None:
    """Stopped after the last test naming the fixture, once, though later tests run on and the
    session's end closes it again."""
    here = tmp_path / "chaos-tests"
    items = [
        Item(here / "a.py", ["drill_cluster"]),
        Item(here / "a.py", ["other"]),
        Item(here / "b.py", ["tmp_path", "drill_cluster"]),
        Item(here / "c.py", ["netns_cluster"]),
        Item(here / "c.py", []),
    ]
    started = Started()
    shared = SharedCluster("drill_cluster", here)
    assert _run(shared, items, started) == [0, 0, 1, 1, 1, 1]
    assert not shared.is_running


def test_tests_outside_its_folder_do_not_count(tmp_path: Path) -> None:
    """A module elsewhere giving the same name to a fixture of its own does not keep the
    cluster running."""
    here = tmp_path / "tests"
    items = [
        Item(here / "integration" / "test_a.py", ["cluster"]),
        Item(tmp_path / "chaos-tests" / "test_b.py", ["cluster"]),
    ]
    started = Started()
    assert _run(SharedCluster("cluster", here), items, started) == [1, 1, 1]


def test_a_cluster_nobody_started_is_left_alone(tmp_path: Path) -> None:
    """Tests that never ask for the fixture start nothing and stop nothing."""
    items = [Item(tmp_path / "test_a.py", ["tmp_path"])]
    started = Started()
    shared = SharedCluster("cluster", tmp_path)
    assert _run(shared, items, started) == [0, 0]
    assert not shared.is_running
