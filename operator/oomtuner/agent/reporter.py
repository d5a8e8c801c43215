"""Telling the cluster about the kills the watcher found: which pod and container, as an Event and a metric.

A cgroup knows its pod UID and container ID, not names. The pod status does: each container status
carries `containerID: containerd://<id>` (also in `lastState.terminated` for the instance before a
restart). So the agent lists the pods on its own node (`fieldSelector=spec.nodeName=<node>`, cheap
for the API server, which indexes that field) and matches container IDs. It lists only when a kill
needs a name it does not know yet: a container ID always belongs to the same pod, so a cached answer
never goes stale, and a quiet node costs the API server nothing.

A kill may come before the pod status names its container (a worker killed in the container's first
second) or while the API server is unreachable. Such a report waits and is retried on every poll, for
`give_up_after`; then it is dropped with a warning and counted in
`oomtuner_agent_unattributed_oom_kills_total` (or, for an event that could not be posted,
`oomtuner_agent_event_errors_total`). The kill metric is counted once, as soon as the pod is known,
and its series of a pod are removed once the pod is gone from the node (its cgroups are gone, and no
report of it waits), so pod churn does not pile series up.

Events are named `<pod>.<container id[:12]>.<counter>`, so a retried create after a lost answer
gets 409 AlreadyExists instead of a second event, and the operator can tell the kills apart.
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
from collections.abc import Iterable, Mapping
from typing import Any, Protocol

from oomtuner.agent import metrics, watcher
from oomtuner.api import core, types
from oomtuner.domain import child_kills, quantity, resources
from oomtuner.kube import api

logger = logging.getLogger(__name__)

DEFAULT_GIVE_UP_AFTER = datetime.timedelta(minutes=5)
_NAME_MAX = 253


@dataclasses.dataclass(frozen=True)
class ContainerRef:
    """The pod container a container ID belongs to."""

    namespace: str
    pod: str
    pod_uid: str
    container: str
    container_type: types.ContainerType


def index_pods(pods: Iterable[core.Pod]) -> dict[str, ContainerRef]:
    """Bare container ID → the container, over every container status of every pod.

    Each status contributes its current `containerID` and the IDs in `state.terminated` and
    `lastState.terminated` (the instance before a restart, whose cgroup may still be read).
    """
    index: dict[str, ContainerRef] = {}
    for pod in pods:
        if not pod.metadata.namespace or not pod.metadata.name or not pod.metadata.uid:
            continue
        for statuses in (
            pod.status.containerStatuses,
            pod.status.initContainerStatuses,
            pod.status.ephemeralContainerStatuses,
        ):
            for status in statuses:
                found = resources.find_container(pod, status.name)
                if found is not None:
                    kind = found[1]
                elif statuses is pod.status.initContainerStatuses:
                    kind = types.ContainerType.INIT
                elif statuses is pod.status.ephemeralContainerStatuses:
                    kind = types.ContainerType.EPHEMERAL
                else:
                    kind = types.ContainerType.CONTAINER
                ref = ContainerRef(
                    namespace=pod.metadata.namespace,
                    pod=pod.metadata.name,
                    pod_uid=pod.metadata.uid,
                    container=status.name,
                    container_type=kind,
                )
                for full_id in (
                    status.containerID,
                    status.state.terminated.containerID if status.state.terminated else None,
                    status.lastState.terminated.containerID if status.lastState.terminated else None,
                ):
                    bare = child_kills.bare_container_id(full_id)
                    if bare:
                        index[bare] = ref
    return index


class PodResolver(Protocol):
    """Finds the pod container of a container ID."""

    def lookup(self, container_id: str) -> ContainerRef | None:
        """The container with this bare ID, from what is known now; None if unknown."""

    def refresh(self) -> None:
        """Learn the current pods. May raise anything the API client raises."""


class FixedPods:
    """A resolver over a fixed set of pods, for tests and dry runs."""

    def __init__(self, pods: Iterable[core.Pod]) -> None:
        self._index = index_pods(pods)

    def lookup(self, container_id: str) -> ContainerRef | None:
        return self._index.get(container_id)

    def refresh(self) -> None:
        pass


class NodePods:
    """A resolver that lists the pods of one node from the API server when it meets an unknown ID."""

    def __init__(self, client: api.Client, *, node_name: str) -> None:
        self.client = client
        self.node_name = node_name
        self._index: dict[str, ContainerRef] = {}

    def lookup(self, container_id: str) -> ContainerRef | None:
        return self._index.get(container_id)

    def refresh(self) -> None:
        """List the node's pods (all namespaces); a pod that does not parse is skipped with a warning."""
        bodies = self.client.list("/api/v1/pods", query={"fieldSelector": f"spec.nodeName={self.node_name}"})
        pods = []
        for body in bodies:
            try:
                pods.append(core.parse_pod(body))
            except core.InvalidObject as exc:
                logger.warning("skipping a pod that does not parse: %s", exc)
        # IDs never move to another pod, so keep what is known: a deleted pod's kill can still be named.
        self._index.update(index_pods(pods))


