"""Settle (`domain.settle`): when oomtuner lowers its own raise, to what, and why not otherwise; the
policy's `memory.settle` block; usage since the raise from a range query's series.

Pure: every input is built here, `now` is passed in. Nothing is faked.
"""

from __future__ import annotations

import dataclasses
import datetime
import fractions

import pytest

from oomtuner.api import policy, types
from oomtuner.domain import policies, settle
from oomtuner.domain import usage as domain_usage

MI = 1024 * 1024
GI = 1024 * MI
UTC = datetime.timezone.utc
NOW = datetime.datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
HOUR = datetime.timedelta(hours=1)
RAISED = NOW - 26 * HOUR

# A container that had 1Gi, was killed at 1Gi and raised to 1.5Gi 26 hours ago; since then it used
# at most 900Mi, every sample there, not growing.
FACTS = settle.Facts(
    request=1536 * MI, limit=1536 * MI, original_request=GI, original_limit=GI, raised_at=RAISED,
    last_kill=settle.LastKill(at=RAISED - datetime.timedelta(seconds=5), limit=GI, request=GI,
                              classification=types.Classification.LIMIT),
)
SEEN = settle.UsageSinceRaise(peak=900 * MI, coverage=fractions.Fraction(1), growing=False, p95=800 * MI)


def memory(**settle_fields: object) -> policy.MemorySettings:
    """The policy's memory settings; the tests' arithmetic uses a margin of 0.1 unless told."""
    settle_fields.setdefault("margin", 0.1)
    request_policy = settle_fields.pop("requestPolicy", types.RequestPolicy.KEEP_RATIO)
    return policy.MemorySettings(requestPolicy=request_policy, settle=policy.SettleSettings(**settle_fields))  # type: ignore[arg-type]


def decide(facts: settle.Facts = FACTS, seen: settle.UsageSinceRaise | None = SEEN, **settings: object) -> settle.Decision:
    return settle.decide(facts=facts, usage=seen, settings=memory(**settings), now=NOW)


def test_it_settles_to_the_limit_at_the_last_kill_plus_the_margin_and_says_why() -> None:
    found = decide()
    # max(1Gi × 1.1 = 1126.4Mi, 900Mi × 1.1 = 990Mi, 1Gi) rounded up to a MiB.
    assert (found.verdict, found.limit, found.request, found.recheck_at) == (settle.Verdict.SETTLE, 1127 * MI, 1127 * MI, None)
    assert found.settles
    assert found.reason == (
        "settled: raised to 1.5Gi 1d2h ago with no kill since; usage since the raise (Prometheus): peak 900Mi, "
        "100% covered, not growing; limit limit at the last kill 1Gi × 1.1 = 1127Mi (rounded up to a MiB), saves 26%; "
        "request keeps its ratio to the limit: 1.5Gi → 1127Mi"
    )


@pytest.mark.parametrize(
    ("facts", "seen", "settings", "limit", "label"),
    [
        (FACTS, dataclasses.replace(SEEN, peak=1200 * MI), {}, 1320 * MI, "peak 1.2Gi × 1.1"),
        (FACTS, SEEN, {"margin": 0.2}, 1229 * MI, "limit at the last kill 1Gi × 1.2"),
        (FACTS, SEEN, {"margin": 0.0}, GI, "limit at the last kill 1Gi × 1 = 1Gi,"),
        # Never below what the workload had before oomtuner (here more than the limit at the kill).
        (dataclasses.replace(FACTS, original_limit=1200 * MI, original_request=1200 * MI), SEEN, {}, 1200 * MI,
         "original limit 1.2Gi"),
    ],
)
def test_the_settled_limit_is_the_largest_of_the_three(
    facts: settle.Facts, seen: settle.UsageSinceRaise, settings: dict[str, object], limit: int, label: str
) -> None:
    found = decide(facts, seen, **settings)
    assert found.verdict == settle.Verdict.SETTLE and found.limit == limit
    assert f"limit {label}" in found.reason


