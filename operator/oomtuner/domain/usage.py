"""The working-set slope between restarts: when does usage history say "leak"?

`recommend` flags SuspectedLeak when the working set grew by at least 25% of the limit (rule b).
Which slope feeds that rule decides how often it cries wolf. A least-squares slope over the whole
lookback, or over the one instance that was just killed, fires on shapes that are not leaks (the
recommendation-quality benchmark measured 30% of diurnal and 10% of step traces flagged that way):

- a life that ran from a daily trough to the next daily peak rises just like a leak;
- a one-time step (a release, a bigger tenant) gives a positive slope over any span that holds it;
- a start-up ramp (caches filling, JIT) rises and then stays flat;
- a cache, heap or lookup table that fills over hours rises in every life, more and more slowly,
  towards a plateau;
- spikes pull a least-squares line up wherever they happen to fall.

What tells a leak apart is memory that is never given back, again and again: the *floor* of the
working set keeps rising for as long as the container runs, and it starts from the bottom at every
restart. So this module judges each container instance (one life between two restarts) on its own:

1. **Instances.** Samples are split into lives by the series' identity (cAdvisor gives each container
   instance its own `id`), by the restarts Kubernetes reported (the kills' finishedAt) and by gaps in
   the samples. Memory that depends on age (a leak) starts again at every restart; memory that
   depends on the clock (a daily cycle, a step) does not, which is why lives are compared and not
   one long series.
2. **Long enough.** An instance is judged only if it ran at least `MIN_INSTANCE_SPAN` (1h) with at
   least `MIN_SAMPLES` samples: shorter lives are start-up, crash loops or noise.
3. **Growing.** The instance's span is cut into `FLOOR_CHUNKS` (4) equal parts. It grows when its
   least-squares slope is positive *and* the minimum of every part exceeds the minimum of the part
   before by at least half of what the fitted line gains over one part. A leak passes (its floor
   rises by the whole gain each part); a step raises the floor in one part only; a start-up ramp
   only in the first; a spike raises no floor at all; and noise larger than the trend fails it.
   (Settle asks only this: a life still growing is not settled.)
4. **Not slowing down.** A growing instance *leaks* only if the least-squares slope of its second
   half is at least `SLOWDOWN_SHARE` (3/5) of its first half's. A leak keeps its pace; a cache that
   fills towards a plateau (1 − e^(−age/τ)) slows down, by e^(−span/2τ), and in a life that lasts a
   few hours its floor still rises in every part. The benchmark's plateau family (τ of 2–12 h) was
   flagged SuspectedLeak on 0–10% of traces per seed without this test (crash loops of up to 29
   kills); at 3/5 on none of seeds 1–8, with the same leaks flagged at the same kills. Of the leak
   family's growing lives (seeds 1–2), one in 467 had a ratio under 0.64; the plateau's had a median
   of 0.58.
5. **Consistent.** The slope is reported as a leak slope only if (a) the last two judged instances
   both leak — a daily rise is followed by a daily fall, a step by a flat life, while a leak repeats
   in every life — and the later one started from the bottom again (its first part's floor in the
   lower half of what the earlier one's floor rose through, `RESTART_SHARE`: a second life on the
   same daily rise picks up where the first stopped; one diurnal trace in 160 was flagged that way
   at 28 days), or (b) the last judged instance ran at least a day (`FULL_CYCLE`) and leaks, so a
   daily cycle cannot fake it. Of the instances that agree, the one that grew least gives the
   slope and its span the window: "each of the last lives grew at least this much" is what rule (b)
   then compares with 25% of the limit.

The cost: a leak is flagged a kill or so later (the first life alone proves nothing unless it ran
a day, and a short noisy life may not pass the floor test), and a leak slower than the noise of its
container is not flagged from usage at all (the kill-lifetime rule still can). Both err towards not
calling a leak, which would stop the bumps that a non-leak needs. Replayed on the benchmark's traces
(bench/quality.py, seeds 1–3, 20 traces per family, this slope fed to `recommend`): no false
SuspectedLeak on step, diurnal, spiky, start-up or steady traces (the naive slope flagged 10% of step
and 30% of diurnal ones), every leak flagged, at kill 2.75–3.05 on average instead of 2.

Pure: timestamps are Unix seconds passed in, never read from a clock.
"""

from __future__ import annotations

