"""The kill ledger kept in an OOMRecommendation's status: what was counted, so it is counted once.

A kill's identity (`kills.OOMKill.identity`) is stored with it. The ledger keeps the newest
`recommendation.MAX_KILLS`; a kill older than the oldest kept one, when the ledger is full, is taken
as already counted, so an operator restart that replays old pod statuses cannot count it again.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from typing import Sequence

from oomtuner.api import recommendation, types
from oomtuner.domain import child_kills, classify, kills, quantity, timestamps


@dataclass(frozen=True)
class Classified:
    kill: kills.OOMKill
    classification: types.Classification
    reason: str


def to_record(item: Classified) -> recommendation.Kill:
    k = item.kill
    return recommendation.Kill(
        id=k.identity,
        pod=k.pod,
        podUID=k.pod_uid,
        container=k.container,
        containerType=k.container_type,
        node=k.node,
        at=timestamps.format_or_none(k.at),
        startedAt=timestamps.format_or_none(k.started_at),
        restartCount=k.restart_count,
        limitAtKill=quantity.format_bytes(k.limit_at_kill) if k.limit_at_kill is not None else None,
        requestAtKill=quantity.format_bytes(k.request) if k.request is not None else None,
        qosClass=k.qos_class,
        oomScoreAdj=k.oom_score_adj,
        classification=item.classification,
        reason=item.reason,
    )


def culprit_record(finding: classify.CulpritFinding) -> recommendation.Culprit:
    """A culprit finding as the kill record's `culprit` (only `reason` when nobody is named)."""
    found = finding.culprit
    if found is None:
        return recommendation.Culprit(reason=finding.reason)
    return recommendation.Culprit(
        namespace=found.namespace,
        pod=found.pod,
        container=found.container,
        usage=quantity.format_bytes(found.usage_bytes),
        request=quantity.format_bytes(found.request_bytes) if found.request_bytes is not None else None,
        reason=finding.reason,
    )


def _bytes(text: str | None) -> int | None:
    if text is None:
        return None
    try:
        return quantity.parse_bytes(text)
    except quantity.QuantityError:
        return None


def from_record(record: recommendation.Kill, *, namespace: str) -> Classified:
    """Rebuild the domain kill from its stored record (for leak detection over the history)."""
    kill = kills.OOMKill(
        namespace=namespace,
        pod=record.pod,
        pod_uid=record.podUID or "",
        container=record.container,
        container_type=record.containerType,
        node=record.node,
        at=timestamps.parse(record.at),
        started_at=timestamps.parse(record.startedAt),
        restart_count=record.restartCount,
        exit_code=137,
        container_id=None,
        request=_bytes(record.requestAtKill),
        limit_at_kill=_bytes(record.limitAtKill),
        qos_class=record.qosClass or types.QOSClass.BURSTABLE,
        oom_score_adj=record.oomScoreAdj,
        pod_memory_limit=None,
    )
    return Classified(kill=kill, classification=record.classification, reason=record.reason)


def unseen(records: Sequence[recommendation.Kill], candidates: Sequence[kills.OOMKill], *, capacity: int = recommendation.MAX_KILLS) -> list[kills.OOMKill]:
    """The candidates the ledger has not counted yet, oldest first, each once."""
    known = {r.id for r in records}
    watermark: datetime.datetime | None = None
    if len(records) >= capacity:
        times = [t for t in (timestamps.parse(r.at) for r in records) if t is not None]
        watermark = min(times) if times else None
    # A kill the node agent reported and the same kill in the pod status (the container did restart)
    # have different identities: match them by pod, container and time (child_kills.same_kill).
    children = [from_record(r, namespace="").kill for r in records if _is_child(r.id)]
    statuses = [from_record(r, namespace="").kill for r in records if not _is_child(r.id)]
    fresh: dict[str, kills.OOMKill] = {}
    for k in candidates:
        if k.identity in known or k.identity in fresh:
            continue
        # Strictly older than everything kept: it fell out of the ledger, it was counted. (A kill in
        # the same second as the oldest kept one is counted as new: finishedAt has second precision,
        # and a burst of kills of one workload shares its seconds.)
        if watermark is not None and k.at is not None and k.at < watermark:
            continue
        if _is_child(k.identity):
            if any(child_kills.same_kill(k, s) for s in statuses):
                continue
        elif any(child_kills.same_kill(c, k) for c in children):
            continue
        fresh[k.identity] = k
    return sorted(fresh.values(), key=lambda k: (k.at or datetime.datetime.min.replace(tzinfo=datetime.timezone.utc), k.identity))


def _is_child(identity: str) -> bool:
    return "/child/" in identity


def append(records: Sequence[recommendation.Kill], added: Sequence[Classified], *, capacity: int = recommendation.MAX_KILLS) -> list[recommendation.Kill]:
    """The ledger with `added` appended, newest last, trimmed to `capacity`."""
    merged = list(records) + [to_record(a) for a in added]
    return merged[-capacity:]
