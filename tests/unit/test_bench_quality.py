"""The recommendation-quality benchmark (bench/quality.py, bench/traces.py): deterministic, counts
kills the way the rules say, and applies each strategy's bump formula as documented.

Everything is real: "ours" is the real domain strategy, the traces are the real generators (small
and short here) or hand-made `traces.Trace` values. Nothing is faked.
"""

from __future__ import annotations

import dataclasses
import datetime
import json

import pytest

from bench import promsim, quality, traces

MI = 1024 * 1024


def flat_trace(minutes: int, level: int = 100 * MI, *, changes: dict[int, int] | None = None, **fields: object) -> traces.Trace:
    wall = [level] * minutes
    for minute, value in (changes or {}).items():
        wall[minute] = value
    return traces.Trace(family="hand", index=0, seed=0, wall=tuple(wall), **fields)  # type: ignore[arg-type]


@dataclasses.dataclass
class Stubborn:
    """Never raises anything: every kill is followed by the kubelet's crash-loop back-off."""

    name: str = "stubborn"

    def decide(self, *, limit: int, request: int, history: quality.History) -> quality.Decision:
        return quality.Decision(limit=limit, request=request)


@dataclasses.dataclass
class Peeking:
    """Records what a strategy could see, to check that the future is hidden."""

    name: str = "peeking"
    seen: list[tuple[int, list[int]]] = dataclasses.field(default_factory=list)

    def decide(self, *, limit: int, request: int, history: quality.History) -> quality.Decision:
        self.seen.append((history.now, list(history.observed[history.now + 1 :])))
        return quality.Decision(limit=limit * 2, request=request * 2)


def history(*, limit: int, kills: list[quality.Kill] | None = None, level: int | None = None, minutes: int = 120) -> quality.History:
    now = minutes - 1
    observed = [level if level is not None else limit] * minutes
    return quality.History(
        observed=observed,
        kills=kills or [quality.Kill(minute=now, started=0, limit=limit, request=limit)],
        now=now,
        instance_start=0,
    )


# --- determinism ----------------------------------------------------------------------------------


def test_same_seed_gives_the_same_json() -> None:
    first = quality.run(seed=5, traces_per_family=1, days=2, stable_days=1)
    again = quality.run(seed=5, traces_per_family=1, days=2, stable_days=1)
    assert json.dumps(first, sort_keys=True) == json.dumps(again, sort_keys=True)
    assert set(first["families"]) == set(traces.FAMILIES)
    assert set(first["families"]["steady"]) == {"ours", "ours-kills-only", "vpa", "vpa-target", "krr", "fixed-25"}


def test_another_seed_gives_other_traces() -> None:
    one = [traces.generate(family=f, seed=1, index=0, days=1).wall for f in traces.FAMILIES]
    two = [traces.generate(family=f, seed=2, index=0, days=1).wall for f in traces.FAMILIES]
    assert all(a != b for a, b in zip(one, two))


