"""Looking up the likely culprit of a node OOM: the pods on the node from the API server, their
working set near the kill from Prometheus, the choice from `domain.classify.culprit_on_node`.

The operator does it for every Node kill it records (and writes into the victim's namespace only
what `domain.redaction.culprit` lets through); `oomtuner report` does it again for the Node kills it
finds, with the credentials of whoever runs it, and shows the whole record.
"""

from __future__ import annotations

import datetime
import logging
from collections.abc import Sequence

from oomtuner.domain import classify
from oomtuner.kube import api, owners
from oomtuner.prom import usage as prom_usage

logger = logging.getLogger(__name__)


def on_node(
    client: api.Client,
    source: prom_usage.Source,
    *,
    node: str,
    at: datetime.datetime,
    capacity: int | None,
    namespaces: Sequence[str] = (),
) -> classify.CulpritFinding:
    """The likely culprit of a node OOM on `node` at `at`; never raises (a failed lookup is a
    finding without a culprit that says why). `namespaces` limits the pods read to those."""
    try:
        # Without Prometheus nothing is measured: the node's pods need not be read.
        pods = [] if isinstance(source, prom_usage.Disabled) else owners.pods_on_node(
            client, node=node, namespaces=namespaces)
        query = prom_usage.NodeQuery(node=node, pods=tuple((p.metadata.namespace or "", p.metadata.name) for p in pods),
                                     at=at, memory_bound=capacity)
        answer = source.node_usage(query)
        if not answer.ok:
            return classify.no_culprit(f"no usage data: {answer.message}")
        return classify.culprit_on_node(pods, node=node, node_memory_capacity=capacity, usage=answer.usage,
                                        basis=answer.message)
    except Exception as exc:  # noqa: BLE001 - an API error or a bug: the kill is recorded anyway
        logger.warning("looking up the culprit of the node OOM on %s failed: %s", node, exc)
        return classify.no_culprit(f"the lookup failed: {exc}")