class EventSink(Protocol):
    def post(self, body: Mapping[str, Any]) -> None:
        """Create the event. May raise anything the API client raises."""


class ApiEvents:
    """Posts events to the API server; an event that already exists (a retried create) is success."""

    def __init__(self, client: api.Client) -> None:
        self.client = client

    def post(self, body: Mapping[str, Any]) -> None:
        namespace = body["metadata"]["namespace"]
        path = api.namespaced(group="", version="v1", plural="events", namespace=namespace)
        try:
            self.client.create(path, body)
        except api.Conflict:
            logger.debug("event %s/%s already exists", namespace, body["metadata"]["name"])


class RecordedEvents:
    """Keeps the events in memory, for tests and dry runs."""

    def __init__(self) -> None:
        self.bodies: list[Mapping[str, Any]] = []

    def post(self, body: Mapping[str, Any]) -> None:
        self.bodies.append(body)


def facts_of(increase: watcher.Increase, *, container: str) -> child_kills.ChildKillFacts:
    """What the event says about a rise of the counter of `container`'s cgroup."""
    return child_kills.ChildKillFacts(
        container=container,
        container_id=increase.cgroup.container_id,
        oom_kill=increase.counters.oom_kill,
        new_kills=increase.new_kills,
        limit=increase.counters.limit,
        hit_limit=increase.hit_limit,
        qos_class=increase.cgroup.qos_class,
    )


def event_name(*, pod: str, container_id: str, counter: int) -> str:
    """`<pod>.<id[:12]>.<counter>`, the pod name shortened so the whole fits in 253 characters."""
    suffix = f".{container_id[:12]}.{counter}"
    return pod[: _NAME_MAX - len(suffix)] + suffix


def build_event(*, ref: ContainerRef, increase: watcher.Increase, node_name: str) -> dict[str, Any]:
    """The core/v1 Event body for one rise of a container's OOM kill counter.

    Timestamps are when the agent read the rise (not when it posted): a report delivered late still
    says when the kill was seen. `source.host` is the node, as kubelet events have it.
    """
    at = increase.seen_at.astimezone(datetime.timezone.utc)
    stamp = at.strftime("%Y-%m-%dT%H:%M:%SZ")
    micro = at.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    facts = facts_of(increase, container=ref.container)
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {
            "name": event_name(pod=ref.pod, container_id=facts.container_id, counter=facts.oom_kill),
            "namespace": ref.namespace,
        },
        "involvedObject": {
            "apiVersion": "v1",
            "kind": "Pod",
            "name": ref.pod,
            "namespace": ref.namespace,
            "uid": ref.pod_uid,
            "fieldPath": child_kills.field_path(ref.container_type, ref.container),
        },
        "reason": child_kills.REASON,
        "message": child_kills.format_message(facts),
        "type": child_kills.EVENT_TYPE,
        "source": {"component": child_kills.COMPONENT, "host": node_name},
        "reportingComponent": child_kills.COMPONENT,
        "reportingInstance": node_name,
        "action": "OOMKill",
        "firstTimestamp": stamp,
        "lastTimestamp": stamp,
        "eventTime": micro,
        "count": 1,
    }


@dataclasses.dataclass
class _Pending:
    increase: watcher.Increase
    ref: ContainerRef | None = None
    counted: bool = False


