"""The working-set slope between restarts (`domain.usage`): which lives count, when a trend is a
leak, and that the shapes that fooled a naive least-squares slope do not.

Pure; nothing is faked. Besides tables of hand-made lives, the benchmark's seeded trace families
(bench/traces.py) are replayed by the benchmark's simulator (bench/quality.py), with kills and
restarts, and the slope computed from what Prometheus would hold.
"""

from __future__ import annotations

import dataclasses
import datetime
import math
import random

import pytest
from bench import quality
from bench import traces as bench_traces

from oomtuner.api import policy
from oomtuner.domain import recommend, usage

MI = 1024 * 1024
HOUR = 3600.0
GI = 1024 * MI
GAP = datetime.timedelta(minutes=10)


def line(start: float, end: float, *, base: float, per_hour: float = 0.0, every: float = 60.0,
         wiggle: float = 0.0) -> tuple[tuple[float, float], ...]:
    """Samples of a straight line, with an optional deterministic ±wiggle (a fixed zig-zag)."""
    n = int((end - start) // every) + 1
    return tuple((start + i * every, base + per_hour * (i * every) / HOUR + (wiggle if i % 2 else -wiggle))
                 for i in range(n))


def noisy(points: tuple[tuple[float, float], ...], *, sigma: float, seed: int = 7) -> tuple[tuple[float, float], ...]:
    rng = random.Random(seed)
    return tuple((t, v + rng.gauss(0, sigma)) for t, v in points)


def series(key: str, *parts: tuple[tuple[float, float], ...]) -> usage.Series:
    return usage.Series(key=key, points=tuple(p for part in parts for p in part))


def slope_of(*ss: usage.Series, restarts: tuple[float, ...] = ()) -> tuple[usage.LeakSlope | None, str]:
    return usage.working_set_slope(ss, restarts=restarts, max_gap=GAP)


# ---- instances ---------------------------------------------------------------------------------------


def test_lives_are_split_by_identity_restarts_and_gaps() -> None:
    a = series("pod/a", line(0, 2 * HOUR, base=100), line(3 * HOUR, 4 * HOUR, base=100))  # a 1h gap
    b = series("pod/b", line(4 * HOUR, 6 * HOUR, base=100))
    found = usage.instances([a, b], restarts=[5 * HOUR], max_gap=GAP)
    assert [(i.key, i.start, i.end) for i in found] == [
        ("pod/a", 0, 2 * HOUR), ("pod/a", 3 * HOUR, 4 * HOUR), ("pod/b", 4 * HOUR, 5 * HOUR - 60), ("pod/b", 5 * HOUR, 6 * HOUR),
    ]


def test_samples_in_any_order_and_empty_series() -> None:
    points = line(0, HOUR, base=1)
    found = usage.instances([usage.Series("x", tuple(reversed(points))), usage.Series("y", ())], max_gap=GAP)
    assert len(found) == 1 and found[0].points == points


def test_least_squares_slope_matches_the_line_and_handles_degenerate_input() -> None:
    assert usage.least_squares_slope(line(0, HOUR, base=5, per_hour=3600)) == pytest.approx(1.0)
    assert usage.least_squares_slope([(1.0, 2.0)]) is None
    assert usage.least_squares_slope([(1.0, 2.0), (1.0, 3.0)]) is None


# ---- one life's trend --------------------------------------------------------------------------------


@pytest.mark.parametrize(("points", "growing"), [
    (line(0, 2 * HOUR, base=100 * MI, per_hour=50 * MI), True),                        # a leak
    (line(0, 2 * HOUR, base=100 * MI, per_hour=50 * MI, wiggle=2 * MI), True),          # a leak with noise
    (noisy(line(0, 2 * HOUR, base=100 * MI, per_hour=1 * MI), sigma=5 * MI), False),   # noise over a tiny trend
    (line(0, HOUR, base=100 * MI) + line(HOUR + 60, 2 * HOUR, base=200 * MI), False),   # a step
    (line(0, 10 * 60, base=100 * MI, per_hour=600 * MI) + line(11 * 60, 3 * HOUR, base=200 * MI), False),  # start-up ramp
    (line(0, 2 * HOUR, base=100 * MI, per_hour=-20 * MI), False),                       # shrinking
    (line(0, 2 * HOUR, base=100 * MI), False),                                          # flat
])
def test_a_life_grows_when_its_floor_rises_in_every_part(points: tuple[tuple[float, float], ...], growing: bool) -> None:
    trend = usage.trend(usage.Instance("x", points))
    assert trend is not None and trend.growing is growing


def filling(start: float, end: float, *, base: float, height: float, tau_h: float, every: int = 60) -> tuple[tuple[float, float], ...]:
    """A cache that fills towards `base + height` as 1 − e^(−age/τ), from `start`."""
    return tuple((float(t), base + height * (1 - math.exp(-(t - start) / (tau_h * HOUR))))
                 for t in range(int(start), int(end) + 1, every))


@pytest.mark.parametrize(("points", "leaking"), [
    (line(0, 12 * HOUR, base=100 * MI, per_hour=20 * MI), True),                             # a leak keeps its pace
    (line(0, 12 * HOUR, base=100 * MI, per_hour=20 * MI, wiggle=2 * MI), True),
    (filling(0, 12 * HOUR, base=100 * MI, height=400 * MI, tau_h=8), False),                # e^(-12/16) = 0.47
    (filling(0, 14 * HOUR, base=1 * GI, height=1 * GI, tau_h=12), False),                   # e^(-14/24) = 0.56
    (filling(0, 4 * HOUR, base=100 * MI, height=400 * MI, tau_h=12), True),                 # early in the fill: e^(-4/24)
])
def test_a_growing_life_leaks_only_when_it_does_not_slow_down(points: tuple[tuple[float, float], ...], leaking: bool) -> None:
    trend = usage.trend(usage.Instance("x", points))
    assert trend is not None and trend.growing
    assert trend.leaking is leaking and trend.slowing is not leaking


def test_two_lives_filling_towards_a_plateau_are_no_leak_slope() -> None:
    # A short first life early in the fill, then a longer one at a raised limit that slows down:
    # both grow steadily, but only the first keeps its pace.
    first = filling(0, 3.5 * HOUR, base=1 * GI, height=1 * GI, tau_h=10)
    second = filling(3.5 * HOUR + 60, 18 * HOUR, base=1 * GI, height=1 * GI, tau_h=10)
    found, text = slope_of(series("p/1", first), series("p/2", second))
    assert found is None
    assert text == "2 of 2 lives longer than 1h grew steadily, 1 of them slowing down (filling, not leaking)"


def test_two_lives_on_one_daily_rise_are_no_leak_slope() -> None:
    # One rise of 60Mi an hour cut by a kill after 3.5 hours: the second life picks up where the
    # first stopped. A leak's second life starts from the bottom again (the last test's pair).
    first = line(0, 3.5 * HOUR, base=400 * MI, per_hour=60 * MI)
    second = line(3.5 * HOUR + 60, 7 * HOUR, base=610 * MI, per_hour=60 * MI)
    found, text = slope_of(series("p/1", first), series("p/2", second))
    assert found is None and text == "2 of 2 lives longer than 1h grew steadily"
    again = tuple((t + 3.5 * HOUR + 60, v) for t, v in first)
    assert slope_of(series("p/1", first), series("p/2", again))[0] is not None


def test_a_spike_raises_the_least_squares_slope_but_no_floor() -> None:
    flat = list(line(0, 2 * HOUR, base=100 * MI))
    spiked = [(t, v * 3 if t > 1.8 * HOUR else v) for t, v in flat]
    trend = usage.trend(usage.Instance("x", tuple(spiked)))
    assert trend is not None and trend.slope_bytes_per_s > 0 and not trend.growing


@pytest.mark.parametrize("points", [
    line(0, HOUR - 60, base=1, per_hour=100 * MI),           # shorter than an hour
    line(0, 2 * HOUR, base=1, per_hour=100 * MI, every=1200),  # 7 samples
])
def test_short_or_sparse_lives_are_not_judged(points: tuple[tuple[float, float], ...]) -> None:
    assert usage.trend(usage.Instance("x", points)) is None


# ---- the leak slope ----------------------------------------------------------------------------------


def test_two_growing_lives_give_the_slope_of_the_one_that_grew_least() -> None:
    first = line(0, 2 * HOUR, base=64 * MI, per_hour=100 * MI)
    second = line(2 * HOUR, 3.5 * HOUR, base=64 * MI, per_hour=120 * MI)
    found, text = slope_of(series("p/1", first), series("p/2", second))
    assert found is not None
    # growth: 200Mi over 2h against 180Mi over 1h30m: the second grew least.
    assert found.bytes_per_s == pytest.approx(120 * MI / HOUR)
    assert found.window == datetime.timedelta(minutes=90)
    assert "the last 2 lives longer than 1h both grew steadily" in text and "/h" in text


def test_restart_times_split_one_series_into_lives() -> None:
    one = series("p/same-id", line(0, 2 * HOUR - 60, base=64 * MI, per_hour=100 * MI),
                 line(2 * HOUR, 4 * HOUR, base=64 * MI, per_hour=100 * MI))
    assert slope_of(one)[0] is None  # one sawtooth life: its floor does not rise in every part
    found, _ = slope_of(one, restarts=(2 * HOUR,))
    assert found is not None and found.bytes_per_s == pytest.approx(100 * MI / HOUR, rel=1e-6)


def test_one_growing_life_is_a_leak_only_when_it_ran_a_day() -> None:
    found, text = slope_of(series("p/1", line(0, 12 * HOUR, base=64 * MI, per_hour=10 * MI, every=300)))
    assert found is None and text == "1 of 1 lives longer than 1h grew steadily"
    found, text = slope_of(series("p/1", line(0, 30 * HOUR, base=64 * MI, per_hour=10 * MI, every=300)))
    assert found is not None and "the last life grew steadily for 1d6h" in text


def test_the_last_two_lives_decide() -> None:
    grow = line(0, 2 * HOUR, base=64 * MI, per_hour=100 * MI)
    flat = line(2 * HOUR, 4 * HOUR, base=64 * MI)
    assert slope_of(series("p/1", grow), series("p/2", flat))[0] is None
    assert slope_of(series("p/0", flat), series("p/1", tuple((t + 2 * HOUR, v) for t, v in grow)))[0] is None
    # Short lives in between (a crash loop) are not judged, so they do not break the pair.
    short = line(2 * HOUR, 2 * HOUR + 600, base=64 * MI)
    late = tuple((t + 2.5 * HOUR, v) for t, v in grow)
    found, _ = slope_of(series("p/1", grow), series("p/2", short), series("p/3", late))
    assert found is not None


def test_nothing_to_judge() -> None:
    assert slope_of() == (None, "no life longer than 1h to judge a trend")


# ---- the benchmark's shapes, replayed with kills as the operator sees them ---------------------------


@dataclasses.dataclass
class OursWithSlope(quality.Ours):
    """The benchmark's `ours`, with the slope the operator computes: the working set of the lookback
    (from the second-to-last killed life on, as `prom.usage.slope_range`), as `max_over_time` at a
    step of at most 2000 points, cut into lives at the kills. Settle is off: these tests are about
    the leak rule, and settling changes the lives it sees (bench/README.md measures both together)."""

    name: str = "ours-slope"
    settings: policy.MemorySettings = dataclasses.field(
        default_factory=lambda: policy.MemorySettings(settle=policy.SettleSettings(enabled=False)))

    def usage(self, history: quality.History) -> recommend.Usage:
        minutes = int(self.lookback.total_seconds() // 60)
        start = max(0, history.now - minutes + 1)
        if len(history.kills) >= 2:
            start = max(start, history.kills[-2].started)
        step = max(1, math.ceil((history.now - start + 1) / 2000))
        points = []
        for m0 in range(start, history.now + 1, step):
            seen = [v for v in history.observed[m0:min(m0 + step, history.now + 1)] if v != quality.NO_SAMPLE]
            if seen:
                points.append((float((m0 + step - 1) * 60), float(max(seen))))
        restarts = [k.minute * 60 + 30 for k in history.kills]
        found, _ = usage.working_set_slope([usage.Series("pod/app", tuple(points))], restarts=restarts,
                                           max_gap=datetime.timedelta(minutes=max(10, 10 * step)))
        return recommend.Usage(peak=history.peak(minutes), slope_bytes_per_s=found.bytes_per_s if found else None,
                               window=found.window if found else None, source="replayed")


@pytest.mark.parametrize("family", ["steady", "step", "spiky", "diurnal", "startup", "plateau"])
def test_no_leak_is_flagged_on_shapes_that_are_not_leaks(family: str) -> None:
    # A naive least-squares slope of the killed life flagged 10% of step and 30% of diurnal traces.
    flagged = []
    for index in range(10):
        outcome = quality.simulate(bench_traces.generate(family=family, seed=1, index=index, days=14), OursWithSlope())
        if outcome.leak_flag_kill is not None:
            flagged.append(outcome.trace)
    assert not flagged, f"false SuspectedLeak on {flagged}"


def test_every_leak_is_flagged_within_a_few_kills() -> None:
    for index in range(10):
        outcome = quality.simulate(bench_traces.generate(family="leak", seed=1, index=index, days=14), OursWithSlope())
        assert outcome.leak_flag_kill is not None and outcome.leak_flag_kill <= 4, outcome.trace


def test_window_is_whole_minutes() -> None:
    found, _ = slope_of(series("p/1", line(0, 30 * HOUR + 59, base=64 * MI, per_hour=10 * MI, every=300)))
    assert found is not None and found.window.total_seconds() % 60 == 0 and math.isfinite(found.bytes_per_s)
