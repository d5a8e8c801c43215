"""Recommendation quality, offline and deterministic: replay memory traces against memory strategies.

Usage (from the repository root):

    .venv/bin/python bench/quality.py --seed 1 --traces-per-family 10           # JSON on stdout, table on stderr
    .venv/bin/python bench/quality.py --seeds 1-8 --format table                # the target: seeds 1–8
    .venv/bin/python bench/quality.py --seeds 1-8 --days 28 --jobs 2            # the 28-day confirmation
    .venv/bin/python bench/quality.py --traces-module my_traces.py              # your own shapes
    .venv/bin/python bench/quality.py --strategies ours,vpa-oom-sample,krr,fixed-25  # only these rows
    .venv/bin/python bench/quality.py --sweep-settle off,12h:0.1,24h:0.1,48h:0.1  # ours by settle setting
    .venv/bin/python bench/quality.py --sweep-factor 1.2,1.3,1.5                # ours by increaseFactor

The simulator (`simulate`) walks a trace (bench/traces.py) minute by minute. A running container
whose demand exceeds its limit is OOM-killed in that minute (a `Limit` kill: its limit, when the
instance started, when it died); the strategy is asked for a new limit and request. What a
strategy may look at is what a real cluster would have recorded up to that minute and nothing
later: the kills so far, the changes it made, and the working set Prometheus would hold (the demand,
but never above the limit — a container is never seen above its limit — and nothing while no
container runs). A strategy may also ask to be woken at a later minute (`Decision.recheck`) and
then change the limit between kills (`revise`): that is how `ours` settles and how VPA's updater
lowers.

Choices every strategy faces alike (see bench/README.md for why):
- Start: request = limit = `Trace.initial_limit()` (median demand of hours 1–6, no head-room).
  Request and limit stay equal, so VPA's request-based OOM sample and its proportional limit
  scaling reduce to a change of the limit, like the others.
- A changed limit takes effect at once, in a new pod (a rollout): no back-off. A kill that changes
  nothing restarts the same container after the kubelet's crash-loop back-off (10 s, doubling, at
  most 5 min; forgotten after 10 min of running). The operator's patch cooldown is not modelled.
- Figures per trace (`Outcome`): kills; converged = no kill in the last `stable_days` (default 3);
  the true peak = the highest demand from the last kill (the demand that caused it included) to
  the end; final waste = (final limit − true peak) / true peak, of converged traces, clipped at 0
  for the mean; time-weighted waste = the same, clipped at 0, averaged over every minute from the
  last kill to the end (a limit that stood high for a day before it settled counts for that day);
  ends below the true peak = the final limit is below it (the demand that last killed the
  container would kill it again); rollouts, and the extra ones a strategy made between kills.

Strategies (`strategies`):
- `ours`: the real `oomtuner.domain.recommend.recommend_container` at each kill and
  `oomtuner.domain.settle` between kills, default `MemorySettings`, fed what the operator would
  have: the ledger's last `MAX_KILLS` kills, and usage from the operator's own lookups
  (`oomtuner.prom.usage`) run against a simulated Prometheus (bench/promsim.py). At a kill: peak and
  p95 over the default 7d lookback and the leak slope of `domain.usage`. After a raise: settle's
  checks (`settle.blocked`), then usage since the raise (`PrometheusUsage.since_raise`) and
  `settle.decide`, when `recheck_at` says. A recommendation in phase SuspectedLeak is not applied
  (what `Auto` mode does): the limit stays.
- `ours-kills-only`: the same without usage — what the operator computes when no Prometheus is
  configured or it does not answer. No usage, no settle.
- `vpa-oom-sample` ("VPA OOM sample"): VPA's OOM sample as the new request: used = max(request, the
  memory peak of the current 24h aggregation interval); max(used + 100Mi, used × 1.2). Never lowers.
- `vpa-target` ("VPA target"): what VPA's recommender targets right after that OOM, when the
  sample dominates its histogram: the sample's 5% bucket's end × 1.15, at least 250Mi. Never lowers.
- `vpa-updater` ("VPA recommender + updater"): bench/vpasim.py's model of VPA v1.8.1's recommender
  and updater: a histogram of daily peaks that decays, a target that falls again, and evictions
  that apply it, up or down. It never sees the kills except through its OOM samples.
- `krr`: KRR simple with OOM data: max(peak over 14d × 1.15, limit at OOM × 1.25). Never lowers.
- `fixed-25`: limit × 1.25 on every kill. Never lowers.

The issue's target (`judge`) compares `ours` with `vpa-oom-sample`, `krr` and `fixed-25` (`PEERS`)
on every non-leak family. A family is a leak family when its traces leak (`Trace.leaks`): no limit
fixes a leak, so it is judged by the share of traces `ours` flags SuspectedLeak and how soon;
`leak_flagged` on the other families counts false alarms.

`--traces-module PATH` evaluates the shapes of a Python file instead of the built-in families: it
must define `generate_all(seed, per_family, days)` returning a list of `traces.Trace`, grouped into
families by `Trace.family`.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import datetime
import importlib.util
import json
import math
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

if __name__ == "__main__" and not __package__:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import promsim, traces, vpasim  # noqa: E402

from oomtuner.api import policy, recommendation, types  # noqa: E402
from oomtuner.domain import duration, kills, recommend, settle  # noqa: E402

MIB = traces.MIB
MINUTES_PER_DAY = traces.MINUTES_PER_DAY
NO_SAMPLE = promsim.NO_SAMPLE
EPOCH = datetime.datetime(2025, 1, 6, tzinfo=datetime.timezone.utc)
# kubelet crash-loop back-off: 10 s doubling to 5 min, reset after 10 min of running.
BACKOFF_INITIAL_S = 10
BACKOFF_MAX_S = 300
BACKOFF_RESET_MINUTES = 10
DEFAULT_STABLE_DAYS = 3
# The simulator computes demand a day at a time (or up to the next wake-up).
CHUNK_MINUTES = MINUTES_PER_DAY
# VPA defaults (pkg/recommender/model/aggregations_config.go).
VPA_AGGREGATION_MINUTES = vpasim.INTERVAL_MINUTES
# VPA's updater runs every minute; the model looks every this many minutes, and at every kill.
VPA_UPDATER_EVERY = 30
# KRR defaults: 14 days of history, 15% buffer, ×1.25 over the limit at an OOM kill.
KRR_HISTORY_MINUTES = 14 * MINUTES_PER_DAY
# The target: kills at most the fewest of these minus KILL_LEAD (steady: at most STEADY_KILLS);
# waste no more than REFERENCE's, time-weighted at most TIME_WEIGHTED_SLACK more; at most
# MAX_BELOW_PEAK of traces ending below the true peak and MAX_FALSE_LEAK falsely flagged; held on
# at least HOLD_SHARE of the seeds.
PEERS = ("vpa-oom-sample", "krr", "fixed-25")
REFERENCE = "vpa-oom-sample"
KILL_LEAD = 0.25
STEADY_KILLS = 1.0
TIME_WEIGHTED_SLACK = 0.03
MAX_BELOW_PEAK = 0.03
MAX_FALSE_LEAK = 0.05
HOLD_SHARE = (7, 8)
LABELS = {
    "ours": "oomtuner (bump + settle)",
    "ours-kills-only": "oomtuner, no Prometheus",
    "vpa-oom-sample": "VPA OOM sample",
    "vpa-target": "VPA target",
    "vpa-updater": "VPA recommender + updater",
    "krr": "KRR simple",
    "fixed-25": "+25% per kill",
}


@dataclasses.dataclass(frozen=True)
class Kill:
    """One simulated OOM kill: the minute it died, the minute that instance started, its resources,
    and its pod (the pod's index: every rollout starts a new pod, `promsim.pod_name` names it)."""

    minute: int
    started: int
    limit: int
    request: int
    pod: int = 0


@dataclasses.dataclass(frozen=True)
class Change:
    """A rollout: from `minute` on, a new pod runs with these resources; `by_kill` when a kill
    caused it, else the strategy made it between kills (a settle, a VPA eviction)."""

    minute: int
    limit: int
    request: int
    by_kill: bool


@dataclasses.dataclass(frozen=True)
class History:
    """What the cluster has recorded by minute `now` (inclusive): kills, rollouts and the observed
    working set.

    `observed[t]` is the working set at minute t, or NO_SAMPLE when no container ran; entries after
    `now` are NO_SAMPLE too, so a strategy cannot peek ahead even by mistake. `ended` are the
    container lives that ended so far (by a kill or a rollout); without it, each kill ended one.
    """

    observed: Sequence[int]
    kills: Sequence[Kill]
    now: int
    instance_start: int
    changes: Sequence[Change] = ()
    pod: int = 0
    initial_limit: int = 0
    initial_request: int = 0
    ended: Sequence[promsim.Life] | None = None

    def peak(self, minutes: int) -> int:
        """The highest sample in the last `minutes` minutes (at least the killed minute's)."""
        return max(self.observed[max(0, self.now - minutes + 1) : self.now + 1])

    def lives(self) -> list[promsim.Life]:
        """Every container life that ended so far (the last one in the kill at `now`, at a kill)."""
        if self.ended is not None:
            return list(self.ended)
        return [promsim.Life(pod=promsim.pod_name(k.pod), start=k.started, end=k.minute) for k in self.kills]

    def running(self) -> promsim.Life:
        """The life running at `now`."""
        return promsim.Life(pod=promsim.pod_name(self.pod), start=self.instance_start, end=self.now)


@dataclasses.dataclass(frozen=True)
class Decision:
    """The resources a strategy wants, whether it suspects a leak, and the minute it wants to be
    asked again between kills (`revise`), if any."""

    limit: int
    request: int
    suspected_leak: bool = False
    recheck: int | None = None


class Strategy(Protocol):
    name: str

    def decide(self, *, limit: int, request: int, history: History) -> Decision: ...


def _minute(minute: int, seconds: int = 0) -> datetime.datetime:
    return EPOCH + datetime.timedelta(minutes=minute, seconds=seconds)


def _minute_of(at: datetime.datetime) -> int:
    """The first minute whose check (half a minute in) is at or after `at`."""
    return max(0, math.ceil((at - EPOCH - datetime.timedelta(seconds=30)) / datetime.timedelta(minutes=1)))


def _oom_kill(kill: Kill, restart_count: int) -> kills.OOMKill:
    guaranteed = kill.request == kill.limit
    return kills.OOMKill(
        namespace="bench",
        pod=promsim.pod_name(kill.pod),
        pod_uid=f"bench-uid-{kill.pod}",
        container="app",
        container_type=types.ContainerType.CONTAINER,
        node="node-1",
        at=_minute(kill.minute, 30),
        started_at=_minute(kill.started),
        restart_count=restart_count,
        exit_code=kills.OOM_EXIT_CODE,
        container_id=None,
        request=kill.request,
        limit_at_kill=kill.limit,
        qos_class=types.QOSClass.GUARANTEED if guaranteed else types.QOSClass.BURSTABLE,
        oom_score_adj=-997 if guaranteed else None,
        pod_memory_limit=None,
    )


def _ledger(history: History) -> list[kills.OOMKill]:
    """The recommendation's kill ledger after the kill at `history.now`: the last MAX_KILLS kills."""
    first = max(0, len(history.kills) - recommendation.MAX_KILLS)
    return [_oom_kill(k, restart_count=first + i + 1) for i, k in enumerate(history.kills[first:])]


@dataclasses.dataclass
class Ours:
    """The real domain strategy, fed what the operator would have: the kill ledger and usage. With
    usage it also settles its own raises (`domain.settle`), as the operator does between kills."""

    name: str = "ours"
    with_usage: bool = True
    settings: policy.MemorySettings = dataclasses.field(default_factory=policy.MemorySettings)
    lookback: datetime.timedelta = dataclasses.field(
        default_factory=lambda: duration.parse(policy.PrometheusSettings().lookback)
    )
    leak_suspected: bool = False

    def usage(self, history: History) -> recommend.Usage:
        """What the operator's usage lookup (`prom.usage`, through `promsim`) gives the domain right
        after the kill at `history.now`: it reads at that kill's time, with the ledger as it is then."""
        ledger = _ledger(history)
        assert ledger and ledger[-1].at is not None, "the operator looks usage up for a kill"
        return promsim.usage(
            observed=history.observed, lives=history.lives(), epoch=EPOCH, ledger=ledger,
            lookback=self.lookback, now=ledger[-1].at,
        )

    def decide(self, *, limit: int, request: int, history: History) -> Decision:
        ledger = _ledger(history)
        rec = recommend.recommend_container(
            current=recommend.ContainerResources(
                name="app", type=types.ContainerType.CONTAINER, request=request, limit=limit
            ),
            kills=ledger,
            classifications=[types.Classification.LIMIT] * len(ledger),
            settings=self.settings,
            usage=self.usage(history) if self.with_usage else None,
        )
        self.leak_suspected = rec.phase == types.Phase.SUSPECTED_LEAK
        if self.leak_suspected:
            return Decision(limit=limit, request=request, suspected_leak=True)
        assert rec.limit is not None and rec.request is not None
        decision = Decision(limit=rec.limit, request=rec.request)
        if not self.with_usage or rec.limit <= limit:
            return decision
        # The raise is patched now, and its pod starts in the next minute: when may it settle?
        raised = Change(minute=history.now + 1, limit=rec.limit, request=rec.request, by_kill=True)
        facts = self._facts(dataclasses.replace(history, changes=(*history.changes, raised)), rec.limit, rec.request)
        early = settle.blocked(facts=facts, settings=self.settings.settle, now=_patched_at(raised))
        return dataclasses.replace(decision, recheck=_recheck(early))

    def revise(self, *, limit: int, request: int, history: History) -> Decision | None:
        """Settle, as the operator checks it between kills: the checks without usage first, then
        usage since the raise from the operator's lookup, then `settle.decide`."""
        if not self.with_usage:
            return None
        now = _minute(history.now, 30)
        facts = self._facts(history, limit, request)
        early = settle.blocked(facts=facts, settings=self.settings.settle, now=now)
        if early is not None:
            return Decision(limit=limit, request=request, recheck=_recheck(early))
        assert facts.raised_at is not None
        seen = promsim.since_raise(
            observed=history.observed, lives=[*history.lives(), history.running()], epoch=EPOCH,
            since=facts.raised_at, now=now,
        )
        verdict = settle.decide(facts=facts, usage=seen, settings=self.settings, now=now)
        if verdict.settles:
            assert verdict.limit is not None and verdict.request is not None
            return Decision(limit=verdict.limit, request=verdict.request)
        return Decision(limit=limit, request=request, recheck=_recheck(verdict))

    def _facts(self, history: History, limit: int, request: int) -> settle.Facts:
        raises = [c for c in history.changes if c.by_kill]
        raised = raises[-1] if raises else None
        settled = [c for c in history.changes if not c.by_kill and raised is not None and c.minute > raised.minute]
        last = history.kills[-1] if history.kills else None
        return settle.Facts(
            request=request,
            limit=limit,
            original_request=history.initial_request,
            original_limit=history.initial_limit,
            raised_at=_patched_at(raised) if raised else None,
            settled_at=_patched_at(settled[-1]) if settled else None,
            last_kill=settle.LastKill(
                at=_minute(last.minute, 30), limit=last.limit, request=last.request,
                classification=types.Classification.LIMIT,
            ) if last else None,
            leak_suspected=self.leak_suspected,
        )


def _patched_at(change: Change) -> datetime.datetime:
    """When the operator patched the workload for `change`: at the kill or the check that decided it,
    half a minute into the minute before the new pod's first sample."""
    return _minute(change.minute - 1, 30)


def _recheck(decision: settle.Decision | None) -> int | None:
    if decision is None or decision.recheck_at is None:
        return None
    return _minute_of(decision.recheck_at)


def vpa_oom_sample(used: int) -> int:
    """VPA RecordOOM: max(used + OOMMinBumpUp 100Mi, used × OOMBumpUpRatio 1.2), truncated as Go does."""
    return vpasim.oom_sample(used)


def krr_simple(*, peak: int, limit_at_oom: int) -> int:
    """KRR simple strategy with OOM data: max(peak × 1.15, limit at the OOM × 1.25), rounded up."""
    return max(math.ceil(peak * 23 / 20), math.ceil(limit_at_oom * 5 / 4))


def fixed_bump(limit: int, percent: int = 25) -> int:
    return math.ceil(limit * (100 + percent) / 100)


def _keep_ratio(*, request: int, limit: int, new_request: int) -> Decision:
    new_request = max(request, new_request)
    return Decision(limit=max(limit, math.ceil(new_request * limit / request)), request=new_request)


@dataclasses.dataclass
class VPA:
    """VPA's OOM handling, never lowering: the OOM sample, or (`target`) the recommender's target
    right after it."""

    name: str = "vpa-oom-sample"
    target: bool = False

    def decide(self, *, limit: int, request: int, history: History) -> Decision:
        # memoryPeak covers the current aggregation interval only (intervals start at the first sample).
        since_interval = history.now % VPA_AGGREGATION_MINUTES + 1
        used = max(request, history.peak(since_interval))
        wanted = vpa_oom_sample(used)
        if self.target:
            wanted = vpasim.target_after_oom(wanted)
        return _keep_ratio(request=request, limit=limit, new_request=wanted)


@dataclasses.dataclass
class VPAUpdater:
    """bench/vpasim.py's model of VPA v1.8.1's recommender and updater, for one container: it reads
    every minute's working set and each kill's OOM sample, and evicts the pod (a rollout) when the
    updater would, with the target as its new request (the limit keeps its ratio)."""

    name: str = "vpa-updater"
    first_check: int = 0
    model: vpasim.Recommender = dataclasses.field(default_factory=vpasim.Recommender)
    seen_to: int = 0  # minutes before this are in the model
    fed_pod: int = -1

    def _feed(self, history: History) -> None:
        pod = promsim.pod_name(history.pod)
        if history.pod != self.fed_pod:
            self.fed_pod, self.seen_to = history.pod, max(self.seen_to, history.instance_start)
        self.model.add_samples(pod, self.seen_to, history.observed[self.seen_to : history.now + 1])
        self.seen_to = history.now + 1

    def _evict(self, *, limit: int, request: int, history: History, quick_oom: bool) -> Decision:
        pod_start = history.changes[-1].minute if history.changes else 0  # every change starts a pod
        found = self.model.recommendation()
        later = history.now + VPA_UPDATER_EVERY
        if not vpasim.evicts(request=request, recommendation=found, pod_age=history.now - pod_start, quick_oom=quick_oom):
            return Decision(limit=limit, request=request, recheck=later)
        target = found[0]
        return Decision(limit=max(1, math.ceil(target * limit / request)), request=target, recheck=later)

    def decide(self, *, limit: int, request: int, history: History) -> Decision:
        self._feed(history)
        kill = history.kills[-1]
        self.model.record_oom(promsim.pod_name(history.pod), kill.minute + 0.5, request)
        quick = kill.minute - kill.started < vpasim.EVICT_AFTER_OOM_THRESHOLD
        return self._evict(limit=limit, request=request, history=history, quick_oom=quick)

    def revise(self, *, limit: int, request: int, history: History) -> Decision | None:
        self._feed(history)
        last = history.kills[-1] if history.kills else None
        quick = (
            last is not None and last.pod == history.pod
            and last.minute - last.started < vpasim.EVICT_AFTER_OOM_THRESHOLD
            and history.now - last.minute < vpasim.EVICT_AFTER_OOM_THRESHOLD
        )
        return self._evict(limit=limit, request=request, history=history, quick_oom=quick)


@dataclasses.dataclass
class KRR:
    name: str = "krr"

    def decide(self, *, limit: int, request: int, history: History) -> Decision:
        wanted = krr_simple(peak=history.peak(KRR_HISTORY_MINUTES), limit_at_oom=limit)
        return Decision(limit=max(limit, wanted), request=max(request, wanted))


@dataclasses.dataclass
class Fixed:
    name: str = "fixed-25"
    percent: int = 25

    def decide(self, *, limit: int, request: int, history: History) -> Decision:
        return Decision(limit=fixed_bump(limit, self.percent), request=fixed_bump(request, self.percent))


def strategies(names: Sequence[str] = ()) -> list[Strategy]:
    """Fresh strategies (they keep state within one trace): all, or those named, in table order."""
    every: list[Strategy] = [
        Ours(), Ours(name="ours-kills-only", with_usage=False), VPA(), VPA(name="vpa-target", target=True),
        VPAUpdater(), KRR(), Fixed(),
    ]
    return [s for s in every if not names or s.name in names]


@dataclasses.dataclass(frozen=True)
class Variant:
    """One setting of `ours` in a sweep: its name in the tables and the memory settings it runs."""

    name: str
    settings: policy.MemorySettings
    with_usage: bool = True

    def strategy(self) -> Strategy:
        return Ours(name=self.name, with_usage=self.with_usage, settings=self.settings)


def factor_key(factor: float) -> str:
    """The sweep's name for "ours" with this increaseFactor, e.g. "1.5"."""
    return f"{factor:g}"


def factor_variants(factors: Sequence[float], *, with_usage: bool = True) -> list[Variant]:
    """"ours" (or "ours-kills-only" without usage) once per increaseFactor, the other memory settings
    at their defaults."""
    return [
        Variant(name=factor_key(f), settings=policy.MemorySettings(increaseFactor=f), with_usage=with_usage)
        for f in factors
    ]


def settle_variants(text: str) -> list[Variant]:
    """`--sweep-settle`: comma-separated `off` or `AFTER:MARGIN` (e.g. 24h:0.1), each valid for the
    policy; the other memory settings at their defaults."""
    found: list[Variant] = []
    for part in (p.strip() for p in text.split(",") if p.strip()):
        if part == "off":
            settings = policy.SettleSettings(enabled=False)
        else:
            after, sep, margin = part.partition(":")
            if not sep:
                raise ValueError(f"{part!r}: expected off or AFTER:MARGIN, e.g. 24h:0.1")
            settings = policy.SettleSettings(after=after, margin=float(margin))
            duration.parse(settings.after)
        found.append(Variant(name=part, settings=policy.MemorySettings(settle=settings)))
    if len({v.name for v in found}) != len(found):
        raise ValueError("a setting is given twice")
    return found


@dataclasses.dataclass(frozen=True)
class Outcome:
    """One trace replayed against one strategy (see the module docstring for the figures)."""

    trace: str
    strategy: str
    leaks: bool
    kills: tuple[Kill, ...]
    changes: tuple[Change, ...]
    initial_limit: int
    final_limit: int
    converged: bool
    true_peak_after: int
    waste: float | None  # final waste of a converged trace, not clipped
    time_weighted_waste: float | None  # of a converged trace, clipped at 0 minute by minute
    leak_flag_kill: int | None  # 1-based index of the first kill answered with SuspectedLeak
    leak_flag_minute: int | None

    @property
    def below_peak(self) -> bool:
        return self.final_limit < self.true_peak_after

    @property
    def extra_rollouts(self) -> int:
        return sum(1 for c in self.changes if not c.by_kill)


def _backoff_minutes(streak: int) -> int:
    seconds = min(BACKOFF_INITIAL_S * 2 ** (streak - 1), BACKOFF_MAX_S)
    return seconds // 60


def simulate(trace: traces.Trace, strategy: Strategy, *, stable_days: int = DEFAULT_STABLE_DAYS) -> Outcome:
    """Replay `trace` against `strategy`; see the module docstring for the rules."""
    n = trace.minutes
    limit = request = trace.initial_limit()
    initial = limit
    observed = [NO_SAMPLE] * n
    found: list[Kill] = []
    changes: list[Change] = []
    ended: list[promsim.Life] = []
    flag: tuple[int, int] | None = None
    start = t = 0
    streak = pod = 0
    revise: Callable[..., Decision | None] | None = getattr(strategy, "revise", None)
    wake: int | None = getattr(strategy, "first_check", None) if revise else None

    def history(now: int) -> History:
        return History(observed=observed, kills=found, now=now, instance_start=start, changes=changes, pod=pod,
                       initial_limit=initial, initial_request=initial, ended=ended)

    while t < n:
        stop = min(n, t + CHUNK_MINUTES)
        if wake is not None:
            stop = min(stop, max(wake, t) + 1)
        wanted = trace.demands(t, stop, start)
        over = next((i for i, d in enumerate(wanted) if d > limit), None)
        if over is None:
            observed[t:stop] = wanted
            t = stop
            if revise is None or wake is None or t - 1 < wake:
                continue
            now = t - 1
            decision = revise(limit=limit, request=request, history=history(now))
            wake = decision.recheck if decision is not None else None
            if decision is not None and (decision.limit, decision.request) != (limit, request):
                ended.append(promsim.Life(pod=promsim.pod_name(pod), start=start, end=now))
                limit, request = decision.limit, decision.request
                pod += 1
                streak = 0
                start = t = now + 1
                changes.append(Change(minute=start, limit=limit, request=request, by_kill=False))
            continue
        observed[t : t + over] = wanted[:over]
        t += over
        age = t - start
        observed[t] = limit
        found.append(Kill(minute=t, started=start, limit=limit, request=request, pod=pod))
        ended.append(promsim.Life(pod=promsim.pod_name(pod), start=start, end=t))
        decision = strategy.decide(limit=limit, request=request, history=history(t))
        if decision.suspected_leak and flag is None:
            flag = (len(found), t)
        wake = decision.recheck if revise is not None else None
        if (decision.limit, decision.request) != (limit, request):
            limit, request = decision.limit, decision.request
            streak = 0
            pod += 1  # the rollout's new pod
            start = t + 1
            changes.append(Change(minute=start, limit=limit, request=request, by_kill=True))
        else:
            streak = 1 if age >= BACKOFF_RESET_MINUTES else streak + 1
            start = t + 1 + _backoff_minutes(streak)
        t = start

    last = found[-1].minute if found else None
    converged = last is None or n - (last + 1) >= stable_days * MINUTES_PER_DAY
    after = last + 1 if last is not None else 0
    # After the last kill the container never ran out, so what it used is what it wanted.
    peak_after = max(max(observed[after:], default=NO_SAMPLE), 0)
    if last is not None:
        peak_after = max(peak_after, trace.demand(last, last - found[-1].started))
    waste = time_weighted = None
    if converged and peak_after > 0:
        waste = (limit - peak_after) / peak_after
        time_weighted = _time_weighted_waste(changes, initial=initial, first=after, end=n, peak=peak_after)
    return Outcome(
        trace=trace.name,
        strategy=strategy.name,
        leaks=trace.leaks,
        kills=tuple(found),
        changes=tuple(changes),
        initial_limit=initial,
        final_limit=limit,
        converged=converged,
        true_peak_after=peak_after,
        waste=waste,
        time_weighted_waste=time_weighted,
        leak_flag_kill=flag[0] if flag else None,
        leak_flag_minute=flag[1] if flag else None,
    )


def _time_weighted_waste(changes: Sequence[Change], *, initial: int, first: int, end: int, peak: int) -> float:
    """The mean over minutes [first, end) of max(0, (limit − peak) / peak), with the limit each
    minute had."""
    if end <= first:
        return 0.0
    limit = initial
    points: list[tuple[int, int]] = []
    for change in changes:
        if change.minute <= first:
            limit = change.limit
        elif change.minute < end:
            points.append((change.minute, change.limit))
    total, at = 0.0, first
    for minute, new in points:
        total += (minute - at) * max(0.0, (limit - peak) / peak)
        at, limit = minute, new
    total += (end - at) * max(0.0, (limit - peak) / peak)
    return total / (end - first)


def _round(value: float | None, digits: int = 4) -> float | None:
    return None if value is None else round(value, digits)


def summarize(outcomes: Sequence[Outcome]) -> dict[str, Any]:
    """Per-strategy figures for one family (of one seed, or pooled over seeds)."""
    counts = [len(o.kills) for o in outcomes]
    wastes = [max(0.0, o.waste) for o in outcomes if o.waste is not None]
    weighted = [o.time_weighted_waste for o in outcomes if o.time_weighted_waste is not None]
    flagged = [o for o in outcomes if o.leak_flag_kill is not None]
    summary: dict[str, Any] = {
        "traces": len(outcomes),
        "kills_mean": _round(statistics.fmean(counts)),
        "kills_p50": _round(statistics.median(counts)),
        "kills_max": max(counts),
        "converged": _round(sum(o.converged for o in outcomes) / len(outcomes)),
        "waste_mean": _round(statistics.fmean(wastes)) if wastes else None,
        "waste_max": _round(max(wastes)) if wastes else None,
        "time_weighted_waste_mean": _round(statistics.fmean(weighted)) if weighted else None,
        "below_peak": _round(sum(o.below_peak for o in outcomes) / len(outcomes)),
        "rollouts_mean": _round(statistics.fmean(len(o.changes) for o in outcomes)),
        "extra_rollouts_mean": _round(statistics.fmean(o.extra_rollouts for o in outcomes)),
        "leak_flagged": _round(len(flagged) / len(outcomes)),
    }
    if flagged:
        summary["leak_flag_kills_mean"] = _round(statistics.fmean(o.leak_flag_kill or 0 for o in flagged))
        summary["leak_flag_hours_mean"] = _round(statistics.fmean((o.leak_flag_minute or 0) / 60 for o in flagged), 1)
    return summary


def judge(family_name: str, family: dict[str, dict[str, Any]], ours: dict[str, Any] | None = None, *,
          leaks: bool = False) -> dict[str, Any]:
    """The issue's target for one family (module constants): `ours` (default: the family's "ours")
    against `PEERS` and `REFERENCE`. A leak family is not judged on kills and waste: only on how
    many traces were flagged, and how soon."""
    ours = ours if ours is not None else family["ours"]
    if leaks:
        return {
            "leak": True,
            "flagged": ours["leak_flagged"],
            "flag_hours_mean": ours.get("leak_flag_hours_mean"),
            "flag_kills_mean": ours.get("leak_flag_kills_mean"),
            "note": "no limit fixes a leak: judged by the share flagged SuspectedLeak and how soon",
        }
    fewest = min(family[p]["kills_mean"] for p in PEERS)
    kills_bound = STEADY_KILLS if family_name == "steady" else fewest - KILL_LEAD
    reference = family[REFERENCE]
    checks = {
        "kills": ours["kills_mean"] <= kills_bound + 1e-9,
        "waste": _at_most(ours["waste_mean"], reference["waste_mean"]),
        "time_weighted_waste": _at_most(
            ours["time_weighted_waste_mean"],
            None if reference["time_weighted_waste_mean"] is None else reference["time_weighted_waste_mean"] + TIME_WEIGHTED_SLACK,
        ),
        "below_peak": ours["below_peak"] <= MAX_BELOW_PEAK + 1e-9,
        "false_leak": ours["leak_flagged"] <= MAX_FALSE_LEAK + 1e-9,
    }
    return {"kills_bound": _round(kills_bound), "checks": checks, "met": all(checks.values())}


def _at_most(value: float | None, bound: float | None) -> bool:
    return value is not None and bound is not None and value <= bound + 1e-9


TraceSource = Callable[[int, int, int], list[traces.Trace]]


def builtin_traces(families: Sequence[str] = traces.FAMILIES) -> TraceSource:
    def generate(seed: int, per_family: int, days: int) -> list[traces.Trace]:
        return traces.generate_all(seed=seed, per_family=per_family, days=days, families=tuple(families))
    return generate


def module_traces(path: str | Path, families: Sequence[str] = ()) -> TraceSource:
    """The traces of a user's module (`--traces-module`): its `generate_all(seed, per_family, days)`."""
    location = Path(path)
    spec = importlib.util.spec_from_file_location(f"bench_traces_{location.stem}", location)
    if spec is None or spec.loader is None:
        raise ValueError(f"{location}: not a Python file")
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as exc:  # noqa: BLE001 - whatever the user's file does wrong, say it in one line
        raise ValueError(f"{location}: {type(exc).__name__}: {exc}") from None
    make = getattr(module, "generate_all", None)
    if not callable(make):
        raise ValueError(f"{location}: no function generate_all(seed, per_family, days)")

    def generate(seed: int, per_family: int, days: int) -> list[traces.Trace]:
        found = list(make(seed=seed, per_family=per_family, days=days))
        for trace in found:
            if not isinstance(trace, traces.Trace):
                raise ValueError(f"{location}: generate_all returned {type(trace).__name__}, not bench.traces.Trace")
            if len(trace.wall) != days * MINUTES_PER_DAY:
                raise ValueError(f"{location}: trace {trace.name} has {len(trace.wall)} minutes, not {days} days")
        return [t for t in found if not families or t.family in families]
    return generate


def _families(found: Sequence[traces.Trace]) -> dict[str, list[traces.Trace]]:
    grouped: dict[str, list[traces.Trace]] = {}
    for trace in found:
        grouped.setdefault(trace.family, []).append(trace)
    return grouped


def run(
    *,
    seed: int,
    traces_per_family: int,
    days: int = 14,
    stable_days: int = DEFAULT_STABLE_DAYS,
    families: Sequence[str] = traces.FAMILIES,
    source: TraceSource | None = None,
    make_strategies: Callable[[], list[Strategy]] = strategies,
    variants: Sequence[Variant] = (),
    keep_outcomes: bool = False,
) -> dict[str, Any]:
    """The benchmark for one seed as a JSON-able dict; the same arguments always give the same dict.

    With `variants`, "sweep" holds each variant of "ours" on the same traces, judged like "ours".
    With `keep_outcomes`, "outcomes" holds every `Outcome` (not JSON: `run_seeds` pools them).
    """
    generate = source or builtin_traces(families)
    grouped = _families(generate(seed, traces_per_family, days))
    result: dict[str, Any] = {
        "benchmark": "recommendation-quality",
        "seed": seed,
        "traces_per_family": traces_per_family,
        "days": days,
        "stable_days": stable_days,
        "families": {},
        "leak_families": sorted(f for f, found in grouped.items() if found and all(t.leaks for t in found)),
        "target": {},
    }
    if variants:
        result["sweep"] = {"variants": [v.name for v in variants], "families": {}}
    outcomes: dict[str, dict[str, list[Outcome]]] = {}
    for family, found in grouped.items():
        mine = outcomes[family] = {}
        for trace in found:
            for strategy in [*make_strategies(), *(v.strategy() for v in variants)]:
                mine.setdefault(strategy.name, []).append(simulate(trace, strategy, stable_days=stable_days))
        _judge_family(result, family, mine, variants)
    if keep_outcomes:
        result["outcomes"] = outcomes
    return result


def _judge_family(result: dict[str, Any], family: str, found: dict[str, list[Outcome]], variants: Sequence[Variant]) -> None:
    names = {v.name for v in variants}
    rows = result["families"][family] = {name: summarize(o) for name, o in found.items() if name not in names}
    leaks = family in result["leak_families"]
    judged = "ours" in rows and all(p in rows for p in PEERS)
    if judged:
        result["target"][family] = judge(family, rows, leaks=leaks)
    if variants:
        swept = result["sweep"]["families"][family] = {v.name: summarize(found[v.name]) for v in variants}
        for summary in swept.values():
            if judged:
                summary["target"] = judge(family, rows, summary, leaks=leaks)


def _run_one(options: dict[str, Any]) -> dict[str, Any]:
    """`run` in a worker process: the traces module is loaded again there."""
    options = dict(options)
    module = options.pop("traces_module", None)
    chosen = options.get("families", traces.FAMILIES) if options.pop("families_given", False) else ()
    sweep = options.pop("sweep", {})
    names = tuple(options.pop("strategies", ()))
    source = module_traces(module, chosen) if module else None
    variants = [*factor_variants(sweep.get("factors", ()), with_usage=sweep.get("factor_usage", True)),
                *settle_variants(sweep.get("settle", ""))]
    return run(**options, source=source, variants=variants, keep_outcomes=True,
               make_strategies=lambda: strategies(names))


def run_seeds(*, seeds: Sequence[int], jobs: int = 1, **options: Any) -> dict[str, Any]:
    """`run` for each seed (in `jobs` processes), and per family the figures pooled over every
    trace of every seed, judged like one seed, with the share of seeds each target held on."""
    per_seed = [dict(options, seed=s) for s in seeds]
    if jobs > 1 and len(seeds) > 1:
        with concurrent.futures.ProcessPoolExecutor(max_workers=jobs) as pool:
            results = list(pool.map(_run_one, per_seed))
    else:
        results = [_run_one(o) for o in per_seed]
    first = results[0]
    pooled: dict[str, Any] = {
        "benchmark": "recommendation-quality",
        "seeds": list(seeds),
        "traces_per_family": first["traces_per_family"],
        "days": first["days"],
        "stable_days": first["stable_days"],
        "families": {},
        "leak_families": first["leak_families"],
        "target": {},
    }
    variants = first.get("sweep", {}).get("variants", [])
    if variants:
        pooled["sweep"] = {"variants": variants, "families": {}}
    for family in first["outcomes"]:
        merged: dict[str, list[Outcome]] = {}
        for result in results:
            for name, found in result["outcomes"][family].items():
                merged.setdefault(name, []).extend(found)
        _judge_family(pooled, family, merged, [Variant(name=v, settings=policy.MemorySettings()) for v in variants])
        _held(pooled, family, [r["target"].get(family) for r in results], key=None)
        for variant in variants:
            _held(pooled, family, [r["sweep"]["families"][family][variant].get("target") for r in results], key=variant)
    pooled["per_seed"] = {}
    for seed, result in zip(seeds, results):
        result.pop("outcomes")
        pooled["per_seed"][str(seed)] = result
    return pooled


def _held(pooled: dict[str, Any], family: str, verdicts: Sequence[dict[str, Any] | None], *, key: str | None) -> None:
    """Add to the pooled verdict how many seeds met the target, and whether it held: met on the
    pooled figures and on at least HOLD_SHARE of the seeds."""
    target = pooled["target"].get(family) if key is None else pooled["sweep"]["families"][family][key].get("target")
    if target is None or target.get("leak"):
        return
    met = sum(1 for v in verdicts if v and v.get("met"))
    need = math.ceil(len(verdicts) * HOLD_SHARE[0] / HOLD_SHARE[1])
    target["seeds_met"] = met
    target["seeds"] = len(verdicts)
    target["held"] = bool(target["met"]) and met >= need
    target["seed_checks"] = {
        name: sum(1 for v in verdicts if v and v["checks"][name]) for name in target["checks"]
    }


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.1f}%"


