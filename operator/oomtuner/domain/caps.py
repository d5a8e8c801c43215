"""The caps arithmetic that reads objects of the cluster: a namespace's LimitRange max memory.

(The policy's maxLimit, the quota headroom and the largest node come in as numbers; `domain.recommend`
bounds a recommendation by the smallest of them.)
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from oomtuner.api import core
from oomtuner.domain import resources


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
