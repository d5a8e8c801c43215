"""The operator's usage lookup, run against the simulated cluster's Prometheus (for bench/quality.py).

`usage()` runs the operator's own `oomtuner.prom.usage.PrometheusUsage.history` — the step sizes,
the range of the slope query, the gap that splits lives, the parsing, `assemble` and through it
`domain.usage.working_set_slope` — with the operator's default settings (`config.Settings`:
2000 points at most, steps of at least 30 s; the policy's lookback). Only the HTTP client is
replaced: `Prometheus` answers the two queries the operator sends from what the simulated cluster
would have stored, evaluated as Prometheus 3 evaluates them:

- Raw samples: one `container_memory_working_set_bytes` sample a minute (the traces' resolution),
  at the start of each minute a container runs (the demand, never above the limit; the minute of a
  kill shows the limit), and none while no container runs. Each container life is its own series
  (cAdvisor's `id`), labelled with its pod; a life's series goes stale one scrape after its last
  sample. Pods are named as a Deployment's (`app-<template hash>-<suffix>`); a rollout (a raised
  limit) starts a new pod, a crash-loop restart a new life in the same pod.
- The instant query (`peak`, `p95`): `max_over_time` over the raw samples of the lookback; the p95
  is each pod's `quantile_over_time(0.95, …)` over the subquery's step-aligned instants (at each
  instant, the sample of the minute, if that pod had a live series then), and of those the
  highest. No kube-state-metrics series (they are informational only).
- The range query: at `start + k × step` up to `end` (rounded to seconds, as the client sends
  them), `max_over_time` of each series of the selected pods over `(t − window, t]`.

The same range query, over every pod of the workload since a raise, answers settle's lookup
(`since_raise`).

The selectors' pod regexes are applied to the pod names, and the lookback, subquery step and window
are read from the PromQL, so the answer is to the query that was really built. A query of another
shape raises, which the operator's client turns into a failed lookup; `usage()` raises then, so the
benchmark never falls back silently to kills alone.
"""

from __future__ import annotations

import bisect
import dataclasses
import datetime
import json
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

from oomtuner import config
from oomtuner.domain import duration, kills, recommend, settle
from oomtuner.prom import promql
from oomtuner.prom import usage as prom_usage

NAMESPACE = "bench"
WORKLOAD_KIND = "Deployment"
WORKLOAD = "app"
CONTAINER = "app"
SCRAPE_SECONDS = 60
NO_SAMPLE = -1
# pod-template-hash and generateName suffixes use these characters (k8s.io/apimachinery util/rand).
_NAME_CHARS = "bcdfghjklmnpqrstvwxz2456789"
_LOOKBACK_AND_STEP = re.compile(r"\[(\d+)s:(\d+)s\]")
_WINDOW = re.compile(r"max_over_time\(" + promql.WORKING_SET + r"\{.*\}\[(\d+)s\]\)")
_PODS = re.compile(r'pod=~("(?:[^"\\]|\\.)*")')


def pod_name(index: int) -> str:
    """The `index`-th pod of the simulated Deployment (one per rollout), e.g. `app-bbbbbbbbbc-bbbbc`."""
    return f"{WORKLOAD}-{_word(index, 10)}-{_word(index * 7919 + 1, 5)}"


def _word(n: int, width: int) -> str:
    chars = []
    for _ in range(width):
        n, digit = divmod(n, len(_NAME_CHARS))
        chars.append(_NAME_CHARS[digit])
    return "".join(reversed(chars))


@dataclasses.dataclass(frozen=True)
class Life:
    """One container life: its pod and its first and last minute (inclusive)."""

    pod: str
    start: int
    end: int

    @property
    def series_id(self) -> str:
        return f"/kubepods/{self.pod}/{self.start}"


def _seconds(minute: int, epoch: float) -> float:
    return epoch + minute * SCRAPE_SECONDS


