"""The caps arithmetic: the bounds a recommendation may not pass, and which one stopped it.

The policy's maxLimit, the quota headroom (`domain.quota`) and the largest node come in as numbers
(`Caps`); a namespace's LimitRange max memory is read here from its objects. `domain.recommend`
bounds its results with `bound`, and a result at a bound names it (phase Capped,
`cappedBy`; README, "How a recommendation is computed").
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Sequence

from oomtuner.api import core, policy
from oomtuner.domain import quantity, resources

# Nothing is ever recommended above the largest whole MiB a quantity (int64) holds.
LARGEST = (quantity.MAX_MEMORY, f"the largest memory a quantity holds ({quantity.format_bytes(quantity.MAX_MEMORY)})")


@dataclasses.dataclass(frozen=True)
class Caps:
    """Upper bounds in bytes; None means no such bound.

    - `policy_max_limit`: the OOMPolicy's maxLimit (the policy's `memory.maxLimit` counts as well);
    - `limit_range_max`: the namespace LimitRange's max memory for a container; bounds request and
      limit;
    - `quota_headroom`: how much more memory limit the namespace's ResourceQuota leaves for this
      container (the caller divides the quota's free room by the number of replicas); the limit may
      grow by at most this much over its current value;
    - `largest_node_allocatable`: a container asking for more than the largest node can give would
      never be scheduled; bounds request and limit.
    """

    policy_max_limit: int | None = None
    limit_range_max: int | None = None
    quota_headroom: int | None = None
    largest_node_allocatable: int | None = None


NO_CAPS = Caps()


def limit_bounds(
    *, settings: policy.MemorySettings, caps: Caps, current_limit: int | None, notes: list[str]
) -> list[tuple[int, str]]:
    """The bounds of a limit, each with how a reason names it; an unreadable maxLimit is skipped with a
    note."""
    found: list[tuple[int, str]] = [LARGEST]
    if settings.maxLimit is not None:
        try:
            value = quantity.parse_bytes(settings.maxLimit)
            found.append((value, f"policy maxLimit {quantity.humanize(value)}"))
        except quantity.QuantityError as exc:
            notes.append(f"policy maxLimit ignored ({exc})")
    if caps.policy_max_limit is not None:
        found.append((caps.policy_max_limit, f"policy maxLimit {quantity.humanize(caps.policy_max_limit)}"))
    if caps.limit_range_max is not None:
        found.append((caps.limit_range_max, f"LimitRange max {quantity.humanize(caps.limit_range_max)}"))
    if caps.quota_headroom is not None:
        value = (current_limit or 0) + max(caps.quota_headroom, 0)
        found.append((value, f"ResourceQuota headroom {quantity.humanize(max(caps.quota_headroom, 0))}"))
    if caps.largest_node_allocatable is not None:
        found.append(
            (caps.largest_node_allocatable, f"largest node allocatable {quantity.humanize(caps.largest_node_allocatable)}")
        )
    return found


def request_bounds(caps: Caps) -> list[tuple[int, str]]:
    """The bounds of a request: the LimitRange max and the largest node bound it; the policy's
    maxLimit and the quota headroom bound limits only."""
    found: list[tuple[int, str]] = [LARGEST]
    if caps.limit_range_max is not None:
        found.append((caps.limit_range_max, f"LimitRange max {quantity.humanize(caps.limit_range_max)}"))
    if caps.largest_node_allocatable is not None:
        found.append(
            (caps.largest_node_allocatable, f"largest node allocatable {quantity.humanize(caps.largest_node_allocatable)}")
        )
    return found


def bound(value: int, bounds: Sequence[tuple[int, str]]) -> tuple[int, str | None]:
    """The value bounded by the smallest cap, and that cap's description if it bound (first on ties,
    so a real cap is named before `LARGEST`, which comes first in the list only to be found last)."""
    if not bounds:
        return value, None
    smallest = min(bounds, key=lambda b: (b[0], b is LARGEST))
    if value > smallest[0]:
        return smallest[0], smallest[1]
    return value, None


def limit_range_max(bodies: Sequence[Mapping[str, Any]]) -> int | None:
    """The smallest `max.memory` of any Container or Pod item of these LimitRanges; None when none
    sets one. An unreadable LimitRange or value bounds nothing."""
    found: list[int] = []
    for body in bodies:
        try:
            limit_range = core.parse_limit_range(body)
        except core.InvalidObject:
            continue
        for item in limit_range.spec.limits:
            if item.type in ("Container", "Pod"):
                value = resources.bytes_of(item.max)
                if value is not None:
                    found.append(value)
    return min(found) if found else None
