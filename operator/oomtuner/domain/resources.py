"""Where a container's memory request and limit really come from, and how a pod's requests add up.

Since in-place pod resize (1.33+), `spec` says what was asked for and the container status says what
is in force: `status.containerStatuses[].resources` is what the runtime enforces, and
`allocatedResources` is what the kubelet admitted. A kill happened under the enforced values, and the
kubelet computes `oom_score_adj` from the admitted ones, so both read status first and fall back to
the spec on clusters that do not report it. The helpers here make that choice once for the whole
domain.

Quantities the operator cannot parse count as absent (None) here instead of raising: the API server
never stores them, and reading a pod must never crash the operator.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from oomtuner.api import core, types
from oomtuner.domain import quantity

ALWAYS = "Always"


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
    for container, kind in containers_with_types(pod):
        if container.name == name:
            return container, kind
    return None


def find_status(pod: core.Pod, name: str) -> core.ContainerStatus | None:
    """The status of the container called `name` from any of the three status lists, or None."""
    for statuses in (
        pod.status.containerStatuses,
        pod.status.initContainerStatuses,
        pod.status.ephemeralContainerStatuses,
    ):
        for status in statuses:
            if status.name == name:
                return status
    return None


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
    return bytes_of(requests_in_force(pod, name))


def memory_limit(pod: core.Pod, name: str) -> int | None:
    """The container's memory limit in bytes, in-place-resize aware; None when it has none."""
    return bytes_of(limits_in_force(pod, name))


def pod_memory_limit(pod: core.Pod) -> int | None:
    """The pod-level memory limit (spec.resources.limits.memory, 1.32+); None when not set."""
    if pod.spec.resources is None:
        return None
    return bytes_of(pod.spec.resources.limits)


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
