"""What an OOMRecommendation's schema cannot check: values that pass it but the operator cannot use.

Anyone allowed to edit a recommendation can write its status. The CRD bounds sizes and quantity
forms, but not that a time is a time in years 1 to 9999 once in UTC (`kills[].at` with a -23:59
offset), and an object stored before the bounds were in place may hold anything the old schema took
(a 5,000-digit `limitAtKill`). The operator asks `problem` before it uses a recommendation, and
marks one that has a problem instead of letting every later kill of the workload fail on it.
"""

from __future__ import annotations

from collections.abc import Iterator

from oomtuner.api import recommendation
from oomtuner.domain import quantity, timestamps


def _quantities(status: recommendation.OOMRecommendationStatus) -> Iterator[tuple[str, str | None]]:
    for i, c in enumerate(status.containers):
        for side, resources in (("current", c.current), ("recommended", c.recommended)):
            yield f"status.containers[{i}].{side}.request", resources.request
            yield f"status.containers[{i}].{side}.limit", resources.limit
    for i, k in enumerate(status.kills):
        yield f"status.kills[{i}].limitAtKill", k.limitAtKill
        yield f"status.kills[{i}].requestAtKill", k.requestAtKill
        if k.culprit is not None:
            yield f"status.kills[{i}].culprit.usage", k.culprit.usage
            yield f"status.kills[{i}].culprit.request", k.culprit.request


def _times(status: recommendation.OOMRecommendationStatus) -> Iterator[tuple[str, str | None]]:
    yield "status.appliedAt", status.appliedAt
    for i, c in enumerate(status.containers):
        yield f"status.containers[{i}].lastOOMAt", c.lastOOMAt
    for i, k in enumerate(status.kills):
        yield f"status.kills[{i}].at", k.at
        yield f"status.kills[{i}].startedAt", k.startedAt


def problem(rec: recommendation.OOMRecommendation) -> str | None:
    """`field: what is wrong` for the first value the operator cannot use, or None."""
    for field, text in _quantities(rec.status):
        found = quantity.problem(field, text) if text is not None else None
        if found:
            return found
    for field, text in _times(rec.status):
        if text and timestamps.parse(text) is None:
            shown = text if len(text) <= 40 else text[:37] + "..."
            return f"{field}: {shown!r} is not a time between the years 1 and 9999 in UTC"
    return None
