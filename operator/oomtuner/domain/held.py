"""When an Auto-mode patch that has not gone out yet is due, judged from a recommendation's status.

The status is the record of what is owed, so nothing is lost to a crash or a restart: the write that
records a kill and raises the recommendation also marks it to be applied (condition `Applied`,
reason `Pending`), and each attempt leaves its outcome there:

| reason | meaning | due |
| --- | --- | --- |
| `Pending` | to be applied | at once, or when the cooldown of the last patch ends |
| `CooldownActive` | held back by the cooldown | when it ends (`appliedAt` + cooldown) |
| `Retrying` | the last attempt failed for a passing reason (429, 5xx, timeout, unreachable) | `nextAttemptAt` |
| `Patched`, `UpToDate` | applied | — (unless a newer recommendation came inside the cooldown) |
| `Rejected`, `Conflict`, `Ignored`, `NotPatchable`, `TargetMissing`, `NotAdopted` | refused for good | — until the recommendation changes |

The operator keeps a schedule in memory and rebuilds it from the status of every recommendation it
lists at start-up. Nothing here reads the clock: `now` is passed.
"""

from __future__ import annotations

import datetime
from typing import Sequence

from oomtuner.api import recommendation, types
from oomtuner.domain import recommend, resources, timestamps

PENDING = "Pending"
COOLDOWN_ACTIVE = "CooldownActive"
RETRYING = "Retrying"
# `Applied` reasons after which a recommendation raised inside the cooldown still waits for its patch
# (a patch went out, or none was needed).
_AFTER_A_PATCH = frozenset({"Patched", "UpToDate"})
_WAITING_PHASES = frozenset({types.Phase.PENDING, types.Phase.CAPPED})
# Passing failures are tried again after 1s, 2s, 4s … at most RETRY_CAP apart.
RETRY_FIRST = datetime.timedelta(seconds=1)
RETRY_CAP = datetime.timedelta(minutes=5)


def retry_after(attempts: int) -> datetime.timedelta:
    """The wait before attempt `attempts + 1`, after `attempts` passing failures (≥ 1)."""
    doublings: int = min(max(attempts - 1, 0), 16)
    return min(RETRY_FIRST * (1 << doublings), RETRY_CAP)


def raises_memory(containers: Sequence[recommendation.ContainerStatus]) -> bool:
    """Whether any container's recommended request or limit is one to apply: above its current one,
    or, where the recommendation settles a raise of the operator's own (`settled`), different from it.
    An unreadable value counts as no change.
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
            if c.settled and have is not None and have != wanted:
                return True
    return False


def due_at(
    status: recommendation.OOMRecommendationStatus,
    *,
    cooldown: datetime.timedelta | None,
    now: datetime.datetime,
) -> datetime.datetime | None:
    """When the patch this status still owes is due (`now` when it is), or None when it owes none.

    One is owed when the phase is Pending or Capped, some container's recommended memory is above
    its current one, and the `Applied` condition says so (see the table above). Due times are never
    more than one cooldown (or one RETRY_CAP) from now, whatever the clocks say. `cooldown` None
    means it is not known yet (the policy has not been read): the patch is then due at once, for
    whoever applies it to judge the cooldown again.
    """
    if status.phase not in _WAITING_PHASES or not raises_memory(status.containers):
        return None
    applied = next((c for c in status.conditions if c.type == "Applied"), None)
    reason = applied.reason if applied is not None else PENDING
    if reason == RETRYING:
        at = timestamps.parse(status.nextAttemptAt)
        return now if at is None else max(now, min(at, now + RETRY_CAP))
    if reason not in (PENDING, COOLDOWN_ACTIVE) and reason not in _AFTER_A_PATCH:
        return None
    if cooldown is None:
        return now if reason in (PENDING, COOLDOWN_ACTIVE) else None
    remaining = recommend.cooldown_remaining(last_applied=timestamps.parse(status.appliedAt), cooldown=cooldown, now=now)
    if reason in _AFTER_A_PATCH and remaining <= datetime.timedelta(0):
        return None
    return now + remaining
