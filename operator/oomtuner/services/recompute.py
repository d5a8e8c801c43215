"""Recompute: a recommendation's status computed again from its ledger, with what it needs read.

The usage history (Prometheus, bounded by a timeout and a circuit breaker; never raises here) and
the caps (`services.caps`) are read; `domain.status` does the rest.
"""

from __future__ import annotations

import datetime
import logging
from typing import Callable, Sequence

from oomtuner.api import policy, recommendation, types
from oomtuner.domain import duration, ledger, status, workload
from oomtuner.prom import usage as prom_usage
from oomtuner.services import caps as caps_mod

logger = logging.getLogger(__name__)


class Recompute:
    def __init__(self, *, usage: prom_usage.Source, caps: caps_mod.Caps,
                 memory_bound: Callable[[], int | None] = lambda: None):
        self.usage = usage
        self._caps = caps
        self._memory_bound = memory_bound  # the largest node's memory capacity: no usage value is above it

    def history(self, target: workload.Workload, chosen: policy.OOMPolicy | None,
                records: Sequence[recommendation.Kill], *, now: datetime.datetime) -> prom_usage.History:
        """Usage of the killed containers over the policy's lookback; never raises."""
        known = [ledger.from_record(r, namespace=target.namespace).kill for r in records]
        lookback = duration.parse(chosen.spec.prometheus.lookback if chosen else policy.PrometheusSettings().lookback)
        query = prom_usage.Query(
            namespace=target.namespace,
            workload_kind=target.kind,
            workload_name=target.name,
            containers=prom_usage.containers_with_kills(known),
            kills=tuple(known),
            lookback=lookback,
            now=now,
            memory_bound=self._memory_bound(),
        )
        try:
            return self.usage.history(query)
        except Exception as exc:  # a bug in the usage layer must not cost the recommendation
            logger.exception("usage history for %s/%s failed", target.namespace, target.name)
            return prom_usage.History(outcome=prom_usage.Outcome.UNAVAILABLE, message=f"usage lookup failed: {exc}")

    def apply(
        self,
        obj: recommendation.OOMRecommendation,
        *,
        target: workload.Workload,
        chosen: policy.OOMPolicy | None,
        mode: types.Mode,
        added: Sequence[ledger.Classified],
        now: datetime.datetime,
        history: prom_usage.History,
    ) -> None:
        """Fill `obj`'s status from its kill ledger, the workload's current memory and `history`."""
        status.recompute(
            obj.status,
            namespace=target.namespace,
            display=target.display,
            containers=target.containers(),
            chosen=chosen,
            mode=mode,
            caps=self._caps.for_workload(target, chosen),
            usage=status.UsageFacts(usage=history.usage, data_source=history.data_source, ok=history.ok,
                                    outcome=history.outcome.value, message=history.message),
            added=added,
            generation=obj.metadata.generation,
            now=now,
        )
