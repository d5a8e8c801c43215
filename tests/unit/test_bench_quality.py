"""The recommendation-quality benchmark (bench/quality.py, bench/traces.py, bench/vpasim.py,
bench/promsim.py): deterministic, counts kills the way the rules say, applies each strategy's
formula as documented, settles and lowers between kills, and judges the issue's target.

Everything is real: "ours" is the real domain strategy (recommend and settle) with the operator's
real Prometheus lookups answered by the simulated cluster, the traces are the real generators
(small and short here) or hand-made `traces.Trace` values. Nothing is faked.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import pathlib

import pytest
from bench import promsim, quality, traces, vpasim

from oomtuner.api import policy

MI = 1024 * 1024
DAY = traces.MINUTES_PER_DAY


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
    assert set(first["families"]["steady"]) == {
        "ours", "ours-kills-only", "vpa-oom-sample", "vpa-target", "vpa-updater", "krr", "fixed-25"}
    assert first["leak_families"] == ["leak"]


def test_another_seed_gives_other_traces() -> None:
    one = [traces.generate(family=f, seed=1, index=0, days=1).wall for f in traces.FAMILIES]
    two = [traces.generate(family=f, seed=2, index=0, days=1).wall for f in traces.FAMILIES]
    assert all(a != b for a, b in zip(one, two))


def test_cli_prints_json_on_stdout(capsys: pytest.CaptureFixture[str]) -> None:
    assert quality.main(["--seed", "3", "--traces-per-family", "1", "--days", "2", "--stable-days", "1",
                         "--families", "steady,leak", "--format", "json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert list(out["families"]) == ["steady", "leak"] and out["seed"] == 3
    assert out["target"]["leak"]["leak"] is True and "flagged" in out["target"]["leak"]
    assert set(out["target"]["steady"]["checks"]) == {"kills", "waste", "time_weighted_waste", "below_peak", "false_leak"}


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
    trace = flat_trace(10, leak_per_minute=MI, by_age=(50 * MI, 20 * MI))
    assert trace.demand(5, 0) == 150 * MI  # a fresh container: baseline plus the start-up peak
    assert trace.demand(5, 1) == 121 * MI
    assert trace.demand(5, 5) == 105 * MI  # the leak counts container age, not the clock
    # In bulk, the same values.
    assert trace.demands(3, 10, 2) == [trace.demand(m, m - 2) for m in range(3, 10)]
    plateau = traces.generate(family="plateau", seed=1, index=0, days=1)
    assert plateau.demands(100, 200, 50) == [plateau.demand(m, m - 50) for m in range(100, 200)]


def test_a_plateau_fills_with_age_and_stops() -> None:
    trace = traces.generate(family="plateau", seed=1, index=3, days=2)
    fill = trace.by_age
    assert fill[0] == 0 and all(a <= b for a, b in zip(fill, fill[1:])) and not trace.leaks
    # Slower and slower: the second day adds less than a tenth of what the first did.
    assert fill[-1] - fill[DAY] < (fill[DAY] - fill[0]) / 10


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
        # 1200Mi is in bucket 40 (1e7 × (1.05^b − 1) / 0.05 ≤ value), which ends at 1278397629 bytes;
        # × 1.15, each part truncated: 1278397629 + 191759644.
        (quality.VPA(name="vpa-target", target=True), 1000 * MI, 1470157273),
        (quality.VPA(name="vpa-target", target=True), 100 * MI, 250 * MI),  # pod-min-memory 250Mi
        (quality.KRR(), 1000 * MI, 1250 * MI),
        (quality.Fixed(), 1000 * MI, 1250 * MI),
    ],
    ids=lambda v: getattr(v, "name", None),
)
def test_strategy_bumps_after_one_limit_kill(strategy: quality.Strategy, limit: int, new_limit: int) -> None:
    decision = strategy.decide(limit=limit, request=limit, history=history(limit=limit))
    assert (decision.limit, decision.request, decision.suspected_leak) == (new_limit, new_limit, False)
    # Only ours looks again between kills, to settle its own raise a day after the patch (at 119:30).
    assert decision.recheck == (119 + DAY if strategy.name == "ours" else None)


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




# --- settle: ours lowers its own raise between kills ----------------------------------------------


def test_ours_settles_its_raise_a_day_later_and_a_kill_after_it_bumps_again() -> None:
    # 100Mi with one spike to 130Mi at minute 400: killed at 100Mi, raised to 164Mi (+ minIncrease).
    # A day after the raise, usage since it (a steady 100Mi) settles the limit to the larger of the
    # limit at the kill × 1.09 and the peak × 1.09: 109Mi. A spike to 115Mi on day 3 kills it there,
    # and the bump starts from 109Mi: 173Mi.
    trace = flat_trace(4 * DAY, changes={400: 130 * MI, 3 * DAY: 115 * MI})
    outcome = quality.simulate(trace, quality.Ours(), stable_days=0)
    assert [(k.minute, k.limit) for k in outcome.kills] == [(400, 100 * MI), (3 * DAY, 109 * MI)]
    assert [(c.minute, c.limit, c.by_kill) for c in outcome.changes] == [
        (401, 164 * MI, True), (401 + DAY, 109 * MI, False), (3 * DAY + 1, 173 * MI, True)]
    assert outcome.extra_rollouts == 1 and outcome.final_limit == 173 * MI


def test_ours_does_not_settle_a_life_that_is_still_growing() -> None:
    # A leak of 20Mi a day: the life after the raise grows, so the raise stands until the next kill.
    trace = flat_trace(4 * DAY, changes={400: 130 * MI}, leak_per_minute=20 * MI / DAY)
    outcome = quality.simulate(trace, quality.Ours(), stable_days=0)
    assert len(outcome.kills) == 2 and all(c.by_kill for c in outcome.changes)


def test_without_prometheus_or_with_settle_off_nothing_is_lowered() -> None:
    trace = flat_trace(3 * DAY, changes={400: 130 * MI})
    off = policy.MemorySettings(settle=policy.SettleSettings(enabled=False))
    for strategy in (quality.Ours(with_usage=False), quality.Ours(settings=off)):
        outcome = quality.simulate(trace, strategy, stable_days=0)
        assert [(c.limit, c.by_kill) for c in outcome.changes] == [(164 * MI, True)]


def test_time_weighted_waste_counts_the_day_before_the_settle() -> None:
    # Peak 100Mi after the last kill at minute 400; 164Mi for a day (64% waste), then 109Mi (9%)
    # until the end of day 3: (1440 × 0.64 + (3 × 1440 − 1841) × 0.09) / (3 × 1440 − 401).
    trace = flat_trace(3 * DAY, changes={400: 100 * MI + 1})
    outcome = quality.simulate(trace, quality.Ours(), stable_days=0)
    assert [c.minute for c in outcome.changes] == [401, 1841]
    peak = outcome.true_peak_after
    expected = (1440 * (164 * MI - peak) + (3 * DAY - 1841) * (109 * MI - peak)) / peak / (3 * DAY - 401)
    assert outcome.time_weighted_waste == pytest.approx(expected)
    assert outcome.waste == pytest.approx((109 * MI - peak) / peak) and not outcome.below_peak


# --- VPA's recommender and updater (bench/vpasim.py) ----------------------------------------------


def test_the_vpa_model_replays_the_measurement_of_the_real_recommender() -> None:
    # bench/vpa.py against VPA v1.8.1 (bench/README.md, "The real VPA recommender"): 3 replicas using
    # 100Mi, request = limit = 128Mi, rolled out at VPA's new target after each raise. Targets: 250Mi
    # before any kill; then 283, 454, 640Mi; no raise at the 4th kill (one OOM peak among 12 is
    # below the 90th percentile); 932Mi at the 5th (on another pod of the same rollout); none at the 6th.
    model = vpasim.Recommender()
    pods, request, minute, generation = ["p0-0", "p0-1", "p0-2"], 128 * MI, 0, 0
    for pod in pods:
        model.add_samples(pod, minute, [100 * MI, 100 * MI])
    minute = 2
    assert model.recommendation()[0] == 250 * MI
    targets = []
    for kill in range(6):
        for pod in pods:
            model.add_samples(pod, minute, [100 * MI])
        model.record_oom(pods[kill % 3 if kill != 4 else 2], minute + 0.5, request)
        target = model.recommendation()[0]
        targets.append(target // MI)
        minute += 1
        if target // MI > request // MI:  # bench/vpa.py rolls out whole MiB
            request, generation = target // MI * MI, generation + 1
            pods = [f"p{generation}-{i}" for i in range(3)]
    assert targets == [283, 454, 640, 640, 932, 932]


def test_vpa_raises_after_a_kill_and_lowers_once_the_oom_peak_has_decayed() -> None:
    # 300Mi, with one spike to 500Mi at minute 600. Half an hour in, the request (300Mi) is below the
    # lower bound (the median peak × 1.15) and the pod is evicted to the target; the kill's OOM sample
    # raises it again; two days later the daily peaks outweigh the decayed OOM peak and the updater
    # lowers it back.
    trace = flat_trace(8 * DAY, level=300 * MI, changes={600: 500 * MI})
    outcome = quality.simulate(trace, quality.VPAUpdater(), stable_days=0)
    assert [k.minute for k in outcome.kills] == [600]
    (first, raised, lowered) = outcome.changes
    assert (first.minute, first.by_kill) == (31, False) and first.limit > 300 * MI
    assert (raised.minute, raised.by_kill) == (601, True) and raised.limit > first.limit
    assert not lowered.by_kill and lowered.limit == first.limit and 2 * DAY < lowered.minute - raised.minute < 3 * DAY


@pytest.mark.parametrize(
    ("asked", "recommendation", "age", "quick", "evicted"),
    [
        (300, (400, 350, 900), 60, False, True),  # below the lower bound
        (300, (320, 250, 900), 60, False, False),  # in range, young pod
        (300, (320, 250, 900), 13 * 60, False, False),  # in range, old pod, under 10% change
        (300, (340, 250, 900), 13 * 60, False, True),  # in range, old pod, 13% change
        (300, (340, 250, 900), 60, True, True),  # quick OOM
        (300, (300, 250, 900), 60, True, False),  # quick OOM, nothing would change
        (1000, (300, 250, 900), 60, False, True),  # above the upper bound
    ],
)
def test_the_vpa_updater_rules(asked: int, recommendation: tuple[int, int, int], age: int, quick: bool, evicted: bool) -> None:
    assert vpasim.evicts(request=asked, recommendation=recommendation, pod_age=age, quick_oom=quick) is evicted


# --- the target -------------------------------------------------------------------------------------


def row(kills: float, waste: float | None = 0.1, weighted: float | None = 0.1, below: float = 0.0, leak: float = 0.0) -> dict[str, object]:
    return {"kills_mean": kills, "waste_mean": waste, "time_weighted_waste_mean": weighted, "below_peak": below,
            "leak_flagged": leak}


@pytest.mark.parametrize(
    ("family", "ours", "met", "failed"),
    [
        ("step", row(2.75), True, []),
        ("step", row(2.8), False, ["kills"]),  # the fewest peer kills are 3.0: at most 2.75
        ("steady", row(1.0), True, []),  # steady: at most one kill
        ("step", row(2.0, waste=0.11), False, ["waste"]),
        ("step", row(2.0, weighted=0.13), True, []),  # time-weighted: up to 3 points more than VPA's
        ("step", row(2.0, weighted=0.131), False, ["time_weighted_waste"]),
        ("step", row(2.0, below=0.031), False, ["below_peak"]),
        ("step", row(2.0, leak=0.051), False, ["false_leak"]),
        ("step", row(2.0, waste=None, weighted=None), False, ["waste", "time_weighted_waste"]),
    ],
)
def test_judge_applies_each_part_of_the_target(family: str, ours: dict[str, object], met: bool, failed: list[str]) -> None:
    rows = {"ours": ours, "vpa-oom-sample": row(3.5), "krr": row(3.0), "fixed-25": row(3.2)}
    verdict = quality.judge(family, rows)
    assert verdict["met"] is met and [k for k, ok in verdict["checks"].items() if not ok] == failed


def test_several_seeds_are_pooled_and_the_target_held_on_enough_of_them(capsys: pytest.CaptureFixture[str]) -> None:
    args = ["--seeds", "1-2", "--traces-per-family", "1", "--days", "2", "--stable-days", "1", "--families", "step,leak"]
    assert quality.main([*args, "--format", "json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["seeds"] == [1, 2] and set(out["per_seed"]) == {"1", "2"}
    assert out["families"]["step"]["ours"]["traces"] == 2  # one trace of each seed
    verdict = out["target"]["step"]
    assert verdict["seeds"] == 2 and verdict["held"] == (verdict["met"] and verdict["seeds_met"] == 2)
    assert "seeds_met" not in out["target"]["leak"]


# --- your own traces (--traces-module) -------------------------------------------------------------


def test_a_traces_module_is_evaluated_like_the_built_in_families(tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]) -> None:
    module = tmp_path / "mine.py"
    module.write_text(
        "from bench import traces\n"
        "MI = 1024 * 1024\n"
        "def generate_all(seed, per_family, days):\n"
        "    n = days * traces.MINUTES_PER_DAY\n"
        "    wall = tuple(100 * MI if m != 400 + seed else 150 * MI for m in range(n))\n"
        "    out = [traces.Trace(family='batch', index=i, seed=seed, wall=wall) for i in range(per_family)]\n"
        "    out += [traces.Trace(family='creep', index=i, seed=seed, wall=(100 * MI,) * n, leak_per_minute=MI / 60)\n"
        "            for i in range(per_family)]\n"
        "    return out\n"
    )
    args = ["--traces-module", str(module), "--traces-per-family", "2", "--days", "2", "--stable-days", "1"]
    assert quality.main([*args, "--format", "json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert list(out["families"]) == ["batch", "creep"] and out["leak_families"] == ["creep"]
    assert out["families"]["batch"]["ours"]["kills_mean"] == 1 and "checks" in out["target"]["batch"]
    assert quality.main([*args, "--format", "table"]) == 0
    assert "batch     VPA OOM sample" in capsys.readouterr().out


def test_a_traces_module_without_generate_all_is_one_clear_error(tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]) -> None:
    module = tmp_path / "empty.py"
    module.write_text("X = 1\n")
    with pytest.raises(SystemExit):
        quality.main(["--traces-module", str(module)])
    assert f"--traces-module: {module}: no function generate_all(seed, per_family, days)" in capsys.readouterr().err
    for text, problem in (("import nowhere\n", "ModuleNotFoundError: No module named 'nowhere'"), ("def (\n", "SyntaxError")):
        module.write_text(text)
        with pytest.raises(SystemExit):
            quality.main(["--traces-module", str(module)])
        assert f"--traces-module: {module}: {problem}" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        quality.main(["--traces-module", str(tmp_path / "missing.py")])
    assert "missing.py: FileNotFoundError" in capsys.readouterr().err


# --- sweeps ---------------------------------------------------------------------------------------


def test_sweeps_are_deterministic_and_hold_the_normal_run_at_the_defaults() -> None:
    options = {"seed": 2, "traces_per_family": 2, "days": 3, "stable_days": 1, "families": ("step", "startup")}
    variants = [*quality.factor_variants([1.2, 1.5]), *quality.settle_variants("off,24h:0.09")]
    first = quality.run(**options, variants=variants)  # type: ignore[arg-type]
    again = quality.run(**options, variants=variants)  # type: ignore[arg-type]
    assert json.dumps(first, sort_keys=True) == json.dumps(again, sort_keys=True)
    assert first["sweep"]["variants"] == ["1.2", "1.5", "off", "24h:0.09"]
    plain = quality.run(**options)  # type: ignore[arg-type]
    assert "sweep" not in plain and plain["families"] == first["families"]
    for family in ("step", "startup"):
        for default in ("1.5", "24h:0.09"):
            at_default = dict(first["sweep"]["families"][family][default])
            assert at_default.pop("target") == plain["target"][family]
            assert at_default == plain["families"][family]["ours"]
        assert first["sweep"]["families"][family]["off"]["extra_rollouts_mean"] == 0


def test_a_bigger_factor_bumps_more_in_one_kill() -> None:
    (low, high) = (v.strategy() for v in quality.factor_variants([1.2, 2.0]))
    assert low.decide(limit=1000 * MI, request=1000 * MI, history=history(limit=1000 * MI)).limit == 1200 * MI
    assert high.decide(limit=1000 * MI, request=1000 * MI, history=history(limit=1000 * MI)).limit == 2000 * MI


def test_cli_sweeps(capsys: pytest.CaptureFixture[str]) -> None:
    args = ["--seed", "3", "--traces-per-family", "1", "--days", "2", "--stable-days", "1", "--families", "steady"]
    assert quality.main([*args, "--format", "table", "--sweep-factor", "1.3", "--sweep-settle", "off,12h:0.2"]) == 0
    out = capsys.readouterr().out
    assert "ours by setting" in out and "ours 1.3" in out and "ours off" in out and "ours 12h:0.2" in out
    assert quality.main([*args, "--format", "json", "--sweep-factor", "1.5", "--sweep-without-usage"]) == 0
    swept = json.loads(capsys.readouterr().out)["sweep"]["families"]["steady"]["1.5"]
    assert swept["extra_rollouts_mean"] == 0  # without usage, no settle
    for flag, bad in (("--sweep-factor", "1.0"), ("--sweep-factor", "x"), ("--sweep-factor", "1.5,1.50"),
                      ("--sweep-settle", "24h"), ("--sweep-settle", "24h:2"), ("--sweep-settle", "1w:0.1"),
                      ("--seeds", "1-2,2")):
        with pytest.raises(SystemExit):
            quality.main([*args, flag, bad])
