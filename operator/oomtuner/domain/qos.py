"""QoS class, oom_score_adj and the kernel's choice of victim, as the kubelet and Linux compute them.

When a node runs out of memory the kernel kills the process with the highest badness, roughly
`usage / capacity × 1000 + oom_score_adj`, and the kubelet sets `oom_score_adj` from the pod's QoS
class and memory request. Explaining a Node kill ("why my container and not that one?") and ranking
who dies next (`oomtuner report`) both need these numbers exactly as Kubernetes computes them, so this
module mirrors the Go code function by function:

- `qos_class` is ComputePodQOS (pkg/apis/core/v1/helper/qos/qos.go), including pod-level resources;
- `effective_qos_class` is GetPodQOS, which prefers the persisted status.qosClass;
- `is_critical` / `is_node_critical` are IsCriticalPod / IsNodeCriticalPod (pkg/kubelet/types);
- `oom_score_adj` is GetContainerOOMScoreAdjust (pkg/kubelet/qos/policy.go) with its sidecar and
  pod-level-resources rules, using Go's truncating integer division.

The victim ranking is an estimate: the kernel counts RSS, swap and page tables per process, not the
container's working set, and only within the cgroup that ran out.
"""

from __future__ import annotations

import dataclasses
import decimal
from collections.abc import Mapping, Sequence
from typing import Literal

from oomtuner.api import core, types
from oomtuner.domain import quantity, resources

GUARANTEED_OOM_SCORE_ADJ = -997
BEST_EFFORT_OOM_SCORE_ADJ = 1000
SYSTEM_CRITICAL_PRIORITY = 2_000_000_000
SYSTEM_NODE_CRITICAL = "system-node-critical"
CONFIG_SOURCE_ANNOTATION = "kubernetes.io/config.source"
CONFIG_MIRROR_ANNOTATION = "kubernetes.io/config.mirror"
API_SERVER_SOURCE = "api"

_QOS_RESOURCES = (core.CPU, core.MEMORY)
_ZERO = decimal.Decimal(0)


def _amount(resource_list: Mapping[str, str], name: str) -> decimal.Decimal:
    """A resource's amount, 0 when absent or unparseable (the API server never stores those)."""
    text = resource_list.get(name)
    if text is None:
        return _ZERO
    try:
        return quantity.parse(text)
    except quantity.QuantityError:
        return _ZERO


def _resource_qos(requirements: core.ResourceRequirements) -> types.QOSClass:
    """resourceQOS: the QoS of one set of requests and limits (a container's, or the pod level's).

    No requests or limits at all (of any resource) is BestEffort. Otherwise CPU and memory decide: a
    request that differs from its limit is Burstable; all equal and non-zero is Guaranteed; all zero is
    BestEffort (ephemeral-storage alone, or explicit zeros); a mix of zero and non-zero is Burstable.
    """
    if not requirements.requests and not requirements.limits:
        return types.QOSClass.BEST_EFFORT
    found: types.QOSClass | None = None
    for name in _QOS_RESOURCES:
        request = _amount(requirements.requests, name)
        limit = _amount(requirements.limits, name)
        if request != limit:
            return types.QOSClass.BURSTABLE
        best_effort = request == 0
        if found is None:
            found = types.QOSClass.BEST_EFFORT if best_effort else types.QOSClass.GUARANTEED
        elif best_effort != (found == types.QOSClass.BEST_EFFORT):
            return types.QOSClass.BURSTABLE
    return found if found is not None else types.QOSClass.BEST_EFFORT


def qos_class(pod: core.Pod) -> types.QOSClass:
    """Compute the pod's QoS class from its spec, as ComputePodQOS does.

    Edge cases: pod-level resources, when `spec.resources` is set at all, decide alone (1.32+
    PodLevelResources); init containers count, ephemeral containers do not; only CPU and memory count;
    zero quantities count as unset; one BestEffort container next to a Guaranteed one makes the pod
    Burstable; a pod without containers is BestEffort.
    """
    if pod.spec.resources is not None:
        return _resource_qos(pod.spec.resources)
    found: types.QOSClass | None = None
    for container in [*pod.spec.containers, *pod.spec.initContainers]:
        container_qos = _resource_qos(container.resources)
        if container_qos == types.QOSClass.BURSTABLE:
            return container_qos
        if found is None:
            found = container_qos
        elif found != container_qos:
            return types.QOSClass.BURSTABLE
    return found if found is not None else types.QOSClass.BEST_EFFORT


def effective_qos_class(pod: core.Pod) -> types.QOSClass:
    """The QoS class the kubelet acts on: status.qosClass when set and valid (GetPodQOS), else computed.

    The API server persists the class at creation and it never changes (a resize must keep it), so the
    status is the better source; an unknown value there is ignored rather than trusted.
    """
    return resources.derived(pod, "effective qos class", lambda: _effective_qos_class(pod))


