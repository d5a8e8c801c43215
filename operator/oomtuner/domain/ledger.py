"""The kill ledger kept in an OOMRecommendation's status: what was counted, so it is counted once.

Two records live in the status. `kills` holds the newest `recommendation.MAX_KILLS` kills with their
evidence, for readers and for leak detection. `counted` is what makes counting exact: per pod and
container, the newest two kills counted from the pod status (the status never shows more than the
two newest terminations of a container) and, per container instance, the highest value of the node
agent's OOM kill counter counted. Neither depends on how many kills a burst brings or on any clock;
entries of pods that are gone are dropped (`prune`), since a pod that is gone never shows a kill again.
"""

from __future__ import annotations

import dataclasses
import datetime
from dataclasses import dataclass
from typing import Sequence

from oomtuner.api import recommendation, types
from oomtuner.domain import child_kills, classify, kills, quantity, resources, timestamps


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
        request=resources.bytes_or_none(record.requestAtKill),
        limit_at_kill=resources.bytes_or_none(record.limitAtKill),
        qos_class=record.qosClass or types.QOSClass.BURSTABLE,
        oom_score_adj=record.oomScoreAdj,
        pod_memory_limit=None,
    )
    return Classified(kill=kill, classification=record.classification, reason=record.reason)


# The pod status shows at most the two newest terminations of a container: keeping its two newest
# counted kills is enough to tell each kill it shows apart from the ones counted.
KILLS_KEPT = 2
# The node agent's kills: the instances of one container kept (each with its highest counter).
INSTANCES_KEPT = 2


def _suffix(kill: kills.OOMKill) -> str:
    """The identity without its `<pod uid>/<container>/` prefix: finishedAt, or a fallback."""
    return kill.identity[len(f"{kill.pod_uid}/{kill.container}/"):]


def _entry(counted: Sequence[recommendation.Counted], kill: kills.OOMKill) -> recommendation.Counted | None:
    return next((c for c in counted if c.podUID == kill.pod_uid and c.container == kill.container), None)


def _suffix_time(suffix: str) -> datetime.datetime | None:
    try:
        at = datetime.datetime.fromisoformat(suffix)
    except ValueError:
        return None
    return at if at.tzinfo is not None else at.replace(tzinfo=datetime.timezone.utc)


def is_counted(status: recommendation.OOMRecommendationStatus, kill: kills.OOMKill) -> bool:
    """Whether this kill (by identity) was counted already: in the per-container record, or (for a
    recommendation written before that record existed) in the kill records."""
    if any(r.id == kill.identity for r in status.kills):
        return True
    entry = _entry(status.counted, kill)
    if entry is None:
        return False
    if isinstance(kill, child_kills.ChildOOMKill):
        cid = child_kills.bare_container_id(kill.container_id) or ""
        return any(c.containerID == cid and c.counter >= kill.oom_kill_counter for c in entry.childKills)
    return _suffix(kill) in entry.kills


def _near(a: datetime.datetime | None, b: datetime.datetime | None) -> bool:
    return a is not None and b is not None and abs(a - b) <= child_kills.DEFAULT_TOLERANCE


def _counted_as_the_other_source(status: recommendation.OOMRecommendationStatus, kill: kills.OOMKill) -> bool:
    """A kill the node agent reported and the same kill in the pod status (the main process was
    killed, the container restarted) have different identities: match them by pod, container and
    time (`child_kills.same_kill`), against what was counted from the other source."""
    child = isinstance(kill, child_kills.ChildOOMKill)
    for record in status.kills:
        if record.podUID != kill.pod_uid or record.container != kill.container or _is_child(record.id) == child:
            continue
        other = from_record(record, namespace="").kill
        if child_kills.same_kill(kill, other) if child else child_kills.same_kill(other, kill):
            return True
    entry = _entry(status.counted, kill)
    if entry is None:
        return False
    if child:
        return any(_near(kill.at, _suffix_time(suffix)) for suffix in entry.kills)
    cid = child_kills.bare_container_id(kill.container_id)
    return any(_near(kill.at, timestamps.parse(c.at)) and (not cid or c.containerID == cid) for c in entry.childKills)


