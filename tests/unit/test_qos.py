"""QoS class, criticality, oom_score_adj and the victim ranking, against Kubernetes' own test tables.

The QoS tables come from pkg/apis/core/v1/helper/qos/qos_test.go (TestComputePodQOS, including the
pod-level-resources cases), the oom_score_adj table from pkg/kubelet/qos/policy_test.go
(TestGetContainerOOMScoreAdjust: critical pods, sidecars, pod-level resources), with the same pods,
node capacities and expected values. Pods are built as API bodies and parsed with `core.parse_pod`, as
the operator reads them. Nothing is faked; everything is pure.
"""

from __future__ import annotations

from typing import Any

import pytest

from oomtuner.api import core, types
from oomtuner.domain import qos

G = types.QOSClass.GUARANTEED
B = types.QOSClass.BURSTABLE
BE = types.QOSClass.BEST_EFFORT

STANDARD = 8_000_000_000  # standardMemoryAmount in policy_test.go
MEM_REQ = str(STANDARD // 8)  # sampleDefaultMemRequest
MEM_LIM = str(1000 + STANDARD // 8)  # sampleDefaultMemLimit
POD_MEM_REQ = str(STANDARD // 4)  # sampleDefaultPodMemRequest
POD_MEM_LIM = str(1000 + STANDARD // 4)  # sampleDefaultPodMemLimit


def rl(cpu: str = "", memory: str = "", **extra: str) -> dict[str, str]:
    """A resource list like getResourceList(cpu, memory) in the Go tests."""
    out = dict(extra)
    if cpu:
        out["cpu"] = cpu
    if memory:
        out["memory"] = memory
    return out


def container(
    name: str, requests: dict[str, str] | None = None, limits: dict[str, str] | None = None, *, sidecar: bool = False
) -> dict[str, Any]:
    body: dict[str, Any] = {"name": name, "resources": {"requests": requests or {}, "limits": limits or {}}}
    if sidecar:
        body["restartPolicy"] = "Always"
    return body


def pod(
    containers: list[dict[str, Any]],
    *,
    init: list[dict[str, Any]] | None = None,
    ephemeral: list[dict[str, Any]] | None = None,
    resources: dict[str, Any] | None = None,
    priority: int | None = None,
    priority_class: str | None = None,
    annotations: dict[str, str] | None = None,
    status: dict[str, Any] | None = None,
) -> core.Pod:
    spec: dict[str, Any] = {"containers": containers, "initContainers": init or [], "ephemeralContainers": ephemeral or []}
    if resources is not None:
        spec["resources"] = resources
    if priority is not None:
        spec["priority"] = priority
    if priority_class is not None:
        spec["priorityClassName"] = priority_class
    return core.parse_pod(
        {"metadata": {"name": "p", "namespace": "ns", "annotations": annotations or {}}, "spec": spec, "status": status or {}}
    )


# ---- GetPodQOS / ComputePodQOS ---------------------------------------------------------------

QOS_CASES = [
    ("guaranteed", pod([container("c", rl("100m", "100Mi"), rl("100m", "100Mi"))]), G),
    (
        "guaranteed-guaranteed",
        pod([container("a", rl("100m", "100Mi"), rl("100m", "100Mi")), container("b", rl("100m", "100Mi"), rl("100m", "100Mi"))]),
        G,
    ),
    ("best-effort-best-effort", pod([container("a"), container("b")]), BE),
    ("best-effort", pod([container("a")]), BE),
    ("best-effort-burstable", pod([container("a"), container("b", rl("1"), rl("2"))]), B),
    ("best-effort-guaranteed", pod([container("a"), container("b", rl("10m", "100Mi"), rl("10m", "100Mi"))]), B),
    ("burstable-cpu-guaranteed-memory", pod([container("a", rl("", "100Mi"), rl("", "100Mi"))]), B),
    ("burstable-no-limits", pod([container("a", rl("100m", "100Mi"))]), B),
    (
        "burstable-guaranteed",
        pod([container("a", rl("1", "100Mi"), rl("2", "100Mi")), container("b", rl("100m", "100Mi"), rl("100m", "100Mi"))]),
        B,
    ),
    (
        "burstable-unbounded-but-requests-match-limits",
        pod([container("a", rl("100m", "100Mi"), rl("200m", "200Mi")), container("b", rl("100m", "100Mi"))]),
        B,
    ),
    ("burstable-1", pod([container("a", rl("10m", "100Mi"), rl("100m", "200Mi"))]), B),
    ("burstable-2", pod([container("a", rl("0", "0"), rl("100m", "200Mi"))]), B),
    ("burstable-memory-limit-only-cpu", pod([container("a", rl("100m", "100Mi"), rl("100m"))]), B),
    (
        "best-effort-hugepages",
        pod([container("a", rl("0", "0", **{"hugepages-2Mi": "1Gi"}), rl("0", "0", **{"hugepages-2Mi": "1Gi"}))]),
        BE,
    ),
    ("best-effort-zero-requests", pod([container("a", rl("0", "0"))]), BE),
    ("best-effort-ephemeral-storage-only", pod([container("a", {"ephemeral-storage": "10Gi"})]), BE),
    (
        "guaranteed-ignores-ephemeral-storage-request",
        pod([container("a", rl("100m", "100Mi", **{"ephemeral-storage": "10Gi"}), rl("100m", "100Mi"))]),
        G,
    ),
    ("init-container", pod([container("a")], init=[container("i", rl("10m", "100Mi"), rl("100m", "200Mi"))]), B),
    (
        "init-container-guaranteed",
        pod([container("a", rl("1", "1Gi"), rl("1", "1Gi"))], init=[container("i", rl("1", "1Gi"), rl("1", "1Gi"))]),
        G,
    ),
    (
        "ephemeral-container-ignored",
        pod([container("a", rl("250m", "256Mi"), rl("250m", "256Mi"))], ephemeral=[container("debug")]),
        G,
    ),
    ("no-containers", pod([]), BE),
    # pod-level resources decide on their own when spec.resources is set
    (
        "guaranteed-with-pod-level-resources",
        pod([container("a")], resources={"requests": rl("10m", "100Mi"), "limits": rl("10m", "100Mi")}),
        G,
    ),
    (
        "guaranteed-with-pod-and-container-level-resources",
        pod([container("a", rl("3m", "10Mi"), rl("5m", "20Mi"))], resources={"requests": rl("10m", "100Mi"), "limits": rl("10m", "100Mi")}),
        G,
    ),
    (
        "burstable-with-pod-level-resources",
        pod([container("a")], resources={"requests": rl("10m", "10Mi"), "limits": rl("20m", "50Mi")}),
        B,
    ),
    (
        "burstable-with-pod-and-container-level-resources",
        pod([container("a", rl("5m", "10Mi"), rl("5m", "10Mi"))], resources={"requests": rl("10m", "10Mi"), "limits": rl("20m", "50Mi")}),
        B,
    ),
    (
        "burstable-with-pod-and-container-level-requests",
        pod([container("a", rl("5m", "10Mi"))], resources={"requests": rl("10m", "10Mi")}),
        B,
    ),
    (
        "burstable-with-pod-and-container-level-resources-2",
        pod(
            [container("a", rl("5m", "10Mi")), container("b", rl("5m", "10Mi"), rl("5m", "10Mi"))],
            resources={"requests": rl("10m", "10Mi"), "limits": rl("5m")},
        ),
        B,
    ),
]


@pytest.mark.parametrize(("name", "the_pod", "expected"), QOS_CASES, ids=[c[0] for c in QOS_CASES])
def test_qos_class_matches_compute_pod_qos(name: str, the_pod: core.Pod, expected: types.QOSClass) -> None:
    assert qos.qos_class(the_pod) == expected


def test_effective_qos_class_prefers_the_persisted_status() -> None:
    burstable_spec = pod([container("a", rl("100m", "100Mi"))], status={"qosClass": "Guaranteed"})
    assert qos.qos_class(burstable_spec) == B
    assert qos.effective_qos_class(burstable_spec) == G


def test_effective_qos_class_ignores_an_unknown_status_value() -> None:
    the_pod = pod([container("a", rl("100m", "100Mi"))], status={"qosClass": "Platinum"})
    assert qos.effective_qos_class(the_pod) == B


# ---- criticality -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "critical", "node_critical"),
    [
        ({"priority": 2_000_001_000, "priority_class": "system-node-critical"}, True, True),
        ({"priority": 2_000_000_000, "priority_class": "system-cluster-critical"}, True, False),
        ({"priority": 1_999_999_999, "priority_class": "system-node-critical"}, False, False),
        ({"priority_class": "system-node-critical"}, False, False),
        ({"annotations": {"kubernetes.io/config.source": "file"}}, True, False),
        ({"annotations": {"kubernetes.io/config.source": "file"}, "priority_class": "system-node-critical"}, True, True),
        ({"annotations": {"kubernetes.io/config.source": "api"}}, False, False),
        ({"annotations": {"kubernetes.io/config.mirror": "abc"}, "priority_class": "system-node-critical"}, True, True),
        ({}, False, False),
    ],
)
def test_criticality_as_is_critical_pod(kwargs: dict[str, Any], critical: bool, node_critical: bool) -> None:
    the_pod = pod([container("a")], **kwargs)
    assert qos.is_critical(the_pod) is critical
    assert qos.is_node_critical(the_pod) is node_critical


# ---- oom_score_adj: policy_test.go TestGetContainerOOMScoreAdjust ------------------------------

SAMPLE_MAIN = container("main-1", rl("", MEM_REQ), rl("", MEM_LIM))
SAMPLE_INIT = container("init-container", rl("", MEM_REQ), rl("", MEM_LIM))
SAMPLE_SIDECAR = container("sidecar-container", rl("", MEM_REQ), rl("", MEM_LIM), sidecar=True)
SMALL_SIDECAR = container("sidecar-small-container", rl("", str(STANDARD // 20)), rl("", MEM_LIM), sidecar=True)
BIG_SIDECAR = container("sidecar-big-container", rl("", str(STANDARD // 2)), rl("", MEM_LIM), sidecar=True)
POD_GUARANTEED = {"requests": rl("5m", POD_MEM_REQ), "limits": rl("5m", POD_MEM_REQ)}
POD_BURSTABLE = {"requests": rl("5m", POD_MEM_REQ), "limits": rl("5m", POD_MEM_LIM)}
GUARANTEED_5M = (rl("5m", MEM_REQ), rl("5m", MEM_REQ))

OOM_CASES: list[tuple[str, core.Pod, int, dict[str, int]]] = [
    ("cpu-limit", pod([container("cpu-limit", None, rl("10"))]), 4_000_000_000, {"cpu-limit": 999}),
    (
        "memory-limit-cpu-request",
        pod([container("memory-limit-cpu-request", rl("0"), rl("", "10G"))]),
        8_000_000_000,
        {"memory-limit-cpu-request": 999},
    ),
    ("zero-memory-limit", pod([container("zero-memory-limit", None, rl("", "0"))]), 7_230_457_451, {"zero-memory-limit": 1000}),
    ("no-request-limit", pod([container("no-request-limit")]), 4_000_000_000, {"no-request-limit": 1000}),
    (
        "equal-request-limit-cpu-memory",
        pod([container("equal", rl("5m", "10G"), rl("5m", "10G"))]),
        123_456_789,
        {"equal": -997},
    ),
    (
        "cpu-unlimited-memory-limited-with-requests",
        pod([container("c", rl("5m", str(STANDARD // 2)), rl("", "10G"))]),
        STANDARD,
        {"c": 500},
    ),
    ("request-no-limit", pod([container("c", rl("5m", str(STANDARD - 1)))]), STANDARD, {"c": 3}),
    (
        "cluster-critical",
        pod([container("cluster-critical")], priority=2_000_000_000, priority_class="system-cluster-critical"),
        4_000_000_000,
        {"cluster-critical": 1000},
    ),
    (
        "node-critical",
        pod([container("node-critical")], priority=2_000_001_000, priority_class="system-node-critical"),
        4_000_000_000,
        {"node-critical": -997},
    ),
    (
        "burstable-unique-container-pod",
        pod([container("burstable-unique-container", rl("", MEM_REQ), rl("", MEM_LIM))]),
        STANDARD,
        {"burstable-unique-container": 875},
    ),
    (
        "burstable-mixed-unique-main-container-pod",
        pod([SAMPLE_MAIN], init=[SAMPLE_INIT]),
        STANDARD,
        {"init-container": 875, "main-1": 875},
    ),
    (
        "burstable-mixed-multi-container-small-sidecar-pod",
        pod([SAMPLE_MAIN], init=[SAMPLE_INIT, SMALL_SIDECAR]),
        STANDARD,
        {"init-container": 875, "sidecar-small-container": 875, "main-1": 875},
    ),
    (
        "burstable-mixed-multi-container-same-request-pod",
        pod([SAMPLE_MAIN], init=[SAMPLE_INIT, SAMPLE_SIDECAR]),
        STANDARD,
        {"init-container": 875, "sidecar-container": 875, "main-1": 875},
    ),
    (
        "burstable-mixed-multi-container-big-sidecar-container-pod",
        pod([SAMPLE_MAIN], init=[SAMPLE_INIT, BIG_SIDECAR]),
        STANDARD,
        {"init-container": 875, "sidecar-big-container": 500, "main-1": 875},
    ),
    (
        "guaranteed-pod-resources-no-container-resources",
        pod([container("no-request-limit-1"), container("no-request-limit-2")], resources=POD_GUARANTEED),
        4_000_000_000,
        {"no-request-limit-1": -997, "no-request-limit-2": -997},
    ),
    (
        "guaranteed-pod-resources-equal-container-resources",
        pod([container("g1", *GUARANTEED_5M), container("g2", *GUARANTEED_5M)], resources=POD_GUARANTEED),
        4_000_000_000,
        {"g1": -997, "g2": -997},
    ),
    (
        "guaranteed-pod-resources-unequal-container-requests",
        pod([container("burstable-container", rl("3m", MEM_REQ), rl("5m", MEM_LIM)), container("best-effort-container")], resources=POD_GUARANTEED),
        4_000_000_000,
        {"burstable-container": -997, "best-effort-container": -997},
    ),
    (
        "burstable-pod-resources-no-container-resources",
        pod([container("no-request-limit-1"), container("no-request-limit-2")], resources=POD_BURSTABLE),
        4_000_000_000,
        {"no-request-limit-1": 750, "no-request-limit-2": 750},
    ),
    (
        "burstable-pod-resources-equal-container-requests",
        pod([container("g1", *GUARANTEED_5M), container("g2", *GUARANTEED_5M)], resources=POD_BURSTABLE),
        4_000_000_000,
        {"g1": 750, "g2": 750},
    ),
    (
        "burstable-pod-resources-unequal-container-requests",
        pod([container("burstable-container", rl("3m", MEM_REQ), rl("5m", MEM_REQ)), container("best-effort-container")], resources=POD_BURSTABLE),
        4_000_000_000,
        {"burstable-container": 625, "best-effort-container": 875},
    ),
    (
        "burstable-pod-resources-no-container-resources-with-sidecar",
        pod([container("no-request-limit")], init=[container("no-request-limit-sidecar", sidecar=True)], resources=POD_BURSTABLE),
        4_000_000_000,
        {"no-request-limit": 750, "no-request-limit-sidecar": 750},
    ),
    (
        "burstable-pod-resources-equal-container-requests-with-sidecar",
        pod(
            [container("burstable-container", rl("5m", MEM_REQ), rl("5m", MEM_LIM))],
            init=[container("burstable-sidecar", rl("5m", MEM_REQ), rl("5m", MEM_LIM), sidecar=True)],
            resources=POD_BURSTABLE,
        ),
        4_000_000_000,
        {"burstable-container": 750, "burstable-sidecar": 750},
    ),
    (
        "burstable-pod-resources-unequal-container-requests-with-sidecar",
        pod(
            [
                container("burstable-container-1", rl("5m", "1000000000"), rl("5m", POD_MEM_LIM)),
                container("burstable-container-2", rl("5m", "500000000"), rl("5m", POD_MEM_LIM)),
            ],
            init=[container("burstable-sidecar", rl("5m", "200000000"), rl("5m", POD_MEM_LIM), sidecar=True)],
            resources={"requests": rl("5m", "2000000000"), "limits": rl("5m", POD_MEM_LIM)},
        ),
        4_000_000_000,
        {"burstable-container-1": 725, "burstable-container-2": 850, "burstable-sidecar": 850},
    ),
]


@pytest.mark.parametrize(("name", "the_pod", "capacity", "expected"), OOM_CASES, ids=[c[0] for c in OOM_CASES])
def test_oom_score_adj_matches_the_kubelet(name: str, the_pod: core.Pod, capacity: int, expected: dict[str, int]) -> None:
    got = {
        c: qos.oom_score_adj(pod=the_pod, container_name=c, node_memory_capacity=capacity) for c in expected
    }
    assert got == expected


def test_burstable_needs_the_node_capacity() -> None:
    the_pod = pod([container("c", rl("", "1Gi"))])
    assert qos.oom_score_adj(pod=the_pod, container_name="c", node_memory_capacity=None) is None
    assert qos.oom_score_adj(pod=the_pod, container_name="c", node_memory_capacity=0) is None


@pytest.mark.parametrize(
    ("the_pod", "expected"),
    [
        (pod([container("c")]), 1000),
        (pod([container("c", rl("1", "1Gi"), rl("1", "1Gi"))]), -997),
        (pod([container("c")], priority=2_000_001_000, priority_class="system-node-critical"), -997),
    ],
)
def test_guaranteed_best_effort_and_node_critical_need_no_capacity(the_pod: core.Pod, expected: int) -> None:
    assert qos.oom_score_adj(pod=the_pod, container_name="c", node_memory_capacity=None) == expected


def test_a_static_node_critical_best_effort_pod_is_protected() -> None:
    the_pod = pod(
        [container("etcd")],
        annotations={"kubernetes.io/config.source": "file"},
        priority_class="system-node-critical",
    )
    assert qos.oom_score_adj(pod=the_pod, container_name="etcd", node_memory_capacity=STANDARD) == -997


def test_the_persisted_qos_class_decides() -> None:
    the_pod = pod([container("c", rl("", "1Gi"))], status={"qosClass": "BestEffort"})
    assert qos.oom_score_adj(pod=the_pod, container_name="c", node_memory_capacity=STANDARD) == 1000


def test_request_is_read_from_the_status_after_an_in_place_resize() -> None:
    resized = pod(
        [container("c", rl("", "1G"), rl("", "4G"))],
        status={"containerStatuses": [{"name": "c", "resources": {"requests": {"memory": "4G"}, "limits": {"memory": "8G"}}}]},
    )
    assert qos.oom_score_adj(pod=resized, container_name="c", node_memory_capacity=STANDARD) == 500


def test_an_ephemeral_or_unknown_container_requests_nothing() -> None:
    the_pod = pod([container("c", rl("", "1G"))], ephemeral=[container("debug")])
    assert qos.oom_score_adj(pod=the_pod, container_name="debug", node_memory_capacity=STANDARD) == 999
    assert qos.oom_score_adj(pod=the_pod, container_name="nope", node_memory_capacity=STANDARD) == 999


# ---- victims -----------------------------------------------------------------------------------

GI = 1024**3


@pytest.mark.parametrize(
    ("usage", "capacity", "adj", "expected"),
    [(1 * GI, 8 * GI, 1000, 1125), (6 * GI, 8 * GI, 500, 1250), (7 * GI, 8 * GI, -997, -122), (0, 8 * GI, 999, 999)],
)
def test_victim_score_is_usage_share_plus_adj(usage: int, capacity: int, adj: int, expected: int) -> None:
    assert qos.victim_score(usage_bytes=usage, capacity=capacity, oom_score_adj=adj) == expected


def test_victim_score_needs_a_capacity() -> None:
    with pytest.raises(ValueError, match="positive"):
        qos.victim_score(usage_bytes=1, capacity=0, oom_score_adj=0)


def test_rank_victims_puts_the_kernels_choice_first() -> None:
    candidates = [
        qos.VictimCandidate("ns", "db", "pg", G, -997, usage_bytes=7 * GI, request_bytes=7 * GI),
        qos.VictimCandidate("ns", "web", "app", B, 500, usage_bytes=6 * GI, request_bytes=4 * GI),
        qos.VictimCandidate("ns", "batch", "job", BE, 1000, usage_bytes=1 * GI),
        qos.VictimCandidate("ns", "cache", "redis", B, 875, usage_bytes=None, request_bytes=1 * GI),
    ]
    ranked = qos.rank_victims(candidates, capacity=8 * GI)
    assert [(r.pod, r.score) for r in ranked] == [("web", 1250), ("batch", 1125), ("cache", 1000), ("db", -122)]
    assert ranked[2].basis == "request"
    assert ranked[2].memory_bytes == 1 * GI
    assert ranked[0].basis == "usage"
    # Both figures travel with the ranking, whichever the score used.
    assert [(r.usage_bytes, r.request_bytes) for r in ranked] == [(6 * GI, 4 * GI), (1 * GI, None), (None, 1 * GI), (7 * GI, 7 * GI)]


def test_usage_by_pod_regroups_per_pod() -> None:
    found = qos.usage_by_pod({("ns", "p", "app"): 1, ("ns", "p", "side"): 2, ("other", "p", "app"): 3})
    assert found == {("ns", "p"): {"app": 1, "side": 2}, ("other", "p"): {"app": 3}}


def test_rank_victims_breaks_ties_deterministically() -> None:
    a = qos.VictimCandidate("ns", "b", "c", BE, 1000, usage_bytes=0)
    b = qos.VictimCandidate("ns", "a", "c", BE, 1000, usage_bytes=0)
    assert [r.pod for r in qos.rank_victims([a, b], capacity=GI)] == ["a", "b"]
    assert qos.rank_victims([a, b], capacity=GI) == qos.rank_victims([b, a], capacity=GI)


def test_candidates_are_the_long_running_containers() -> None:
    the_pod = pod(
        [container("app", rl("", "1G"))],
        init=[container("setup", rl("", "1G")), container("proxy", rl("", "100M"), sidecar=True)],
        ephemeral=[container("debug")],
    )
    found = qos.candidates_from_pod(the_pod, node_memory_capacity=STANDARD, usage={"app": 3 * GI})
    assert [(c.container, c.oom_score_adj, c.usage_bytes, c.request_bytes) for c in found] == [
        ("app", 875, 3 * GI, 1_000_000_000),
        ("proxy", 875, None, 100_000_000),
    ]
    assert all(c.qos == B and c.namespace == "ns" and c.pod == "p" for c in found)