@pytest.mark.parametrize(
    ("facts", "seen", "settings", "verdict", "why", "recheck_at"),
    [
        (FACTS, SEEN, {"enabled": False}, settle.Verdict.DISABLED, "settle is off in the policy", None),
        (dataclasses.replace(FACTS, raised_at=None), SEEN, {}, settle.Verdict.NOT_RAISED,
         "oomtuner has not raised this container's limit", None),
        (dataclasses.replace(FACTS, limit=GI), SEEN, {}, settle.Verdict.NOT_RAISED,
         "the limit 1Gi is not above the original 1Gi", None),
        (dataclasses.replace(FACTS, original_limit=None), SEEN, {}, settle.Verdict.NOT_RAISED,
         "had no memory limit before oomtuner", None),
        (dataclasses.replace(FACTS, settled_at=RAISED + 24 * HOUR), SEEN, {}, settle.Verdict.ALREADY_SETTLED,
         "this raise was settled 2h ago", None),
        (dataclasses.replace(FACTS, last_kill=None), SEEN, {}, settle.Verdict.NOT_RAISED,
         "no kill with a known limit", None),
        (dataclasses.replace(FACTS, last_kill=dataclasses.replace(FACTS.last_kill, classification=types.Classification.NODE)),  # type: ignore[arg-type]
         SEEN, {}, settle.Verdict.NODE_KILL, "the last kill was a Node kill", None),
        (dataclasses.replace(FACTS, last_kill=dataclasses.replace(FACTS.last_kill, at=RAISED + 3 * HOUR, limit=1536 * MI)),  # type: ignore[arg-type]
         SEEN, {}, settle.Verdict.KILLED_SINCE, "OOM-killed at limit 1.5Gi 3h after the raise", None),
        (dataclasses.replace(FACTS, leak_suspected=True), SEEN, {}, settle.Verdict.SUSPECTED_LEAK, "a leak is suspected", None),
        (dataclasses.replace(FACTS, raised_at=NOW - 23 * HOUR), SEEN, {}, settle.Verdict.TOO_SOON,
         "raised 23h ago; settle waits 24h with no kill", NOW + HOUR),
        (FACTS, SEEN, {"after": "2d"}, settle.Verdict.TOO_SOON, "raised 1d2h ago; settle waits 2d", RAISED + 48 * HOUR),
        (FACTS, None, {}, settle.Verdict.NO_USAGE, "no usage history since the raise", NOW + 6 * HOUR),
        (FACTS, dataclasses.replace(SEEN, peak=None), {}, settle.Verdict.NO_USAGE, "no usage history", NOW + 6 * HOUR),
        (FACTS, dataclasses.replace(SEEN, coverage=fractions.Fraction(89, 100)), {}, settle.Verdict.LOW_COVERAGE,
         "usage samples cover 89% of the time since the raise 1d2h ago (Prometheus), less than 90%", NOW + 6 * HOUR),
        (FACTS, dataclasses.replace(SEEN, growing=True), {"after": "12h"}, settle.Verdict.GROWING,
         "the working set of a running life is still growing", NOW + 3 * HOUR),
        (FACTS, dataclasses.replace(SEEN, peak=1350 * MI), {}, settle.Verdict.SMALL_SAVING,
         "peak 1.3Gi × 1.1 = 1485Mi would save 3% of the limit 1.5Gi, less than 5%", None),
        (FACTS, dataclasses.replace(SEEN, peak=1450 * MI), {}, settle.Verdict.SMALL_SAVING, "would save 0% of the limit", None),
    ],
)
def test_why_not(
    facts: settle.Facts, seen: settle.UsageSinceRaise | None, settings: dict[str, object], verdict: settle.Verdict,
    why: str, recheck_at: datetime.datetime | None,
) -> None:
    found = decide(facts, seen, **settings)
    assert found.verdict == verdict and not found.settles
    assert found.reason.startswith("not settled: ") and why in found.reason, found.reason
    assert (found.request, found.limit) == (facts.request, facts.limit)  # nothing changes
    assert found.recheck_at == recheck_at


