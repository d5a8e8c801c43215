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
        ({"caps": recommend.Caps(policy_max_limit=320 * MI)}, 320 * MI, "policy maxLimit 320Mi"),
        ({"caps": recommend.Caps(limit_range_max=330 * MI)}, 330 * MI, "LimitRange max 330Mi"),
        ({"caps": recommend.Caps(quota_headroom=64 * MI)}, 320 * MI, "ResourceQuota headroom 64Mi"),
        ({"caps": recommend.Caps(largest_node_allocatable=350 * MI)}, 350 * MI, "largest node allocatable 350Mi"),
        (
            {"caps": recommend.Caps(limit_range_max=330 * MI, largest_node_allocatable=310 * MI), "settings": policy.MemorySettings(maxLimit="1Gi")},
            310 * MI,
            "largest node allocatable 310Mi",
        ),
        ({"caps": recommend.Caps(limit_range_max=GI)}, 384 * MI, None),
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
        caps=recommend.Caps(largest_node_allocatable=8 * GI),
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


def test_three_kills_at_raised_limits_after_similar_lifetimes_suspect_a_leak() -> None:
    history = [
        kill(0, limit=256 * MI, lifetime_minutes=30),
        kill(5, limit=256 * MI, lifetime_minutes=2),  # a second kill at the same limit does not count again
        kill(60, limit=384 * MI, lifetime_minutes=35),
        kill(120, limit=576 * MI, lifetime_minutes=40),
    ]
    result = rec(current=resources(limit=576 * MI), kills=history)
    assert result.phase == types.Phase.SUSPECTED_LEAK
    assert result.limit == 864 * MI  # the values are still there for a manual approval
    assert "3 Limit kills at successively raised limits 256Mi → 384Mi → 576Mi" in result.reason
    assert "(30m, 35m, 40m)" in result.reason


@pytest.mark.parametrize(
    "history",
    [
        # lifetimes too different: more memory helped
        [kill(0, limit=256 * MI, lifetime_minutes=5), kill(60, limit=384 * MI, lifetime_minutes=30), kill(120, limit=576 * MI, lifetime_minutes=60)],
        # only two raised limits
        [kill(0, limit=256 * MI), kill(60, limit=384 * MI)],
        # the same limit every time
        [kill(0), kill(60), kill(120)],
        # start-up peaks: each instance dies within seconds, at raised limits — not a leak
        [kill(0, limit=256 * MI, lifetime_minutes=0.2), kill(1, limit=384 * MI, lifetime_minutes=0.2),
         kill(2, limit=576 * MI, lifetime_minutes=0.25)],
        # the limit went down in between
        [kill(0, limit=384 * MI), kill(60, limit=256 * MI), kill(120, limit=576 * MI)],
    ],
)
def test_no_leak_without_the_pattern(history: list[kills.OOMKill]) -> None:
    assert rec(current=resources(limit=576 * MI), kills=history).phase != types.Phase.SUSPECTED_LEAK


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
    recommend.Caps,
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
    caps: recommend.Caps,
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
