"""A collector whose metric families are replaced as a whole by whoever samples them (a
background loop, the scrape handler), for series whose label values are only known at run time
(the leader's member name, a drill scenario, a certificate's name, a standby): a scrape sees
one complete sample, and nothing at all while there is none, rather than an empty family or
a series left over from an earlier state."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence

from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector


class SnapshotCollector(Collector):
    def __init__(self) -> None:
        self._families: tuple[Metric, ...] = ()

    def replace(self, families: Iterable[Metric]) -> None:
        self._families = tuple(families)

    @property
    def families(self) -> Sequence[Metric]:
        return self._families

    def collect(self) -> Iterator[Metric]:
        return iter(self._families)
