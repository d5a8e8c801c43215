"""Why a container was killed: node OOM events, the classification rules with their evidence, and the
likely culprit on a node that ran out.

Events are written as the kubelet ("System OOM encountered, victim process: …") and
node-problem-detector's kernel monitor ("Out of memory: Killed process …") post them, and parsed with
`core.parse_event`. Kills are built directly as `kills.OOMKill` values. Pure; nothing is faked.
"""

from __future__ import annotations

import dataclasses
import datetime
from typing import Any

import pytest

from oomtuner.api import core, types
from oomtuner.domain import classify, kills, qos

UTC = datetime.timezone.utc
T0 = datetime.datetime(2024, 5, 1, 10, 5, tzinfo=UTC)
MI = 1024**2
GI = 1024**3

BASE_KILL = kills.OOMKill(
    namespace="shop",
    pod="web-0",
    pod_uid="uid-1",
    container="app",
    container_type=types.ContainerType.CONTAINER,
    node="node-a",
    at=T0,
    started_at=T0 - datetime.timedelta(minutes=5),
    restart_count=0,
    exit_code=137,
    container_id="containerd://dead",
    request=128 * MI,
    limit_at_kill=256 * MI,
    qos_class=types.QOSClass.BURSTABLE,
    oom_score_adj=985,
    pod_memory_limit=None,
)


def kill(**changes: Any) -> kills.OOMKill:
    return dataclasses.replace(BASE_KILL, **changes)


def event(**fields: Any) -> core.Event:
    body: dict[str, Any] = {
        "metadata": {"name": "node-a.17c", "namespace": "default"},
        "involvedObject": {"kind": "Node", "name": "node-a", "uid": "node-a"},
        "reason": "SystemOOM",
        "type": "Warning",
        "message": "System OOM encountered, victim process: stress-ng-vm, pid: 3103923",
        "source": {"component": "kubelet", "host": "node-a"},
        "firstTimestamp": "2024-05-01T10:05:30Z",
        "lastTimestamp": "2024-05-01T10:05:30Z",
        "count": 1,
    }
    body.update(fields)
    return core.parse_event(body)


def system_oom(at: datetime.datetime, *, node: str = "node-a", first_at: datetime.datetime | None = None, count: int = 1) -> classify.NodeOOM:
    return classify.NodeOOM(node=node, at=at, victim="stress", source="SystemOOM", first_at=first_at, count=count)


# ---- node OOM events ---------------------------------------------------------------------------


def test_kubelet_system_oom_event() -> None:
    found = classify.node_oom_from_event(event())
    assert found == classify.NodeOOM(
        node="node-a", at=T0 + datetime.timedelta(seconds=30), victim="stress-ng-vm", source="SystemOOM"
    )


def test_aggregated_system_oom_event_keeps_its_span() -> None:
    found = classify.node_oom_from_event(
        event(
            message="(combined from similar events): System OOM encountered, victim process: java, pid: 42",
            firstTimestamp="2024-05-01T10:00:00Z",
            lastTimestamp="2024-05-01T10:06:00Z",
            count=16,
        )
    )
    assert found is not None
    assert (found.victim, found.count) == ("java", 16)
    assert (found.first_at, found.at) == (datetime.datetime(2024, 5, 1, 10, 0, tzinfo=UTC), datetime.datetime(2024, 5, 1, 10, 6, tzinfo=UTC))


def test_system_oom_without_a_victim_name() -> None:
    found = classify.node_oom_from_event(event(message="System OOM encountered"))
    assert found is not None and found.victim is None


def test_node_problem_detector_machine_wide_oom() -> None:
    found = classify.node_oom_from_event(
        event(
            reason="OOMKilling",
            source={"component": "kernel-monitor", "host": "node-a"},
            message="Out of memory: Killed process 3103923 (stress-ng-vm) total-vm:15791416kB, anon-rss:14369596kB, "
            "file-rss:4kB, shmem-rss:36kB, UID:0 pgtables:28184kB oom_score_adj:1000",
        )
    )
    assert found is not None
    assert (found.source, found.victim, found.node) == ("OOMKilling", "stress-ng-vm", "node-a")


