"""A drill's result, published for the nodes' /metrics (rocars_drill_*{scenario}) and the SRE
page's chart (its compact timeline: writes per second, the fault, the write gap): merged into
the etcd key kernel.names.DRILL_RESULTS_KEY (format: monitoring.drill_results) by
compare-and-swap, so two drills finishing at once both land. Drills run from the operator's
command line, not in a node, and etcd is what every site already reads. A failure to publish
never fails the drill: the report on disk is the record, and it says so."""

from __future__ import annotations

import logging
import time

from deploy import etcd_auth, http_client
from deploy.drills.drill import DrillResult
from deploy.topology import Topology
from kernel.errors import EtcdUnavailable
from kernel.names import DRILL_RESULTS_KEY
from monitoring.drill_results import DrillRecord, DrillTimeline, with_result
from replication.etcd_gateway import EtcdGateway

log = logging.getLogger("rocars.drill")
_ATTEMPTS = 5


def record_of(result: DrillResult, finished_at: float) -> DrillRecord:
    return DrillRecord(
        rto_seconds=result.rto_s,
        rpo_records=result.rpo,
        passed=result.passed,
        finished_at=finished_at,
        direction=result.direction,
        timeline=None if result.timeline is None else DrillTimeline.model_validate(result.timeline),
    )


async def publish_to(etcd: EtcdGateway, result: DrillResult, finished_at: float) -> None:
    """Merge `result` into the key; EtcdUnavailable when etcd does not answer or other writers
    kept winning."""
    record = record_of(result, finished_at)
    for _ in range(_ATTEMPTS):
        kv = await etcd.get(DRILL_RESULTS_KEY)
        value = with_result(kv.value if kv else None, result.scenario, record)
        if await etcd.put_if(DRILL_RESULTS_KEY, value, mod_revision=kv.mod_revision if kv else 0):
            return
    raise EtcdUnavailable(f"{DRILL_RESULTS_KEY}: lost {_ATTEMPTS} compare-and-swaps in a row")


async def publish(topo: Topology, result: DrillResult) -> None:
    """Publish `result` (finished now); a failure is noted in the result, never raised."""
    try:
        async with http_client.session(topo) as session:
            await publish_to(etcd_auth.operator_gateway(session, topo), result, time.time())
    except EtcdUnavailable as exc:
        log.warning("drill result not published to etcd: %s", exc)
        result.notes.append(f"not published for the nodes' /metrics: {exc}")
