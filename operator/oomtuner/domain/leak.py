"""Leak suspicion: when more memory only delays the next kill.

Three or more `Limit` kills at successively raised limits after similar lifetimes, or a steady rise
of the working set, make a recommendation `SuspectedLeak`: Auto mode stops raising it and a Warning
says why (README, "How a recommendation is computed"). `suspected` explains the two rules and what
keeps start-up peaks, daily cycles and caches that fill to a plateau from being taken for a leak.

Pure and exact: integers and fractions.
"""

from __future__ import annotations

import dataclasses
import datetime
import fractions
import math
import statistics
from collections.abc import Sequence

from oomtuner.api import types
from oomtuner.domain import duration, kills, quantity
from oomtuner.domain import usage as domain_usage

# The heuristics (see `suspected`): kill lifetimes within ±50% of their median are "similar";
# growth over the usage window of at least 25% of the limit is a "steady positive slope".
LEAK_MIN_KILLS = 3
LEAK_LIFETIME_TOLERANCE = fractions.Fraction(1, 2)
LEAK_GROWTH_SHARE = fractions.Fraction(1, 4)
# A life shorter than this is start-up, a crash loop or noise, not the time a leak took: the same
# bound below which `domain.usage` does not judge a life's trend, so every life rule (a) counts is
# one whose working set usage history can speak for.
LEAK_MIN_LIFETIME = domain_usage.MIN_INSTANCE_SPAN
# Without usage history, rule (a)'s lives must together last at least a daily cycle, and their kills
# must spread over at least this much of the day: a daily cycle kills on its rise, in the hours
# before its daily peak, so kills it causes on successive days come at about the same hour.
LEAK_CLOCK_SPREAD = datetime.timedelta(hours=6)

_EPOCH = datetime.datetime.min.replace(tzinfo=datetime.timezone.utc)


@dataclasses.dataclass(frozen=True)
class Usage:
    """Observed memory use over a lookback window (e.g. from Prometheus). All values are optional.

    `peak` and `p95` are working-set bytes; `slope_bytes_per_s` is the trend of the working set
    between restarts over `window`.
    """

    peak: int | None = None
    p95: int | None = None
    slope_bytes_per_s: float | None = None
    window: datetime.timedelta | None = None
    source: str = "prometheus"



def _ceil(value: fractions.Fraction) -> int:
    return math.ceil(value)


def _h(n: int) -> str:
    return quantity.humanize(n)


@dataclasses.dataclass(frozen=True)
class _Life:
    """A container life that ended in a Limit kill: the limit it had, when it started and ended."""

    limit: int
    started: datetime.datetime
    ended: datetime.datetime

    @property
    def lifetime(self) -> datetime.timedelta:
        return self.ended - self.started


def suspected(
    classified: Sequence[tuple[kills.OOMKill, types.Classification]],
    *,
    usage: Usage | None,
    base_limit: int | None,
) -> str | None:
    """Why a leak is suspected, or None: rule (a), then rule (b).

    (a) Three or more Limit kills at successively raised limits, each after a similar lifetime
    (within ±50% of their median): raising the limit did not buy lasting time. Kills alone cannot
    tell a leak from other demand that fills a limit at a pace. A start-up peak kills each new
    instance on its way up, and a daily rise kills one instance after the other as the clock
    advances: each at a raised limit, after a similar time, when the increaseFactor is small.
    Spikes at random times can also give similar lifetimes by chance. What sets a leak apart is
    memory that follows the container's age rather than the clock, that starts again from the
    bottom at each restart, and that never stops growing, so that each raise buys a little more
    time and never enough. So:
    - the lives are the first Limit kill at each new limit, in time order; the pattern is the
      longest run of the latest ones, at strictly increasing limits, whose lifetimes are similar
      and never shorter than the one before;
    - a life shorter than LEAK_MIN_LIFETIME is start-up and ends the run: demand that kills a new
      instance within minutes of its start did not build up over its life;
    - with usage history, the working set must have grown in those lives (`domain.usage`'s leak
      slope: a floor that rose steadily) by more than the last raise of the limit. A life that picks
      up where the killed one stopped, as on a daily rise, grows by about the raise; a leaking life
      starts from the bottom. Usage history without that growth contradicts a leak;
    - without usage history, the lives must together last at least a day (one daily rise cannot)
      and their kills must spread over at least LEAK_CLOCK_SPREAD of the day (a daily peak comes at
      the same hour every day).
    The cost: by kills alone, a leak is flagged only once its lives add up to a day, and not when
    its kills come at about the same hour of the day. Erring this way keeps the bumps that a
    start-up peak, a daily cycle or spikes need.

    (b) The working set grew by at least 25% of the limit over the usage window.

    Kills without startedAt/finishedAt/limit cannot take part in (a); (b) needs a slope, a window
    and a limit.
    """
    return _similar_lifetimes(classified, usage=usage) or _growing_working_set(usage, base_limit)


