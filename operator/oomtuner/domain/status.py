"""Building an OOMRecommendation's status from its kill ledger, the workload and the usage history.

Pure: the caller reads the workload, the caps and the usage (`services.recompute`) and this module
turns them into the status a reader sees — per container the current and recommended memory with the
arithmetic in words, the workload's phase, the display summaries and the conditions.
"""

from __future__ import annotations

import dataclasses
import datetime
from typing import Mapping, Sequence

from oomtuner.api import policy, recommendation, types
from oomtuner.domain import caps as domain_caps
from oomtuner.domain import held, ledger, quantity, recommend, resources, timestamps


@dataclasses.dataclass(frozen=True)
class UsageFacts:
    """What the usage lookup found, as the status shows it: per container usage (may be empty), the
    `dataSource` text, and the `UsageHistory` condition (ok, reason, message)."""

    usage: Mapping[str, recommend.Usage]
    data_source: str
    ok: bool
    outcome: str
    message: str


def set_condition(status: recommendation.OOMRecommendationStatus, cond: types.Condition) -> None:
    """Put `cond` in place of the condition of its type; the transition time stays while the status
    ('True'/'False') does not change."""
    kept = [c for c in status.conditions if c.type != cond.type]
    old = next((c for c in status.conditions if c.type == cond.type), None)
    if old is not None and old.status == cond.status:
        cond = cond.model_copy(update={"lastTransitionTime": old.lastTransitionTime or cond.lastTransitionTime})
    status.conditions = kept + [cond]


def condition(status: recommendation.OOMRecommendationStatus, type_: str) -> types.Condition | None:
    return next((c for c in status.conditions if c.type == type_), None)


def resources_of(request: int | None, limit: int | None) -> recommendation.Resources:
    return recommendation.Resources(
        request=quantity.format_bytes(request) if request is not None else None,
        limit=quantity.format_bytes(limit) if limit is not None else None,
    )


def summary(containers: Sequence[recommendation.ContainerStatus], *, recommended: bool) -> str:
    """`192Mi/384Mi` for one container, `app=…,sidecar=…` for several; `-` where a value is unset."""
    parts = []
    for c in containers:
        res = c.recommended if recommended else c.current
        values = (resources.bytes_of(res.model_dump(), "request"), resources.bytes_of(res.model_dump(), "limit"))
        shown = "/".join(quantity.humanize(v) if v is not None else "-" for v in values)
        parts.append(f"{c.name}={shown}" if len(containers) > 1 else shown)
    return ",".join(parts)


def applied_for(status: recommendation.OOMRecommendationStatus, name: str) -> recommendation.Applied | None:
    return next((a for a in status.applied if a.name == name), None)


def in_force(status: recommendation.OOMRecommendationStatus, name: str) -> recommend.ContainerResources | None:
    """What the operator applied last to container `name`, as ContainerResources; None when nothing."""
    found = applied_for(status, name)
    if found is None:
        return None
    return recommend.ContainerResources(
        name=name, type=types.ContainerType.CONTAINER,
        request=resources.bytes_of(found.applied.model_dump(), "request"),
        limit=resources.bytes_of(found.applied.model_dump(), "limit"),
    )


def forget_overridden(status: recommendation.OOMRecommendationStatus,
                      containers: Sequence[recommend.ContainerResources]) -> list[str]:
    """Drop what the operator applied to a container whose template now has less: somebody changed
    it since, and their value is the one in force. Returns the containers concerned."""
    now = {c.name: c for c in containers}
    dropped = []
    for entry in list(status.applied):
        have = now.get(entry.name)
        force = in_force(status, entry.name)
        if have is None or force is None:
            continue
        lower = any(mine is not None and (theirs is None or theirs < mine)
                    for mine, theirs in ((force.limit, have.limit), (force.request, have.request)))
        if lower:
            entry.applied = recommendation.Resources()
            dropped.append(entry.name)
    return dropped


CHANGES_KEPT = 20