def _effective_qos_class(pod: core.Pod) -> types.QOSClass:
    persisted = pod.status.qosClass
    if persisted:
        try:
            return types.QOSClass(persisted)
        except ValueError:
            pass
    return qos_class(pod)


def is_static(pod: core.Pod) -> bool:
    """A static pod: the kubelet read it from a file or URL (config.source annotation other than "api")."""
    source = pod.metadata.annotations.get(CONFIG_SOURCE_ANNOTATION)
    return source is not None and source != API_SERVER_SOURCE


def is_mirror(pod: core.Pod) -> bool:
    """The API server's mirror of a static pod (it carries the config.mirror annotation)."""
    return CONFIG_MIRROR_ANNOTATION in pod.metadata.annotations


def is_critical(pod: core.Pod) -> bool:
    """IsCriticalPod: a static or mirror pod, or priority >= 2000000000 (system-cluster-critical and up)."""
    if is_static(pod) or is_mirror(pod):
        return True
    return pod.spec.priority is not None and pod.spec.priority >= SYSTEM_CRITICAL_PRIORITY


def is_node_critical(pod: core.Pod) -> bool:
    """IsNodeCriticalPod: critical AND priorityClassName "system-node-critical".

    A static pod without that class is critical but not node-critical, and a system-cluster-critical
    pod (priority 2000000000) is not node-critical either: its oom_score_adj follows its QoS class.
    """
    return is_critical(pod) and pod.spec.priorityClassName == SYSTEM_NODE_CRITICAL


def _go_div(numerator: int, denominator: int) -> int:
    """Go's integer division, which truncates towards zero (Python's // floors)."""
    quotient = abs(numerator) // abs(denominator)
    return quotient if (numerator >= 0) == (denominator > 0) else -quotient


def _pod_level_requests_set(pod: core.Pod) -> bool:
    """IsPodLevelRequestsSet: spec.resources.requests names cpu, memory or a hugepages size."""
    if pod.spec.resources is None:
        return False
    return any(
        name in _QOS_RESOURCES or name.startswith("hugepages-") for name in pod.spec.resources.requests
    )


def _remaining_pod_memory_per_container(pod: core.Pod) -> int:
    """remainingPodMemReqPerContainer: the pod-level memory request not claimed by any container,
    shared equally among regular and init containers (KEP-2837, "OOM score adjustment")."""
    pod_request = resources.pod_memory_request(pod)
    if not pod_request:
        return 0
    count = len(pod.spec.containers) + len(pod.spec.initContainers)
    if count == 0:
        return 0
    remaining = pod_request - resources.aggregate_container_memory_requests(pod)
    return _go_div(remaining, count)


def _smallest_regular_request(pod: core.Pod) -> int:
    """The smallest memory request of the pod's regular containers (0 for one without a request)."""
    return min(resources.memory_request(pod, container.name) or 0 for container in pod.spec.containers)


def oom_score_adj(*, pod: core.Pod, container_name: str, node_memory_capacity: int | None) -> int | None:
    """The oom_score_adj the kubelet gives a container, as GetContainerOOMScoreAdjust computes it.

    - node-critical pods and Guaranteed pods: -997; BestEffort pods: 1000;
    - Burstable: 1000 - 1000 × request // capacity, then clamped: below 3 becomes 3, exactly 1000
      becomes 999 (so Burstable always sits strictly between Guaranteed and BestEffort);
    - with pod-level requests, each container's request is raised by an equal share of the pod-level
      request the containers do not claim themselves;
    - a sidecar (restartable init container) never scores above the regular container with the
      smallest request: its effective request is max(own, smallest regular request).

    Requests are read from the container status first (in-place resize), then the spec. A container
    without a memory request, or one not in the spec at all (the kubelet treats ephemeral containers
    this way), requests 0. Returns None only for a Burstable pod when the node's memory capacity is
    unknown (None or not positive).
    """
    if is_node_critical(pod):
        return GUARANTEED_OOM_SCORE_ADJ
    pod_qos = effective_qos_class(pod)
    if pod_qos == types.QOSClass.GUARANTEED:
        return GUARANTEED_OOM_SCORE_ADJ
    if pod_qos == types.QOSClass.BEST_EFFORT:
        return BEST_EFFORT_OOM_SCORE_ADJ
    if node_memory_capacity is None or node_memory_capacity <= 0:
        return None
    capacity = node_memory_capacity
    request = resources.memory_request(pod, container_name) or 0
    share = (
        resources.derived(pod, "pod-level memory share", lambda: _remaining_pod_memory_per_container(pod))
        if _pod_level_requests_set(pod)
        else 0
    )
    adjust = 1000 - _go_div(1000 * (request + share), capacity)

    found = resources.find_container(pod, container_name)
    if found is not None and found[1] == types.ContainerType.SIDECAR and pod.spec.containers:
        smallest_regular = resources.derived(pod, "smallest regular request", lambda: _smallest_regular_request(pod))
        adjust = min(adjust, 1000 - _go_div(1000 * (smallest_regular + share), capacity))

    if adjust < 1000 + GUARANTEED_OOM_SCORE_ADJ:
        return 1000 + GUARANTEED_OOM_SCORE_ADJ
    if adjust == BEST_EFFORT_OOM_SCORE_ADJ:
        return adjust - 1
    return adjust


