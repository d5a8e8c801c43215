"""VPA v1.8.1's memory recommender and updater, for the quality benchmark (bench/quality.py).

A model of what the Vertical Pod Autoscaler does with one container's memory, read from the
v1.8.1 sources (`k8s.io/autoscaler/vertical-pod-autoscaler`, the version hack/vpa builds and
bench/vpa.py runs), at its default flags:

- **Peaks** (`pkg/recommender/model/container.go`, `addMemorySample`): each container of each pod
  keeps one peak per 24 h aggregation interval, which starts at its first sample. Every working-set
  sample above the interval's peak replaces it in the aggregate histogram.
- **OOM** (`RecordOOM`): a kill adds the sample max(used + 100Mi, used × 1.2) to the current
  interval, with used = max(request, the interval's usage peak).
- **Histogram** (`pkg/recommender/util`): the aggregate of every pod's peaks (pods that are gone
  included), in exponential buckets (first 10MB, each 5% wider, up to 1TB), each peak weighted
  2^(interval end / 24 h): older peaks count half as much per day.
- **Recommendation** (`pkg/recommender/logic`): target = the 90th percentile (the end of its bucket)
  × 1.15; lower bound = the 50th × 1.15 × (1 + 0.001/days)^−2; upper bound = the 95th × 1.15 ×
  (1 + 1/days), where days is the history's length (and samples per 1440, the lower of the two);
  each at least 250Mi (pod-recommendation-min-memory-mb, one container).
- **Updater** (`pkg/updater/priority`): a pod is evicted, and its replacement gets the target as
  request (the admission controller; the limit keeps its ratio), when its request is outside the
  bounds, or after a quick OOM (the container lived < 10 min and died < 10 min ago) when the target
  differs, or once the pod has run 12 h and the target differs by 10% or more. Left out: the
  updater's `min-replicas` (2 by default: a one-replica workload needs `minReplicas: 1` in its
  VerticalPodAutoscaler for any of this), eviction rate limits and PodDisruptionBudgets.

`Recommender` is the model of one workload's container name across its pods; `tests/unit/
test_bench_quality.py` replays bench/vpa.py's measurement of the real recommender with it (128Mi →
283Mi → 454Mi → 640Mi, no raise at the 4th kill, 932Mi at the 5th). Times are minutes since the
benchmark's epoch, a midnight (VPA's decay reference is a multiple of 24 h).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

MIB = 1024 * 1024
INTERVAL_MINUTES = 24 * 60  # MemoryAggregationInterval and MemoryHistogramDecayHalfLife: 24h
FIRST_BUCKET = 1e7
BUCKET_RATIO = 1.0 + 0.05
MAX_MEMORY = 1e12
NUM_BUCKETS = int(math.ceil(math.log(MAX_MEMORY * (BUCKET_RATIO - 1) / FIRST_BUCKET + 1) / math.log(BUCKET_RATIO))) + 1
EPSILON = 0.001 * 0.1
OOM_MIN_BUMP = 100 * MIB
OOM_BUMP_RATIO = 1.2
SAFETY_MARGIN = 0.15
POD_MIN_MEMORY = 250 * MIB
MAX_RESOURCE_AMOUNT = 1e14  # model.MaxResourceAmount
TARGET_PERCENTILE, LOWER_PERCENTILE, UPPER_PERCENTILE = 0.9, 0.5, 0.95
# Updater defaults (pkg/updater/config).
POD_LIFETIME_UPDATE_THRESHOLD = 12 * 60
EVICT_AFTER_OOM_THRESHOLD = 10
MIN_CHANGE_PRIORITY = 0.1


def find_bucket(value: float) -> int:
    """exponentialHistogramOptions.FindBucket."""
    if value < FIRST_BUCKET:
        return 0
    bucket = int(math.log(value * (BUCKET_RATIO - 1) / FIRST_BUCKET + 1) / math.log(BUCKET_RATIO))
    return min(bucket, NUM_BUCKETS - 1)


def bucket_start(bucket: int) -> float:
    """exponentialHistogramOptions.GetBucketStart."""
    if bucket == 0:
        return 0.0
    return FIRST_BUCKET * (math.pow(BUCKET_RATIO, bucket) - 1) / (BUCKET_RATIO - 1)


def bucket_end(value: float) -> float:
    """What a percentile that falls in `value`'s bucket returns: the bucket's end."""
    bucket = find_bucket(value)
    return bucket_start(bucket + 1) if bucket < NUM_BUCKETS - 1 else bucket_start(bucket)


def _amount(value: float) -> int:
    """resourceAmountFromFloat: truncated, at most MaxResourceAmount."""
    if value > MAX_RESOURCE_AMOUNT:
        return int(MAX_RESOURCE_AMOUNT)
    return int(max(value, 0.0))


def with_margin(base: float) -> int:
    """memoryMarginEstimator: base + base × 0.15, each truncated as ResourceAmount."""
    amount = _amount(base)
    return amount + _amount(amount * SAFETY_MARGIN)


def oom_sample(used: int) -> int:
    """RecordOOM's sample: max(used + OOMMinBumpUp, used × OOMBumpUpRatio)."""
    return max(used + OOM_MIN_BUMP, _amount(used * OOM_BUMP_RATIO))


def target_after_oom(sample: int) -> int:
    """The target right after an OOM whose sample dominates the histogram: its bucket's end × 1.15,
    at least 250Mi."""
    return max(with_margin(bucket_end(sample)), POD_MIN_MEMORY)


@dataclasses.dataclass
class _Peaks:
    """One container's (one pod's) aggregation state: ContainerState's memory fields."""

    window_end: float | None = None
    memory_peak: int = 0
    oom_peak: int = 0
    last_sample: float = -math.inf

    @property
    def peak(self) -> int:
        return max(self.memory_peak, self.oom_peak)