class Reporter:
    """Names each reported kill's pod and container, counts it in the metric, and posts its Event."""

    def __init__(
        self,
        *,
        resolver: PodResolver,
        sink: EventSink,
        node_name: str,
        give_up_after: datetime.timedelta = DEFAULT_GIVE_UP_AFTER,
    ) -> None:
        self.resolver = resolver
        self.sink = sink
        self.node_name = node_name
        self.give_up_after = give_up_after
        self._pending: list[_Pending] = []
        # Pod UID → the label values of its series in the kill metric.
        self._series: dict[str, set[tuple[str, str, str]]] = {}

    @property
    def pending(self) -> int:
        """Reports not delivered yet (pod unknown, or the event not posted)."""
        return len(self._pending)

    def submit(self, increases: Iterable[watcher.Increase]) -> None:
        self._pending.extend(_Pending(increase=increase) for increase in increases)

    def deliver(self, *, now: datetime.datetime) -> int:
        """Try every pending report once; return how many were delivered. Never raises.

        The pods are listed at most once per call, and only when a report names an unknown container.
        """
        if not self._pending:
            return 0
        self._resolve()
        delivered = 0
        for item in list(self._pending):
            expired = now - item.increase.seen_at >= self.give_up_after
            if item.ref is None:
                if expired:
                    self._pending.remove(item)
                    metrics.UNATTRIBUTED_KILLS.inc(item.increase.new_kills)
                    logger.warning(
                        "gave up naming the pod of container %s (cgroup %s): %d OOM kill(s) not reported as events",
                        item.increase.cgroup.container_id, item.increase.cgroup.key, item.increase.new_kills,
                    )
                continue
            if not item.counted:
                self._count(item.ref, item.increase)
                item.counted = True
            body = build_event(ref=item.ref, increase=item.increase, node_name=self.node_name)
            try:
                self.sink.post(body)
            except Exception as exc:  # any failure to reach the API server: retry next poll
                metrics.EVENT_ERRORS.inc()
                if expired:
                    self._pending.remove(item)
                    logger.warning("gave up posting event %s/%s: %s", item.ref.namespace, body["metadata"]["name"], exc)
                else:
                    logger.warning("could not post event %s/%s (will retry): %s",
                                   item.ref.namespace, body["metadata"]["name"], exc)
                continue
            self._pending.remove(item)
            delivered += 1
        return delivered

    def _resolve(self) -> None:
        unknown = [item for item in self._pending if item.ref is None]
        for item in unknown:
            item.ref = self.resolver.lookup(item.increase.cgroup.container_id)
        if not any(item.ref is None for item in unknown):
            return
        try:
            self.resolver.refresh()
        except Exception as exc:  # the API server is down or refuses: retry next poll
            logger.warning("could not list the pods of node %s: %s", self.node_name, exc)
            return
        for item in unknown:
            if item.ref is None:
                item.ref = self.resolver.lookup(item.increase.cgroup.container_id)

    def forget_gone_pods(self, present: frozenset[str]) -> int:
        """Remove the kill metric's series of the pods not in `present` (the pod UIDs whose cgroups are
        on the node) that no waiting report names. Returns how many series went."""
        waiting = {item.increase.cgroup.pod_uid for item in self._pending}
        removed = 0
        for uid in [uid for uid in self._series if uid not in present and uid not in waiting]:
            for labels in self._series.pop(uid):
                metrics.OOM_KILLS.remove(*labels)
                removed += 1
        return removed

    def _count(self, ref: ContainerRef, increase: watcher.Increase) -> None:
        metrics.OOM_KILLS.labels(namespace=ref.namespace, pod=ref.pod, container=ref.container).inc(increase.new_kills)
        # By the cgroup's pod UID, the one the watcher sees (a static pod's mirror has another).
        self._series.setdefault(increase.cgroup.pod_uid, set()).add((ref.namespace, ref.pod, ref.container))
        limit = increase.counters.limit
        logger.warning(
            "OOM kill of a process in %s/%s container %s: %d new, oom_kill counter %d, memory limit %s, "
            "own limit hit: %s (cgroup %s)",
            ref.namespace, ref.pod, ref.container, increase.new_kills, increase.counters.oom_kill,
            quantity.humanize(limit) if limit is not None else "none",
            "unknown" if increase.hit_limit is None else increase.hit_limit, increase.cgroup.key,
        )
