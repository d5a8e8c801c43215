"""The domain under hostile values: extreme times, zero and near-int64 limits, absurd policy bounds,
pods with hundreds of containers, and credentials in URLs. Pure: no I/O."""

from __future__ import annotations

import datetime
import time

import pytest

from oomtuner.api import core, policy, types
from oomtuner.domain import caps as domain_caps
from oomtuner.domain import kills, policies, qos, quantity, recommend, redaction, resources, timestamps

MI = quantity.MIB


def _pod(containers: int, sidecars: int, *, sidecar_mi: int = 1) -> core.Pod:
    def container(name: str, mem: int, **extra: str) -> dict[str, object]:
        return {"name": name, "resources": {"requests": {"memory": f"{mem}Mi"}, "limits": {"memory": "1Gi"}}, **extra}

    def status(name: str) -> dict[str, object]:
        return {"name": name, "restartCount": 1, "lastState": {"terminated": {
            "reason": "OOMKilled", "exitCode": 137, "finishedAt": "2026-01-01T00:00:00Z"}}}

    return core.parse_pod({
        "metadata": {"name": "wide", "namespace": "ns", "uid": "u"},
        "spec": {"nodeName": "n", "containers": [container(f"c{i}", i + 1) for i in range(containers)],
                 "initContainers": [container(f"s{i}", sidecar_mi, restartPolicy="Always") for i in range(sidecars)]},
        "status": {"containerStatuses": [status(f"c{i}") for i in range(containers)],
                   "initContainerStatuses": [status(f"s{i}") for i in range(sidecars)]},
    })


def test_every_container_of_a_wide_pod_costs_about_the_same() -> None:
    small, large = _pod(50, 50), _pod(400, 400)
    timings = []
    for pod in (small, large):
        started = time.perf_counter()
        found = kills.kills_from_pod(pod, node_memory_capacity=16 * 1024 * MI)
        timings.append(time.perf_counter() - started)
        assert len(found) == 2 * len(pod.spec.containers)
    # 8× the containers: linear is 8× the time, the old cubic code 500×. Allow for a noisy machine.
    assert timings[1] < 40 * timings[0] + 0.5, timings


def test_the_index_answers_as_a_scan_would() -> None:
    pod = _pod(5, 3, sidecar_mi=0)
    assert resources.find_container(pod, "s2") == (pod.spec.initContainers[2], types.ContainerType.SIDECAR)
    assert resources.find_status(pod, "c4") is pod.status.containerStatuses[4]
    assert resources.find_container(pod, "ghost") is None and resources.memory_request(pod, "ghost") is None
    # A sidecar (0Mi here) never scores above the regular container with the smallest request (c0: 1Mi).
    capacity = 100 * MI
    adj = {name: qos.oom_score_adj(pod=pod, container_name=name, node_memory_capacity=capacity) for name in ("s2", "c0", "c4")}
    assert adj == {"s2": 990, "c0": 990, "c4": 950}


@pytest.mark.parametrize("text", ["9999-12-31T23:59:59-23:59", "0001-01-01T00:00:00+23:59", "nonsense", ""])
def test_timestamps_out_of_range_read_as_unknown(text: str) -> None:
    assert timestamps.parse(text) is None


def test_timestamps_are_read_in_utc() -> None:
    assert timestamps.parse("2026-11-26T12:00:00+02:00") == datetime.datetime(2026, 11, 26, 10, tzinfo=datetime.timezone.utc)


def test_a_pod_time_outside_the_years_1_to_9999_in_utc_is_refused_with_its_field() -> None:
    with pytest.raises(core.InvalidObject, match=r"status.containerStatuses\[0\].state.terminated.finishedAt"):
        core.parse_pod({"status": {"containerStatuses": [{"name": "a", "state": {"terminated": {
            "finishedAt": "9999-12-31T23:59:59-23:59"}}}]}})


def _kill(limit: int | None) -> kills.OOMKill:
    return kills.OOMKill(namespace="ns", pod="p", pod_uid="u", container="app", container_type=types.ContainerType.CONTAINER,
                         node="n", at=None, started_at=None, restart_count=1, exit_code=137, container_id=None,
                         request=None, limit_at_kill=limit, qos_class=types.QOSClass.BURSTABLE, oom_score_adj=None,
                         pod_memory_limit=None)