@dataclasses.dataclass
class Recommender:
    """The memory model of one container name across all pods of one workload."""

    weights: dict[int, float] = dataclasses.field(default_factory=dict)
    total: float = 0.0
    pods: dict[str, _Peaks] = dataclasses.field(default_factory=dict)
    first_sample: float | None = None
    last_sample: float | None = None
    samples: int = 0

    def _add(self, value: int, at: float) -> None:
        weight = math.pow(2.0, at / INTERVAL_MINUTES)
        bucket = find_bucket(value)
        self.weights[bucket] = self.weights.get(bucket, 0.0) + weight
        self.total += weight

    def _subtract(self, value: int, at: float) -> None:
        weight = math.pow(2.0, at / INTERVAL_MINUTES)
        bucket = find_bucket(value)
        self.total = _safe_subtract(self.total, weight)
        left = _safe_subtract(self.weights.get(bucket, 0.0), weight)
        if left:
            self.weights[bucket] = left
        else:
            self.weights.pop(bucket, None)

    def _sample(self, state: _Peaks, at: float, value: int, *, oom: bool) -> None:
        """addMemorySample, for one sample in time order."""
        if not oom and at < state.last_sample:
            return
        state.last_sample = at
        if state.window_end is None:
            state.window_end = at
        new_peak = False
        if at < state.window_end:
            old = state.peak
            if old != 0 and value > old:
                self._subtract(old, state.window_end)
                new_peak = True
        else:
            shift = (at - state.window_end) // INTERVAL_MINUTES * INTERVAL_MINUTES + INTERVAL_MINUTES
            state.window_end += shift
            state.memory_peak = state.oom_peak = 0
            new_peak = True
        if new_peak:
            self._add(value, state.window_end)
            if oom:
                state.oom_peak = value
            else:
                state.memory_peak = value

    def add_samples(self, pod: str, first: int, values: Sequence[int]) -> None:
        """Working-set samples of `pod`, one a minute from minute `first`; negative values are no
        sample. The same state as one `addMemorySample` per sample: per interval, only the highest
        sample can become the peak, and it does at its own time."""
        state = self.pods.setdefault(pod, _Peaks())
        minute, end = first, first + len(values)
        while minute < end:
            if state.window_end is None or minute >= state.window_end:
                # The interval this sample opens (or the first one) starts with it.
                stop = minute + 1
            else:
                stop = min(end, int(math.ceil(state.window_end)))
            chunk = values[minute - first : stop - first]
            top = max(chunk)
            if top >= 0:
                self.samples += len(chunk) - sum(1 for v in chunk if v < 0)
                at = minute + chunk.index(top)
                self._sample(state, float(at), top, oom=False)
                self.first_sample = at if self.first_sample is None else min(self.first_sample, at)
                last = minute + max(i for i, v in enumerate(chunk) if v >= 0)
                self.last_sample = last if self.last_sample is None else max(self.last_sample, last)
                state.last_sample = max(state.last_sample, float(last))
            minute = stop

    def record_oom(self, pod: str, at: float, request: int) -> int:
        """RecordOOM for a kill of `pod` at `at` with this memory request; returns the sample."""
        state = self.pods.setdefault(pod, _Peaks())
        sample = oom_sample(max(request, state.memory_peak))
        self._sample(state, at, sample, oom=True)
        return sample

    def percentile(self, p: float) -> float:
        """histogram.Percentile: the end of the first bucket where the running weight reaches p of
        the total (the last bucket otherwise); 0 when empty."""
        if not self.weights:
            return 0.0
        threshold = p * self.total
        buckets = sorted(self.weights)
        chosen = buckets[-1]
        running = 0.0
        for bucket in buckets[:-1]:
            running += self.weights[bucket]
            if running >= threshold:
                chosen = bucket
                break
        return bucket_start(chosen + 1) if chosen < NUM_BUCKETS - 1 else bucket_start(chosen)

    def confidence(self) -> float:
        """getConfidence: the history's length in days, or its samples per day if fewer."""
        if self.first_sample is None or self.last_sample is None:
            return 0.0
        return min((self.last_sample - self.first_sample) / INTERVAL_MINUTES, self.samples / INTERVAL_MINUTES)

    def recommendation(self) -> tuple[int, int, int]:
        """(target, lower bound, upper bound) in bytes."""
        confidence = self.confidence()
        target = with_margin(self.percentile(TARGET_PERCENTILE))
        lower = with_margin(self.percentile(LOWER_PERCENTILE))
        upper = with_margin(self.percentile(UPPER_PERCENTILE))
        lower = _amount(lower * math.pow(1 + 0.001 / confidence, -2.0)) if confidence > 0 else 0
        upper = _amount(upper * (1 + 1 / confidence)) if confidence > 0 else int(MAX_RESOURCE_AMOUNT)
        return max(target, POD_MIN_MEMORY), max(lower, POD_MIN_MEMORY), max(upper, POD_MIN_MEMORY)


def _safe_subtract(value: float, sub: float) -> float:
    value -= sub
    return 0.0 if value < EPSILON else value


def evicts(
    *, request: int, recommendation: tuple[int, int, int], pod_age: int, quick_oom: bool
) -> bool:
    """UpdatePriorityCalculator.AddPod for a one-container pod: whether the updater evicts it."""
    target, lower, upper = recommendation
    outside = request < lower or request > upper
    diff = abs(request - target) / max(request, 1)
    if not outside and not quick_oom:
        if pod_age < POD_LIFETIME_UPDATE_THRESHOLD or diff < MIN_CHANGE_PRIORITY:
            return False
    return not (quick_oom and diff == 0)
