"""Settle: lower oomtuner's own raise once usage since it shows how much of the raise was needed.

After a `Limit` kill the working set carries no information above the limit, so every bump is a
guess: ×1.5 holds most demand in one step, and the overshoot of the last step is what a platform
team pays for. Once the raise has stood long enough with no kill, usage since the raise says how
much of it was used, and the limit can come down to

    settled = roundUpMiB(max(L_lastKill × (1 + margin), peakSinceRaise × (1 + margin), L_original))

- never below the limit at the last kill plus the margin: that kill proved the old limit too small;
- never below what the workload had before oomtuner first touched it: the user's choice stands;
- never below the peak since the raise plus the margin;
- and only a limit oomtuner itself raised (general downsizing is another tool's job).

It settles only when all of these hold (`decide` checks them in this order, cheapest first, so the
operator asks Prometheus only when the answer can matter; `blocked` is the part without usage):
settle is enabled; oomtuner raised the limit above the original and has not settled this raise
yet; the last kill was a `Limit` kill (a `Node` kill's request follows sustained usage, not a
limit), with none since the raise; no leak is suspected; the raise is at least `after` old; usage
history covers at least `MIN_COVERAGE` of the time since the raise; no life running now grows
steadily (`domain.usage`'s floor test: a cache still filling, a leak; a life is judged once it spans
`domain.usage.MIN_INSTANCE_SPAN`, or half the time since the raise where that is shorter, so that a
short `after` still sees growth); and it saves at least
`MIN_SAVING` of the limit. A kill at a settled limit is bumped like any other kill, and the next
raise may be settled again.

The request follows `requestPolicy` downward, never below the original request, never above the
current one, never above the settled limit: KeepRatio scales it with the limit, EqualsLimit is the
limit, Unchanged keeps it, FromUsage is the p95 since the raise × (1 + memory.margin).

When the answer is not yet, `recheck_at` says when to ask again: at raise + `after` while it is too
soon; `after` × `RECHECK_SHARE` later while usage is missing, sparse or growing; never for the
verdicts only a new kill or raise can change (a smaller saving only gets smaller: the peak since
the raise can only rise).

Pure and exact: integers and fractions, `now` passed in.
"""

from __future__ import annotations

import dataclasses
import datetime
import enum
import fractions
import math
from collections.abc import Sequence

from oomtuner.api import policy, types
from oomtuner.domain import duration, quantity
from oomtuner.domain import usage as domain_usage

MIN_COVERAGE = fractions.Fraction(9, 10)
MIN_SAVING = fractions.Fraction(1, 20)
RECHECK_SHARE = fractions.Fraction(1, 4)
GROWTH_FLOOR_SHARE = fractions.Fraction(1, 4)


class Verdict(str, enum.Enum):
    """What settle decided for one container; the values suit a condition's reason."""

    SETTLE = "Settled"
    DISABLED = "SettleDisabled"
    NOT_RAISED = "NotRaisedByOomtuner"
    ALREADY_SETTLED = "AlreadySettled"
    NODE_KILL = "LastKillNode"
    KILLED_SINCE = "KilledSinceRaise"
    SUSPECTED_LEAK = "SuspectedLeak"
    TOO_SOON = "TooSoon"
    NO_USAGE = "NoUsageData"
    LOW_COVERAGE = "LowCoverage"
    GROWING = "WorkingSetGrowing"
    SMALL_SAVING = "SmallSaving"


@dataclasses.dataclass(frozen=True)
class LastKill:
    """The container's latest kill: when, at which limit and request (bytes; None: not set), and how
    it was classified."""

    at: datetime.datetime
    limit: int | None
    request: int | None
    classification: types.Classification