def _verdict_line(verdict: dict[str, Any]) -> str:
    if verdict.get("leak"):
        hours = verdict.get("flag_hours_mean")
        when = f", at kill {verdict['flag_kills_mean']:.2f} on average, {hours:g} h after the start" if hours else ""
        return f"leak family: ours flagged SuspectedLeak on {_pct(verdict['flagged'])} of traces{when}"
    failed = [name for name, ok in verdict["checks"].items() if not ok]
    text = f"target {'MET' if verdict['met'] else 'NOT met'} (kills <= {verdict['kills_bound']:.2f})"
    if failed:
        text += ": fails " + ", ".join(failed)
    if "seeds" in verdict:
        text += f"; met on {verdict['seeds_met']} of {verdict['seeds']} seeds, {'HELD' if verdict['held'] else 'not held'}"
    return text


def table(result: dict[str, Any]) -> str:
    seeds = result.get("seeds", [result.get("seed")])
    lines = [
        f"seeds {','.join(str(s) for s in seeds)}, {result['traces_per_family']} traces/family, {result['days']} days, "
        f"converged = no kill in the last {result['stable_days']} days",
        "kills = mean per trace; waste = final, of converged traces, clipped at 0; t.w. = time-weighted from the last "
        "kill; below = ends below the true peak; leak = flagged SuspectedLeak; extra = rollouts between kills",
        f"{'family':<9} {'strategy':<27} {'kills':>6} {'p50':>5} {'max':>4} {'conv':>6} {'waste':>6} {'t.w.':>6} "
        f"{'below':>6} {'leak':>6} {'extra':>6}",
    ]
    for family, rows in result["families"].items():
        for name, s in rows.items():
            lines.append(_row(family, LABELS.get(name, name), s))
        verdict = result["target"].get(family)
        if verdict:
            lines.append(f"{'':<9} {_verdict_line(verdict)}")
    return "\n".join(lines)