def test_node_problem_detector_memory_cgroup_oom_is_not_a_node_oom() -> None:
    memcg = event(
        reason="OOMKilling",
        message="Memory cgroup out of memory: Killed process 123 (java) total-vm:1kB, anon-rss:1kB, file-rss:0kB",
    )
    assert classify.node_oom_from_event(memcg) is None


def test_event_time_is_used_when_the_legacy_timestamps_are_missing() -> None:
    found = classify.node_oom_from_event(
        event(firstTimestamp=None, lastTimestamp=None, eventTime="2024-05-01T10:05:30.123456Z")
    )
    assert found is not None
    assert found.at == datetime.datetime(2024, 5, 1, 10, 5, 30, 123456, tzinfo=UTC)


@pytest.mark.parametrize(
    "fields",
    [
        {"reason": "OOMKilled"},
        {"reason": "NodeNotReady"},
        {"involvedObject": {"kind": "Pod", "name": "web-0", "namespace": "shop"}},
        {"involvedObject": {"kind": "Node"}},
        {"firstTimestamp": None, "lastTimestamp": None},
    ],
)
def test_other_events_are_not_node_ooms(fields: dict[str, Any]) -> None:
    assert classify.node_oom_from_event(event(**fields)) is None


# ---- classification ----------------------------------------------------------------------------


def test_a_system_oom_near_the_kill_makes_it_a_node_kill() -> None:
    verdict, reason = classify.classify(kill(), node_ooms=[system_oom(T0 + datetime.timedelta(seconds=30))])
    assert verdict == types.Classification.NODE
    assert "SystemOOM on node node-a" in reason
    assert "30s after the kill" in reason
    assert "victim process stress" in reason


def test_the_nearest_node_oom_is_cited() -> None:
    ooms = [system_oom(T0 - datetime.timedelta(seconds=90)), system_oom(T0 - datetime.timedelta(seconds=5))]
    _verdict, reason = classify.classify(kill(), node_ooms=ooms)
    assert "5s before the kill" in reason


def test_a_node_oom_outside_the_window_or_on_another_node_does_not_count() -> None:
    ooms = [system_oom(T0 + datetime.timedelta(minutes=3)), system_oom(T0, node="node-b")]
    verdict, reason = classify.classify(kill(), node_ooms=ooms)
    assert verdict == types.Classification.LIMIT
    assert reason == "hit its memory limit 256Mi (no node OOM seen on node-a within ±2m)"


def test_the_window_is_configurable() -> None:
    ooms = [system_oom(T0 + datetime.timedelta(seconds=30))]
    verdict, _reason = classify.classify(kill(), node_ooms=ooms, window=datetime.timedelta(seconds=10))
    assert verdict == types.Classification.LIMIT


def test_a_kill_inside_an_aggregated_node_oom_span_is_a_node_kill() -> None:
    spanning = system_oom(T0 + datetime.timedelta(minutes=10), first_at=T0 - datetime.timedelta(minutes=10), count=16)
    verdict, reason = classify.classify(kill(), node_ooms=[spanning])
    assert verdict == types.Classification.NODE
    assert "16×" in reason and "while they lasted" in reason


def test_a_kill_without_finished_at_next_to_a_node_oom_is_unknown() -> None:
    verdict, reason = classify.classify(kill(at=None), node_ooms=[system_oom(T0)])
    assert verdict == types.Classification.UNKNOWN
    assert "no finishedAt" in reason


def test_no_limit_at_all_means_only_the_node_can_kill() -> None:
    verdict, reason = classify.classify(kill(limit_at_kill=None), node_ooms=[])
    assert verdict == types.Classification.NODE
    assert reason.startswith("no memory limit: only the node running out can kill it")


def test_a_container_limit_means_limit() -> None:
    verdict, reason = classify.classify(kill(limit_at_kill=512 * MI, node=None), node_ooms=[system_oom(T0)])
    assert verdict == types.Classification.LIMIT
    assert reason == "hit its memory limit 512Mi (node unknown)"


def test_only_a_pod_level_limit_means_the_pod_limit_was_hit() -> None:
    verdict, reason = classify.classify(kill(limit_at_kill=None, pod_memory_limit=GI), node_ooms=[])
    assert verdict == types.Classification.LIMIT
    assert "pod-level memory limit 1Gi" in reason


def test_a_node_oom_beats_a_limit() -> None:
    verdict, _reason = classify.classify(kill(limit_at_kill=GI), node_ooms=[system_oom(T0)])
    assert verdict == types.Classification.NODE