def test_the_checks_without_usage_come_first_so_prometheus_is_asked_only_when_it_matters() -> None:
    early = settle.blocked(facts=dataclasses.replace(FACTS, raised_at=NOW - HOUR), settings=policy.SettleSettings(), now=NOW)
    assert early is not None and early.verdict == settle.Verdict.TOO_SOON
    assert settle.blocked(facts=FACTS, settings=policy.SettleSettings(), now=NOW) is None
    # A kill since the raise wins over missing usage: the answer does not depend on Prometheus.
    killed = dataclasses.replace(FACTS, last_kill=dataclasses.replace(FACTS.last_kill, at=NOW))  # type: ignore[arg-type]
    assert decide(killed, None).verdict == settle.Verdict.KILLED_SINCE


def test_coverage_of_exactly_90_percent_is_enough() -> None:
    assert decide(seen=dataclasses.replace(SEEN, coverage=fractions.Fraction(9, 10))).settles


@pytest.mark.parametrize(
    ("policy_name", "current", "original_request", "expected", "how"),
    [
        (types.RequestPolicy.KEEP_RATIO, 768 * MI, 512 * MI, 564 * MI, "request keeps its ratio to the limit: 768Mi → 564Mi"),
        (types.RequestPolicy.KEEP_RATIO, 768 * MI, 600 * MI, 600 * MI, "768Mi → 600Mi (the original request)"),
        (types.RequestPolicy.EQUALS_LIMIT, 1536 * MI, GI, 1127 * MI, "request equals the limit: 1.5Gi → 1127Mi"),
        (types.RequestPolicy.UNCHANGED, 512 * MI, 512 * MI, 512 * MI, None),
        # p95 since the raise 800Mi × (1 + memory.margin 0.15) = 920Mi.
        (types.RequestPolicy.FROM_USAGE, 1200 * MI, 512 * MI, 920 * MI, "from usage: p95 since the raise 800Mi × 1.15"),
        (types.RequestPolicy.FROM_USAGE, 900 * MI, 512 * MI, 900 * MI, None),  # never above the current request
        (types.RequestPolicy.KEEP_RATIO, None, None, None, None),
    ],
)
def test_the_request_follows_the_request_policy_down_but_never_below_the_original(
    policy_name: types.RequestPolicy, current: int | None, original_request: int | None, expected: int | None, how: str | None,
) -> None:
    facts = dataclasses.replace(FACTS, request=current, original_request=original_request)
    found = decide(facts, requestPolicy=policy_name)
    assert found.settles and found.limit == 1127 * MI and found.request == expected
    if how:
        assert how in found.reason
    else:
        assert "request" not in found.reason.split("saves")[1]


def test_from_usage_without_a_p95_keeps_the_request_up_to_the_new_limit() -> None:
    facts = dataclasses.replace(FACTS, request=1300 * MI)
    found = decide(facts, dataclasses.replace(SEEN, p95=None), requestPolicy=types.RequestPolicy.FROM_USAGE)
    assert found.request == 1127 * MI and "request unchanged (no p95 since the raise): 1.3Gi → 1127Mi" in found.reason


def test_recheck_interval_is_a_quarter_of_the_wait() -> None:
    assert settle.recheck_interval(policy.SettleSettings()) == 6 * HOUR
    assert settle.recheck_interval(policy.SettleSettings(after="2m")) == datetime.timedelta(seconds=30)


# ---- the policy block ---------------------------------------------------------------------------------


def test_the_policy_defaults_and_what_it_rejects() -> None:
    parsed = policy.parse({"metadata": {"name": "p", "namespace": "shop"}, "spec": {}})
    assert parsed.spec.memory.settle == policy.SettleSettings(enabled=True, after="24h", margin=0.09)
    off = policy.parse({"metadata": {"name": "p"}, "spec": {"memory": {"settle": {"enabled": False}}}})
    assert off.spec.memory.settle.enabled is False
    for bad, field in (({"margin": 1.5}, "spec.memory.settle.margin"), ({"after": "1w"}, "spec.memory.settle.after"),
                       ({"after": "24h", "extra": 1}, "spec.memory.settle.extra")):
        with pytest.raises(policy.InvalidPolicy) as err:
            policy.parse({"metadata": {"name": "p", "namespace": "shop"}, "spec": {"memory": {"settle": bad}}})
        assert "OOMPolicy shop/p" in str(err.value) and field in str(err.value)
    zero = policy.parse({"metadata": {"name": "p"}, "spec": {"memory": {"settle": {"after": "0s"}}}})
    assert policies.problem(zero) == "spec.memory.settle.after: must be longer than 0"
    assert policies.problem(parsed) is None