def _row(family: str, label: str, s: dict[str, Any]) -> str:
    return (
        f"{family:<9} {label:<27} {s['kills_mean']:>6.2f} {s['kills_p50']:>5g} {s['kills_max']:>4} "
        f"{_pct(s['converged']):>6} {_pct(s['waste_mean']):>6} {_pct(s['time_weighted_waste_mean']):>6} "
        f"{_pct(s['below_peak']):>6} {_pct(s['leak_flagged']):>6} {s['extra_rollouts_mean']:>6.2f}"
    )


def sweep_table(result: dict[str, Any]) -> str:
    """The sweep: per family, the peers' figures and each variant of "ours", with its verdict."""
    lines = ["ours by setting (the other settings default); '*' = target met" +
             (", '+' = held over the seeds" if "seeds" in result else "")]
    for family, rows in result["sweep"]["families"].items():
        for name in PEERS:
            if name in result["families"][family]:
                lines.append(_row(family, LABELS[name], result["families"][family][name]))
        for name, s in rows.items():
            verdict = s.get("target") or {}
            mark = "*" if verdict.get("met") else ""
            mark += "+" if verdict.get("held") else ""
            failed = [k for k, ok in verdict.get("checks", {}).items() if not ok]
            extra = f"  fails {', '.join(failed)}" if failed else ""
            lines.append(_row(family, f"ours {name} {mark}", s) + extra)
    return "\n".join(lines)


