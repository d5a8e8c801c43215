"""Announcer: what the operator tells people — Events on workloads and recommendations, and metrics.

Events go out from the poster's own threads (`kube.events.Poster`), never on a workload's lock, best
effort. Metrics count each kill once (the caller announces a kill only after it recorded it), the
recommendations by phase as this replica last wrote them, each recommendation's memory as the watch
last showed it (gone with the recommendation), and the detection latency.
"""

from __future__ import annotations

import datetime
import logging
import threading
from typing import Any, Callable, Mapping, Sequence

from oomtuner.api import recommendation, types
from oomtuner.domain import classify, ledger, quantity, timestamps, workload
from oomtuner.kube import api, events
from oomtuner.prom import metrics

logger = logging.getLogger(__name__)


def involved_workload(target: workload.Workload) -> dict[str, Any]:
    return {"apiVersion": target.api_version, "kind": target.kind, "name": target.name,
            "namespace": target.namespace, "uid": target.uid}


def involved_recommendation(rec: recommendation.OOMRecommendation) -> dict[str, Any]:
    return {"apiVersion": f"{recommendation.GROUP}/{recommendation.VERSION}", "kind": recommendation.KIND,
            "name": rec.metadata.name, "namespace": rec.metadata.namespace, "uid": rec.metadata.uid}


def kill_message(item: ledger.Classified) -> str:
    k = item.kill
    limit = quantity.humanize(k.limit_at_kill) if k.limit_at_kill is not None else "none"
    adj = "unknown" if k.oom_score_adj is None else str(k.oom_score_adj)
    return (
        f"{k.container_type.value} {k.container} of pod {k.pod} was OOM-killed"
        f"{' at ' + timestamps.format(k.at) if k.at else ''} on node {k.node or 'unknown'}: {item.classification.value}"
        f" ({item.reason}); memory limit {limit}, QoS {k.qos_class.value}, oom_score_adj {adj}"
    )


class Announcer:
    def __init__(self, client: api.Client, *, clock: Callable[[], datetime.datetime]):
        self.poster = events.Poster(client)
        self._clock = clock
        self._phases: dict[str, types.Phase] = {}
        self._lock = threading.Lock()
        self._memory = metrics.RecommendationSeries()

    def post(self, *, involved: dict[str, Any], reason: events.Reason, message: str) -> None:
        self.poster.submit(events.build(involved=involved, reason=reason, message=message, now=self._clock()))

    def flush(self, timeout: float) -> bool:
        return self.poster.flush(timeout)

    def kills(self, target: workload.Workload, items: Sequence[ledger.Classified],
              culprits: Mapping[str, classify.CulpritFinding] | None = None) -> None:
        """Count, log and post the kills: one event per container and class, naming every kill
        (a burst of a hundred replicas makes one event with the count, as the kubelet's recorder
        aggregates its own), and the likely culprits of Node kills when `culprits` (by kill identity)
        has them."""
        groups: dict[tuple[str, types.Classification], list[ledger.Classified]] = {}
        for item in items:
            metrics.OOM_KILLS.labels(
                namespace=target.namespace, workload=target.display, container=item.kill.container,
                classification=item.classification.value,
            ).inc()
            groups.setdefault((item.kill.container, item.classification), []).append(item)
        for group in groups.values():
            messages = [kill_message(item) for item in group]
            for message in messages:
                logger.info("%s %s/%s: %s", target.kind, target.namespace, target.name, message)
            if len(messages) == 1:
                text = messages[0]
            else:
                shown = "; ".join(messages[:3])
                more = f"; and {len(messages) - 3} more" if len(messages) > 3 else ""
                text = f"{len(messages)} OOM kills: {shown}{more}"
            found = (culprits or {}).get
            notes = list(dict.fromkeys(f.reason for f in (found(item.kill.identity) for item in group) if f is not None))
            if notes:
                logger.info("%s %s/%s: %s", target.kind, target.namespace, target.name, "; ".join(notes))
                text = f"{text}; {'; '.join(notes)}"
            self.post(involved=involved_workload(target), reason=events.Reason.OOM_KILL_DETECTED, message=text)

    def detected(self, items: Sequence[ledger.Classified]) -> None:
        """The detection latency of kills just recorded, from their finishedAt."""
        now = self._clock()
        for item in items:
            if item.kill.at is not None:
                metrics.DETECTION_LATENCY.observe(max(0.0, (now - item.kill.at).total_seconds()))

    def updated(self, rec: recommendation.OOMRecommendation, *, target: workload.Workload,
                       before: types.Phase | None) -> None:
        """`RecommendationUpdated` on the recommendation, and `RecommendationCapped`/`SuspectedLeak`
        on both when the phase turned to one of them."""
        status = rec.status
        self.phase(rec)
        involved = involved_recommendation(rec)
        text = "; ".join(f"{c.name}: {c.reason}" for c in status.containers)
        message = f"{status.target}: {status.current} → {status.recommended} ({text})"
        self.post(involved=involved, reason=events.Reason.RECOMMENDATION_UPDATED, message=message)
        if status.phase != before and status.phase in (types.Phase.CAPPED, types.Phase.SUSPECTED_LEAK):
            reason = events.Reason.RECOMMENDATION_CAPPED if status.phase == types.Phase.CAPPED else events.Reason.SUSPECTED_LEAK
            detail = "; ".join(f"{c.name}: {c.reason}" for c in status.containers if c.phase == status.phase)
            for obj in (involved, involved_workload(target)):
                self.post(involved=obj, reason=reason, message=detail or message)

    def phase(self, rec: recommendation.OOMRecommendation) -> None:
        """Count the recommendation under its phase in `oomtuner_recommendations`."""
        key = f"{rec.metadata.namespace}/{rec.metadata.name}"
        phase = rec.status.phase
        with self._lock:
            old = self._phases.get(key)
            if old is not None:
                metrics.RECOMMENDATIONS.labels(phase=old.value).dec()
            if phase is not None:
                self._phases[key] = phase
                metrics.RECOMMENDATIONS.labels(phase=phase.value).inc()

    def memory(self, rec: recommendation.OOMRecommendation) -> None:
        """Show the recommendation's memory in `oomtuner_recommendation_memory_bytes`, as its status has it."""
        self._memory.show(f"{rec.metadata.namespace}/{rec.metadata.name}", metrics.recommendation_memory(rec))

    def gone(self, namespace: str, name: str) -> None:
        """A recommendation was deleted: its memory series go, and it leaves its phase's count."""
        key = f"{namespace}/{name}"
        self._memory.forget(key)
        with self._lock:
            old = self._phases.pop(key, None)
            if old is not None:
                metrics.RECOMMENDATIONS.labels(phase=old.value).dec()