# ---- usage since the raise from a range query -----------------------------------------------------


START, STEP = 1_000_000.0, 60.0


def points(values: list[float], *, first: int = 0) -> tuple[tuple[float, float], ...]:
    return tuple((START + (first + k) * STEP, v) for k, v in enumerate(values))


def since(*series: domain_usage.Series, instants: int = 600) -> settle.UsageSinceRaise:
    return settle.usage_since(series, start=START, end=START + (instants - 1) * STEP, step=STEP,
                              max_gap=datetime.timedelta(minutes=10))


def test_peak_coverage_and_p95_of_the_points_since_the_raise() -> None:
    flat = [500.0 * MI] * 570 + [600.0 * MI] * 30  # the top 5% of instants at 600Mi
    found = since(domain_usage.Series("pod-a/1", points(flat)))
    assert (found.peak, found.coverage, found.p95, found.growing) == (600 * MI, 1, 500 * MI, False)
    half = since(domain_usage.Series("pod-a/1", points([500.0 * MI] * 300)))
    assert half.coverage == fractions.Fraction(1, 2)
    assert since().peak is None and since().coverage == 0


def test_two_pods_at_the_same_instants_count_once_and_the_highest_counts() -> None:
    a = domain_usage.Series("pod-a/1", points([100.0 * MI] * 600))
    b = domain_usage.Series("pod-b/1", points([300.0 * MI] * 300, first=300))
    found = since(a, b)
    assert found.coverage == 1 and found.peak == 300 * MI and found.p95 == 300 * MI


def test_growing_asks_the_lives_running_now() -> None:
    rising = [100.0 * MI + k * MI for k in range(600)]
    grown = domain_usage.Series("pod-a/1", points(rising))
    assert since(grown).growing
    # The same rise in a life that ended long ago, and a flat life running now: not growing.
    old = domain_usage.Series("pod-a/1", points(rising[:200]))
    now = domain_usage.Series("pod-b/1", points([300.0 * MI] * 300, first=300))
    assert not since(old, now).growing
    # A life running now that is too short to judge: the last life that can be judged decides.
    short = domain_usage.Series("pod-b/1", points([300.0 * MI] * 20, first=580))
    assert since(old, short).growing
    # A noisy leak whose floor rises less than half the fitted pace in one part (a dip at the start
    # of the third: +50Mi against about 150Mi a part) still counts for settle (a quarter is enough).
    uneven = [100.0 * MI + k * MI - (100 * MI if 300 <= k < 310 else 0) for k in range(600)]
    trend = domain_usage.trend(domain_usage.instances([domain_usage.Series("x", points(uneven))],
                                                      max_gap=datetime.timedelta(minutes=10))[0])
    assert trend is not None and not trend.growing
    assert since(domain_usage.Series("pod-a/1", points(uneven))).growing


def test_a_short_settle_window_judges_lives_of_half_its_length() -> None:
    # 40 minutes since the raise at a 30s step: a life shorter than an hour, rising steadily the whole
    # time. It is judged (it spans more than half the window) and found growing; a flat one is not.
    step, instants = 30.0, 80
    rising = tuple((START + k * step, 100.0 * MI + k * MI) for k in range(instants))
    flat = tuple((t, 150.0 * MI) for t, _ in rising)

    def short(values: tuple[tuple[float, float], ...]) -> settle.UsageSinceRaise:
        return settle.usage_since([domain_usage.Series("pod-a/1", values)], start=START,
                                  end=START + (instants - 1) * step, step=step, max_gap=datetime.timedelta(minutes=10))

    assert short(rising).growing and not short(flat).growing
    # Judged by the rule of the hour, the same life is too short: the window is what made it count.
    life = domain_usage.instances([domain_usage.Series("pod-a/1", rising)], max_gap=datetime.timedelta(minutes=10))[0]
    assert domain_usage.trend(life) is None
    # A life of less than half the window is still not judged: the last 15 minutes of a 40-minute one.
    late = rising[50:]
    assert not short(late).growing
