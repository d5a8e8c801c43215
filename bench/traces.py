"""Seeded memory-usage traces for the recommendation-quality benchmark (bench/quality.py).

A trace is what one container *wants* to use, minute by minute, over a number of days. What it
can use is bounded by its limit; the simulator in quality.py decides when that bound kills it. The
demand of a running container at wall-clock minute `t` and container age `age` (minutes since it
last started) is

    wall[t] + leak_per_minute × age + by_age[age]   (by_age[age] is 0 past the end of the profile)

so a restart resets what depends on age (a leak starts again from its baseline, a start-up peak
comes back, a cache is empty again) and leaves what depends on the clock (a diurnal cycle, a step
change, a spike) alone.

Seven families, each generated from `random.Random(seed)` only, so the same seed gives the same
traces on every machine and Python version this project supports:

- `steady`: a constant level with autocorrelated noise (σ 1–5%);
- `step`: the level jumps ×1.3–2.5 once, between day 1 and day 8 (a release, a bigger tenant);
- `spiky`: 4–12 spikes of ×1.3–2.5 for 1–20 minutes at random times (batch requests, reports);
- `leak`: the working set grows 10–100% of its baseline per day of container age, until a restart;
- `diurnal`: a daily sine of amplitude 15–50%, a little higher or lower each day, quieter weekends;
- `startup`: a peak of ×1.5–4 over the first 3–30 minutes of every container life (JIT, caches);
- `plateau`: a cache, heap or lookup table that fills over hours to a plateau, and is empty again
  after every restart: +50–200% of the baseline, filling as 1 − e^(−age/τ) with τ of 2–12 hours.
  Within a life it rises like a leak; unlike a leak it stops.

Baselines are log-uniform between 128Mi and 4Gi, so small containers (where VPA's +100Mi and our
+64Mi floors matter) and large ones (where the factors matter) are both present.

The starting limit is the same rule for every strategy and family (`Trace.initial_limit`): the
median demand of hours 1–6 of the first container life, rounded up to a MiB — "the typical usage
someone saw in a short test", with no head-room. The first hour is skipped so a start-up peak does
not count as typical.
"""

from __future__ import annotations

import dataclasses
import math
import random
import statistics

MIB = 1024 * 1024
MINUTES_PER_DAY = 24 * 60
FAMILIES = ("steady", "step", "spiky", "leak", "diurnal", "startup", "plateau")
MIN_BASE = 128 * MIB
MAX_BASE = 4096 * MIB
# Hours 1–6 of the first life set the starting limit.
INITIAL_WINDOW = (60, 360)


@dataclasses.dataclass(frozen=True)
class Trace:
    """One container's memory demand in bytes; see the module docstring for the formula.

    `wall` is the demand by wall-clock minute (one entry per minute of the trace); `by_age` the extra
    demand by container age in minutes (a start-up peak, a cache that fills; 0 past its end);
    `leak_per_minute` bytes more per minute of age. A trace with `leak_per_minute > 0` is a leak:
    the benchmark judges its family by the leak flag, not by kills and waste.
    """

    family: str
    index: int
    seed: int
    wall: tuple[int, ...]
    leak_per_minute: float = 0.0
    by_age: tuple[int, ...] = ()

    @property
    def minutes(self) -> int:
        return len(self.wall)

    @property
    def name(self) -> str:
        return f"{self.family}-{self.index}"

    @property
    def leaks(self) -> bool:
        return self.leak_per_minute > 0

    def demand(self, minute: int, age: int) -> int:
        """Bytes wanted at wall-clock `minute` by a container that started `age` minutes earlier."""
        extra = self.by_age[age] if age < len(self.by_age) else 0
        return self.wall[minute] + int(self.leak_per_minute * age) + extra

    def demands(self, first: int, stop: int, started: int) -> list[int]:
        """`demand(m, m − started)` for m in [first, stop): the same values, computed in bulk."""
        wall = self.wall[first:stop]
        if not self.by_age and not self.leak_per_minute:
            return list(wall)
        ages = range(first - started, stop - started)
        profile = self.by_age[first - started : stop - started]
        profile += (0,) * (len(wall) - len(profile))
        if not self.leak_per_minute:
            return [w + p for w, p in zip(wall, profile)]
        rate = self.leak_per_minute
        return [w + int(rate * a) + p for w, a, p in zip(wall, ages, profile)]

    def initial_limit(self) -> int:
        """The starting limit (and request): median demand of hours 1–6 of the first life, in MiB."""
        lo, hi = INITIAL_WINDOW
        hi = min(hi, self.minutes)
        lo = min(lo, hi - 1)
        typical = statistics.median(self.demand(t, t) for t in range(lo, hi))
        return math.ceil(typical / MIB) * MIB


def _base(rng: random.Random) -> int:
    return round(math.exp(rng.uniform(math.log(MIN_BASE), math.log(MAX_BASE))))


