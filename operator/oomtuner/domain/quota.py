"""ResourceQuota headroom: how much more memory a namespace's quotas leave each pod of a workload.

A ResourceQuota is charged when a pod is created, not when its workload's template changes: a patch
that raises a Deployment's memory passes the server-side dry run, then the ReplicaSet cannot create
the new pods ("exceeded quota") and the rollout stalls. So the recommendation stays within the room
the quotas leave, and says so with phase Capped when it had to (README, "How a recommendation is computed").
`headroom` reads the quota objects; `limit_headroom` turns its answer into
`caps.Caps.quota_headroom`, which bounds how much a container's limit may grow.

The rules follow how the quota admission plugin and the resourcequota controller charge pods
(pkg/quota/v1/evaluator/core/pods.go):

- Resources: `limits.memory` bounds the sum of the pods' memory limits; `requests.memory` and
  `memory` (two names for the same thing) the sum of their requests. Other resources do not matter.
- The room one quota leaves for one resource is max(hard − used, 0), shared evenly by the
  workload's pods (each of them grows by the same amount) and rounded down to a MiB. hard is the
  smaller of spec.hard and status.hard (admission checks status.hard; a lowered spec.hard counts as
  soon as it is written), used is status.used. Used above hard leaves no room: 0, never negative.
- Of all quotas that apply, the one with the least room wins.
- Scopes (`spec.scopes` and `spec.scopeSelector`; all of them must match): a quota applies unless a
  scope proves that the workload's pods are not charged to it. This is the conservative side: a quota
  counted in error gives a tighter cap, a quota missed gives a rollout the API server refuses.
  - Terminating / NotTerminating: from the template's `activeDeadlineSeconds` (set and ≥ 0 is
    Terminating).
  - BestEffort never applies: a recommended pod has a memory request or limit, and the API server
    lets a BestEffort quota count nothing but pods. NotBestEffort always applies.
  - PriorityClass (In, NotIn, Exists, DoesNotExist): from the template's `priorityClassName`. A
    template without one may still get the cluster's default class when its pods are admitted, so it
    matches every selector — unless `admitted` says the template is a pod as the API server stored
    it, whose class (or none) is final.
  - CrossNamespacePodAffinity, scopes this module does not know, and operators the API server would
    not accept for a scope: the quota applies.
- A quota that cannot be used is skipped and reported in `Headroom.skipped`, one line naming the
  object and the field: a body that cannot be read, a quantity that does not parse (e.g. `12Qi`),
  or a status the resourcequota controller has not synced yet (no `status.used` for the resource;
  until it is synced the quota admission refuses new pods anyway).

What is left out:
- A rolling update that surges (a Deployment's maxSurge) runs old and new pods side by side for a
  while; the room here is the one the workload's pods have after the rollout.
- Containers of one workload that are all raised share the room; each is capped by all of it.
- Requests that rise on their own rather than with the limit (a Node kill's request bump, requestPolicy
  FromUsage) are not bounded by `requests.memory` quotas; see `limit_headroom`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from oomtuner.api import core, types
from oomtuner.domain import quantity, recommend

LIMITS_MEMORY = "limits.memory"
REQUESTS_MEMORY = "requests.memory"
# resource name in a quota → what it bounds
MEMORY_RESOURCES = {LIMITS_MEMORY: "limits", REQUESTS_MEMORY: "requests", core.MEMORY: "requests"}

TERMINATING = "Terminating"
NOT_TERMINATING = "NotTerminating"
BEST_EFFORT = "BestEffort"
PRIORITY_CLASS = "PriorityClass"
EXISTS = "Exists"


@dataclasses.dataclass(frozen=True)
class Room:
    """The room one quota leaves each pod for one resource, with the numbers that gave it."""

    quota: str  # namespace/name
    resource: str  # limits.memory, requests.memory or memory
    hard: int
    used: int
    pods: int
    per_pod: int  # max(hard − used, 0) // pods, rounded down to a MiB

    def __str__(self) -> str:
        h = quantity.humanize
        return (f"ResourceQuota {self.quota} {self.resource}: hard {h(self.hard)} − used {h(self.used)} "
                f"over {self.pods} pod(s) = {h(self.per_pod)} per pod")


@dataclasses.dataclass(frozen=True)
class Headroom:
    """The least room the applicable quotas leave each pod; None where no quota bounds it."""

    limits: Room | None = None
    requests: Room | None = None
    skipped: tuple[str, ...] = ()


def _floor_mib(n: int) -> int:
    return n // quantity.MIB * quantity.MIB


def _scope_matches(
    requirement: core.ScopedResourceSelectorRequirement, *, template: core.Pod, admitted: bool
) -> bool:
    """Whether pods of `template` may be charged to a quota with this scope requirement."""
    scope, operator = requirement.scopeName, requirement.operator
    if scope == PRIORITY_CLASS:
        name = template.spec.priorityClassName or None
        if name is None and not admitted:
            return True  # the cluster's default class may be given at admission
        if operator == "In":
            return name is not None and name in requirement.values
        if operator == "NotIn":
            return name is None or name not in requirement.values
        if operator == EXISTS:
            return name is not None
        if operator == "DoesNotExist":
            return name is None
        return True
    if operator != EXISTS:
        return True
    deadline = template.spec.activeDeadlineSeconds
    terminating = deadline is not None and deadline >= 0
    if scope == TERMINATING:
        return terminating
    if scope == NOT_TERMINATING:
        return not terminating
    if scope == BEST_EFFORT:
        return False
    return True  # NotBestEffort, CrossNamespacePodAffinity, and scopes not known here


def applies(quota: core.ResourceQuota, *, template: core.Pod, admitted: bool = False) -> bool:
    """Whether pods made from `template` may be charged to `quota` (see the module's scope rules)."""
    requirements = [core.ScopedResourceSelectorRequirement(scopeName=s, operator=EXISTS) for s in quota.spec.scopes]
    if quota.spec.scopeSelector is not None:
        requirements.extend(quota.spec.scopeSelector.matchExpressions)
    return all(_scope_matches(r, template=template, admitted=admitted) for r in requirements)


def _rooms(quota: core.ResourceQuota, *, pods: int) -> tuple[list[Room], str | None]:
    """The rooms one quota leaves, or why it cannot be used (then no rooms)."""
    name = f"{quota.metadata.namespace}/{quota.metadata.name}" if quota.metadata.namespace else quota.metadata.name
    status_hard, used = quota.status.hard or {}, quota.status.used or {}
    rooms: list[Room] = []
    for resource in MEMORY_RESOURCES:
        hard_fields = {f"spec.hard.{resource}": quota.spec.hard.get(resource),
                       f"status.hard.{resource}": status_hard.get(resource)}
        if all(text is None for text in hard_fields.values()):
            continue
        if used.get(resource) is None:
            return [], (f"ResourceQuota {name}: status.used.{resource} is not reported yet (the resourcequota "
                        "controller has not synced the quota); no cap from it")
        parsed: dict[str, int] = {}
        for field, text in {**hard_fields, f"status.used.{resource}": used[resource]}.items():
            if text is None:
                continue
            try:
                parsed[field] = quantity.parse_bytes(text)
            except quantity.QuantityError as exc:
                return [], f"ResourceQuota {name}: {field}: {exc}; no cap from it"
        used_bytes = parsed.pop(f"status.used.{resource}")
        hard = min(parsed.values())
        per_pod = _floor_mib(max(hard - used_bytes, 0) // pods)
        rooms.append(Room(quota=name, resource=resource, hard=hard, used=used_bytes, pods=pods, per_pod=per_pod))
    return rooms, None


def headroom(
    bodies: Iterable[Mapping[str, Any]], *, pods: int, template: core.Pod, admitted: bool = False
) -> Headroom:
    """The least room the namespace's ResourceQuotas leave each of the workload's `pods` pods.

    `bodies` are ResourceQuota objects as the API server returns them; `template` is the workload's
    pod template (the pod itself for a bare pod, with `admitted=True`). `pods` below 1 counts as 1.
    Never raises: a quota that cannot be used is skipped and named in `skipped`. Quotas without
    memory resources, and quotas whose scopes exclude the pods, count for nothing.
    """
    pods = max(pods, 1)
    least: dict[str, Room] = {}
    skipped: list[str] = []
    for body in bodies:
        try:
            quota = core.parse_resource_quota(body)
        except core.InvalidObject as exc:
            skipped.append(f"{exc}; no cap from it")
            continue
        if not applies(quota, template=template, admitted=admitted):
            continue
        rooms, problem = _rooms(quota, pods=pods)
        if problem is not None:
            skipped.append(problem)
        for room in rooms:
            bound = MEMORY_RESOURCES[room.resource]
            if bound not in least or room.per_pod < least[bound].per_pod:
                least[bound] = room
    return Headroom(limits=least.get("limits"), requests=least.get("requests"), skipped=tuple(skipped))


def _limit_growth_within_request_room(
    container: recommend.ContainerResources, *, request_room: int, request_policy: types.RequestPolicy
) -> int | None:
    """How far this container's limit may grow before the request that follows it outgrows
    `request_room`; None when its request does not follow the limit."""
    limit, request = container.limit, container.request
    if limit is None:
        return None
    if request is None:
        # The API server gives a container with a limit and no request a request equal to the limit.
        return request_room
    if request_policy == types.RequestPolicy.KEEP_RATIO:
        return None if request == 0 else _floor_mib(request_room * limit // request)
    if request_policy == types.RequestPolicy.EQUALS_LIMIT:
        return _floor_mib(max(request_room - max(limit - request, 0), 0))
    return None  # Unchanged keeps the request; FromUsage takes it from usage, not from the limit


def limit_headroom(
    room: Headroom, *, containers: Sequence[recommend.ContainerResources], request_policy: types.RequestPolicy
) -> int | None:
    """How much each container's memory limit may grow: `caps.Caps.quota_headroom`.

    The `limits.memory` room bounds it directly. The `requests.memory` room bounds it through the
    request where the request follows the limit (a raised limit of a Limit kill): KeepRatio raises the
    request by request/limit of the limit's growth, EqualsLimit by the limit's growth plus the gap
    between them, and a container without a request has one equal to its limit. The tightest
    container of the workload decides, as the cap is one for all of them. None when nothing bounds it.
    """
    bounds: list[int] = []
    if room.limits is not None:
        bounds.append(room.limits.per_pod)
    if room.requests is not None:
        for container in containers:
            growth = _limit_growth_within_request_room(
                container, request_room=room.requests.per_pod, request_policy=request_policy
            )
            if growth is not None:
                bounds.append(growth)
    return min(bounds) if bounds else None
