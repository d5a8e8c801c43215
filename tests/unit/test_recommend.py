"""The bounded OOM bump: Limit and Node recommendations, request policies, caps, never-lower, leak
suspicion, the evidence text, and the phase/cooldown helpers.

Kills are built as `kills.OOMKill` values and the policy as `policy.MemorySettings`, as the operator
passes them. Pure; nothing is faked. hypothesis checks the promises that must hold for every input:
resources never go down, caps are never exceeded, the request never exceeds the limit, and the result
is deterministic (also when the kills come in another order).
"""

from __future__ import annotations

import dataclasses
import datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from oomtuner.api import policy, types
from oomtuner.domain import caps as domain_caps
from oomtuner.domain import kills, recommend

UTC = datetime.timezone.utc
T0 = datetime.datetime(2024, 5, 1, 10, tzinfo=UTC)
MI = 1024**2
GI = 1024**3
LIMIT = types.Classification.LIMIT
NODE = types.Classification.NODE
UNKNOWN = types.Classification.UNKNOWN
DEFAULTS = policy.MemorySettings()


def kill(minute: float = 0, *, limit: int | None = 256 * MI, lifetime_minutes: float = 5, **changes: Any) -> kills.OOMKill:
    at = T0 + datetime.timedelta(minutes=minute)
    base = kills.OOMKill(
        namespace="shop",
        pod="web-0",
        pod_uid="uid-1",
        container="app",
        container_type=types.ContainerType.CONTAINER,
        node="node-a",
        at=at,
        started_at=at - datetime.timedelta(minutes=lifetime_minutes),
        restart_count=0,
        exit_code=137,
        container_id=None,
        request=128 * MI,
        limit_at_kill=limit,
        qos_class=types.QOSClass.BURSTABLE,
        oom_score_adj=985,
        pod_memory_limit=None,
    )
    return dataclasses.replace(base, **changes)


def resources(request: int | None = 128 * MI, limit: int | None = 256 * MI, name: str = "app") -> recommend.ContainerResources:
    return recommend.ContainerResources(name=name, type=types.ContainerType.CONTAINER, request=request, limit=limit)


def rec(**kwargs: Any) -> recommend.ContainerRecommendation:
    kwargs.setdefault("current", resources())
    kwargs.setdefault("settings", DEFAULTS)
    kwargs.setdefault("kills", [kill()])
    return recommend.recommend_container(**kwargs)


# ---- Limit kills -------------------------------------------------------------------------------


def test_limit_kill_raises_the_limit_by_the_factor_and_keeps_the_ratio() -> None:
    result = rec(kills=[kill(0), kill(10)])
    assert (result.request, result.limit) == (192 * MI, 384 * MI)
    assert (result.classification, result.phase, result.capped_by) == (LIMIT, types.Phase.PENDING, None)
    assert result.reason == (
        "OOM-killed 2× at limit 256Mi (Limit); limit 256Mi × 1.5 = 384Mi; "
        "request keeps its ratio to the limit: 128Mi → 192Mi"
    )
    assert result.kills == 2
    assert result.last_oom_at == T0 + datetime.timedelta(minutes=10)
    assert recommend.needs_change(result)


def test_min_increase_wins_for_small_limits() -> None:
    result = rec(current=resources(request=None, limit=100 * MI), kills=[kill(limit=100 * MI)])
    assert result.limit == 164 * MI
    assert result.request is None  # KeepRatio keeps "no request"
    assert "limit 100Mi + minIncrease 64Mi = 164Mi" in result.reason


def test_observed_peak_with_margin_wins_when_larger() -> None:
    result = rec(usage=recommend.Usage(peak=500 * MI))
    assert result.limit == 575 * MI
    assert "peak 500Mi × 1.15 = 575Mi" in result.reason


def test_the_new_limit_is_rounded_up_to_a_mib() -> None:
    result = rec(current=resources(request=None, limit=1_000_000_000), kills=[kill(limit=1_000_000_000)])
    assert result.limit == 1431 * MI  # 1.5e9 bytes is 1430.5Mi
    assert "rounded up to a MiB" in result.reason


def test_the_base_is_the_largest_limit_seen() -> None:
    result = rec(current=resources(request=None, limit=256 * MI), kills=[kill(limit=512 * MI), kill(5, limit=256 * MI)])
    assert result.limit == 768 * MI