def record_applied(status: recommendation.OOMRecommendationStatus, *, before: Sequence[recommend.ContainerResources],
                   stamp: str, trigger: str) -> None:
    """After a patch: each container's recommended memory is what the operator applied (a raise, or
    a settle of an earlier raise); what the template had before the operator first changed it is kept
    as `original`, and each change joins the ledger of changes (`status.changes`)."""
    had = {c.name: c for c in before}
    for c in status.containers:
        old = had.get(c.name)
        entry = applied_for(status, c.name)
        if entry is None:
            entry = recommendation.Applied(name=c.name, original=resources_of(old.request, old.limit) if old else recommendation.Resources())
            status.applied.append(entry)
        was = resources_of(old.request, old.limit) if old else recommendation.Resources()
        if was != c.recommended:
            status.changes.append(recommendation.Change(at=stamp, container=c.name, kind="Settle" if c.settled else "Raise",
                                                        before=was, after=c.recommended.model_copy(), trigger=trigger))
        entry.applied = c.recommended.model_copy()
        entry.at = stamp
        if c.settled:
            entry.settledAt = stamp
        elif was != c.recommended:
            entry.raisedAt = stamp
        c.settled = False
    status.changes = status.changes[-CHANGES_KEPT:]


def recompute(
    status: recommendation.OOMRecommendationStatus,
    *,
    namespace: str,
    display: str,
    containers: Sequence[recommend.ContainerResources],
    chosen: policy.OOMPolicy | None,
    mode: types.Mode,
    caps: domain_caps.Caps,
    usage: UsageFacts,
    added: Sequence[ledger.Classified],
    generation: int | None,
    now: datetime.datetime,
) -> None:
    """Fill `status` from its kill ledger (`status.kills`), the workload's containers as they are now
    (`containers`), what the operator applied (`status.applied`), the caps and the usage. `added` are
    the kills this write records: they raise the per-container kill counts, and those below the
    memory in force are marked stale. In Observe mode nothing is recommended: the phase is
    Observed and each container's reason explains its kills. In Auto mode a recommendation that
    raises memory is marked to be applied (condition Applied, reason Pending) in the same write, so a
    restart finds it."""
    history = [ledger.from_record(r, namespace=namespace) for r in status.kills]
    recommended_before = status.recommended
    _mark_stale(status, containers=containers, added=added)
    results, statuses = _containers(status, history=history, containers=containers, chosen=chosen, mode=mode,
                                    caps=caps, usage=usage, added=added)
    status.containers = statuses
    status.totalKills = sum(c.oomKills for c in statuses)
    status.target = display
    status.current = summary(statuses, recommended=False)
    status.recommended = None if mode == types.Mode.OBSERVE else summary(statuses, recommended=True)
    status.policy = chosen.metadata.name if chosen else None
    status.mode = mode
    status.dataSource = usage.data_source
    status.observedGeneration = generation
    status.phase = _phase(status, results, mode=mode)
    stamp = timestamps.format(now)
    set_condition(status, types.Condition(
        type="Ready", status="True", reason="Computed",
        message=f"computed from {len(history)} recorded kill(s) "
        + (f"and usage history ({status.dataSource})" if usage.usage else "without usage history"),
        lastTransitionTime=stamp,
    ))
    set_condition(status, types.Condition(
        type="UsageHistory", status="True" if usage.ok else "False", reason=usage.outcome, message=usage.message,
        lastTransitionTime=stamp,
    ))
    if mode == types.Mode.AUTO:
        _mark_owed(status, results, recommended_before=recommended_before, stamp=stamp)


