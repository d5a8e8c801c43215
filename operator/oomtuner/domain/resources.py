"""Where a container's memory request and limit really come from, and how a pod's requests add up.

Since in-place pod resize (1.33+), `spec` says what was asked for and the container status says what
is in force: `status.containerStatuses[].resources` is what the runtime enforces, and
`allocatedResources` is what the kubelet admitted. A kill happened under the enforced values, and the
kubelet computes `oom_score_adj` from the admitted ones, so both read status first and fall back to
the spec on clusters that do not report it. The helpers here make that choice once for the whole
domain.

Quantities the operator cannot parse count as absent (None) here instead of raising: the API server
never stores them, and reading a pod must never crash the operator. `quantity_problems` names them,
for callers that must refuse such a pod instead (`oomtuner explain`).

Lookups by container name are answered from an index built once per pod object (a pod may have
hundreds of containers, and every container's oom_score_adj looks at all the others), and `derived`
keeps what the domain computes from a whole pod, so that asking for every container of a pod costs
time linear in its size. Parsed pods are never changed, so what is derived from one stays true.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable, Iterator, Mapping
from typing import Any, TypeVar

from oomtuner.api import core, types
from oomtuner.domain import quantity

ALWAYS = "Always"
_T = TypeVar("_T")


class _PodIndex:
    """The containers and statuses of one pod by name (the first of a name wins), and a memo."""

    def __init__(self, pod: core.Pod):
        self.containers: dict[str, tuple[core.Container, types.ContainerType]] = {}
        for container, kind in containers_with_types(pod):
            self.containers.setdefault(container.name, (container, kind))
        self.statuses: dict[str, core.ContainerStatus] = {}
        for statuses in (
            pod.status.containerStatuses,
            pod.status.initContainerStatuses,
            pod.status.ephemeralContainerStatuses,
        ):
            for status in statuses:
                self.statuses.setdefault(status.name, status)
        self.memo: dict[Any, Any] = {}


# id(pod) -> (a weak reference to the pod, its index). The reference's callback drops the entry when
# the pod is collected, before its id can be reused.
_INDEXES: dict[int, tuple[weakref.ref[core.Pod], _PodIndex]] = {}
_INDEXES_LOCK = threading.Lock()


def _index(pod: core.Pod) -> _PodIndex:
    key = id(pod)
    entry = _INDEXES.get(key)
    if entry is not None and entry[0]() is pod:
        return entry[1]
    built = _PodIndex(pod)
    with _INDEXES_LOCK:
        entry = _INDEXES.get(key)
        if entry is not None and entry[0]() is pod:
            return entry[1]
        _INDEXES[key] = (weakref.ref(pod, _forget(key)), built)
    return built


def _forget(key: int) -> Callable[[weakref.ref[core.Pod]], None]:
    """The callback that drops a pod's index once the pod is gone."""

    def forget(_gone: weakref.ref[core.Pod]) -> None:
        _INDEXES.pop(key, None)

    return forget


def derived(pod: core.Pod, key: Any, compute: Callable[[], _T]) -> _T:
    """`compute()` once per pod object and key: for values the domain derives from a whole pod."""
    memo = _index(pod).memo
    if key not in memo:
        memo[key] = compute()
    value: _T = memo[key]
    return value


def bytes_or_none(text: str | int | None) -> int | None:
    """Whole bytes of a quantity; None when absent or unparseable."""
    if text is None:
        return None
    try:
        return quantity.parse_bytes(text)
    except quantity.QuantityError:
        return None


def bytes_of(resources: Mapping[str, str | None], name: str = core.MEMORY) -> int | None:
    """Whole bytes of one resource in a resource list; None when absent or unparseable."""
    return bytes_or_none(resources.get(name))


def limit_bytes(resources: Mapping[str, str], name: str = core.MEMORY) -> int | None:
    """A memory limit in whole bytes; None when absent, unparseable or zero: the kubelet gives the
    runtime no limit for a zero one (CRI's memory_limit_in_bytes 0 means unlimited)."""
    return bytes_of(resources, name) or None


def is_sidecar(container: core.Container) -> bool:
    """A restartable init container (restartPolicy Always), as the kubelet's IsRestartableInitContainer."""
    return container.restartPolicy == ALWAYS


def containers_with_types(pod: core.Pod) -> Iterator[tuple[core.Container, types.ContainerType]]:
    """Every container in the spec with its type: regular, then init/sidecar, then ephemeral."""
    for container in pod.spec.containers:
        yield container, types.ContainerType.CONTAINER
    for container in pod.spec.initContainers:
        kind = types.ContainerType.SIDECAR if is_sidecar(container) else types.ContainerType.INIT
        yield container, kind
    for container in pod.spec.ephemeralContainers:
        yield container, types.ContainerType.EPHEMERAL


def find_container(pod: core.Pod, name: str) -> tuple[core.Container, types.ContainerType] | None:
    """The spec of the container called `name` (names are unique across all kinds), or None."""
    return _index(pod).containers.get(name)