# ---- only a kill at the memory in force raises it ---------------------------------------------------


def test_a_kill_below_the_template_is_stale_and_raises_nothing() -> None:
    """The Deployment went to 384Mi; an old pod still at 256Mi is killed (a slow rollout)."""
    result = rec(current=resources(request=192 * MI, limit=384 * MI), kills=[kill(0), kill(10)])
    assert (result.request, result.limit) == (192 * MI, 384 * MI) and not recommend.needs_change(result)
    assert result.kills == 2 and result.phase == types.Phase.PENDING
    assert "every kill is stale: stale: killed at 256Mi, template already 384Mi" in result.reason
    assert "raise nothing" in result.reason


def test_a_kill_below_what_the_operator_applied_is_stale_even_before_the_template_read_shows_it() -> None:
    applied = resources(request=192 * MI, limit=384 * MI)
    result = rec(current=resources(), kills=[kill(0)], in_force=applied)
    assert result.limit == 256 * MI and "template already 384Mi" in result.reason


def test_a_kill_at_the_limit_in_force_raises_it_and_the_stale_ones_are_named() -> None:
    result = rec(current=resources(request=192 * MI, limit=384 * MI),
                 kills=[kill(0), kill(5, limit=384 * MI), kill(10)])
    assert result.limit == 576 * MI
    assert "OOM-killed 1× at limit 384Mi (Limit); 2 of 3 kills are stale (stale: killed at 256Mi, " \
           "template already 384Mi): they raise nothing" in result.reason
    assert result.kills == 3


def test_a_node_kill_below_the_request_in_force_is_stale() -> None:
    node = [kill(0, limit=None, request=128 * MI)]
    result = rec(current=resources(request=256 * MI, limit=None), kills=node, classifications=[types.Classification.NODE])
    assert (result.request, result.limit) == (256 * MI, None)
    assert "killed with a request of 128Mi, template already 256Mi" in result.reason


def test_a_kill_of_unknown_memory_is_never_stale() -> None:
    k = kill(0, limit=None)
    assert recommend.stale_reason(k, LIMIT, in_force=resources(limit=384 * MI)) is None


@pytest.mark.parametrize(
    ("request_policy", "usage", "expected_request", "fragment"),
    [
        ("KeepRatio", None, 192 * MI, "keeps its ratio"),
        ("EqualsLimit", None, 384 * MI, "request equals the limit (384Mi)"),
        ("Unchanged", None, 128 * MI, "limit 256Mi × 1.5 = 384Mi"),
        ("FromUsage", recommend.Usage(p95=300 * MI), 345 * MI, "p95 300Mi × 1.15 = 345Mi"),
        ("FromUsage", recommend.Usage(p95=50 * MI), 128 * MI, "p95 50Mi"),  # never below R
        ("FromUsage", None, 192 * MI, "no usage history for FromUsage: the request keeps its ratio"),
    ],
)
def test_request_policies(request_policy: str, usage: recommend.Usage | None, expected_request: int, fragment: str) -> None:
    result = rec(settings=policy.MemorySettings(requestPolicy=types.RequestPolicy(request_policy)), usage=usage)
    assert result.limit == 384 * MI
    assert result.request == expected_request
    assert fragment in result.reason


def test_settings_change_the_bump() -> None:
    result = rec(settings=policy.MemorySettings(increaseFactor=2, minIncrease="1Gi", margin=0))
    assert result.limit == 256 * MI + GI


def test_an_invalid_min_increase_falls_back_to_64mi_and_says_so() -> None:
    result = rec(current=resources(limit=100 * MI), kills=[kill(limit=100 * MI)], settings=policy.MemorySettings(minIncrease="12Qi"))
    assert result.limit == 164 * MI
    assert 'policy minIncrease ignored (invalid quantity "12Qi"' in result.reason


# ---- Node kills --------------------------------------------------------------------------------


def test_node_kill_raises_the_request_to_the_peak_and_adds_a_limit() -> None:
    result = rec(current=resources(limit=None), kills=[kill(limit=None)], usage=recommend.Usage(peak=500 * MI))
    assert result.classification == NODE
    assert (result.request, result.limit) == (575 * MI, 1150 * MI)
    assert "request from usage: peak 500Mi × 1.15 = 575Mi" in result.reason
    assert "no memory limit: recommending" in result.reason and "so it can no longer take the node down" in result.reason