def _noise(rng: random.Random, minutes: int) -> list[float]:
    """Autocorrelated relative noise (AR(1), φ = 0.95) with a stationary σ of 1–5%."""
    sigma = rng.uniform(0.01, 0.05)
    phi = 0.95
    step = sigma * math.sqrt(1 - phi * phi)
    value = rng.gauss(0, sigma)
    out = []
    for _ in range(minutes):
        value = phi * value + rng.gauss(0, step)
        out.append(value)
    return out


def _scaled(base: int, levels: list[float], noise: list[float]) -> tuple[int, ...]:
    return tuple(max(0, round(base * level * (1 + n))) for level, n in zip(levels, noise))


def steady(rng: random.Random, minutes: int) -> dict[str, object]:
    base = _base(rng)
    return {"wall": _scaled(base, [1.0] * minutes, _noise(rng, minutes))}


def step(rng: random.Random, minutes: int) -> dict[str, object]:
    base = _base(rng)
    lo = min(MINUTES_PER_DAY, minutes // 2)
    at = rng.randint(lo, max(lo, min(8 * MINUTES_PER_DAY, minutes - 1)))
    factor = rng.uniform(1.3, 2.5)
    levels = [1.0 if t < at else factor for t in range(minutes)]
    return {"wall": _scaled(base, levels, _noise(rng, minutes))}


def spiky(rng: random.Random, minutes: int) -> dict[str, object]:
    base = _base(rng)
    levels = [1.0] * minutes
    for _ in range(rng.randint(4, 12)):
        start = rng.randrange(minutes)
        length = rng.randint(1, 20)
        height = rng.uniform(1.3, 2.5)
        for t in range(start, min(start + length, minutes)):
            levels[t] = max(levels[t], height)
    return {"wall": _scaled(base, levels, _noise(rng, minutes))}


def leak(rng: random.Random, minutes: int) -> dict[str, object]:
    base = _base(rng)
    per_day = rng.uniform(0.1, 1.0)
    return {
        "wall": _scaled(base, [1.0] * minutes, _noise(rng, minutes)),
        "leak_per_minute": base * per_day / MINUTES_PER_DAY,
    }


def diurnal(rng: random.Random, minutes: int) -> dict[str, object]:
    base = _base(rng)
    amplitude = rng.uniform(0.15, 0.5)
    phase = rng.uniform(0, 2 * math.pi)
    days = minutes // MINUTES_PER_DAY + 1
    daily = [rng.uniform(0.85, 1.15) for _ in range(days)]
    weekend = rng.uniform(0.6, 0.9)
    first_weekend_day = rng.randrange(7)
    levels = []
    for t in range(minutes):
        day = t // MINUTES_PER_DAY
        quiet = (day - first_weekend_day) % 7 in (0, 1)
        swing = amplitude * daily[day] * (weekend if quiet else 1.0)
        levels.append(1 + swing * math.sin(2 * math.pi * t / MINUTES_PER_DAY + phase))
    return {"wall": _scaled(base, levels, _noise(rng, minutes))}


def startup(rng: random.Random, minutes: int) -> dict[str, object]:
    base = _base(rng)
    length = rng.randint(3, 30)
    extra = base * (rng.uniform(1.5, 4.0) - 1)
    top = max(1, length // 3)
    profile = []
    for age in range(length):
        # Rises to the peak over the first third, then falls back to the baseline.
        shape = (age + 1) / top if age < top else (length - age) / (length - top + 1)
        profile.append(round(extra * min(1.0, shape)))
    return {"wall": _scaled(base, [1.0] * minutes, _noise(rng, minutes)), "by_age": tuple(profile)}


def plateau(rng: random.Random, minutes: int) -> dict[str, object]:
    base = _base(rng)
    height = base * rng.uniform(0.5, 2.0)
    tau = 60 * math.exp(rng.uniform(math.log(2), math.log(12)))
    fill = tuple(round(height * (1 - math.exp(-age / tau))) for age in range(minutes))
    return {"wall": _scaled(base, [1.0] * minutes, _noise(rng, minutes)), "by_age": fill}


GENERATORS = {
    "steady": steady,
    "step": step,
    "spiky": spiky,
    "leak": leak,
    "diurnal": diurnal,
    "startup": startup,
    "plateau": plateau,
}


def trace_seed(seed: int, family: str, index: int) -> int:
    """The seed of one trace: a pure function of the run's seed, the family and the index."""
    return seed * 1_000_003 + FAMILIES.index(family) * 10_007 + index


def generate(*, family: str, seed: int, index: int, days: int = 14) -> Trace:
    """One trace of `family`, from `random.Random(trace_seed(seed, family, index))` only."""
    own = trace_seed(seed, family, index)
    fields = GENERATORS[family](random.Random(own), days * MINUTES_PER_DAY)
    return Trace(family=family, index=index, seed=own, **fields)  # type: ignore[arg-type]


def generate_all(*, seed: int, per_family: int, days: int = 14, families: tuple[str, ...] = FAMILIES) -> list[Trace]:
    """`per_family` traces of each family, in family order."""
    return [generate(family=f, seed=seed, index=i, days=days) for f in families for i in range(per_family)]