@dataclasses.dataclass(frozen=True)
class Facts:
    """What the operator knows about one container without asking Prometheus.

    - `request`, `limit`: what the workload's template gives the container now (bytes; None: not set);
    - `original_request`, `original_limit`: what it gave before oomtuner first changed it;
    - `raised_at`: when oomtuner last raised this container's memory (the patch), None if never;
    - `settled_at`: when oomtuner last settled it, None if never;
    - `last_kill`: its latest kill, None if none is recorded;
    - `leak_suspected`: its recommendation is in phase SuspectedLeak.
    """

    request: int | None
    limit: int | None
    original_request: int | None
    original_limit: int | None
    raised_at: datetime.datetime | None
    last_kill: LastKill | None
    settled_at: datetime.datetime | None = None
    leak_suspected: bool = False


@dataclasses.dataclass(frozen=True)
class UsageSinceRaise:
    """One container's working set since the raise (all of its pods).

    `peak` is None when there is no sample; `coverage` is the share of the time since the raise
    with samples (0..1); `growing` says whether a life running now grows steadily; `p95` is the
    95th percentile over time (for requestPolicy FromUsage); `source` names where it came from,
    for the evidence.
    """

    peak: int | None
    coverage: fractions.Fraction
    growing: bool
    p95: int | None = None
    source: str = "Prometheus"


@dataclasses.dataclass(frozen=True)
class Decision:
    """The verdict, the evidence or the reason why not (`reason`), the values to apply (the settled
    ones for SETTLE, else the current ones) and when to ask again (None: only a new kill or raise
    can change the answer)."""

    verdict: Verdict
    reason: str
    request: int | None
    limit: int | None
    recheck_at: datetime.datetime | None = None

    @property
    def settles(self) -> bool:
        return self.verdict == Verdict.SETTLE


def _h(n: int) -> str:
    return quantity.humanize(n)


def _exact(n: int) -> str:
    """A settled value, exactly (they are whole MiB): a few percent decide, so no rounding here."""
    return quantity.format_bytes(n)


def _pct(value: fractions.Fraction) -> str:
    return f"{math.floor(value * 100)}%"


def _fraction(value: float) -> fractions.Fraction:
    return fractions.Fraction(repr(value))