def test_node_kill_within_request_is_a_victim_and_keeps_the_request() -> None:
    result = rec(current=resources(limit=None), kills=[kill(limit=None)], usage=recommend.Usage(peak=50 * MI))
    assert result.request == 128 * MI
    assert "this container was a victim, not the cause" in result.reason


def test_node_kill_without_usage_bumps_the_request_like_a_limit() -> None:
    result = rec(current=resources(limit=None), kills=[kill(limit=None)])
    assert (result.request, result.limit) == (192 * MI, 384 * MI)
    assert "no usage history: request 128Mi × 1.5 = 192Mi" in result.reason


def test_node_kill_without_request_or_usage_starts_at_min_increase() -> None:
    result = rec(current=resources(request=None, limit=None), kills=[kill(limit=None)])
    assert (result.request, result.limit) == (64 * MI, 128 * MI)
    assert "request starts at minIncrease 64Mi" in result.reason


def test_node_kill_keeps_an_existing_limit_and_lifts_it_only_to_the_request() -> None:
    kept = rec(kills=[kill()], classifications=[NODE])
    assert (kept.request, kept.limit) == (192 * MI, 256 * MI)
    lifted = rec(kills=[kill()], classifications=[NODE], usage=recommend.Usage(peak=400 * MI))
    assert (lifted.request, lifted.limit) == (460 * MI, 460 * MI)


def test_node_kill_adds_no_container_limit_under_a_pod_level_limit() -> None:
    result = rec(current=resources(limit=None), kills=[kill(limit=None, pod_memory_limit=2 * GI)], classifications=[NODE])
    assert result.limit is None
    assert "the pod-level limit 2Gi already bounds the pod" in result.reason


def test_a_pod_level_limit_kill_changes_nothing_and_says_what_to_raise() -> None:
    result = rec(current=resources(limit=None), kills=[kill(limit=None, pod_memory_limit=GI)])
    assert result.classification == LIMIT
    assert (result.request, result.limit) == (128 * MI, None)
    assert not recommend.needs_change(result)
    assert "raise the pod's spec.resources.limits.memory" in result.reason


# ---- Unknown and mixed -------------------------------------------------------------------------


def test_unknown_is_treated_as_limit_when_a_limit_exists() -> None:
    result = rec(classifications=[UNKNOWN])
    assert (result.classification, result.limit) == (UNKNOWN, 384 * MI)
    assert "handled as Limit" in result.reason


def test_unknown_is_treated_as_node_without_a_limit() -> None:
    result = rec(current=resources(limit=None), kills=[kill(limit=None)], classifications=[UNKNOWN])
    assert (result.classification, result.request) == (UNKNOWN, 192 * MI)
    assert "handled as Node" in result.reason


def test_the_latest_kill_decides_the_classification() -> None:
    result = rec(kills=[kill(0), kill(30)], classifications=[LIMIT, NODE])
    assert result.classification == NODE


def test_without_classifications_kills_are_classified_from_their_limits() -> None:
    assert rec(kills=[kill(limit=256 * MI)]).classification == LIMIT
    assert rec(current=resources(limit=None), kills=[kill(limit=None)]).classification == NODE


def test_kills_of_other_containers_are_ignored() -> None:
    result = rec(kills=[kill(container="sidecar")])
    assert result.kills == 0
    assert (result.request, result.limit) == (128 * MI, 256 * MI)
    assert result.reason == "no OOM kills recorded; nothing to change"


def test_classifications_must_pair_with_kills() -> None:
    with pytest.raises(ValueError, match="2 classifications for 1 kills"):
        rec(classifications=[LIMIT, LIMIT])