def test_no_recommendation_exceeds_what_a_quantity_holds() -> None:
    near_top = quantity.parse_bytes("7.9Ei")
    current = recommend.ContainerResources(name="app", type=types.ContainerType.CONTAINER, request=near_top // 2, limit=near_top)
    rec = recommend.recommend_container(current=current, kills=[_kill(near_top)], settings=policy.MemorySettings(),
                                        classifications=[types.Classification.LIMIT])
    assert rec.limit == quantity.MAX_MEMORY and rec.request is not None and rec.request <= quantity.MAX_MEMORY
    assert rec.phase == types.Phase.CAPPED and rec.capped_by and "largest memory a quantity holds (8796093022207Mi)" in rec.capped_by
    assert quantity.parse_bytes(quantity.format_bytes(rec.limit)) == rec.limit


def test_a_real_cap_is_named_before_the_largest_quantity() -> None:
    current = recommend.ContainerResources(name="app", type=types.ContainerType.CONTAINER, request=None, limit=quantity.MAX_MEMORY)
    rec = recommend.recommend_container(current=current, kills=[_kill(quantity.MAX_MEMORY)],
                                        settings=policy.MemorySettings(), classifications=[types.Classification.LIMIT],
                                        caps=domain_caps.Caps(policy_max_limit=quantity.MAX_MEMORY))
    assert rec.capped_by == "policy maxLimit 8Ei"


def test_a_zero_base_limit_keeps_the_request_instead_of_dividing_by_it() -> None:
    current = recommend.ContainerResources(name="app", type=types.ContainerType.CONTAINER, request=128 * MI, limit=0)
    rec = recommend.recommend_container(current=current, kills=[_kill(0)], settings=policy.MemorySettings(),
                                        classifications=[types.Classification.LIMIT])
    assert rec.limit is not None and rec.limit >= 64 * MI and rec.request == 128 * MI


@pytest.mark.parametrize(("max_limit", "problem"), [
    ("1", "spec.memory.maxLimit: '1' is 1 byte(s), less than 1Mi"),
    ("1023Ki", "less than 1Mi"),
    ("8Ei", "more than 2^63-1"),
    ("1Mi", None),
])
def test_max_limit_bounds(max_limit: str, problem: str | None) -> None:
    parsed = policy.parse({"kind": "OOMPolicy", "spec": {"memory": {"maxLimit": max_limit}}})
    found = policies.problem(parsed)
    assert (found is None) if problem is None else (found is not None and problem in found)


@pytest.mark.parametrize(("text", "shown"), [
    ("https://user:secret@prom:9090", "https://REDACTED@prom:9090"),
    ("http://prom:9090/api?token=abc&step=30", "http://prom:9090/api?token=REDACTED&step=30"),
    ("query failed at https://a:b@x/y?access_token=t refused", "query failed at https://REDACTED@x/y?access_token=REDACTED refused"),
    ("https://p@ss@w0rd@host/path", "https://REDACTED@host/path"),
    ("http://prom:9090", "http://prom:9090"),
    ("no url here", "no url here"),
])
def test_credentials_in_urls_are_redacted(text: str, shown: str) -> None:
    assert redaction.text(text) == shown
    assert "secret" not in redaction.url(text) and "abc" not in redaction.url(text)


def _rec(**status: object) -> dict[str, object]:
    return {"metadata": {"name": "deployment-web", "namespace": "shop"},
            "spec": {"targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"}}, "status": status}


@pytest.mark.parametrize(("status", "field"), [
    ({"kills": [{"id": "a", "pod": "p", "container": "c", "at": "9999-12-31T23:59:59-23:59"}]}, "status.kills[0].at: "),
    ({"kills": [{"id": "a", "pod": "p", "container": "c", "limitAtKill": "1" + "0" * 5000}]}, "status.kills[0].limitAtKill: invalid quantity"),
    ({"containers": [{"name": "c", "recommended": {"limit": "8Ei"}}]}, "status.containers[0].recommended.limit: invalid quantity"),
    ({"appliedAt": "yesterday"}, "status.appliedAt: 'yesterday' is not a time"),
    ({"kills": [{"id": "a", "pod": "p", "container": "c", "culprit": {"usage": "-1Gi", "reason": "r"}}]}, "culprit.usage: must not be negative"),
])
def test_a_recommendation_the_schema_admits_but_the_operator_cannot_use_is_named(status: dict[str, object], field: str) -> None:
    from oomtuner.api import recommendation
    from oomtuner.domain import recommendations

    found = recommendations.problem(recommendation.read(_rec(**status)))
    assert found is not None and field in found, found


def test_an_unreadable_recommendation_names_the_object_and_the_field() -> None:
    from oomtuner.api import recommendation

    with pytest.raises(recommendation.InvalidRecommendation) as caught:
        recommendation.read(_rec(kills=[{"id": "a", "pod": "p"}], totalKills="many"))
    message = str(caught.value)
    assert message.startswith("OOMRecommendation shop/deployment-web: ") and "status.kills[0].container" in message
    assert "status.totalKills" in message and "\n" not in message