@dataclasses.dataclass(frozen=True)
class VictimCandidate:
    """A running container that the kernel could pick when its node runs out of memory."""

    namespace: str
    pod: str
    container: str
    qos: types.QOSClass
    oom_score_adj: int
    usage_bytes: int | None = None
    request_bytes: int | None = None


@dataclasses.dataclass(frozen=True)
class RankedVictim:
    """A candidate with its estimated badness. `basis` says whether memory_bytes is measured usage or,
    lacking that, the memory request (an optimistic stand-in: usage is usually above it)."""

    namespace: str
    pod: str
    container: str
    qos: types.QOSClass
    oom_score_adj: int
    memory_bytes: int
    basis: Literal["usage", "request"]
    score: int
    usage_bytes: int | None = None
    request_bytes: int | None = None


def victim_score(*, usage_bytes: int, capacity: int, oom_score_adj: int) -> int:
    """The kernel's badness in thousandths of the node's memory: usage × 1000 // capacity + adj.

    oom_badness() adds adj × totalpages / 1000 to the process's pages, so this is the same ordering on
    a scale of roughly -1000..2000. Raises ValueError if capacity is not positive.
    """
    if capacity <= 0:
        raise ValueError(f"node memory capacity must be positive, got {capacity}")
    return (usage_bytes * 1000) // capacity + oom_score_adj


def rank_victims(candidates: Sequence[VictimCandidate], *, capacity: int) -> list[RankedVictim]:
    """Order candidates from most to least likely to be killed when the node runs out of memory.

    Memory is the measured usage when known, else the request (else 0). Ties go to the larger memory,
    then to namespace/pod/container order, so the result is deterministic. Raises ValueError if
    capacity is not positive.
    """
    ranked = []
    for candidate in candidates:
        basis: Literal["usage", "request"]
        if candidate.usage_bytes is not None:
            memory, basis = candidate.usage_bytes, "usage"
        else:
            memory, basis = candidate.request_bytes or 0, "request"
        ranked.append(
            RankedVictim(
                namespace=candidate.namespace,
                pod=candidate.pod,
                container=candidate.container,
                qos=candidate.qos,
                oom_score_adj=candidate.oom_score_adj,
                memory_bytes=memory,
                basis=basis,
                score=victim_score(
                    usage_bytes=memory, capacity=capacity, oom_score_adj=candidate.oom_score_adj
                ),
                usage_bytes=candidate.usage_bytes,
                request_bytes=candidate.request_bytes,
            )
        )
    ranked.sort(key=lambda v: (-v.score, -v.memory_bytes, v.namespace, v.pod, v.container))
    return ranked


def usage_by_pod(usage: Mapping[tuple[str, str, str], int]) -> dict[tuple[str, str], dict[str, int]]:
    """Usage keyed by (namespace, pod, container), regrouped per pod as `candidates_from_pod` takes it."""
    found: dict[tuple[str, str], dict[str, int]] = {}
    for (namespace, pod, container), value in usage.items():
        found.setdefault((namespace, pod), {})[container] = value
    return found


def candidates_from_pod(
    pod: core.Pod, *, node_memory_capacity: int, usage: Mapping[str, int] | None = None
) -> list[VictimCandidate]:
    """The pod's long-running containers (regular ones and sidecars) as victim candidates.

    `usage` maps container name to working-set bytes where known. Plain init containers have finished
    and ephemeral containers are short-lived debugging tools, so neither is a candidate. Returns [] when
    the capacity is not positive (no oom_score_adj can be computed).
    """
    found = []
    pod_qos = effective_qos_class(pod)
    for container, kind in resources.containers_with_types(pod):
        if kind not in (types.ContainerType.CONTAINER, types.ContainerType.SIDECAR):
            continue
        adj = oom_score_adj(pod=pod, container_name=container.name, node_memory_capacity=node_memory_capacity)
        if adj is None:
            return []
        found.append(
            VictimCandidate(
                namespace=pod.metadata.namespace or "",
                pod=pod.metadata.name,
                container=container.name,
                qos=pod_qos,
                oom_score_adj=adj,
                usage_bytes=(usage or {}).get(container.name),
                request_bytes=resources.memory_request(pod, container.name),
            )
        )
    return found
