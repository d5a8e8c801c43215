"""What the pages show, computed from the recommendations alone: pure, no I/O, `now` passed in.

The workloads table has one row per workload container, with its kills in the last day and week
counted from the recommendation's kill ledger (`status.kills`, the newest `MAX_KILLS`: when the
ledger is full and its oldest kill is inside a window, the count is a lower bound, and says so).
The workload page's limit and request are steps drawn from what the recommendation recorded: the
memory at each kill that was not stale (`limitAtKill`, `requestAtKill`), what the operator applied
last and what the template had before (`status.applied`), and the memory now (`current`). A change
between two of those points is drawn where it is first known (at the patch, when it was ours).
"""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Iterable, Sequence
from typing import Any

from oomtuner.api import recommendation, types
from oomtuner.domain import resources, timestamps

DAY = datetime.timedelta(days=1)
WEEK = datetime.timedelta(days=7)
CHILD_MARK = "/child/"  # in the id of a kill the node agent reported (a child process)


parse_bytes = resources.bytes_or_none  # a quantity's bytes; None for none or one that cannot be read


def kill_kind(kill: recommendation.Kill) -> str:
    """How a kill is drawn: `child` (a child process, from the node agent), else its classification."""
    if CHILD_MARK in kill.id:
        return "child"
    return kill.classification.value.lower()


@dataclasses.dataclass(frozen=True)
class Count:
    """Kills within a window, from the ledger; `more` when older kills may have left a full ledger."""

    n: int
    more: bool = False

    def __str__(self) -> str:
        return f"{self.n}+" if self.more else str(self.n)


def count_kills(kills: Sequence[recommendation.Kill], *, container: str, since: datetime.datetime) -> Count:
    """The container's kills in the ledger at or after `since`. The ledger keeps the newest
    `MAX_KILLS` kills of all containers: when it is full and even its oldest kill is inside the
    window, older kills inside it may have been dropped, and the count is a lower bound."""
    times = [timestamps.parse(k.at) for k in kills]
    n = sum(1 for k, at in zip(kills, times) if k.container == container and at is not None and at >= since)
    oldest = min((at for at in times if at is not None), default=None)
    return Count(n=n, more=len(kills) >= recommendation.MAX_KILLS and oldest is not None and oldest >= since)


@dataclasses.dataclass(frozen=True)
class Row:
    """One workload container in the workloads table."""

    namespace: str
    name: str  # the recommendation's
    target: str  # kind/name of the workload
    container: str
    kills_day: Count
    kills_week: Count
    kills_total: int
    last_kill: datetime.datetime | None
    classification: str
    phase: str
    current_request: int | None
    current_limit: int | None
    recommended_request: int | None
    recommended_limit: int | None
    data_source: str
    policy: str
    mode: str
    html: str = ""  # the row as the workloads table shows it, escaped (made once per list, see `cache`)


def rows_of(rec: recommendation.OOMRecommendation, *, now: datetime.datetime) -> list[Row]:
    status = rec.status
    target = status.target or f"{rec.spec.targetRef.kind}/{rec.spec.targetRef.name}"
    common = {"namespace": rec.metadata.namespace or "", "name": rec.metadata.name, "target": target,
              "data_source": status.dataSource or "", "policy": status.policy or "",
              "mode": status.mode.value if status.mode else ""}
    rows = []
    for c in status.containers:
        rows.append(Row(
            container=c.name,
            kills_day=count_kills(status.kills, container=c.name, since=now - DAY),
            kills_week=count_kills(status.kills, container=c.name, since=now - WEEK),
            kills_total=c.oomKills, last_kill=timestamps.parse(c.lastOOMAt), classification=c.classification.value,
            phase=c.phase.value,
            current_request=parse_bytes(c.current.request), current_limit=parse_bytes(c.current.limit),
            recommended_request=parse_bytes(c.recommended.request), recommended_limit=parse_bytes(c.recommended.limit),
            **common,
        ))
    if not rows:
        rows.append(Row(container="", kills_day=Count(0), kills_week=Count(0), kills_total=status.totalKills,
                        last_kill=None, classification="", phase=status.phase.value if status.phase else "",
                        current_request=None, current_limit=None, recommended_request=None, recommended_limit=None,
                        **common))
    return rows


# ---- filter and sort -----------------------------------------------------------------------------

