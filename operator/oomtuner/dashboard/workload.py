"""The workload page, computed from its recommendation: pure, no I/O, `now` passed in.

The chart of each container gets its working set from `history` and everything else from here:
the limit and the request as steps, and one marker per kill in the ledger, coloured by what killed
it (`Limit`, `Node`, a child process, `Unknown`) and hollow when it was stale. See `views` for how
the steps are drawn from what the recommendation recorded.
"""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Callable, Sequence
from typing import Any

from oomtuner.api import recommendation
from oomtuner.dashboard import views
from oomtuner.domain import quantity, timestamps

# The chart's time ranges, and the default: the smallest that holds the ledger's oldest kill.
RANGES = {"15m": datetime.timedelta(minutes=15), "1h": datetime.timedelta(hours=1), "6h": datetime.timedelta(hours=6), "1d": views.DAY,
          "7d": views.WEEK, "30d": datetime.timedelta(days=30)}


def default_range(rec: recommendation.OOMRecommendation, *, now: datetime.datetime) -> str:
    times = [t for k in rec.status.kills if (t := timestamps.parse(k.at)) is not None]
    oldest = min(times, default=now)
    return next((name for name, span in RANGES.items() if now - span <= oldest - span / 20), "30d")


def _text(n: int | None) -> str:
    return quantity.humanize(n) if n is not None else "—"


@dataclasses.dataclass(frozen=True)
class LedgerRow:
    at: datetime.datetime | None
    id: str
    pod: str
    node: str
    container: str
    kind: str  # limit | node | child | unknown
    classification: str
    restarts: int
    limit: str
    request: str
    qos: str
    oom_score_adj: str
    stale: bool
    reason: str
    culprit: str


def culprit_text(culprit: recommendation.Culprit | None) -> str:
    if culprit is None:
        return ""
    if not culprit.pod:
        return culprit.reason
    who = f"{culprit.namespace}/{culprit.pod} {culprit.container}".strip()
    used = f"uses {culprit.usage}" if culprit.usage else ""
    asked = f"requests {culprit.request}" if culprit.request else "no request"
    return f"{who}: {used} ({asked}). {culprit.reason}".replace(":  (", ": (").strip()


def ledger(rec: recommendation.OOMRecommendation) -> list[LedgerRow]:
    """The kill ledger, newest first."""
    rows = [
        LedgerRow(at=timestamps.parse(k.at), id=k.id, pod=k.pod, node=k.node or "", container=k.container,
                  kind=views.kill_kind(k), classification=k.classification.value, restarts=k.restartCount,
                  limit=_text(views.parse_bytes(k.limitAtKill)), request=_text(views.parse_bytes(k.requestAtKill)),
                  qos=k.qosClass.value if k.qosClass else "", oom_score_adj="" if k.oomScoreAdj is None else str(k.oomScoreAdj),
                  stale=k.stale, reason=k.reason, culprit=culprit_text(k.culprit))
        for k in rec.status.kills
    ]
    epoch = datetime.datetime.min.replace(tzinfo=datetime.timezone.utc)
    return sorted(rows, key=lambda r: r.at or epoch, reverse=True)


# ---- steps and markers ---------------------------------------------------------------------------

Point = tuple[datetime.datetime, int]


def steps(points: Sequence[Point], *, initial: int | None, start: datetime.datetime, end: datetime.datetime) -> list[Point]:
    """A step line from `start` to `end` through `points` (each value in force from its time on),
    starting at `initial` (else the first point's value); empty when nothing is known."""
    ordered = sorted(points)
    value = initial if initial is not None else (ordered[0][1] if ordered else None)
    if value is None:
        return []
    line: list[Point] = [(start, value)]
    for at, new in ordered:
        if new == value:
            continue
        at = min(max(at, start), end)
        line += [(at, value), (at, new)]
        value = new
    line.append((end, value))
    return line


def _memory_points(rec: recommendation.OOMRecommendation, container: str, *, now: datetime.datetime,
                   at_kill: Callable[[recommendation.Kill], str | None],
                   of: Callable[[recommendation.Resources], str | None]) -> tuple[list[Point], int | None]:
    points: list[Point] = []
    for k in rec.status.kills:
        at, value = timestamps.parse(k.at), views.parse_bytes(at_kill(k))
        if k.container == container and not k.stale and at is not None and value is not None:
            points.append((at, value))
    initial = None
    applied = next((a for a in rec.status.applied if a.name == container), None)
    if applied is not None:
        initial = views.parse_bytes(of(applied.original))
        at, value = timestamps.parse(applied.at), views.parse_bytes(of(applied.applied))
        if at is not None and value is not None:
            points.append((at, value))
    current = next((c for c in rec.status.containers if c.name == container), None)
    if current is not None and (value := views.parse_bytes(of(current.current))) is not None:
        points.append((now, value))
    return points, initial


def _epoch(line: Sequence[Point]) -> list[list[float]]:
    return [[at.timestamp(), value] for at, value in line]


def marker(k: recommendation.Kill) -> dict[str, Any] | None:
    at = timestamps.parse(k.at)
    if at is None:
        return None
    return {"t": at.timestamp(), "id": k.id, "kind": views.kill_kind(k), "classification": k.classification.value,
            "stale": k.stale, "pod": k.pod, "limit": views.parse_bytes(k.limitAtKill), "reason": k.reason}


def chart(rec: recommendation.OOMRecommendation, *, start: datetime.datetime, now: datetime.datetime) -> list[dict[str, Any]]:
    """Per container: its limit and request steps and its kill markers, times in Unix seconds."""
    names = [c.name for c in rec.status.containers]
    names += sorted({k.container for k in rec.status.kills} - set(names))
    found = []
    for name in names:
        limits, first_limit = _memory_points(rec, name, now=now, at_kill=lambda k: k.limitAtKill, of=lambda r: r.limit)
        requests, first_request = _memory_points(rec, name, now=now, at_kill=lambda k: k.requestAtKill, of=lambda r: r.request)
        markers = [m for k in rec.status.kills if k.container == name and (m := marker(k)) is not None
                   and m["t"] >= start.timestamp()]
        markers.sort(key=lambda m: float(m["t"]))
        found.append({
            "name": name,
            "limit": _epoch(steps(limits, initial=first_limit, start=start, end=now)),
            "request": _epoch(steps(requests, initial=first_request, start=start, end=now)),
            "kills": markers,
        })
    return found