def _raised_lives(classified: Sequence[tuple[kills.OOMKill, types.Classification]]) -> list[_Life]:
    """The latest lives at strictly increasing limits, each at least LEAK_MIN_LIFETIME long: Limit
    kills in time order, the first kill at each new limit, back to the last short life."""
    timed = sorted(
        (
            k
            for k, c in classified
            if c == types.Classification.LIMIT
            and k.at is not None
            and k.started_at is not None
            and k.limit_at_kill is not None
        ),
        key=lambda k: (k.at or _EPOCH, k.started_at or _EPOCH, k.limit_at_kill or 0, k.identity),
    )
    steps: list[_Life] = []
    for kill in timed:
        assert kill.at is not None and kill.started_at is not None and kill.limit_at_kill is not None
        if not steps or steps[-1].limit != kill.limit_at_kill:
            steps.append(_Life(limit=kill.limit_at_kill, started=kill.started_at, ended=kill.at))
    run: list[_Life] = []
    for step in reversed(steps):
        if step.lifetime < LEAK_MIN_LIFETIME or (run and step.limit >= run[0].limit):
            break
        run.insert(0, step)
    return run


def _similar(lives: Sequence[_Life]) -> bool:
    """Whether the lifetimes are within ±50% of their median, each at least as long as the last."""
    micros = [fractions.Fraction(life.lifetime // datetime.timedelta(microseconds=1)) for life in lives]
    median = statistics.median(micros)
    return all(abs(m - median) <= median * LEAK_LIFETIME_TOLERANCE for m in micros) and all(
        a <= b for a, b in zip(micros, micros[1:])
    )


def _similar_lifetimes(
    classified: Sequence[tuple[kills.OOMKill, types.Classification]], *, usage: Usage | None
) -> str | None:
    """Rule (a) of `suspected`."""
    run = _raised_lives(classified)
    pattern = next(
        (run[first:] for first in range(len(run) - LEAK_MIN_KILLS + 1) if _similar(run[first:])), None
    )
    if pattern is None:
        return None
    backing = _grew_in_those_lives(pattern, usage) if usage is not None else _not_clock_bound(pattern)
    if backing is None:
        return None
    limits = " → ".join(_h(life.limit) for life in pattern)
    times = ", ".join(duration.format(life.lifetime) for life in pattern)
    return (
        f"suspected leak: {len(pattern)} Limit kills at successively raised limits {limits}, "
        f"each after a similar lifetime ({times}), {backing}; raising the limit only delays a leak"
    )


def _grew_in_those_lives(pattern: Sequence[_Life], usage: Usage) -> str | None:
    """What usage history says for rule (a): how the working set grew, or None if not enough."""
    growth = _growth(usage)
    raised = pattern[-1].limit - pattern[-2].limit
    if growth is None or growth <= raised:
        return None
    return (
        f"and the working set grew at least {_h(_ceil(growth))} per life ({usage.source}), more than "
        f"the last raise of {_h(raised)}"
    )


def _not_clock_bound(pattern: Sequence[_Life]) -> str | None:
    """What the kills alone say for rule (a): the span and spread of the kills, or None if they could
    follow a daily cycle."""
    span = pattern[-1].ended - min(life.started for life in pattern)
    if span < domain_usage.FULL_CYCLE:
        return None
    spread = _spread_over_the_day([life.ended for life in pattern])
    if spread < LEAK_CLOCK_SPREAD:
        return None
    return (
        f"over {duration.format(span)} with kills spread over {duration.format(spread)} of the day "
        "(no usage history)"
    )


def _spread_over_the_day(times: Sequence[datetime.datetime]) -> datetime.timedelta:
    """The shortest part of the day (a circle) that holds every one of these times of day."""
    cycle = domain_usage.FULL_CYCLE
    offsets = sorted((t - _EPOCH) % cycle for t in times)
    gaps = [b - a for a, b in zip(offsets, offsets[1:])] + [offsets[0] + cycle - offsets[-1]]
    return cycle - max(gaps)


def _growth(usage: Usage | None) -> fractions.Fraction | None:
    """How much the working set grew over the usage window, when it grew."""
    if usage is None or usage.slope_bytes_per_s is None or usage.slope_bytes_per_s <= 0 or usage.window is None:
        return None
    seconds = fractions.Fraction(repr(usage.window.total_seconds()))
    return fractions.Fraction(repr(usage.slope_bytes_per_s)) * seconds


def _growing_working_set(usage: Usage | None, base_limit: int | None) -> str | None:
    """Rule (b) of `suspected`."""
    growth = _growth(usage)
    if growth is None or not base_limit or growth < LEAK_GROWTH_SHARE * base_limit:
        return None
    assert usage is not None and usage.slope_bytes_per_s is not None and usage.window is not None
    per_hour = _ceil(fractions.Fraction(repr(usage.slope_bytes_per_s)) * 3600)
    return (
        f"suspected leak: the working set grows {_h(per_hour)}/h ({usage.source}), "
        f"{_h(_ceil(growth))} over {duration.format(usage.window)}, at least 25% of the limit "
        f"{_h(base_limit)}"
    )


