"""Recommendation quality, offline and deterministic: replay memory traces against bump strategies.

Usage (from the repository root):

    .venv/bin/python bench/quality.py --seed 1 --traces-per-family 10           # JSON on stdout, table on stderr
    .venv/bin/python bench/quality.py --format table
    .venv/bin/python bench/quality.py --sweep-factor 1.2,1.3,1.4,1.5,1.75,2.0   # also ours by increaseFactor
    .venv/bin/python bench/quality.py --sweep-factor 1.2,1.5 --sweep-without-usage  # ours-kills-only by it

The simulator (`simulate`) walks a trace (bench/traces.py) minute by minute. A running container
whose demand exceeds its limit is OOM-killed in that minute (a `Limit` kill: its limit, when the
instance started, when it died); the strategy is asked for a new limit and request, and the
container starts again the next minute. What a strategy may look at is what a real cluster would
have recorded up to that minute and nothing later: the kills so far, and the working set
Prometheus would hold (the demand, but never above the limit — a container is never seen above its
limit — and nothing while no container runs).

Choices every strategy faces alike (see bench/README.md for why):
- Start: request = limit = `Trace.initial_limit()` (median demand of hours 1–6, no head-room).
  Request and limit stay equal, so VPA's request-based OOM sample and its proportional limit
  scaling reduce to a bump of the limit, like the others.
- A raised limit takes effect at once, in a new pod (a rollout): no back-off. A kill that does not
  raise the limit restarts the same container after the kubelet's crash-loop back-off (10 s,
  doubling, at most 5 min; forgotten after 10 min of running). The operator's patch cooldown is
  not modelled.
- Converged: no kill in the last `stable_days` (default 3) of the trace. Kills are the kills over
  the whole trace, which for a converged trace are the kills it took to converge (for the others
  they are a lower bound, censored at the horizon). Waste, for converged traces only:
  (final limit − true peak) / true peak, where the true peak is the highest demand from the last
  kill (the demand that caused it included) to the end of the trace. Negative waste means the
  final limit would not survive the demand that last killed the container again.

Strategies:
- `ours`: the real `oomtuner.domain.recommend.recommend_container`, default `MemorySettings`, with
  the ledger's last `MAX_KILLS` kills and the usage the operator's own lookup
  (`oomtuner.prom.usage`) gives, run against a simulated Prometheus (bench/promsim.py): peak and
  p95 over the default 7d lookback, and the leak slope of `domain.usage` from the killed pods'
  series, at the operator's default steps. A recommendation in phase SuspectedLeak is not applied
  (what `Auto` mode does): the limit stays.
- `ours-kills-only`: the same without usage — what the operator computes when no Prometheus is
  configured or it does not answer.
- `vpa`: VPA's OOM sample, as the issue states it: used = max(request, the memory peak of the
  current 24h aggregation interval); new request = max(used + 100Mi, used × 1.2); the limit keeps
  its ratio to the request (VPA recommender model/container.go RecordOOM, oom_observer).
- `vpa-target`: what VPA's recommender would target right after that OOM: the sample dominates
  the decaying histogram of daily peaks, so target ≈ sample × (1 + 15% safety margin), at least
  250Mi (pod-min-memory-mb). The 5% histogram buckets and later decay/downsizing are left out.
- `krr`: KRR simple with OOM data: max(peak over 14d × 1.15, limit at OOM × 1.25).
- `fixed-25`: limit × 1.25 on every kill.
No peer ever lowers a limit here (ours never does by design).

The leak family: raising a limit only delays a leaking container's next kill, so there is no right
limit to converge to. Ours flags SuspectedLeak and stops bumping, so it keeps being killed (and does
not "converge"); peers bump until a life outlasts the trace. Both are reported as measured, plus the
time and kills until ours flagged the leak; `leak_flagged` on the other families counts false alarms.

`--sweep-factor` also runs `ours` with each given `increaseFactor` (the other settings at their
defaults) on the same traces, and judges each against the peers like `ours` (JSON: "sweep").
`--sweep-without-usage` sweeps `ours-kills-only` instead.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
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

from bench import promsim, traces  # noqa: E402
from oomtuner.api import policy, recommendation, types  # noqa: E402
from oomtuner.domain import duration, kills, recommend  # noqa: E402

MIB = traces.MIB
MINUTES_PER_DAY = traces.MINUTES_PER_DAY
NO_SAMPLE = promsim.NO_SAMPLE
EPOCH = datetime.datetime(2025, 1, 6, tzinfo=datetime.timezone.utc)
# kubelet crash-loop back-off: 10 s doubling to 5 min, reset after 10 min of running.
BACKOFF_INITIAL_S = 10
BACKOFF_MAX_S = 300
BACKOFF_RESET_MINUTES = 10
DEFAULT_STABLE_DAYS = 3
# VPA defaults (pkg/recommender/model/aggregations_config.go, logic/recommender.go).
VPA_MIN_BUMP = 100 * MIB
VPA_AGGREGATION_MINUTES = MINUTES_PER_DAY
VPA_SAFETY_MARGIN = (23, 20)  # 1 + 0.15
VPA_POD_MIN_MEMORY = 250 * MIB
# KRR defaults: 14 days of history, 15% buffer, ×1.25 over the limit at an OOM kill.
KRR_HISTORY_MINUTES = 14 * MINUTES_PER_DAY
PEERS = ("vpa", "krr", "fixed-25")


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
class History:
    """What the cluster has recorded by minute `now` (inclusive): kills and the observed working set.

    `observed[t]` is the working set at minute t, or NO_SAMPLE when no container ran; entries after
    `now` are NO_SAMPLE too, so a strategy cannot peek ahead even by mistake.
    """

    observed: Sequence[int]
    kills: Sequence[Kill]
    now: int
    instance_start: int

    def peak(self, minutes: int) -> int:
        """The highest sample in the last `minutes` minutes (at least the killed minute's)."""
        return max(self.observed[max(0, self.now - minutes + 1) : self.now + 1])

    def lives(self) -> list[promsim.Life]:
        """Every container life so far. Each one ended in a kill (the last one in the kill at `now`)."""
        return [promsim.Life(pod=promsim.pod_name(k.pod), start=k.started, end=k.minute) for k in self.kills]


@dataclasses.dataclass(frozen=True)
class Decision:
    limit: int
    request: int
    suspected_leak: bool = False


class Strategy(Protocol):
    name: str

    def decide(self, *, limit: int, request: int, history: History) -> Decision: ...


def _minute(minute: int, seconds: int = 0) -> datetime.datetime:
    return EPOCH + datetime.timedelta(minutes=minute, seconds=seconds)


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
    """The real domain strategy, fed what the operator would have: the kill ledger and usage."""

    name: str = "ours"
    with_usage: bool = True
    settings: policy.MemorySettings = dataclasses.field(default_factory=policy.MemorySettings)
    lookback: datetime.timedelta = dataclasses.field(
        default_factory=lambda: duration.parse(policy.PrometheusSettings().lookback)
    )

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
        if rec.phase == types.Phase.SUSPECTED_LEAK:
            return Decision(limit=limit, request=request, suspected_leak=True)
        assert rec.limit is not None and rec.request is not None
        return Decision(limit=rec.limit, request=rec.request)


def vpa_oom_sample(used: int) -> int:
    """VPA RecordOOM: max(used + OOMMinBumpUp 100Mi, used × OOMBumpUpRatio 1.2), truncated as Go does."""
    return max(used + VPA_MIN_BUMP, used * 6 // 5)


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
    """VPA's OOM handling; `target=True` adds the recommender's safety margin and minimum."""

    name: str = "vpa"
    target: bool = False

    def decide(self, *, limit: int, request: int, history: History) -> Decision:
        # memoryPeak covers the current aggregation interval only (intervals start at the first sample).
        since_interval = history.now % VPA_AGGREGATION_MINUTES + 1
        used = max(request, history.peak(since_interval))
        wanted = vpa_oom_sample(used)
        if self.target:
            num, den = VPA_SAFETY_MARGIN
            wanted = max(math.ceil(wanted * num / den), VPA_POD_MIN_MEMORY)
        return _keep_ratio(request=request, limit=limit, new_request=wanted)


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


def strategies() -> list[Strategy]:
    return [Ours(), Ours(name="ours-kills-only", with_usage=False), VPA(), VPA(name="vpa-target", target=True), KRR(), Fixed()]


def factor_key(factor: float) -> str:
    """The sweep's name for "ours" with this increaseFactor, e.g. "1.5"."""
    return f"{factor:g}"


def sweep_strategies(factors: Sequence[float], *, with_usage: bool = True) -> list[Strategy]:
    """"ours" (or "ours-kills-only" without usage) once per increaseFactor, the other memory settings
    at their defaults."""
    return [
        Ours(name=factor_key(f), with_usage=with_usage, settings=policy.MemorySettings(increaseFactor=f))
        for f in factors
    ]


@dataclasses.dataclass(frozen=True)
class Outcome:
    """One trace replayed against one strategy."""

    trace: str
    strategy: str
    kills: tuple[Kill, ...]
    initial_limit: int
    final_limit: int
    converged: bool
    waste: float | None
    true_peak_after: int | None
    leak_flag_kill: int | None  # 1-based index of the first kill answered with SuspectedLeak
    leak_flag_minute: int | None


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
    flag: tuple[int, int] | None = None
    start = t = 0
    streak = pod = 0
    while t < n:
        age = t - start
        wanted = trace.demand(t, age)
        if wanted <= limit:
            observed[t] = wanted
            t += 1
            continue
        observed[t] = limit
        found.append(Kill(minute=t, started=start, limit=limit, request=request, pod=pod))
        decision = strategy.decide(
            limit=limit, request=request, history=History(observed=observed, kills=found, now=t, instance_start=start)
        )
        if decision.suspected_leak and flag is None:
            flag = (len(found), t)
        if decision.limit > limit:
            limit, request = decision.limit, decision.request
            streak = 0
            pod += 1  # the rollout's new pod
            start = t + 1
        else:
            streak = 1 if age >= BACKOFF_RESET_MINUTES else streak + 1
            request = max(request, decision.request)
            start = t + 1 + _backoff_minutes(streak)
        t = start

    last = found[-1].minute if found else None
    converged = last is None or n - (last + 1) >= stable_days * MINUTES_PER_DAY
    waste = peak_after = None
    if converged:
        settled = start if found else 0
        peak_after = max((trace.demand(m, m - settled) for m in range(settled, n)), default=0)
        if found:
            # The demand that caused the last kill is what the final limit was raised to serve.
            peak_after = max(peak_after, trace.demand(found[-1].minute, found[-1].minute - found[-1].started))
        waste = (limit - peak_after) / peak_after
    return Outcome(
        trace=trace.name,
        strategy=strategy.name,
        kills=tuple(found),
        initial_limit=initial,
        final_limit=limit,
        converged=converged,
        waste=waste,
        true_peak_after=peak_after,
        leak_flag_kill=flag[0] if flag else None,
        leak_flag_minute=flag[1] if flag else None,
    )


def _round(value: float | None, digits: int = 4) -> float | None:
    return None if value is None else round(value, digits)


def summarize(outcomes: Sequence[Outcome]) -> dict[str, Any]:
    """Per-strategy figures for one family."""
    counts = [len(o.kills) for o in outcomes]
    wastes = [o.waste for o in outcomes if o.waste is not None]
    flagged = [o for o in outcomes if o.leak_flag_kill is not None]
    summary: dict[str, Any] = {
        "traces": len(outcomes),
        "kills_mean": _round(statistics.fmean(counts)),
        "kills_p50": _round(statistics.median(counts)),
        "kills_max": max(counts),
        "converged": _round(sum(o.converged for o in outcomes) / len(outcomes)),
        "waste_mean": _round(statistics.fmean(wastes)) if wastes else None,
        "waste_p50": _round(statistics.median(wastes)) if wastes else None,
        "waste_max": _round(max(wastes)) if wastes else None,
        "leak_flagged": _round(len(flagged) / len(outcomes)),
    }
    if flagged:
        summary["leak_flag_kills_mean"] = _round(statistics.fmean(o.leak_flag_kill or 0 for o in flagged))
        summary["leak_flag_hours_mean"] = _round(statistics.fmean((o.leak_flag_minute or 0) / 60 for o in flagged), 1)
    return summary


def judge(family_name: str, family: dict[str, dict[str, Any]], ours: dict[str, Any] | None = None) -> dict[str, Any]:
    """The issue's target for one family: fewer kills (mean over all traces, so a strategy that
    never settles is not let off) than every peer, and mean waste no worse than VPA's. `ours` is
    the summary to judge (default: the family's "ours")."""
    ours = ours if ours is not None else family["ours"]
    fewer = {peer: ours["kills_mean"] < family[peer]["kills_mean"] for peer in PEERS}
    vpa_waste = family["vpa"]["waste_mean"]
    waste_ok = None if ours["waste_mean"] is None or vpa_waste is None else ours["waste_mean"] <= vpa_waste
    verdict: dict[str, Any] = {
        "fewer_kills_than": fewer,
        "waste_not_worse_than_vpa": waste_ok,
        "met": all(fewer.values()) and bool(waste_ok),
    }
    if family_name == "leak":
        verdict["note"] = (
            "no limit fixes a leak: ours stops bumping once it suspects one and keeps being killed; "
            "judge it by leak_flagged and leak_flag_hours_mean, not by kills or waste"
        )
    return verdict


def run(
    *,
    seed: int,
    traces_per_family: int,
    days: int = 14,
    stable_days: int = DEFAULT_STABLE_DAYS,
    families: Sequence[str] = traces.FAMILIES,
    make_strategies: Callable[[], list[Strategy]] = strategies,
    sweep_factors: Sequence[float] = (),
    sweep_with_usage: bool = True,
) -> dict[str, Any]:
    """The whole benchmark as a JSON-able dict; the same arguments always give the same dict.

    With `sweep_factors`, "sweep" holds "ours" (without `sweep_with_usage`, "ours-kills-only") with
    each `increaseFactor` (the other settings at their defaults) on the same traces, each judged
    against the peers like "ours" is.
    """
    result: dict[str, Any] = {
        "benchmark": "recommendation-quality",
        "seed": seed,
        "traces_per_family": traces_per_family,
        "days": days,
        "stable_days": stable_days,
        "families": {},
        "target": {},
    }
    if sweep_factors:
        result["sweep"] = {"factors": [factor_key(f) for f in sweep_factors], "usage": sweep_with_usage, "families": {}}
    for family in families:
        outcomes: dict[str, list[Outcome]] = {}
        swept: dict[str, list[Outcome]] = {}
        for i in range(traces_per_family):
            trace = traces.generate(family=family, seed=seed, index=i, days=days)
            for strategy in make_strategies():
                outcomes.setdefault(strategy.name, []).append(simulate(trace, strategy, stable_days=stable_days))
            for strategy in sweep_strategies(sweep_factors, with_usage=sweep_with_usage):
                swept.setdefault(strategy.name, []).append(simulate(trace, strategy, stable_days=stable_days))
        rows = result["families"][family] = {name: summarize(found) for name, found in outcomes.items()}
        peers = all(p in outcomes for p in PEERS)
        if "ours" in outcomes and peers:
            result["target"][family] = judge(family, rows)
        if sweep_factors:
            result["sweep"]["families"][family] = summaries = {name: summarize(found) for name, found in swept.items()}
            for summary in summaries.values():
                if peers:
                    summary["target"] = judge(family, rows, summary)
    return result


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{round(value * 100) + 0:.0f}%"


def table(result: dict[str, Any]) -> str:
    lines = [
        f"seed {result['seed']}, {result['traces_per_family']} traces/family, {result['days']} days, "
        f"converged = no kill in the last {result['stable_days']} days",
        f"{'family':<9} {'strategy':<16} {'kills':>6} {'p50':>5} {'max':>5} {'conv':>5} {'waste':>6} {'w.max':>6} {'leak':>5}",
    ]
    for family, rows in result["families"].items():
        for name, s in rows.items():
            lines.append(
                f"{family:<9} {name:<16} {s['kills_mean']:>6.1f} {s['kills_p50']:>5g} {s['kills_max']:>5} "
                f"{_pct(s['converged']):>5} {_pct(s['waste_mean']):>6} {_pct(s['waste_max']):>6} {_pct(s['leak_flagged']):>5}"
            )
        ours = rows.get("ours", {})
        if ours.get("leak_flagged"):
            lines.append(
                f"{'':<9} ours flagged SuspectedLeak on {_pct(ours['leak_flagged'])} of traces, at kill "
                f"{ours['leak_flag_kills_mean']:.2f} on average, {ours['leak_flag_hours_mean']:g} h after the start"
            )
        verdict = result["target"].get(family)
        if verdict:
            fewer = ", ".join(p for p, ok in verdict["fewer_kills_than"].items() if not ok) or "none"
            lines.append(
                f"{'':<9} target {'MET' if verdict['met'] else 'NOT met'}: not fewer kills than: {fewer}; "
                f"waste <= vpa: {verdict['waste_not_worse_than_vpa']}"
            )
    return "\n".join(lines)


def sweep_table(result: dict[str, Any]) -> str:
    """The sweep: per family, mean kills / mean waste of the peers and of "ours" at each factor."""
    sweep = result["sweep"]
    cell = 15

    def figures(s: dict[str, Any]) -> str:
        flags = f" L{_pct(s['leak_flagged'])}" if s["leak_flagged"] else ""
        mark = "*" if s.get("target", {}).get("met") else ""
        return f"{s['kills_mean']:.1f}/{_pct(s['waste_mean'])}{flags}{mark}"

    swept = "ours" if sweep["usage"] else "ours-kills-only"
    lines = [
        (f"{swept} by increaseFactor (other settings default): mean kills / mean waste of the converged traces, "
         "L = share of traces flagged SuspectedLeak;"),
        "* = fewer kills than each of " + ", ".join(PEERS) + " and waste <= vpa's",
        (f"{'family':<9} " + "".join(f"{name:<{cell}}" for name in PEERS)
         + "".join(f"{'x' + f:<{cell}}" for f in sweep["factors"])).rstrip(),
    ]
    for family, rows in sweep["families"].items():
        peers = result["families"][family]
        lines.append(
            (f"{family:<9} " + "".join(f"{figures(peers[p]) if p in peers else '-':<{cell}}" for p in PEERS)
             + "".join(f"{figures(rows[f]):<{cell}}" for f in sweep["factors"])).rstrip()
        )
    return "\n".join(lines)


def _factors(text: str) -> list[float]:
    """`--sweep-factor`: comma-separated increaseFactors, each valid for MemorySettings."""
    found = [float(part) for part in text.split(",") if part.strip()]
    for factor in found:
        policy.MemorySettings(increaseFactor=factor)
    if len({factor_key(f) for f in found}) != len(found):
        raise ValueError("a factor is given twice")
    return found


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--traces-per-family", type=int, default=20)
    parser.add_argument("--days", type=int, default=14)
    parser.add_argument("--stable-days", type=int, default=DEFAULT_STABLE_DAYS)
    parser.add_argument("--families", default=",".join(traces.FAMILIES), help="comma-separated subset")
    parser.add_argument(
        "--format", choices=("both", "json", "table"), default="both",
        help="both: JSON on stdout and the table on stderr (default)",
    )
    parser.add_argument(
        "--sweep-factor", default="", metavar="F,F,...",
        help="also run ours with each increaseFactor, e.g. 1.2,1.3,1.4,1.5,1.75,2.0 (JSON: \"sweep\")",
    )
    parser.add_argument(
        "--sweep-without-usage", action="store_true",
        help="sweep ours-kills-only (no usage history) instead of ours",
    )
    args = parser.parse_args(argv)
    try:
        factors = _factors(args.sweep_factor)
    except ValueError as exc:  # pydantic's ValidationError is a ValueError
        parser.error(f"--sweep-factor: {exc}")
    families = [f for f in args.families.split(",") if f]
    unknown = sorted(set(families) - set(traces.FAMILIES))
    if unknown:
        parser.error(f"unknown families: {', '.join(unknown)}")
    began = time.monotonic()
    result = run(
        seed=args.seed, traces_per_family=args.traces_per_family, days=args.days,
        stable_days=args.stable_days, families=families, sweep_factors=factors,
        sweep_with_usage=not args.sweep_without_usage,
    )
    elapsed = time.monotonic() - began
    if args.format in ("both", "json"):
        print(json.dumps(result, indent=2))
    if args.format in ("both", "table"):
        out = sys.stdout if args.format == "table" else sys.stderr
        print(table(result), file=out)
        if factors:
            print(sweep_table(result), file=out)
        print(f"({elapsed:.1f} s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
