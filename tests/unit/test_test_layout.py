"""The test folders' own layout: pytest imports test modules by basename (rootdir-relative
imports without packages), so two test files of one name in different folders stop the
whole run at collection."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_every_test_module_basename_is_unique() -> None:
    """A unit and an integration test of the same name (test_x.py in both folders) is a
    collection error for the whole suite: each basename appears once."""
    files = [
        p
        for folder in ("tests", "chaos-tests")
        for p in (ROOT / folder).rglob("test_*.py")
        if "__pycache__" not in p.parts
    ]
    counts = Counter(p.name for p in files)
    assert [n for n, c in counts.items() if c > 1] == []