import dataclasses
import datetime
import fractions
from collections.abc import Iterable, Sequence

from oomtuner.domain import duration, quantity

MIN_INSTANCE_SPAN = datetime.timedelta(hours=1)
MIN_SAMPLES = 12
FLOOR_CHUNKS = 4
FLOOR_RISE_SHARE = fractions.Fraction(1, 2)
FULL_CYCLE = datetime.timedelta(days=1)
SLOWDOWN_SHARE = fractions.Fraction(3, 5)
RESTART_SHARE = fractions.Fraction(1, 2)


@dataclasses.dataclass(frozen=True)
class Series:
    """One series of working-set samples: `key` names its identity (e.g. pod and cgroup id);
    `points` are (Unix seconds, bytes), in any order."""

    key: str
    points: tuple[tuple[float, float], ...]


@dataclasses.dataclass(frozen=True)
class Instance:
    """One container life: samples of one series between two restarts, in time order."""

    key: str
    points: tuple[tuple[float, float], ...]

    @property
    def start(self) -> float:
        return self.points[0][0]

    @property
    def end(self) -> float:
        return self.points[-1][0]

    @property
    def span(self) -> datetime.timedelta:
        return datetime.timedelta(seconds=self.end - self.start)


@dataclasses.dataclass(frozen=True)
class Trend:
    """How one long-enough instance's working set moved: its least-squares slope, whether its floor
    rose in every part of its life (`growing`), and whether its second half rose at less than
    SLOWDOWN_SHARE of its first half's pace (`slowing`: filling towards a plateau)."""

    instance: Instance
    slope_bytes_per_s: float
    growing: bool
    slowing: bool
    floors: tuple[float, ...]  # the lowest point of each of the FLOOR_CHUNKS parts

    @property
    def growth(self) -> float:
        return self.slope_bytes_per_s * self.instance.span.total_seconds()

    def rises(self, share: fractions.Fraction) -> bool:
        """Whether the slope is positive and every part's floor exceeds the one before by at least
        `share` of what the fitted line gains over one part (`growing` is this at FLOOR_RISE_SHARE)."""
        width = (self.instance.end - self.instance.start) / max(1, len(self.floors))
        needed = float(share) * self.slope_bytes_per_s * width
        return self.slope_bytes_per_s > 0 and all(b - a >= needed for a, b in zip(self.floors, self.floors[1:]))

    @property
    def leaking(self) -> bool:
        """Growing and not slowing down: what a leak does in every life."""
        return self.growing and not self.slowing


@dataclasses.dataclass(frozen=True)
class LeakSlope:
    """A working-set slope that looks like a leak, the span it was seen over, and why (`reason`
    without the rate, `evidence` with it)."""

    bytes_per_s: float
    window: datetime.timedelta
    reason: str

    @property
    def evidence(self) -> str:
        per_hour = quantity.humanize(max(0, round(self.bytes_per_s * 3600)))
        return f"{self.reason} (at least {per_hour}/h)"


def instances(
    series: Iterable[Series], *, restarts: Iterable[float] = (), max_gap: datetime.timedelta
) -> list[Instance]:
    """Split series into container lives, ordered by their last sample.

    A life ends where the series ends, at a restart time (a sample at or after a restart belongs to
    the next life), and where two samples are more than `max_gap` apart. Empty series give nothing.
    """
    cuts = sorted(set(restarts))
    gap = max_gap.total_seconds()
    found: list[Instance] = []
    for s in series:
        points = sorted(s.points)
        current: list[tuple[float, float]] = []
        for point in points:
            if current and (point[0] - current[-1][0] > gap or _restart_between(cuts, current[-1][0], point[0])):
                found.append(Instance(key=s.key, points=tuple(current)))
                current = []
            current.append(point)
        if current:
            found.append(Instance(key=s.key, points=tuple(current)))
    return sorted(found, key=lambda i: (i.end, i.start, i.key))


def _restart_between(cuts: Sequence[float], before: float, after: float) -> bool:
    return any(before < cut <= after for cut in cuts)