# ---- caps and never-lower ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "expected_limit", "capped_by"),
    [
        ({"settings": policy.MemorySettings(maxLimit="300Mi")}, 300 * MI, "policy maxLimit 300Mi"),
        ({"caps": domain_caps.Caps(policy_max_limit=320 * MI)}, 320 * MI, "policy maxLimit 320Mi"),
        ({"caps": domain_caps.Caps(limit_range_max=330 * MI)}, 330 * MI, "LimitRange max 330Mi"),
        ({"caps": domain_caps.Caps(quota_headroom=64 * MI)}, 320 * MI, "ResourceQuota headroom 64Mi"),
        ({"caps": domain_caps.Caps(largest_node_allocatable=350 * MI)}, 350 * MI, "largest node allocatable 350Mi"),
        (
            {"caps": domain_caps.Caps(limit_range_max=330 * MI, largest_node_allocatable=310 * MI), "settings": policy.MemorySettings(maxLimit="1Gi")},
            310 * MI,
            "largest node allocatable 310Mi",
        ),
        ({"caps": domain_caps.Caps(limit_range_max=GI)}, 384 * MI, None),
    ],
)
def test_caps_bound_the_limit_and_say_which(kwargs: dict[str, Any], expected_limit: int, capped_by: str | None) -> None:
    result = rec(**kwargs)
    assert result.limit == expected_limit
    assert result.capped_by == capped_by
    assert result.phase == (types.Phase.CAPPED if capped_by else types.Phase.PENDING)
    assert result.request is not None and result.request <= result.limit
    if capped_by:
        assert f"capped by {capped_by}" in result.reason


def test_largest_node_caps_a_node_kill_request() -> None:
    result = rec(
        current=resources(limit=None),
        kills=[kill(limit=None)],
        usage=recommend.Usage(peak=10 * GI),
        caps=domain_caps.Caps(largest_node_allocatable=8 * GI),
    )
    assert result.request == 8 * GI
    assert result.limit == 8 * GI
    assert result.phase == types.Phase.CAPPED


def test_a_cap_below_the_current_limit_never_lowers_it() -> None:
    result = rec(current=resources(limit=GI), kills=[kill(limit=GI)], settings=policy.MemorySettings(maxLimit="512Mi"))
    assert (result.request, result.limit) == (128 * MI, GI)
    assert result.phase == types.Phase.CAPPED
    assert "never lowered" in result.reason
    assert not recommend.needs_change(result)


def test_never_below_the_previous_recommendation() -> None:
    previous = dataclasses.replace(rec(), request=600 * MI, limit=GI)
    result = rec(previous=previous)
    assert (result.request, result.limit) == (600 * MI, GI)


# ---- leak suspicion ----------------------------------------------------------------------------


def lives(*spec: tuple[int, float], start_hours: float = 0) -> list[kills.OOMKill]:
    """Back-to-back container lives from T0 (10:00 UTC) + `start_hours`, each (limit, lifetime in
    hours), each ended by a Limit kill."""
    found: list[kills.OOMKill] = []
    hours = start_hours
    for limit, lifetime in spec:
        hours += lifetime
        found.append(kill(hours * 60, limit=limit, lifetime_minutes=lifetime * 60, pod_uid=f"uid-{len(found)}"))
    return found


# Three lives at raised limits, 10h, 12h and 14h long: killed at 20:00, 08:00 and 22:00 over 36h.
LEAKING = [(256 * MI, 10), (384 * MI, 12), (576 * MI, 14)]


def test_three_kills_at_raised_limits_after_similar_lifetimes_suspect_a_leak() -> None:
    history = lives(*LEAKING)
    # a second kill at the same limit, minutes into a crash-looping life, does not count again
    history.insert(1, kill(10 * 60 + 5, limit=256 * MI, lifetime_minutes=2, pod_uid="uid-again"))
    result = rec(current=resources(limit=576 * MI), kills=history)
    assert result.phase == types.Phase.SUSPECTED_LEAK
    assert result.limit == 864 * MI  # the values are still there for a manual approval
    assert "3 Limit kills at successively raised limits 256Mi → 384Mi → 576Mi" in result.reason
    assert "(10h, 12h, 14h)" in result.reason
    assert "over 1d12h with kills spread over 12h of the day (no usage history)" in result.reason


def test_the_pattern_is_the_latest_lives_after_a_long_first_one() -> None:
    # The container ran 30 days before the first kill; the lives since then are what counts.
    history = lives((192 * MI, 30 * 24), *LEAKING)
    result = rec(current=resources(limit=576 * MI), kills=history)
    assert result.phase == types.Phase.SUSPECTED_LEAK
    assert "3 Limit kills at successively raised limits 256Mi → 384Mi → 576Mi" in result.reason