# ---- culprit -----------------------------------------------------------------------------------


def candidate(pod: str, usage: int | None, request: int | None) -> qos.VictimCandidate:
    return qos.VictimCandidate("shop", pod, "app", types.QOSClass.BURSTABLE, 900, usage_bytes=usage, request_bytes=request)


def test_the_culprit_uses_most_above_its_request() -> None:
    found = classify.likely_culprit(
        [candidate("a", 3 * GI, 2 * GI), candidate("b", 2 * GI, 512 * MI), candidate("c", 900 * MI, None), candidate("d", None, 0)]
    )
    assert found is not None
    assert (found.pod, found.excess_bytes) == ("b", 2 * GI - 512 * MI)
    assert found.reason == "shop/b/app uses 2Gi, 1.5Gi above its request (512Mi)"


def test_no_culprit_without_usage_or_when_everyone_is_within_its_request() -> None:
    assert classify.likely_culprit([candidate("a", None, GI)]) is None
    assert classify.likely_culprit([candidate("a", GI, 2 * GI), candidate("b", GI, GI)]) is None
    assert classify.likely_culprit([]) is None


def test_culprit_ties_are_deterministic() -> None:
    first = classify.likely_culprit([candidate("b", 2 * GI, GI), candidate("a", 2 * GI, GI)])
    second = classify.likely_culprit([candidate("a", 2 * GI, GI), candidate("b", 2 * GI, GI)])
    assert first == second and first is not None and first.pod == "a"


def pod(name: str, request: str | None, *, namespace: str = "shop", containers: tuple[str, ...] = ("app",)) -> core.Pod:
    resources = {"requests": {"memory": request}} if request else {}
    return core.parse_pod({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": namespace, "uid": f"uid-{name}"},
        "spec": {"nodeName": "node-a", "containers": [{"name": c, "resources": resources} for c in containers]},
    })


def test_the_culprit_on_a_node_comes_from_usage_and_the_pod_specs() -> None:
    pods = [pod("victim", "128Mi"), pod("hog", "128Mi", containers=("app", "side")), pod("idle", None, namespace="ops")]
    usage = {("shop", "victim", "app"): 100 * MI, ("shop", "hog", "app"): GI, ("shop", "hog", "side"): 10 * MI,
             ("ops", "idle", "app"): 200 * MI, ("ops", "gone", "app"): 4 * GI}  # not on the node any more
    found = classify.culprit_on_node(pods, node="node-a", node_memory_capacity=16 * GI, usage=usage, basis="from Prometheus")
    assert found.culprit is not None and (found.culprit.namespace, found.culprit.pod, found.culprit.container) == ("shop", "hog", "app")
    assert (found.culprit.usage_bytes, found.culprit.request_bytes) == (GI, 128 * MI)
    assert found.reason == "likely culprit: shop/hog/app uses 1Gi, 896Mi above its request (128Mi); from Prometheus"


def test_no_culprit_on_a_node_says_why() -> None:
    pods = [pod("a", "1Gi"), pod("b", "1Gi")]
    within = classify.culprit_on_node(pods, node="node-a", node_memory_capacity=16 * GI,
                                      usage={("shop", "a", "app"): 500 * MI}, basis="from Prometheus")
    assert within.culprit is None and within.reason.startswith("no culprit named: none of the 1 measured container(s) on node node-a")
    assert classify.culprit_on_node(pods, node="node-a", node_memory_capacity=16 * GI, usage={}, basis="x").reason \
        == "no culprit named: no usage data for the pods on node node-a"
    elsewhere = classify.culprit_on_node(pods, node="node-a", node_memory_capacity=16 * GI,
                                         usage={("other", "a", "app"): GI}, basis="x")
    assert elsewhere.reason == "no culprit named: no usage data for the containers of the 2 pod(s) on node node-a"
    unknown = classify.culprit_on_node(pods, node="node-a", node_memory_capacity=None, usage={("shop", "a", "app"): 2 * GI}, basis="x")
    assert unknown.culprit is None and "capacity of node node-a is unknown" in unknown.reason
    assert classify.no_culprit("no usage data: down") == classify.CulpritFinding(None, "no culprit named: no usage data: down")