def _containers(
    status: recommendation.OOMRecommendationStatus,
    *,
    history: Sequence[ledger.Classified],
    containers: Sequence[recommend.ContainerResources],
    chosen: policy.OOMPolicy | None,
    mode: types.Mode,
    caps: domain_caps.Caps,
    usage: UsageFacts,
    added: Sequence[ledger.Classified],
) -> tuple[list[recommend.ContainerRecommendation], list[recommendation.ContainerStatus]]:
    """Each container with kills (or an earlier status): its recommendation and its status entry."""
    settings = chosen.spec.memory if chosen else policy.MemorySettings()
    previous = {c.name: c for c in status.containers}
    observe = mode == types.Mode.OBSERVE
    results: list[recommend.ContainerRecommendation] = []
    statuses: list[recommendation.ContainerStatus] = []
    for current in containers:
        mine = [h for h in history if h.kill.container == current.name]
        if not mine and current.name not in previous:
            continue
        result = recommend.recommend_container(
            current=current,
            kills=[h.kill for h in mine],
            classifications=[h.classification for h in mine],
            settings=settings,
            caps=caps,
            usage=usage.usage.get(current.name),
            in_force=in_force(status, current.name),
        )
        results.append(result)
        before = previous.get(current.name)
        last = max((h.kill.at for h in mine if h.kill.at is not None), default=None)
        statuses.append(recommendation.ContainerStatus(
            name=current.name,
            type=current.type,
            current=resources_of(current.request, current.limit),
            recommended=recommendation.Resources() if observe else resources_of(result.request, result.limit),
            classification=result.classification,
            phase=types.Phase.OBSERVED if observe else result.phase,
            oomKills=(before.oomKills if before else 0) + sum(1 for a in added if a.kill.container == current.name),
            lastOOMAt=timestamps.format(last) if last else (before.lastOOMAt if before else None),
            reason=_observed(result.reason) if observe else result.reason,
            cappedBy=None if observe else result.capped_by,
        ))
    return results, statuses


def _mark_owed(status: recommendation.OOMRecommendationStatus, results: Sequence[recommend.ContainerRecommendation],
               *, recommended_before: str | None, stamp: str) -> None:
    """An Auto-mode recommendation that raises memory owes a patch: say so (`Applied`, reason
    Pending) in the same write, unless the cooldown already holds it back, or it was refused for
    good and has not changed since."""
    if status.phase not in (types.Phase.PENDING, types.Phase.CAPPED) or not any(recommend.needs_change(r) for r in results):
        return
    applied = condition(status, "Applied")
    changed = status.recommended != recommended_before
    if applied is None or (changed and applied.reason != held.COOLDOWN_ACTIVE):
        set_condition(status, types.Condition(
            type="Applied", status="False", reason=held.PENDING,
            message=f"{status.current} → {status.recommended} is to be applied", lastTransitionTime=stamp))
        status.attempts, status.nextAttemptAt = None, None


def _phase(status: recommendation.OOMRecommendationStatus, results: Sequence[recommend.ContainerRecommendation],
           *, mode: types.Mode) -> types.Phase:
    if mode == types.Mode.OBSERVE:
        return types.Phase.OBSERVED
    phase = recommend.overall_phase(results) if results else types.Phase.PENDING
    if phase == types.Phase.PENDING and not any(recommend.needs_change(r) for r in results) and status.appliedAt:
        return types.Phase.APPLIED
    return phase


def _observed(reason: str) -> str:
    return f"{reason} (mode Observe: recorded, nothing recommended)"


def _mark_stale(status: recommendation.OOMRecommendationStatus, *, containers: Sequence[recommend.ContainerResources],
                added: Sequence[ledger.Classified]) -> None:
    """Mark the records of `added` kills that came below the memory in force (`recommend.stale_reason`)."""
    ids = {a.kill.identity: a for a in added}
    current = {c.name: c for c in containers}
    for record in status.kills:
        item = ids.get(record.id)
        have = current.get(record.container)
        if item is None or have is None:
            continue
        floor = recommend.memory_in_force(have, in_force(status, record.container))
        why = recommend.stale_reason(item.kill, item.classification, in_force=floor)
        if why is not None:
            record.stale = True
            record.reason = f"{record.reason}; {why}" if record.reason else why