def _ago(now: datetime.datetime, then: datetime.datetime) -> str:
    return duration.format(datetime.timedelta(seconds=max(0, (now - then) // datetime.timedelta(seconds=1))))


def _not(facts: Facts, verdict: Verdict, why: str, recheck_at: datetime.datetime | None = None) -> Decision:
    return Decision(
        verdict=verdict, reason=f"not settled: {why}", request=facts.request, limit=facts.limit, recheck_at=recheck_at
    )


def _after(settings: policy.SettleSettings) -> datetime.timedelta:
    return duration.parse(settings.after)


def recheck_interval(settings: policy.SettleSettings) -> datetime.timedelta:
    """How long to wait before asking again while usage is missing, sparse or growing."""
    after = _after(settings)
    return datetime.timedelta(microseconds=math.ceil(after / datetime.timedelta(microseconds=1) * RECHECK_SHARE))


def blocked(*, facts: Facts, settings: policy.SettleSettings, now: datetime.datetime) -> Decision | None:
    """The verdict when it needs no usage history (settle off, nothing to settle, a kill since, a
    leak, too soon); None when the answer depends on usage since the raise (call `decide`).

    Raises DurationError for an `after` that is not a duration (the policy check reports it first).
    """
    if not settings.enabled:
        return _not(facts, Verdict.DISABLED, "settle is off in the policy (memory.settle.enabled: false)")
    if facts.raised_at is None or facts.limit is None:
        return _not(facts, Verdict.NOT_RAISED, "oomtuner has not raised this container's limit")
    if facts.original_limit is None:
        return _not(
            facts, Verdict.NOT_RAISED,
            f"the container had no memory limit before oomtuner; the limit {_h(facts.limit)} is not a raise to settle",
        )
    if facts.limit <= facts.original_limit:
        return _not(
            facts, Verdict.NOT_RAISED,
            f"the limit {_h(facts.limit)} is not above the original {_h(facts.original_limit)}",
        )
    if facts.settled_at is not None and facts.settled_at >= facts.raised_at:
        return _not(facts, Verdict.ALREADY_SETTLED, f"this raise was settled {_ago(now, facts.settled_at)} ago")
    kill = facts.last_kill
    if kill is None or kill.limit is None:
        return _not(facts, Verdict.NOT_RAISED, "no kill with a known limit is recorded before the raise")
    if kill.classification == types.Classification.NODE:
        return _not(
            facts, Verdict.NODE_KILL,
            "the last kill was a Node kill: its request follows sustained usage, and settle lowers only "
            "limits raised for Limit kills",
        )
    if kill.at > facts.raised_at:
        return _not(
            facts, Verdict.KILLED_SINCE,
            f"OOM-killed at limit {_h(kill.limit)} {_ago(kill.at, facts.raised_at)} after the raise",
        )
    if facts.leak_suspected:
        return _not(facts, Verdict.SUSPECTED_LEAK, "a leak is suspected: more memory only delays a leak, less hastens it")
    due = facts.raised_at + _after(settings)
    if now < due:
        return _not(
            facts, Verdict.TOO_SOON,
            f"raised {_ago(now, facts.raised_at)} ago; settle waits {settings.after} with no kill",
            recheck_at=due,
        )
    return None


def decide(
    *,
    facts: Facts,
    usage: UsageSinceRaise | None,
    settings: policy.MemorySettings,
    now: datetime.datetime,
) -> Decision:
    """Whether to settle one container now, and to what (module docstring). `usage` is None when
    there is no usage history (no Prometheus, or it failed)."""
    settle = settings.settle
    early = blocked(facts=facts, settings=settle, now=now)
    if early is not None:
        return early
    assert facts.limit is not None and facts.original_limit is not None and facts.raised_at is not None
    assert facts.last_kill is not None and facts.last_kill.limit is not None
    later = now + recheck_interval(settle)
    if usage is None or usage.peak is None:
        return _not(facts, Verdict.NO_USAGE, "no usage history since the raise: settle needs it", recheck_at=later)
    seen = f"since the raise {_ago(now, facts.raised_at)} ago ({usage.source})"
    if usage.coverage < MIN_COVERAGE:
        return _not(
            facts, Verdict.LOW_COVERAGE,
            f"usage samples cover {_pct(usage.coverage)} of the time {seen}, less than {_pct(MIN_COVERAGE)}",
            recheck_at=later,
        )
    if usage.growing:
        return _not(facts, Verdict.GROWING, f"the working set of a running life is still growing {seen}", recheck_at=later)

    margin = _fraction(settle.margin)
    killed_at = facts.last_kill.limit
    options = [
        (f"limit at the last kill {_h(killed_at)} × {float(1 + margin):g}", math.ceil(killed_at * (1 + margin))),
        (f"peak {_h(usage.peak)} × {float(1 + margin):g}", math.ceil(usage.peak * (1 + margin))),
        (f"original limit {_h(facts.original_limit)}", facts.original_limit),
    ]
    label, raw = max(options, key=lambda option: option[1])
    limit = quantity.round_up_mib(raw)
    saving = fractions.Fraction(facts.limit - limit, facts.limit)
    arithmetic = f"{label} = {_exact(limit)}" + (" (rounded up to a MiB)" if limit != raw else "")
    if saving < MIN_SAVING:
        return _not(
            facts, Verdict.SMALL_SAVING,
            f"{arithmetic} would save {_pct(max(saving, fractions.Fraction(0)))} of the limit {_h(facts.limit)}, "
            f"less than {_pct(MIN_SAVING)}",
        )
    notes = [
        f"settled: raised to {_h(facts.limit)} {_ago(now, facts.raised_at)} ago with no kill since; usage since "
        f"the raise ({usage.source}): peak {_h(usage.peak)}, {_pct(usage.coverage)} covered, not growing",
        f"limit {arithmetic}, saves {_pct(saving)}",
    ]
    request = _request(facts=facts, limit=limit, usage=usage, settings=settings, notes=notes)
    return Decision(verdict=Verdict.SETTLE, reason="; ".join(notes), request=request, limit=limit)


def _request(
    *, facts: Facts, limit: int, usage: UsageSinceRaise, settings: policy.MemorySettings, notes: list[str]
) -> int | None:
    """The request after settling to `limit`, per requestPolicy: never below the original request,
    never above the current one or the settled limit."""
    current = facts.request
    if current is None:
        return None
    assert facts.limit is not None
    rule = settings.requestPolicy
    if rule == types.RequestPolicy.EQUALS_LIMIT:
        wanted, how = limit, "equals the limit"
    elif rule == types.RequestPolicy.KEEP_RATIO:
        wanted = quantity.round_up_mib(math.ceil(fractions.Fraction(current * limit, facts.limit)))
        how = "keeps its ratio to the limit"
    elif rule == types.RequestPolicy.FROM_USAGE and usage.p95 is not None:
        factor = 1 + _fraction(settings.margin)
        wanted = quantity.round_up_mib(math.ceil(usage.p95 * factor))
        how = f"from usage: p95 since the raise {_h(usage.p95)} × {float(factor):g}"
    else:
        wanted = current
        how = "unchanged" if rule == types.RequestPolicy.UNCHANGED else "unchanged (no p95 since the raise)"
    floor = facts.original_request if facts.original_request is not None else 0
    request = min(max(wanted, floor), current, limit)
    if request != current:
        bound = " (the original request)" if request == floor and wanted < floor else ""
        notes.append(f"request {how}: {_h(current)} → {_exact(request)}{bound}")
    return request


def usage_since(
    series: Sequence[domain_usage.Series],
    *,
    start: float,
    end: float,
    step: float,
    max_gap: datetime.timedelta,
    source: str = "Prometheus",
) -> UsageSinceRaise:
    """Usage since the raise from a range query's series of one container (all its pods and lives),
    whose points sit at `start + k × step` up to `end` (Unix seconds), each the highest sample of the
    step before it.

    The peak is the highest point; the coverage the share of those instants where any series has a
    point; the p95 the 95th percentile (nearest rank) of the highest point at each instant; growing
    whether a life still running at `end` (its last point within `max_gap` of it) grows steadily by
    `domain.usage.trend`, or, when none of those is long enough to judge, the last life that is
    (long enough: MIN_INSTANCE_SPAN, or half of `end - start` where that is shorter).
    """
    by_instant: dict[int, float] = {}
    for s in series:
        for t, value in s.points:
            k = round((t - start) / step)
            by_instant[k] = max(by_instant.get(k, value), value)
    expected = math.floor((end - start) / step + 1e-9) + 1 if end >= start else 0
    covered = sum(1 for k in by_instant if 0 <= k < expected)
    coverage = fractions.Fraction(min(covered, expected), expected) if expected else fractions.Fraction(0)
    if not by_instant:
        return UsageSinceRaise(peak=None, coverage=coverage, growing=False, source=source)
    values = sorted(by_instant.values())
    p95 = values[max(0, math.ceil(len(values) * 95 / 100) - 1)]
    lives = domain_usage.instances(series, max_gap=max_gap)
    min_span = min(domain_usage.MIN_INSTANCE_SPAN, datetime.timedelta(seconds=(end - start) / 2))
    judged = [(life, trend) for life in lives if (trend := domain_usage.trend(life, min_span=min_span)) is not None]
    running = [trend for life, trend in judged if end - life.end <= max_gap.total_seconds()]
    considered = running or [trend for _life, trend in judged[-1:]]
    growing = any(t.rises(GROWTH_FLOOR_SHARE) for t in considered)
    return UsageSinceRaise(
        peak=math.ceil(values[-1]), coverage=coverage, growing=growing, p95=math.ceil(p95), source=source
    )