def test_cli_prints_json_on_stdout(capsys: pytest.CaptureFixture[str]) -> None:
    assert quality.main(["--seed", "3", "--traces-per-family", "1", "--days", "2", "--stable-days", "1",
                         "--families", "steady,leak", "--format", "json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert list(out["families"]) == ["steady", "leak"] and out["seed"] == 3
    assert out["target"]["leak"]["note"].startswith("no limit fixes a leak")


# --- counting kills -------------------------------------------------------------------------------


def test_kills_on_a_hand_made_trace_with_a_fixed_bump() -> None:
    # Start: the median of hours 1–6 is 100Mi. At minute 400 the demand is 130Mi: killed at 100Mi,
    # restarted at 125Mi in minute 401, killed again (130 > 125), restarted at 156.25Mi, which holds.
    trace = flat_trace(600, changes={400: 130 * MI, 401: 130 * MI, 402: 130 * MI})
    assert trace.initial_limit() == 100 * MI
    outcome = quality.simulate(trace, quality.Fixed(), stable_days=0)
    assert [(k.minute, k.started, k.limit) for k in outcome.kills] == [(400, 0, 100 * MI), (401, 401, 125 * MI)]
    assert outcome.final_limit == 1.25 * 1.25 * 100 * MI
    assert outcome.converged and outcome.true_peak_after == 130 * MI
    assert outcome.waste == pytest.approx((156.25 - 130) / 130)


def test_a_kill_in_the_last_stable_days_means_not_converged() -> None:
    day = traces.MINUTES_PER_DAY
    trace = flat_trace(4 * day, changes={3 * day + 10: 200 * MI})
    outcome = quality.simulate(trace, quality.Fixed(), stable_days=1)
    assert len(outcome.kills) == 1 and not outcome.converged and outcome.waste is None
    assert quality.simulate(trace, quality.Fixed(), stable_days=0).converged


def test_no_kill_means_converged_at_the_start_with_the_initial_limit() -> None:
    outcome = quality.simulate(flat_trace(600), quality.VPA(), stable_days=0)
    assert outcome.kills == () and outcome.converged and outcome.final_limit == 100 * MI and outcome.waste == 0


def test_a_kill_without_a_raise_restarts_after_the_crash_loop_back_off() -> None:
    # From minute 400 the demand never fits: back-off 10 s, 20 s, 40 s (next minute), 80 s (+1),
    # 160 s (+2), then 300 s (+5) for good.
    trace = flat_trace(460, changes={m: 200 * MI for m in range(400, 460)})
    outcome = quality.simulate(trace, Stubborn(), stable_days=1)
    assert [k.minute for k in outcome.kills] == [400, 401, 402, 403, 405, 408, 414, 420, 426, 432, 438, 444, 450, 456]
    assert not outcome.converged


def test_age_resets_on_restart_for_leaks_and_start_up_peaks() -> None:
    trace = flat_trace(10, leak_per_minute=MI, startup=(50 * MI, 20 * MI))
    assert trace.demand(5, 0) == 150 * MI  # a fresh container: baseline plus the start-up peak
    assert trace.demand(5, 1) == 121 * MI
    assert trace.demand(5, 5) == 105 * MI  # the leak counts container age, not the clock


def test_a_strategy_never_sees_the_future_nor_usage_above_the_limit() -> None:
    trace = flat_trace(600, changes={400: 300 * MI})
    spy = Peeking()
    quality.simulate(trace, spy, stable_days=0)
    ((now, future),) = spy.seen
    assert now == 400 and set(future) == {quality.NO_SAMPLE}
    kill_history = history(limit=100 * MI)
    assert kill_history.peak(60) == 100 * MI


# --- each strategy's bump -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("used", "sample"),
    [(50 * MI, 150 * MI), (500 * MI, 600 * MI), (1000 * MI, 1200 * MI), (5, 5 + 100 * MI)],
)
def test_vpa_oom_sample(used: int, sample: int) -> None:
    assert quality.vpa_oom_sample(used) == sample


@pytest.mark.parametrize(
    ("peak", "limit", "wanted"),
    [(1000 * MI, 1000 * MI, 1250 * MI), (2000 * MI, 1000 * MI, 2300 * MI), (0, 400 * MI, 500 * MI)],
)
def test_krr_simple(peak: int, limit: int, wanted: int) -> None:
    assert quality.krr_simple(peak=peak, limit_at_oom=limit) == wanted


@pytest.mark.parametrize(
    ("strategy", "limit", "new_limit"),
    [
        (quality.Ours(), 1000 * MI, 1500 * MI),  # × increaseFactor 1.5
        (quality.Ours(), 100 * MI, 164 * MI),  # + minIncrease 64Mi
        (quality.Ours(name="ours-kills-only", with_usage=False), 1000 * MI, 1500 * MI),
        (quality.VPA(), 1000 * MI, 1200 * MI),  # × 1.2
        (quality.VPA(), 100 * MI, 200 * MI),  # + 100Mi
        (quality.VPA(name="vpa-target", target=True), 1000 * MI, 1380 * MI),  # × 1.2 × 1.15
        (quality.VPA(name="vpa-target", target=True), 100 * MI, 250 * MI),  # pod-min-memory 250Mi
        (quality.KRR(), 1000 * MI, 1250 * MI),
        (quality.Fixed(), 1000 * MI, 1250 * MI),
    ],
    ids=lambda v: getattr(v, "name", None),
)
def test_strategy_bumps_after_one_limit_kill(strategy: quality.Strategy, limit: int, new_limit: int) -> None:
    decision = strategy.decide(limit=limit, request=limit, history=history(limit=limit))
    assert (decision.limit, decision.request, decision.suspected_leak) == (new_limit, new_limit, False)


def test_vpa_uses_the_peak_of_the_current_day_when_it_is_above_the_request() -> None:
    # Request 500Mi, limit 1000Mi, usage reached the limit today: used = 1000Mi → request 1200Mi,
    # and the limit keeps its 2:1 ratio.
    decision = quality.VPA().decide(limit=1000 * MI, request=500 * MI, history=history(limit=1000 * MI))
    assert (decision.request, decision.limit) == (1200 * MI, 2400 * MI)


def test_ours_stops_bumping_when_it_suspects_a_leak() -> None:
    # Three kills at raised limits, each after 10 hours, over more than a day and at different hours
    # of it: the real strategy (kills only) says SuspectedLeak, and the benchmark, like Auto mode,
    # does not apply it.
    limits = [100 * MI, 150 * MI, 225 * MI]
    found = [quality.Kill(minute=601 * i + 600, started=601 * i, limit=lim, request=lim) for i, lim in enumerate(limits)]
    leaky = quality.History(observed=[0] * 1900, kills=found, now=found[-1].minute, instance_start=found[-1].started)
    decision = quality.Ours(with_usage=False).decide(limit=225 * MI, request=225 * MI, history=leaky)
    assert decision == quality.Decision(limit=225 * MI, request=225 * MI, suspected_leak=True)


def test_ours_gets_the_operators_leak_slope_from_two_growing_lives() -> None:
    # Two 10h lives, each growing 1Mi a minute from 100Mi: the operator's range query (from the start
    # of the second-to-last killed life, a 36 s step over these 20h, 1-minute windows) and
    # domain.usage see two steadily growing lives, and the slope of the one that grew least.
    observed = [(100 + m % 600) * MI for m in range(1200)]
    found = [quality.Kill(minute=599, started=0, limit=700 * MI, request=700 * MI),
             quality.Kill(minute=1199, started=600, limit=700 * MI, request=700 * MI, pod=0)]
    grown = quality.History(observed=observed, kills=found, now=1199, instance_start=600)
    usage = quality.Ours().usage(grown)
    assert usage.peak == 699 * MI
    assert usage.slope_bytes_per_s == pytest.approx(MI / 60, rel=0.01)
    assert usage.window is not None and usage.window.total_seconds() == 599 * 60
    assert usage.source.startswith("Prometheus 7d: the last 2 lives")
    decision = quality.Ours().decide(limit=700 * MI, request=700 * MI, history=grown)
    assert decision.suspected_leak  # 599Mi of growth is at least 25% of the 700Mi limit


def test_a_step_within_one_life_is_not_a_leak_slope() -> None:
    # One day-long life that steps from 100Mi to 300Mi halfway. A least-squares slope over the life
    # grows by far more than 25% of the limit; the operator's floor test sees one step, not a leak.
    observed = [(100 if m < 720 else 300) * MI for m in range(1440)]
    found = [quality.Kill(minute=1439, started=0, limit=300 * MI, request=300 * MI)]
    stepped = quality.History(observed=observed, kills=found, now=1439, instance_start=0)
    usage = quality.Ours().usage(stepped)
    assert usage.peak == 300 * MI and usage.slope_bytes_per_s is None and usage.window is None
    assert not quality.Ours().decide(limit=300 * MI, request=300 * MI, history=stepped).suspected_leak


def test_the_simulated_prometheus_answers_the_operators_queries() -> None:
    # Lives of two pods: the first pod lived minutes 0–9 (the lookback of 15 min starts later), the
    # second 12–19; nothing ran in minutes 10–11. Kill at minute 19, looked up at 19:30.
    observed = [10 * MI] * 10 + [quality.NO_SAMPLE] * 2 + [MI * (20 + m) for m in range(8)]
    lives = [promsim.Life(pod=promsim.pod_name(0), start=0, end=9), promsim.Life(pod=promsim.pod_name(1), start=12, end=19)]
    prometheus = promsim.Prometheus(observed=observed, lives=lives, epoch=0)
    selector = f'{{pod=~"{promsim.pod_name(1)}"}}'
    rows = prometheus.custom_query_range(
        f"max by (container, pod, id) (max_over_time(container_memory_working_set_bytes{selector}[120s]))",
        datetime.datetime.fromtimestamp(660, datetime.UTC),
        datetime.datetime.fromtimestamp(1170, datetime.UTC), "120s",
    )
    # Instants 660, 780, …, 1140; each the highest sample of (t − 120 s, t] of the second pod's life.
    assert rows == [{"metric": {"container": "app", "pod": promsim.pod_name(1), "id": lives[1].series_id},
                     "values": [[780, str(21 * MI)], [900, str(23 * MI)], [1020, str(25 * MI)], [1140, str(27 * MI)]]}]
    ws = f'container_memory_working_set_bytes{{pod=~"{promsim.pod_name(0)}|{promsim.pod_name(1)}"}}'
    stats = prometheus.custom_query(f"max_over_time({ws}[900s]) or quantile_over_time(0.95, (max by (container, pod) ({ws}))[900s:300s])",
                                    params={"time": "1170.000"})
    # Peak over (270, 1170]: minutes 5–19. p95 over the instants 300, 600, 900 (first pod: 10Mi;
    # second pod: minute 15 only, 23Mi), the higher of the two pods.
    assert {r["metric"]["oomtuner_stat"]: float(r["value"][1]) for r in stats} == {"peak": 27 * MI, "p95": 23 * MI}


# --- the increaseFactor sweep ---------------------------------------------------------------------


def test_the_sweep_is_deterministic_and_holds_the_normal_run_at_the_default_factor() -> None:
    options = {"seed": 2, "traces_per_family": 2, "days": 3, "stable_days": 1, "families": ("step", "startup")}
    first = quality.run(**options, sweep_factors=(1.2, 1.5, 2.0))  # type: ignore[arg-type]
    again = quality.run(**options, sweep_factors=(1.2, 1.5, 2.0))  # type: ignore[arg-type]
    assert json.dumps(first, sort_keys=True) == json.dumps(again, sort_keys=True)
    assert first["sweep"]["factors"] == ["1.2", "1.5", "2"]
    plain = quality.run(**options)  # type: ignore[arg-type]
    assert "sweep" not in plain and plain["families"] == first["families"]
    for family in ("step", "startup"):
        at_default = dict(first["sweep"]["families"][family]["1.5"])
        assert at_default.pop("target") == plain["target"][family]
        assert at_default == plain["families"][family]["ours"]


def test_the_sweep_without_usage_holds_ours_kills_only_at_the_default_factor() -> None:
    options = {"seed": 2, "traces_per_family": 2, "days": 3, "stable_days": 1, "families": ("leak",)}
    swept = quality.run(**options, sweep_factors=(1.2, 1.5), sweep_with_usage=False)  # type: ignore[arg-type]
    assert swept["sweep"]["usage"] is False
    at_default = dict(swept["sweep"]["families"]["leak"]["1.5"])
    at_default.pop("target")
    assert at_default == swept["families"]["leak"]["ours-kills-only"]
    assert "ours-kills-only by increaseFactor" in quality.sweep_table(swept)


def test_a_bigger_factor_bumps_more_in_one_kill() -> None:
    (low, high) = quality.sweep_strategies([1.2, 2.0])
    assert low.decide(limit=1000 * MI, request=1000 * MI, history=history(limit=1000 * MI)).limit == 1200 * MI
    assert high.decide(limit=1000 * MI, request=1000 * MI, history=history(limit=1000 * MI)).limit == 2000 * MI


def test_cli_sweep(capsys: pytest.CaptureFixture[str]) -> None:
    args = ["--seed", "3", "--traces-per-family", "1", "--days", "2", "--stable-days", "1", "--families", "steady"]
    assert quality.main([*args, "--format", "table", "--sweep-factor", "1.3,1.5"]) == 0
    out = capsys.readouterr().out
    assert "ours by increaseFactor" in out and "x1.3" in out and "x1.5" in out
    assert quality.main([*args, "--format", "json", "--sweep-factor", "1.3,1.5"]) == 0
    assert list(json.loads(capsys.readouterr().out)["sweep"]["families"]["steady"]) == ["1.3", "1.5"]
    assert quality.main([*args, "--format", "json", "--sweep-factor", "1.5", "--sweep-without-usage"]) == 0
    assert json.loads(capsys.readouterr().out)["sweep"]["usage"] is False
    for bad in ("1.0", "x", "1.5,1.50"):
        with pytest.raises(SystemExit):
            quality.main([*args, "--sweep-factor", bad])