def unseen(status: recommendation.OOMRecommendationStatus, candidates: Sequence[kills.OOMKill]) -> list[kills.OOMKill]:
    """The candidates the recommendation has not counted yet, oldest first, each once.

    Exact by construction (`status.counted`): no window a burst can overflow, no watermark a node's
    clock can defeat. A recommendation written before that record existed (no `counted`) keeps the
    old rule for its kill records once: a kill strictly older than the oldest of a full ledger was
    counted.
    """
    watermark: datetime.datetime | None = None
    if not status.counted and len(status.kills) >= recommendation.MAX_KILLS:
        times = [t for t in (timestamps.parse(r.at) for r in status.kills) if t is not None]
        watermark = min(times) if times else None
    fresh: dict[str, kills.OOMKill] = {}
    for k in candidates:
        if k.identity in fresh or is_counted(status, k):
            continue
        if watermark is not None and k.at is not None and k.at < watermark:
            continue
        if _counted_as_the_other_source(status, k):
            continue
        fresh[k.identity] = k
    return sorted(fresh.values(), key=lambda k: (k.at or datetime.datetime.min.replace(tzinfo=datetime.timezone.utc), k.identity))


def count(counted: Sequence[recommendation.Counted], added: Sequence[kills.OOMKill]) -> list[recommendation.Counted]:
    """The per-container record with `added` counted (given oldest first). It holds at most
    `recommendation.MAX_COUNTED` pod containers: past that (pods that are gone are pruned first, see
    `prune`), the ones counted longest ago make room — their pods would have to show a kill again,
    with no kill since, to be counted twice."""
    result = [c.model_copy(deep=True) for c in counted]
    for kill in added:
        entry = _entry(result, kill)
        if entry is None:
            entry = recommendation.Counted(podUID=kill.pod_uid, container=kill.container)
            result.append(entry)
        if isinstance(kill, child_kills.ChildOOMKill):
            cid = child_kills.bare_container_id(kill.container_id) or ""
            at = timestamps.format_or_none(kill.at)
            instance = next((c for c in entry.childKills if c.containerID == cid), None)
            if instance is None:
                entry.childKills.append(recommendation.ChildKillsCounted(containerID=cid, counter=kill.oom_kill_counter, at=at))
            elif kill.oom_kill_counter > instance.counter:
                instance.counter, instance.at = kill.oom_kill_counter, at
            entry.childKills = entry.childKills[-INSTANCES_KEPT:]
        else:
            suffix = _suffix(kill)
            if suffix not in entry.kills:
                entry.kills = (entry.kills + [suffix])[-KILLS_KEPT:]
            if kill.instance is not None and (entry.instance is None or kill.instance > entry.instance):
                entry.instance = kill.instance
        result.remove(entry)
        result.append(entry)  # most recently counted last
    return result[-recommendation.MAX_COUNTED:]


def missed(status: recommendation.OOMRecommendationStatus, fresh: Sequence[kills.OOMKill]) -> list[kills.OOMKill]:
    """The kills the pod status no longer shows: the container instances that died between the newest
    one counted and the ones in `fresh` (new pod-status kills), while nobody was looking (the
    operator stopped, a failover). A status shows only the two newest terminations, so their reason
    is gone; between two OOM kills of a container that keeps being OOM-killed they are taken as OOM
    kills too, so the count matches the restarts (README, "How a kill is seen, counted and
    classified"). Each stands for its instance: identity `…/restart-<instance>`, no time, the
    memory of the fresh kill after it. Nothing is inferred for a container counted for the first
    time, or one whose instances the status does not number."""
    inferred: dict[str, kills.OOMKill] = {}
    for kill in fresh:
        entry = _entry(status.counted, kill)
        if isinstance(kill, child_kills.ChildOOMKill) or kill.instance is None or entry is None or entry.instance is None:
            continue
        seen = {k.instance for k in fresh if k.pod_uid == kill.pod_uid and k.container == kill.container}
        for number in range(entry.instance + 1, kill.instance):
            if number in seen:
                continue
            gone = dataclasses.replace(kill, at=None, started_at=None, container_id=None, restart_count=number,
                                       instance=number)
            inferred.setdefault(gone.identity, gone)
    return list(inferred.values())


def prune(counted: Sequence[recommendation.Counted], *, gone: set[str]) -> list[recommendation.Counted]:
    """The record without the pods in `gone` (UIDs of pods that no longer exist: never seen again)."""
    return [c for c in counted if c.podUID not in gone]


def _is_child(identity: str) -> bool:
    return "/child/" in identity


def append(records: Sequence[recommendation.Kill], added: Sequence[Classified], *, capacity: int = recommendation.MAX_KILLS) -> list[recommendation.Kill]:
    """The ledger with `added` appended, newest last, trimmed to `capacity`."""
    merged = list(records) + [to_record(a) for a in added]
    return merged[-capacity:]