def least_squares_slope(points: Sequence[tuple[float, float]]) -> float | None:
    """The least-squares slope of y over x (bytes per second), as PromQL `deriv()` computes it.

    None for fewer than two points or when all x are equal.
    """
    n = len(points)
    if n < 2:
        return None
    mean_x = sum(x for x, _y in points) / n
    mean_y = sum(y for _x, y in points) / n
    sxx = sum((x - mean_x) ** 2 for x, _y in points)
    if sxx == 0:
        return None
    sxy = sum((x - mean_x) * (y - mean_y) for x, y in points)
    return sxy / sxx


def trend(instance: Instance, *, min_span: datetime.timedelta = MIN_INSTANCE_SPAN) -> Trend | None:
    """The instance's trend, or None when it is too short or too sparse to judge (see the module
    docstring: at least `min_span` (MIN_INSTANCE_SPAN) and MIN_SAMPLES, and a sample in every part)."""
    if instance.span < min_span or len(instance.points) < MIN_SAMPLES:
        return None
    slope = least_squares_slope(instance.points)
    if slope is None:
        return None
    width = (instance.end - instance.start) / FLOOR_CHUNKS
    floors: list[float | None] = [None] * FLOOR_CHUNKS
    for t, value in instance.points:
        index = min(int((t - instance.start) / width), FLOOR_CHUNKS - 1)
        low = floors[index]
        floors[index] = value if low is None else min(low, value)
    if any(f is None for f in floors):
        return None
    present = tuple(f for f in floors if f is not None)
    middle = (instance.start + instance.end) / 2
    early = least_squares_slope([p for p in instance.points if p[0] <= middle])
    late = least_squares_slope([p for p in instance.points if p[0] >= middle])
    slowing = early is not None and early > 0 and (late is None or late < float(SLOWDOWN_SHARE) * early)
    found = Trend(instance=instance, slope_bytes_per_s=slope, growing=False, slowing=slowing, floors=present)
    return dataclasses.replace(found, growing=found.rises(FLOOR_RISE_SHARE))


def leak_slope(trends: Sequence[Trend]) -> LeakSlope | None:
    """The leak slope from the judged instances, ordered by end time, or None (module docstring, 5)."""
    if not trends:
        return None
    last = trends[-1]
    agreeing: list[Trend] = []
    if len(trends) >= 2 and trends[-2].leaking and last.leaking and _starts_again(trends[-2], last):
        agreeing = [trends[-2], last]
        how = "the last 2 lives longer than " + duration.format(MIN_INSTANCE_SPAN) + " both grew steadily"
    elif last.leaking and last.instance.span >= FULL_CYCLE:
        agreeing = [last]
        how = f"the last life grew steadily for {duration.format(_whole_minutes(last.instance.span))}"
    if not agreeing:
        return None
    least = min(agreeing, key=lambda t: t.growth)
    return LeakSlope(bytes_per_s=least.slope_bytes_per_s, window=_whole_minutes(least.instance.span), reason=how)


def _starts_again(earlier: Trend, later: Trend) -> bool:
    """Whether `later` started from the bottom again, as a leak does after a restart: its first
    part's floor in the lower half of what `earlier`'s floor rose through. A second life on one
    daily rise picks up where the first stopped."""
    low, high = earlier.floors[0], earlier.floors[-1]
    return later.floors[0] <= low + (high - low) * float(RESTART_SHARE)


def describe(trends: Sequence[Trend]) -> str:
    """One line on what the lives showed, for the recommendation's evidence when no leak is seen."""
    if not trends:
        return f"no life longer than {duration.format(MIN_INSTANCE_SPAN)} to judge a trend"
    growing = sum(1 for t in trends if t.growing)
    slowing = sum(1 for t in trends if t.growing and t.slowing)
    text = f"{growing} of {len(trends)} lives longer than {duration.format(MIN_INSTANCE_SPAN)} grew steadily"
    return text + (f", {slowing} of them slowing down (filling, not leaking)" if slowing else "")


def working_set_slope(
    series: Iterable[Series], *, restarts: Iterable[float] = (), max_gap: datetime.timedelta
) -> tuple[LeakSlope | None, str]:
    """The leak slope of a container's series, and a line describing the lives it looked at."""
    judged = [t for t in (trend(i) for i in instances(series, restarts=restarts, max_gap=max_gap)) if t is not None]
    found = leak_slope(judged)
    return found, (found.evidence if found else describe(judged))


def _whole_minutes(td: datetime.timedelta) -> datetime.timedelta:
    return datetime.timedelta(minutes=int(td.total_seconds() // 60))
