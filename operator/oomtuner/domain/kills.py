"""OOM kills as pod status reports them, each with the facts needed to explain and fix it.

A container status whose `state.terminated` or `lastState.terminated` has reason "OOMKilled" is one
kill (README, "How a kill is seen, counted and classified"). The same kill shows up several times: in `state` right
after it happened, then in `lastState` once the kubelet restarts the container (restartCount + 1),
and again on every later update of the pod until the next termination replaces it. `OOMKill.identity`
is what makes those sightings one kill, also across operator restarts, so a kill is counted once.

Only reason "OOMKilled" counts. Exit code 137 alone means SIGKILL from anyone (a failed liveness probe,
`kill -9`, an eviction); the runtime sets "OOMKilled" only when the cgroup's OOM killer ended the
container's main process. A kill of another process in the container leaves it running and never shows
up here (the node agent covers that).
"""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Iterator

from oomtuner.api import core, types
from oomtuner.domain import qos, resources

OOM_KILLED = "OOMKilled"
# 128 + SIGKILL: what an OOM-killed main process exits with.
OOM_EXIT_CODE = 137


@dataclasses.dataclass(frozen=True)
class OOMKill:
    """One OOM kill of one container instance.

    `at` is the terminated state's finishedAt and `started_at` its startedAt (so at - started_at is
    how long the instance lived). `restart_count` is the status's restartCount when the kill was read.
    `request` and `limit_at_kill` are the container's memory request and limit in bytes, read from the
    container status when the cluster reports it (in-place resize) and else from the spec; None means
    none was set. `pod_memory_limit` is the pod-level limit (spec.resources.limits.memory).
    `oom_score_adj` is None for a Burstable pod when the node's capacity was unknown. `instance` is
    which instance of the container died, counted from 0 as the kubelet counts restarts (`instance`),
    None when the status does not say.
    """

    namespace: str
    pod: str
    pod_uid: str
    container: str
    container_type: types.ContainerType
    node: str | None
    at: datetime.datetime | None
    started_at: datetime.datetime | None
    restart_count: int
    exit_code: int
    container_id: str | None
    request: int | None
    limit_at_kill: int | None
    qos_class: types.QOSClass
    oom_score_adj: int | None
    pod_memory_limit: int | None
    instance: int | None = dataclasses.field(default=None, kw_only=True)

    @property
    def identity(self) -> str:
        """A key that is the same for every sighting of this kill, and differs between kills.

        `finishedAt` (with pod UID and container name) is the key: the kubelet copies the terminated
        state unchanged from `state` to `lastState`, and two kills of one container never finish at
        the same instant. The restartCount is NOT usable as the key: it is N while the kill sits in
        `state`, stays N while the container waits in CrashLoopBackOff with the kill in `lastState`,
        and becomes N+1 once the container runs again. Without finishedAt (never seen from a real
        kubelet, but a fake one may omit it), the terminated instance's containerID is the next
        stable key. Only if both are missing does the key fall back to restartCount, which may count
        one kill twice. The time is written in UTC, so the key does not depend on how the timestamp
        was written.
        """
        if self.at is not None:
            at = self.at.astimezone(datetime.timezone.utc) if self.at.tzinfo else self.at
            return f"{self.pod_uid}/{self.container}/{at.isoformat()}"
        if self.container_id:
            return f"{self.pod_uid}/{self.container}/{self.container_id}"
        return f"{self.pod_uid}/{self.container}/restart-{self.restart_count}"


def _statuses(pod: core.Pod) -> Iterator[tuple[core.ContainerStatus, types.ContainerType]]:
    for status in pod.status.containerStatuses:
        yield status, types.ContainerType.CONTAINER
    for status in pod.status.initContainerStatuses:
        found = resources.find_container(pod, status.name)
        sidecar = found is not None and found[1] == types.ContainerType.SIDECAR
        yield status, types.ContainerType.SIDECAR if sidecar else types.ContainerType.INIT
    for status in pod.status.ephemeralContainerStatuses:
        yield status, types.ContainerType.EPHEMERAL