def _factors(text: str) -> list[float]:
    """`--sweep-factor`: comma-separated increaseFactors, each valid for MemorySettings."""
    found = [float(part) for part in text.split(",") if part.strip()]
    for factor in found:
        policy.MemorySettings(increaseFactor=factor)
    if len({factor_key(f) for f in found}) != len(found):
        raise ValueError("a factor is given twice")
    return found


def _seeds(text: str) -> list[int]:
    """`--seeds`: `1-8` or `1,3,5` (or both, comma-separated)."""
    found: list[int] = []
    for part in (p.strip() for p in text.split(",") if p.strip()):
        first, sep, last = part.partition("-")
        found.extend(range(int(first), int(last) + 1) if sep else [int(first)])
    if not found or len(set(found)) != len(found):
        raise ValueError("give each seed once, e.g. 1-8 or 1,2,5")
    return found


def _checked(parser: argparse.ArgumentParser, args: argparse.Namespace) -> tuple[list[float], list[int], list[str], list[str]]:
    """The arguments checked (one parser error naming the flag otherwise): the sweep's factors, the
    seeds, the families and the strategies."""
    try:
        factors = _factors(args.sweep_factor)
    except ValueError as exc:  # pydantic's ValidationError is a ValueError
        parser.error(f"--sweep-factor: {exc}")
    try:
        settle_variants(args.sweep_settle)
    except ValueError as exc:
        parser.error(f"--sweep-settle: {exc}")
    try:
        seeds = _seeds(args.seeds) if args.seeds else [args.seed]
    except ValueError as exc:
        parser.error(f"--seeds: {exc}")
    families = [f for f in args.families.split(",") if f]
    chosen = [n for n in args.strategies.split(",") if n]
    unknown = sorted(set(chosen) - set(LABELS))
    if unknown:
        parser.error(f"unknown strategies: {', '.join(unknown)}")
    if args.traces_module:
        try:
            module_traces(args.traces_module)
        except ValueError as exc:
            parser.error(f"--traces-module: {exc}")
    else:
        unknown = sorted(set(families) - set(traces.FAMILIES))
        if unknown:
            parser.error(f"unknown families: {', '.join(unknown)}")
    return factors, seeds, families, chosen


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--seeds", default="", metavar="A-B|A,B,...", help="several seeds, pooled and judged per seed")
    parser.add_argument("--jobs", type=int, default=1, help="processes for several seeds")
    parser.add_argument("--traces-per-family", type=int, default=20)
    parser.add_argument("--days", type=int, default=14)
    parser.add_argument("--stable-days", type=int, default=DEFAULT_STABLE_DAYS)
    parser.add_argument("--families", default="", help="comma-separated subset")
    parser.add_argument("--strategies", default="", metavar="NAME,...",
                        help=f"run only these ({', '.join(LABELS)}); the target needs ours and {', '.join(PEERS)}")
    parser.add_argument("--traces-module", default="", metavar="PATH",
                        help="a Python file with generate_all(seed, per_family, days) returning bench.traces.Trace objects")
    parser.add_argument(
        "--format", choices=("both", "json", "table"), default="both",
        help="both: JSON on stdout and the table on stderr (default)",
    )
    parser.add_argument("--sweep-factor", default="", metavar="F,F,...",
                        help="also run ours with each increaseFactor, e.g. 1.2,1.3,1.5 (JSON: \"sweep\")")
    parser.add_argument("--sweep-without-usage", action="store_true",
                        help="sweep the factors of ours-kills-only (no usage history) instead of ours")
    parser.add_argument("--sweep-settle", default="", metavar="off|AFTER:MARGIN,...",
                        help="also run ours with each settle setting, e.g. off,12h:0.1,24h:0.1,24h:0.15")
    args = parser.parse_args(argv)
    factors, seeds, families, chosen = _checked(parser, args)
    options: dict[str, Any] = {
        "traces_per_family": args.traces_per_family, "days": args.days, "stable_days": args.stable_days,
        "families": tuple(families or traces.FAMILIES), "families_given": bool(families),
        "traces_module": args.traces_module or None, "strategies": chosen,
        "sweep": {"factors": factors, "factor_usage": not args.sweep_without_usage, "settle": args.sweep_settle},
    }
    began = time.monotonic()
    try:
        if len(seeds) == 1:
            result = _run_one(dict(options, seed=seeds[0]))
            result.pop("outcomes")
        else:
            result = run_seeds(seeds=seeds, jobs=args.jobs, **options)
    except ValueError as exc:
        parser.error(f"--traces-module: {exc}")
    elapsed = time.monotonic() - began
    if args.format in ("both", "json"):
        print(json.dumps(result, indent=2))
    if args.format in ("both", "table"):
        out = sys.stdout if args.format == "table" else sys.stderr
        print(table(result), file=out)
        if "sweep" in result:
            print(sweep_table(result), file=out)
        print(f"({elapsed:.1f} s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