SORT_KEYS: dict[str, Any] = {
    "namespace": lambda r: (r.namespace, r.target, r.container),
    "workload": lambda r: (r.target, r.namespace, r.container),
    "container": lambda r: (r.container, r.namespace, r.target),
    "day": lambda r: (r.kills_day.n, r.kills_week.n, r.kills_total),
    "week": lambda r: (r.kills_week.n, r.kills_total),
    "total": lambda r: (r.kills_total, r.kills_week.n),
    "last": lambda r: r.last_kill or datetime.datetime.min.replace(tzinfo=datetime.timezone.utc),
    "phase": lambda r: (r.phase, r.namespace, r.target),
    "limit": lambda r: (r.current_limit or 0, r.recommended_limit or 0),
    "recommended": lambda r: (r.recommended_limit or 0, r.current_limit or 0),
    "mode": lambda r: (r.mode, r.namespace, r.target),
}
DEFAULT_SORT = "day"
NUMERIC = ("day", "week", "total", "last", "limit", "recommended")


@dataclasses.dataclass(frozen=True)
class Filter:
    """The workloads table's filter and order, as the query string gives them (unknown values are
    ignored, not errors: a link must never break a page)."""

    namespace: str = ""
    text: str = ""
    phase: str = ""
    mode: str = ""
    classification: str = ""
    sort: str = DEFAULT_SORT
    descending: bool = True

    @classmethod
    def from_query(cls, query: dict[str, str]) -> Filter:
        sort = query.get("sort", DEFAULT_SORT)
        sort = sort if sort in SORT_KEYS else DEFAULT_SORT
        order = query.get("order", "")
        descending = order == "desc" if order in ("asc", "desc") else sort in NUMERIC
        return cls(namespace=query.get("namespace", "")[:253], text=query.get("q", "")[:253].strip(),
                   phase=query.get("phase", "")[:40], mode=query.get("mode", "")[:40],
                   classification=query.get("class", "")[:40], sort=sort, descending=descending)

    def query(self, **changes: str) -> dict[str, str]:
        """The query string of this filter with `changes`, for links (empty values left out)."""
        values = {"namespace": self.namespace, "q": self.text, "phase": self.phase, "mode": self.mode,
                  "class": self.classification, "sort": self.sort, "order": "desc" if self.descending else "asc", **changes}
        return {k: v for k, v in values.items() if v}

    def order_for(self, sort: str) -> str:
        """The order a click on column `sort` asks for: the other way round when it is the current one."""
        if sort == self.sort:
            return "asc" if self.descending else "desc"
        return "desc" if sort in NUMERIC else "asc"

    def matches(self, row: Row) -> bool:
        if self.namespace and row.namespace != self.namespace:
            return False
        if self.phase and row.phase != self.phase:
            return False
        if self.mode and row.mode != self.mode:
            return False
        if self.classification and row.classification != self.classification:
            return False
        needle = self.text.lower()
        return not needle or any(needle in field.lower() for field in (row.namespace, row.target, row.container, row.policy))

    def apply(self, rows: Iterable[Row]) -> list[Row]:
        kept = [r for r in rows if self.matches(r)]
        kept.sort(key=SORT_KEYS["namespace"])  # a stable tie-break for every order
        kept.sort(key=SORT_KEYS[self.sort], reverse=self.descending)
        return kept


PHASES = [p.value for p in types.Phase]
MODES = [m.value for m in types.Mode]
CLASSIFICATIONS = [c.value for c in types.Classification]


@dataclasses.dataclass
class NamespaceSummary:
    name: str
    workloads: int = 0
    containers: int = 0
    kills_day: int = 0
    kills_week: int = 0
    kills_total: int = 0
    phases: dict[str, int] = dataclasses.field(default_factory=dict)


def namespaces_of(rows: Iterable[Row]) -> list[NamespaceSummary]:
    found: dict[str, NamespaceSummary] = {}
    workloads: set[tuple[str, str]] = set()
    for row in rows:
        summary = found.setdefault(row.namespace, NamespaceSummary(name=row.namespace))
        if (row.namespace, row.name) not in workloads:
            workloads.add((row.namespace, row.name))
            summary.workloads += 1
        summary.containers += 1
        summary.kills_day += row.kills_day.n
        summary.kills_week += row.kills_week.n
        summary.kills_total += row.kills_total
        summary.phases[row.phase] = summary.phases.get(row.phase, 0) + 1
    return sorted(found.values(), key=lambda s: (-s.kills_day, -s.kills_week, s.name))