def find_status(pod: core.Pod, name: str) -> core.ContainerStatus | None:
    """The status of the container called `name` from any of the three status lists, or None."""
    return _index(pod).statuses.get(name)


def requests_in_force(pod: core.Pod, name: str) -> Mapping[str, str]:
    """The requests that apply to a container: enforced (status.resources), else admitted
    (allocatedResources), else the spec. An unknown container has no requests."""
    status = find_status(pod, name)
    if status is not None and status.resources is not None:
        return status.resources.requests
    if status is not None and status.allocatedResources is not None:
        return status.allocatedResources
    found = find_container(pod, name)
    return found[0].resources.requests if found is not None else {}


def limits_in_force(pod: core.Pod, name: str) -> Mapping[str, str]:
    """The limits that apply to a container: enforced (status.resources), else the spec."""
    status = find_status(pod, name)
    if status is not None and status.resources is not None:
        return status.resources.limits
    found = find_container(pod, name)
    return found[0].resources.limits if found is not None else {}


def memory_request(pod: core.Pod, name: str) -> int | None:
    """The container's memory request in bytes, in-place-resize aware; None when it has none."""
    return derived(pod, ("memory request", name), lambda: bytes_of(requests_in_force(pod, name)))


def memory_limit(pod: core.Pod, name: str) -> int | None:
    """The container's memory limit in bytes, in-place-resize aware; None when it has none (or 0)."""
    return derived(pod, ("memory limit", name), lambda: limit_bytes(limits_in_force(pod, name)))


def pod_memory_limit(pod: core.Pod) -> int | None:
    """The pod-level memory limit (spec.resources.limits.memory, 1.32+); None when not set or zero."""
    if pod.spec.resources is None:
        return None
    return limit_bytes(pod.spec.resources.limits)


def pod_memory_request(pod: core.Pod) -> int | None:
    """The pod-level memory request (spec.resources.requests.memory); None when not set."""
    if pod.spec.resources is None:
        return None
    return bytes_of(pod.spec.resources.requests)


def aggregate_container_memory_requests(pod: core.Pod) -> int:
    """The pod's effective memory request from its containers (spec only, no overhead, no pod level).

    The sidecar KEP formula (component-helpers AggregateContainerRequests): the sum over regular
    containers and sidecars, or, if larger, the peak while an init container runs, which is that init
    container plus the sidecars started before it. Missing requests count as 0.
    """
    total = sum(bytes_of(c.resources.requests) or 0 for c in pod.spec.containers)
    sidecars_so_far = 0
    init_peak = 0
    for container in pod.spec.initContainers:
        request = bytes_of(container.resources.requests) or 0
        if is_sidecar(container):
            total += request
            sidecars_so_far += request
            init_peak = max(init_peak, sidecars_so_far)
        else:
            init_peak = max(init_peak, request + sidecars_so_far)
    return max(total, init_peak)


_CHECKED = (core.MEMORY, core.CPU)


def _resource_lists(pod: core.Pod) -> Iterator[tuple[str, Mapping[str, str]]]:
    """(field path, resource list) of every resource list in the pod that holds CPU or memory."""
    for list_name, containers in (
        ("containers", pod.spec.containers),
        ("initContainers", pod.spec.initContainers),
        ("ephemeralContainers", pod.spec.ephemeralContainers),
    ):
        for i, container in enumerate(containers):
            yield f"spec.{list_name}[{i}].resources.requests", container.resources.requests
            yield f"spec.{list_name}[{i}].resources.limits", container.resources.limits
    if pod.spec.resources is not None:
        yield "spec.resources.requests", pod.spec.resources.requests
        yield "spec.resources.limits", pod.spec.resources.limits
    yield "spec.overhead", pod.spec.overhead
    for list_name, statuses in (
        ("containerStatuses", pod.status.containerStatuses),
        ("initContainerStatuses", pod.status.initContainerStatuses),
        ("ephemeralContainerStatuses", pod.status.ephemeralContainerStatuses),
    ):
        for i, status in enumerate(statuses):
            if status.resources is not None:
                yield f"status.{list_name}[{i}].resources.requests", status.resources.requests
                yield f"status.{list_name}[{i}].resources.limits", status.resources.limits
            if status.allocatedResources is not None:
                yield f"status.{list_name}[{i}].allocatedResources", status.allocatedResources


def quantity_problems(pod: core.Pod) -> list[str]:
    """`field: what is wrong` for every CPU or memory quantity of the pod that the domain cannot use.

    A quantity the API server would refuse ("12Qi"), one too large for 64 bits ("8Ei"), or a negative
    one (the API server refuses those in a pod). Elsewhere such a value counts as absent; a caller
    that must not guess (`oomtuner explain`) refuses the pod with these messages. [] when all is well.
    """
    problems = []
    for path, resource_list in _resource_lists(pod):
        for name in _CHECKED:
            text = resource_list.get(name)
            found = quantity.problem(f"{path}.{name}", text) if text is not None else None
            if found:
                problems.append(found)
    return problems
