"""A batch's items checked as they are parsed (node.batch_body.parse_batch with `each`, as
node.api.consignments.write_batch calls it, #11 target 5): the results in the items' order, the
cap and the empty batch still refused, and never every parsed item held at once."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

import pytest

from deploy.bench import workload
from node.api.consignments import _checked
from node.batch_body import parse_batch, take
from node.problems import Problem
from node.schemas import ConsignmentIn


def test_items_are_checked_in_order_as_they_are_parsed() -> None:
    """#11 target 5: a valid item becomes its model and an invalid one its errors, in the
    batch's order, from a JSON body and the same items as CSV."""
    now = datetime.now(UTC)
    bad = {**workload.consignment(now, 1), "package_count": 0}
    items = [workload.consignment(now, 0), bad, workload.consignment(now, 2)]
    check = partial(_checked, now=now, lead=timedelta(0))
    checked = parse_batch(json.dumps(items).encode(), csv_body=False, each=check)
    assert [type(c) for c in checked] == [ConsignmentIn, tuple, ConsignmentIn]
    assert [field for field, _ in checked[1]] == ["package_count"]


def test_each_item_is_made_before_the_next_is_read() -> None:
    """#11 target 5: `each` runs as each item is read, so what a batch holds at once is one
    parsed item beside what was made of the earlier ones, not all its parsed items."""
    read: list[int] = []

    def items() -> Any:
        for i in range(3):
            read.append(i)
            yield {"n": i}

    def each(item: dict[str, int]) -> int:
        assert read[-1] == item["n"]  # nothing read ahead of the item being made
        return item["n"] * 10

    assert take(items(), each=each) == [0, 10, 20]


def test_the_cap_and_the_empty_batch_hold_with_each() -> None:
    """#10 item 2 with #11's `each`: item max_items + 1 is refused without being made, and an
    empty batch is refused."""
    made: list[int] = []
    with pytest.raises(Problem) as exc:
        take(iter(range(5)), max_items=3, each=made.append)
    assert exc.value.status == 422
    assert made == [0, 1, 2]
    with pytest.raises(Problem):
        take(iter([]), each=made.append)