class Prometheus:
    """Answers the operator's two queries from `observed` (bytes per minute, or NO_SAMPLE) and the
    lives that produced it; minute 0 is at `epoch` (Unix seconds, a multiple of a minute)."""

    def __init__(self, *, observed: Sequence[int], lives: Sequence[Life], epoch: float):
        self.observed = observed
        self.lives = lives
        self.epoch = epoch

    def _minute(self, at: float) -> int:
        """The minute whose sample is the latest at or before `at`."""
        return math.floor((at - self.epoch) / SCRAPE_SECONDS)

    def _lives(self, promql: str) -> list[Life]:
        found = _PODS.search(promql)
        if found is None:
            raise ValueError(f"no pod selector in {promql[:80]!r}")
        pattern = re.compile(json.loads(found.group(1)))
        return [life for life in self.lives if pattern.fullmatch(life.pod)]

    def custom_query(self, query: str, params: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
        shape = _LOOKBACK_AND_STEP.search(query)
        if shape is None or params is None or "time" not in params:
            raise ValueError(f"not the operator's summary query: {query[:80]!r}")
        now = float(params["time"])
        lookback, step = int(shape.group(1)), int(shape.group(2))
        first = self._minute(now - lookback) + 1  # the range (now − lookback, now] is open on the left
        last = self._minute(now)
        lives = sorted((life for life in self._lives(query) if life.end >= first and life.start <= last), key=lambda life: life.start)
        if not lives:
            return []
        peak = max(max(self.observed[max(first, life.start) : min(last, life.end) + 1]) for life in lives)
        starts = [life.start for life in lives]
        per_pod: dict[str, list[int]] = {}
        # Subquery instants: multiples of the step (in Unix time) in (now − lookback, now]; at each,
        # the sample of that minute if a life ran then (a life's series is stale a scrape after its end).
        for at in range((math.floor((now - lookback) / step) + 1) * step, math.floor(now) + 1, step):
            minute = self._minute(at)
            index = bisect.bisect_right(starts, minute) - 1
            if index >= 0 and minute <= lives[index].end:
                per_pod.setdefault(lives[index].pod, []).append(self.observed[minute])
        rows = [_stat("peak", peak, now)]
        if per_pod:
            rows.append(_stat("p95", max(_quantile(0.95, v) for v in per_pod.values()), now))
        return rows

    def custom_query_range(
        self, query: str, start_time: datetime.datetime, end_time: datetime.datetime, step: str,
        params: Mapping[str, Any] | None = None,
    ) -> list[dict[str, Any]]:
        window = _WINDOW.search(query)
        if window is None:
            raise ValueError(f"not the operator's slope query: {query[:80]!r}")
        width = int(window.group(1))
        every = round(duration.parse(step).total_seconds())
        start, end = round(start_time.timestamp()), round(end_time.timestamp())
        rows = []
        for life in self._lives(query):
            first_s, last_s = _seconds(life.start, self.epoch), _seconds(life.end, self.epoch)
            if last_s <= start - width or first_s > end:
                continue
            values = []
            # Instants whose window (at − width, at] holds a sample of this life.
            k = max(0, math.ceil((first_s - start) / every))
            while (at := start + k * every) <= end and at - width < last_s:
                lo = max(life.start, self._minute(at - width) + 1)
                hi = min(life.end, self._minute(at))
                if lo <= hi:
                    values.append([at, str(max(self.observed[lo : hi + 1]))])
                k += 1
            if values:
                rows.append({"metric": {"container": CONTAINER, "pod": life.pod, "id": life.series_id}, "values": values})
        return rows


def _stat(name: str, value: float, at: float) -> dict[str, Any]:
    return {"metric": {"container": CONTAINER, promql.STAT_LABEL: name}, "value": [at, repr(float(value))]}


def _quantile(q: float, values: Sequence[float]) -> float:
    """Prometheus' quantile_over_time: linear interpolation between the closest ranks."""
    ordered = sorted(values)
    rank = q * (len(ordered) - 1)
    lower = max(0, math.floor(rank))
    upper = min(len(ordered) - 1, lower + 1)
    weight = rank - math.floor(rank)
    return ordered[lower] * (1 - weight) + ordered[upper] * weight


def _default(field: str) -> Any:
    return config.Settings.model_fields[field].default


def _source(*, observed: Sequence[int], lives: Sequence[Life], epoch: datetime.datetime) -> prom_usage.PrometheusUsage:
    """The operator's Prometheus client at its default settings, answered by the simulated cluster."""
    source = prom_usage.PrometheusUsage(
        url="http://simulated-prometheus",
        timeout=duration.parse(_default("prometheus_timeout")),
        backoff=duration.parse(_default("prometheus_backoff")),
        max_points=_default("prometheus_max_points"),
        min_step=duration.parse(_default("prometheus_min_step")),
    )
    source._client = Prometheus(observed=observed, lives=lives, epoch=epoch.timestamp())  # type: ignore[assignment]
    return source


def usage(
    *, observed: Sequence[int], lives: Sequence[Life], epoch: datetime.datetime, ledger: Sequence[kills.OOMKill],
    lookback: datetime.timedelta, now: datetime.datetime,
) -> recommend.Usage:
    """What the operator's usage lookup gives the domain for container `app` after the kills in
    `ledger` (what reconcile passes: the recommendation's kill ledger, the policy's lookback)."""
    source = _source(observed=observed, lives=lives, epoch=epoch)
    query = prom_usage.Query(
        namespace=NAMESPACE, workload_kind=WORKLOAD_KIND, workload_name=WORKLOAD,
        containers=prom_usage.containers_with_kills(ledger), kills=tuple(ledger), lookback=lookback, now=now,
    )
    history = source.history(query)
    if not history.ok or CONTAINER not in history.usage:
        raise RuntimeError(f"the simulated Prometheus gave no usage: {history.message}")
    return history.usage[CONTAINER]


def since_raise(
    *, observed: Sequence[int], lives: Sequence[Life], epoch: datetime.datetime, since: datetime.datetime,
    now: datetime.datetime,
) -> settle.UsageSinceRaise | None:
    """What the operator's settle lookup (`PrometheusUsage.since_raise`) gives the domain for
    container `app`: None when Prometheus has no sample since the raise. `lives` includes the one
    running now."""
    source = _source(observed=observed, lives=lives, epoch=epoch)
    query = prom_usage.SinceQuery(
        namespace=NAMESPACE, workload_kind=WORKLOAD_KIND, workload_name=WORKLOAD, containers=(CONTAINER,),
        since=since, now=now,
    )
    found = source.since_raise(query)
    if found.outcome == prom_usage.Outcome.NO_DATA:
        return None
    if not found.ok:
        raise RuntimeError(f"the simulated Prometheus failed the settle query: {found.message}")
    return found.usage[CONTAINER]
