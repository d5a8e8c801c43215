"""When an Auto-mode patch held back by the cooldown is due, judged from a recommendation's status.

A recommendation that arrives inside its workload's cooldown is not patched at once: its `Applied`
condition says `CooldownActive` and the patch goes out when the cooldown ends. The operator keeps
that schedule in memory, so after a restart (or a change of the active replica) it is rebuilt from
the status of every recommendation the watch lists. Nothing here reads the clock: `now` is passed.
"""

from __future__ import annotations

import datetime
from typing import Sequence

from oomtuner.api import recommendation, types
from oomtuner.domain import recommend, resources, timestamps

COOLDOWN_ACTIVE = "CooldownActive"
# `Applied` reasons after which a recommendation raised inside the cooldown still waits for its patch
# (a patch went out, or none was needed); after the others (Ignored, NotPatchable, Rejected,
# Conflict, TargetMissing) nothing is retried until the next kill or approval.
_AFTER_A_PATCH = frozenset({"Patched", "UpToDate"})
_WAITING_PHASES = frozenset({types.Phase.PENDING, types.Phase.CAPPED})


def raises_memory(containers: Sequence[recommendation.ContainerStatus]) -> bool:
    """Whether any container's recommended request or limit is above its current one.

    Resources are never lowered, so only a higher value counts; an unreadable one counts as no change.
    """
    for c in containers:
        recommended, current = c.recommended.model_dump(), c.current.model_dump()
        for field in ("request", "limit"):
            wanted = resources.bytes_of(recommended, field)
            if wanted is None:
                continue
            have = resources.bytes_of(current, field)
            if (have is None and current[field] is None) or (have is not None and have < wanted):
                return True
    return False


def due_at(
    status: recommendation.OOMRecommendationStatus,
    *,
    cooldown: datetime.timedelta | None,
    now: datetime.datetime,
) -> datetime.datetime | None:
    """When the patch this status holds back is due (`now` when its cooldown is over), or None when
    none is held back.

    One is held back when the phase is Pending or Capped, some container's recommended memory is
    above its current one, and either the `Applied` condition says `CooldownActive`, or the last
    patch (`appliedAt`) is less than `cooldown` ago and was followed by a newer recommendation.
    It is due at `appliedAt + cooldown` (never more than one cooldown from now, whatever the clocks
    say). `cooldown` None means it is not known yet (the policy has not been read): a
    `CooldownActive` recommendation is then due at once, for whoever applies it to judge the
    cooldown again.
    """
    if status.phase not in _WAITING_PHASES or not raises_memory(status.containers):
        return None
    applied = next((c for c in status.conditions if c.type == "Applied"), None)
    reason = applied.reason if applied is not None else None
    if reason != COOLDOWN_ACTIVE and reason not in _AFTER_A_PATCH:
        return None
    last = timestamps.parse(status.appliedAt)
    if cooldown is None:
        return now if reason == COOLDOWN_ACTIVE else None
    remaining = recommend.cooldown_remaining(last_applied=last, cooldown=cooldown, now=now)
    if reason != COOLDOWN_ACTIVE and remaining <= datetime.timedelta(0):
        return None
    return now + remaining