@pytest.mark.parametrize(
    "spec",
    [
        pytest.param([(256 * MI, 5), (384 * MI, 15), (576 * MI, 30)], id="more memory helped: lifetimes too different"),
        pytest.param([(256 * MI, 14), (384 * MI, 12), (576 * MI, 10)], id="each raise bought less time"),
        pytest.param([(384 * MI, 14), (576 * MI, 14)], id="only two raised limits"),
        pytest.param([(576 * MI, 10), (576 * MI, 12), (576 * MI, 14)], id="the same limit every time"),
        pytest.param([(384 * MI, 10), (256 * MI, 12), (576 * MI, 14)], id="the limit went down in between"),
        # start-up peaks: each instance dies minutes after its start, at raised limits
        pytest.param([(256 * MI, 0.05), (384 * MI, 0.1), (576 * MI, 0.15)], id="start-up kills"),
        pytest.param([(256 * MI, 0.03), (384 * MI, 0.05), (576 * MI, 0.1), (864 * MI, 0.12), (1296 * MI, 0.2)],
                     id="start-up kills a few minutes in, over more raises"),
        # a start-up kill between them: the raise before it did not last even a few minutes
        pytest.param([(192 * MI, 10), (256 * MI, 0.1), (384 * MI, 12), (576 * MI, 14)], id="a start-up kill ends the run"),
        # a daily rise: each life is killed a little later in the same morning, at a raised limit
        pytest.param([(433 * MI, 2.3), (520 * MI, 2.9), (624 * MI, 3.5)], id="one daily rise"),
        # a daily peak: killed at about the same hour on successive days, a little higher each day
        pytest.param([(256 * MI, 24), (384 * MI, 24.5), (576 * MI, 25)], id="the same hour every day"),
    ],
)
def test_no_leak_without_the_pattern(spec: list[tuple[int, float]]) -> None:
    result = rec(current=resources(limit=1296 * MI), kills=lives(*spec))
    assert result.phase != types.Phase.SUSPECTED_LEAK, result.reason


# At increaseFactor 1.2: the last raise is 120Mi, and 25% of the 720Mi limit (rule b) is 180Mi.
RAISED_BY_A_FIFTH = [(500 * MI, 10), (600 * MI, 12), (720 * MI, 14)]


def grew(mib: float, *, hours: float = 10) -> recommend.Usage:
    """Usage history whose leak slope says each of the last lives grew `mib` over `hours`."""
    return recommend.Usage(peak=720 * MI, slope_bytes_per_s=mib * MI / (hours * 3600), window=datetime.timedelta(hours=hours),
                           source="Prometheus 7d: the last 2 lives longer than 1h both grew steadily")


def test_with_usage_the_lives_must_have_grown_by_more_than_the_raise() -> None:
    settings = policy.MemorySettings(increaseFactor=1.2)
    history = lives(*RAISED_BY_A_FIFTH)
    leaking = rec(current=resources(limit=720 * MI), kills=history, settings=settings, usage=grew(150))
    assert leaking.phase == types.Phase.SUSPECTED_LEAK
    assert "3 Limit kills at successively raised limits 500Mi → 600Mi → 720Mi" in leaking.reason
    assert "the working set grew at least 150Mi per life (Prometheus 7d: the last 2 lives" in leaking.reason
    assert "more than the last raise of 120Mi" in leaking.reason
    assert "the working set grows" not in leaking.reason  # rule (b) alone would not have fired
    # A life that picks up where the killed one stopped (a daily rise) grows by about the raise.
    rising = rec(current=resources(limit=720 * MI), kills=history, settings=settings, usage=grew(110))
    assert rising.phase == types.Phase.PENDING, rising.reason
    # Usage history that saw no steady growth contradicts a leak, however the kills look.
    flat = recommend.Usage(peak=720 * MI, p95=600 * MI)
    assert rec(current=resources(limit=720 * MI), kills=history, settings=settings, usage=flat).phase == types.Phase.PENDING


