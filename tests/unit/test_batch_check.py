"""A batch's items checked one by one (node.api.consignments._check_all, #11 target 5): the
results in the items' order, and each parsed item let go once checked."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from deploy.bench import workload
from node.api.consignments import _check_all
from node.schemas import ConsignmentIn


def test_items_are_checked_in_order_and_let_go() -> None:
    """#11 target 5: a valid item becomes its model and an invalid one its errors, in the
    batch's order; the list of parsed items holds none of them afterwards, so a 10,000-item
    batch never holds every parsed dict beside every model (the node's peak in a batch)."""
    now = datetime.now(UTC)
    bad = {**workload.consignment(now, 1), "package_count": 0}
    items: list[Any] = [workload.consignment(now, 0), bad, workload.consignment(now, 2)]
    checked = _check_all(items, now, timedelta(0))
    assert [type(c) for c in checked] == [ConsignmentIn, tuple, ConsignmentIn]
    fields = [field for field, _ in checked[1]]  # type: ignore[union-attr]
    assert fields == ["package_count"]
    assert items == [None, None, None]