def _kills_with_source(
    pod: core.Pod, *, node_memory_capacity: int | None
) -> Iterator[tuple[OOMKill, core.ContainerStatus, bool]]:
    """Every sighting as (kill, its container status, whether it came from lastState), older first."""
    pod_qos = qos.effective_qos_class(pod)
    pod_limit = resources.pod_memory_limit(pod)
    for status, kind in _statuses(pod):
        for terminated, from_last_state in (
            (status.lastState.terminated, True),
            (status.state.terminated, False),
        ):
            if terminated is None or terminated.reason != OOM_KILLED:
                continue
            container_id = terminated.containerID
            if container_id is None and not from_last_state:
                container_id = status.containerID
            kill = OOMKill(
                namespace=pod.metadata.namespace or "",
                pod=pod.metadata.name,
                pod_uid=pod.metadata.uid or "",
                container=status.name,
                container_type=kind,
                node=pod.spec.nodeName,
                at=terminated.finishedAt,
                started_at=terminated.startedAt,
                restart_count=status.restartCount,
                instance=instance(status, from_last_state=from_last_state),
                exit_code=terminated.exitCode if terminated.exitCode is not None else OOM_EXIT_CODE,
                container_id=container_id,
                request=resources.memory_request(pod, status.name),
                limit_at_kill=resources.memory_limit(pod, status.name),
                qos_class=pod_qos,
                oom_score_adj=qos.oom_score_adj(
                    pod=pod, container_name=status.name, node_memory_capacity=node_memory_capacity
                ),
                pod_memory_limit=pod_limit,
            )
            yield kill, status, from_last_state


def instance(status: core.ContainerStatus, *, from_last_state: bool) -> int:
    """Which instance of the container a termination in its status ended, counted from 0.

    The kubelet's restartCount is the number of the newest instance it created. A termination in
    `state` is that instance's; one in `lastState` is the one before, except while the container
    waits to be restarted (CrashLoopBackOff): the newest instance is then the one that died, and it
    sits in `lastState`.
    """
    if not from_last_state:
        return status.restartCount
    waiting = status.state.waiting is not None and status.state.running is None and status.state.terminated is None
    return status.restartCount if waiting else max(status.restartCount - 1, 0)


def kills_from_pod(pod: core.Pod, *, node_memory_capacity: int | None) -> list[OOMKill]:
    """Every OOM kill visible in the pod's status, each once.

    Looks at regular, init, sidecar (init with restartPolicy Always) and ephemeral container statuses,
    in both `lastState.terminated` and `state.terminated`; a kill seen in both counts once (by
    identity). Only reason "OOMKilled" counts: exit code 137 with reason "Error" is not an OOM kill.
    Never raises on missing fields: a pod without status gives [], a kill without finishedAt has
    `at=None`, a missing exit code reads as 137 (the kernel's SIGKILL; the API always sets it).
    Order: by container status order, lastState before state (older first).
    """
    seen: set[str] = set()
    found = []
    for kill, _status, _from_last_state in _kills_with_source(pod, node_memory_capacity=node_memory_capacity):
        if kill.identity not in seen:
            seen.add(kill.identity)
            found.append(kill)
    return found


def is_restart_transition(
    old: core.Pod | None, new: core.Pod, *, node_memory_capacity: int | None = None
) -> list[OOMKill]:
    """The kills VPA's OOM observer would count for this pod update.

    VPA counts a container whose restartCount went up between `old` and `new` and whose
    `lastState.terminated.reason` in `new` is "OOMKilled" (typically Running → Running across a fast
    restart, where the kill never appears in `state`). Returns [] when `old` is None (a first sighting
    is not a transition) or nothing restarted.

    The operator itself does not need this: `kills_from_pod` reads lastState on every event, and
    deduplicating by `OOMKill.identity` counts these kills exactly once whether or not the transition
    was observed. It exists to compare with VPA and to test that claim.
    """
    if old is None:
        return []
    old_counts = {
        status.name: status.restartCount
        for statuses in (
            old.status.containerStatuses,
            old.status.initContainerStatuses,
            old.status.ephemeralContainerStatuses,
        )
        for status in statuses
    }
    found = []
    for kill, status, from_last_state in _kills_with_source(new, node_memory_capacity=node_memory_capacity):
        if not from_last_state:
            continue
        before = old_counts.get(status.name)
        if before is not None and status.restartCount > before:
            found.append(kill)
    return found