def test_with_usage_the_lives_need_not_cover_a_day() -> None:
    # Growth seen in the lives is the evidence the kills alone need a day and spread hours for.
    history = lives((500 * MI, 2), (600 * MI, 2.5), (720 * MI, 3))
    settings = policy.MemorySettings(increaseFactor=1.2)
    assert rec(current=resources(limit=720 * MI), kills=history, settings=settings).phase == types.Phase.PENDING
    result = rec(current=resources(limit=720 * MI), kills=history, settings=settings, usage=grew(150, hours=2))
    assert result.phase == types.Phase.SUSPECTED_LEAK and "(2h, 2h30m, 3h)" in result.reason


def test_start_up_kills_are_no_leak_even_while_usage_grows() -> None:
    history = lives((500 * MI, 0.05), (600 * MI, 0.1), (720 * MI, 0.15))
    settings = policy.MemorySettings(increaseFactor=1.2)
    assert rec(current=resources(limit=720 * MI), kills=history, settings=settings, usage=grew(150)).phase == types.Phase.PENDING


LIFE_LIMITS = st.lists(st.integers(min_value=64, max_value=8192), min_size=3, max_size=8, unique=True).map(sorted)


@settings(max_examples=200, deadline=None)
@given(limits=LIFE_LIMITS, data=st.data())
def test_lives_shorter_than_an_hour_never_suggest_a_leak(limits: list[int], data: st.DataObject) -> None:
    lifetimes = data.draw(st.lists(st.floats(min_value=0, max_value=0.99), min_size=len(limits), max_size=len(limits)))
    gaps = data.draw(st.lists(st.floats(min_value=0, max_value=48), min_size=len(limits), max_size=len(limits)))
    history: list[kills.OOMKill] = []
    hours = 0.0
    for index, (limit, lifetime, gap) in enumerate(zip(limits, lifetimes, gaps)):
        hours += gap + lifetime
        history.append(kill(hours * 60, limit=limit * MI, lifetime_minutes=lifetime * 60, pod_uid=f"uid-{index}"))
    no_slope = data.draw(st.none() | st.builds(recommend.Usage, peak=st.none() | SIZES))
    result = rec(current=resources(limit=limits[-1] * MI), kills=history, usage=no_slope)
    assert result.phase != types.Phase.SUSPECTED_LEAK, result.reason


@settings(max_examples=200, deadline=None)
@given(limits=LIFE_LIMITS, data=st.data())
def test_without_usage_kills_within_a_day_or_at_one_hour_of_the_day_never_suggest_a_leak(
    limits: list[int], data: st.DataObject
) -> None:
    if data.draw(st.booleans(), label="within one day"):
        # kills at increasing times within less than a day of the first life's start
        ends = sorted(data.draw(st.lists(st.floats(min_value=1, max_value=23.9), min_size=len(limits),
                                         max_size=len(limits), unique=True)))
        starts = [0.0, *ends[:-1]]
    else:
        # one kill a day (or every few days), always within the same 6 hours of the day
        days = sorted(data.draw(st.lists(st.integers(min_value=1, max_value=30), min_size=len(limits),
                                         max_size=len(limits), unique=True)))
        hour = data.draw(st.floats(min_value=0, max_value=24))
        ends = [24 * day + hour + data.draw(st.floats(min_value=0, max_value=5.9)) for day in days]
        starts = [0.0, *ends[:-1]]
    history = [
        kill(end * 60, limit=limit * MI, lifetime_minutes=(end - start) * 60, pod_uid=f"uid-{index}")
        for index, (limit, start, end) in enumerate(zip(limits, starts, ends))
    ]
    result = rec(current=resources(limit=limits[-1] * MI), kills=history)
    assert result.phase != types.Phase.SUSPECTED_LEAK, result.reason


def test_node_kills_do_not_count_towards_a_leak() -> None:
    history = [kill(0, limit=256 * MI), kill(60, limit=384 * MI), kill(120, limit=576 * MI)]
    result = rec(current=resources(limit=576 * MI), kills=history, classifications=[LIMIT, NODE, LIMIT])
    assert result.phase != types.Phase.SUSPECTED_LEAK


def test_a_steady_working_set_growth_suspects_a_leak() -> None:
    growing = recommend.Usage(slope_bytes_per_s=20_000, window=datetime.timedelta(hours=1))
    result = rec(usage=growing)
    assert result.phase == types.Phase.SUSPECTED_LEAK
    assert "the working set grows" in result.reason and "at least 25% of the limit 256Mi" in result.reason
    slow = recommend.Usage(slope_bytes_per_s=1_000, window=datetime.timedelta(hours=1))
    assert rec(usage=slow).phase == types.Phase.PENDING
    shrinking = recommend.Usage(slope_bytes_per_s=-20_000, window=datetime.timedelta(hours=1))
    assert rec(usage=shrinking).phase == types.Phase.PENDING


# ---- phase, cooldown, change -------------------------------------------------------------------


def test_overall_phase_prefers_leak_then_capped() -> None:
    pending = rec()
    capped = dataclasses.replace(pending, phase=types.Phase.CAPPED)
    leak = dataclasses.replace(pending, phase=types.Phase.SUSPECTED_LEAK)
    assert recommend.overall_phase([pending, capped, leak]) == types.Phase.SUSPECTED_LEAK
    assert recommend.overall_phase([pending, capped]) == types.Phase.CAPPED
    assert recommend.overall_phase([pending]) == types.Phase.PENDING
    assert recommend.overall_phase([]) == types.Phase.PENDING


@pytest.mark.parametrize(
    ("last_applied", "expected"),
    [
        (None, datetime.timedelta(0)),
        (T0 - datetime.timedelta(minutes=4), datetime.timedelta(minutes=6)),
        (T0 - datetime.timedelta(minutes=10), datetime.timedelta(0)),
        (T0 - datetime.timedelta(hours=5), datetime.timedelta(0)),
        (T0 + datetime.timedelta(hours=1), datetime.timedelta(minutes=10)),  # clock skew: at most one cooldown
    ],
)
def test_cooldown_remaining(last_applied: datetime.datetime | None, expected: datetime.timedelta) -> None:
    assert recommend.cooldown_remaining(last_applied=last_applied, cooldown=datetime.timedelta(minutes=10), now=T0) == expected


def test_needs_change_compares_with_current() -> None:
    result = rec()
    assert recommend.needs_change(result)
    assert not recommend.needs_change(dataclasses.replace(result, request=128 * MI, limit=256 * MI))


# ---- properties --------------------------------------------------------------------------------

SIZES = st.integers(min_value=1, max_value=64 * GI)
MAYBE_SIZE = st.none() | SIZES


@st.composite
def current_resources(draw: st.DrawFn) -> recommend.ContainerResources:
    request, limit = draw(MAYBE_SIZE), draw(MAYBE_SIZE)
    if request is not None and limit is not None and request > limit:
        request, limit = limit, request
    return resources(request=request, limit=limit)


@st.composite
def kill_lists(draw: st.DrawFn) -> tuple[list[kills.OOMKill], list[types.Classification]]:
    count = draw(st.integers(min_value=0, max_value=5))
    found = []
    for index in range(count):
        found.append(
            kill(
                draw(st.integers(min_value=0, max_value=10_000)),
                limit=draw(MAYBE_SIZE),
                lifetime_minutes=draw(st.integers(min_value=0, max_value=600)),
                pod_memory_limit=draw(MAYBE_SIZE),
                pod_uid=f"uid-{index}",
            )
        )
    verdicts = draw(st.lists(st.sampled_from(list(types.Classification)), min_size=count, max_size=count))
    return found, verdicts


MEMORY_SETTINGS = st.builds(
    policy.MemorySettings,
    increaseFactor=st.floats(min_value=1.01, max_value=10),
    minIncrease=st.sampled_from(["0", "1Mi", "64Mi", "1Gi", "100M"]),
    margin=st.floats(min_value=0, max_value=1),
    maxLimit=st.none() | st.sampled_from(["128Mi", "1Gi", "4Gi", "100G"]),
    requestPolicy=st.sampled_from(list(types.RequestPolicy)),
)
USAGES = st.none() | st.builds(
    recommend.Usage,
    peak=MAYBE_SIZE,
    p95=MAYBE_SIZE,
    slope_bytes_per_s=st.none() | st.floats(min_value=-1e6, max_value=1e6),
    window=st.none() | st.timedeltas(min_value=datetime.timedelta(0), max_value=datetime.timedelta(days=7)),
)
CAPS = st.builds(
    domain_caps.Caps,
    policy_max_limit=MAYBE_SIZE,
    limit_range_max=MAYBE_SIZE,
    quota_headroom=st.none() | st.integers(min_value=0, max_value=8 * GI),
    largest_node_allocatable=MAYBE_SIZE,
)


@st.composite
def previous_recommendations(draw: st.DrawFn, current: recommend.ContainerResources) -> recommend.ContainerRecommendation | None:
    if draw(st.booleans()):
        return None
    request, limit = draw(MAYBE_SIZE), draw(MAYBE_SIZE)
    if request is not None and limit is not None and request > limit:
        request, limit = limit, request
    return recommend.ContainerRecommendation(
        name=current.name, type=current.type, current=current, request=request, limit=limit,
        classification=LIMIT, phase=types.Phase.PENDING, reason="", capped_by=None, kills=1, last_oom_at=None,
    )


def _bytes_or_none(text: str | None) -> int | None:
    from oomtuner.domain import quantity

    return None if text is None else quantity.parse_bytes(text)


@settings(max_examples=300, deadline=None)
@given(data=st.data(), current=current_resources(), history=kill_lists(), memory=MEMORY_SETTINGS, usage=USAGES, caps=CAPS)
def test_recommendations_keep_their_promises(
    data: st.DataObject,
    current: recommend.ContainerResources,
    history: tuple[list[kills.OOMKill], list[types.Classification]],
    memory: policy.MemorySettings,
    usage: recommend.Usage | None,
    caps: domain_caps.Caps,
) -> None:
    found, verdicts = history
    previous = data.draw(previous_recommendations(current))
    call = dict(current=current, kills=found, classifications=verdicts, settings=memory, usage=usage, caps=caps, previous=previous)
    result = recommend.recommend_container(**call)  # type: ignore[arg-type]

    # deterministic, and independent of the order the kills come in
    assert recommend.recommend_container(**call) == result  # type: ignore[arg-type]
    reordered = dict(call, kills=found[::-1], classifications=verdicts[::-1])
    assert recommend.recommend_container(**reordered) == result  # type: ignore[arg-type]

    # never lower than the current values or the previous recommendation
    for before in (current.request, previous.request if previous else None):
        if before is not None:
            assert result.request is not None and result.request >= before
    for before in (current.limit, previous.limit if previous else None):
        if before is not None:
            assert result.limit is not None and result.limit >= before

    # a request never exceeds the limit
    if result.request is not None and result.limit is not None:
        assert result.request <= result.limit

    # never above a cap, unless an existing value already was
    limit_caps = [
        c
        for c in (
            _bytes_or_none(memory.maxLimit),
            caps.policy_max_limit,
            caps.limit_range_max,
            None if caps.quota_headroom is None else (current.limit or 0) + caps.quota_headroom,
            caps.largest_node_allocatable,
        )
        if c is not None
    ]
    existing = [
        v for v in (current.request, current.limit, *((previous.request, previous.limit) if previous else ())) if v is not None
    ]
    if limit_caps and result.limit is not None:
        assert result.limit <= max([min(limit_caps), *existing])
    request_caps = [c for c in (caps.limit_range_max, caps.largest_node_allocatable) if c is not None]
    if request_caps and result.request is not None:
        assert result.request <= max([min(request_caps), *existing])

    # the evidence is always there, and Capped always names its cap
    assert result.reason
    if result.phase == types.Phase.CAPPED:
        assert result.capped_by
    assert result.kills == len(found)


def test_node_kill_request_follows_the_p95_and_the_new_limit_covers_the_peak() -> None:
    usage = recommend.Usage(peak=900 * MI, p95=300 * MI)
    node_kill = kill(0, limit=None)
    result = rec(current=resources(request=128 * MI, limit=None), kills=[node_kill], usage=usage,
                 classifications=[NODE])
    assert result.request == 345 * MI  # ceil(300Mi × 1.15)
    assert result.limit == 1035 * MI  # ceil(900Mi × 1.15): above 2 × request
    assert "p95 300Mi" in result.reason and "peak 900Mi" in result.reason
    only_peak = rec(current=resources(request=128 * MI, limit=None), kills=[node_kill],
                    usage=recommend.Usage(peak=400 * MI), classifications=[NODE])
    assert only_peak.request == 460 * MI and "peak 400Mi" in only_peak.reason
