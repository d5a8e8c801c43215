"""OOM kills that Kubernetes never reports: a process other than the container's main one was killed.

When the kernel's OOM killer picks a worker (gunicorn, celery, nginx, postgres backends) instead of a
container's PID 1, the container keeps running: no restart, no `OOMKilled` in the pod status
(kubernetes#50632). The node agent (`oomtuner.agent`) sees such kills in the cgroup's OOM kill counter
and posts a core/v1 Event on the pod with reason `OOMKillChildProcess`. This module is the one place
that defines that event's message, so the agent that writes it and the operator that reads it cannot
drift apart, and it turns such an event into `kills.OOMKill`s the rest of the domain already handles.

The event names its container the way the kubelet's own events do, with
`involvedObject.fieldPath = spec.containers{app}` (`spec.initContainers{…}` for init containers and
sidecars, `spec.ephemeralContainers{…}` for ephemeral ones). The numbers ride in the message: a human
sentence, then ` | ` and `key=value` fields, e.g.

    Kernel OOM-killed 1 process in container app (memory limit 256Mi); unless the main process was
    among them, the container keeps running and its status does not show it. | container=app
    containerID=3f…9a oomKill=3 newKills=1 limitBytes=268435456 hitLimit=true qos=Burstable

`oomKill` is the cgroup's counter after the kills, `newKills` how many it rose by since the agent last
read it. `hitLimit` says whether the container's own cgroup reached its limit in that time (v2:
`memory.events` `oom`; v1: `memory.failcnt`), `unknown` when the agent could not tell: the counter also
rises when the node or the pod-level cgroup ran out, and then the container's own limit is not to blame.

Identity and double counting. Each child kill has its own identity
(`<pod uid>/<container>/child/<container id>/<counter value>`): the counter only grows within a
container instance, so the identity is stable across re-reads of the event and across operator
restarts, and it never equals a pod-status kill's identity. But the counter also rises when the main
process itself is killed (then the container restarts and the pod status reports `OOMKilled`), and on
cgroup v2 without `singleProcessOOMKill` the kubelet makes the kernel kill the whole container. Then
the agent and the pod status see the same kill. `same_kill` tells them apart by the rule documented
there: same pod UID and container, the same container instance when both name one, and times within a
tolerance. The tolerance must exceed the agent's poll interval plus one second (finishedAt is written
with second precision); both times come from the node's clock, so clock skew between the node and the
operator does not matter.
"""

from __future__ import annotations

import dataclasses
import datetime
import re
from collections.abc import Mapping
from typing import Any

from oomtuner.api import core, types
from oomtuner.domain import evidence, kills, qos, quantity, resources

REASON = "OOMKillChildProcess"
COMPONENT = "oomtuner-agent"
EVENT_TYPE = "Warning"
DEFAULT_TOLERANCE = datetime.timedelta(seconds=5)

_SEPARATOR = " | "
_UNKNOWN = "unknown"
_NONE = "none"

_FIELD_PATH_KINDS: dict[str, types.ContainerType] = {
    "containers": types.ContainerType.CONTAINER,
    "initContainers": types.ContainerType.INIT,
    "ephemeralContainers": types.ContainerType.EPHEMERAL,
}
_FIELD_PATH = re.compile(r"^spec\.(?P<list>containers|initContainers|ephemeralContainers)\{(?P<name>[^{}]+)\}$")
_CONTAINER_ID = re.compile(r"^[0-9a-f]{12,128}$")


@dataclasses.dataclass(frozen=True)
class ChildKillFacts:
    """What the agent knows about one rise of a container cgroup's OOM kill counter.

    `container_id` is the bare runtime ID (no `containerd://`). `oom_kill` is the counter after the
    rise and `new_kills` the rise (≥ 1). `limit` is the cgroup's memory limit in bytes, None when
    unlimited. `hit_limit` is whether the container's own cgroup reached its limit since the last
    read, None when unknown. `qos_class` comes from the cgroup's place in the kubepods tree.
    """

    container: str
    container_id: str
    oom_kill: int
    new_kills: int
    limit: int | None
    hit_limit: bool | None
    qos_class: types.QOSClass


@dataclasses.dataclass(frozen=True)
class ChildOOMKill(kills.OOMKill):
    """An OOM kill read from an OOMKillChildProcess event.

    `oom_kill_counter` is the cgroup counter value this kill brought it to. `hit_own_limit` is
    `ChildKillFacts.hit_limit`: False means the node or an ancestor cgroup ran out, not the container.
    """

    oom_kill_counter: int
    hit_own_limit: bool | None

    @property
    def identity(self) -> str:
        """`<pod uid>/<container>/child/<container id>/<counter>`: never equal to a pod-status identity."""
        return f"{self.pod_uid}/{self.container}/child/{self.container_id or ''}/{self.oom_kill_counter}"


# ---- the message: written by the agent, read by the operator -----------------------------------------


def format_message(facts: ChildKillFacts) -> str:
    """The event message: one human sentence, then ` | ` and the fields `parse_message` reads back."""
    processes = "1 process" if facts.new_kills == 1 else f"{facts.new_kills} processes"
    limit = f"memory limit {quantity.humanize(facts.limit)}" if facts.limit is not None else "no memory limit"
    sentence = (
        f"Kernel OOM-killed {processes} in container {facts.container} ({limit}); unless the main process "
        "was among them, the container keeps running and its status does not show it."
    )
    hit = _UNKNOWN if facts.hit_limit is None else str(facts.hit_limit).lower()
    fields = {
        "container": facts.container,
        "containerID": facts.container_id,
        "oomKill": str(facts.oom_kill),
        "newKills": str(facts.new_kills),
        "limitBytes": str(facts.limit) if facts.limit is not None else _NONE,
        "hitLimit": hit,
        "qos": facts.qos_class.value,
    }
    return sentence + _SEPARATOR + " ".join(f"{key}={value}" for key, value in fields.items())


def parse_message(message: str | None) -> ChildKillFacts | None:
    """The fields of a message written by `format_message`, or None if it is not one.

    Returns None for a missing separator, a missing or malformed field (a counter that is not a whole
    number, newKills < 1, a counter below newKills, an unknown QoS class, a container ID that is not
    hex). Unknown extra fields are ignored, so a newer agent may add some.
    """
    if not message or _SEPARATOR not in message:
        return None
    _, _, tail = message.rpartition(_SEPARATOR)
    fields: dict[str, str] = {}
    for token in tail.split():
        key, sep, value = token.partition("=")
        if not sep or not key or not value:
            return None
        fields[key] = value
    try:
        container = fields["container"]
        container_id = fields["containerID"]
        oom_kill = int(fields["oomKill"])
        new_kills = int(fields["newKills"])
        limit_text = fields["limitBytes"]
        limit = None if limit_text == _NONE else int(limit_text)
        hit_text = fields.get("hitLimit", _UNKNOWN)
        qos_class = types.QOSClass(fields["qos"])
    except (KeyError, ValueError):
        return None
    if hit_text not in ("true", "false", _UNKNOWN):
        return None
    if new_kills < 1 or oom_kill < new_kills or (limit is not None and limit <= 0):
        return None
    if not _CONTAINER_ID.match(container_id):
        return None
    return ChildKillFacts(
        container=container,
        container_id=container_id,
        oom_kill=oom_kill,
        new_kills=new_kills,
        limit=limit,
        hit_limit=None if hit_text == _UNKNOWN else hit_text == "true",
        qos_class=qos_class,
    )


def field_path(container_type: types.ContainerType, name: str) -> str:
    """`spec.containers{app}`, as the kubelet names a container in `involvedObject.fieldPath`.

    Sidecars are init containers in the spec, so they get `spec.initContainers{…}`.
    """
    if container_type in (types.ContainerType.INIT, types.ContainerType.SIDECAR):
        return f"spec.initContainers{{{name}}}"
    if container_type == types.ContainerType.EPHEMERAL:
        return f"spec.ephemeralContainers{{{name}}}"
    return f"spec.containers{{{name}}}"


def parse_field_path(text: str | None) -> tuple[types.ContainerType, str] | None:
    """The container type and name in a fieldPath like `spec.containers{app}`; None otherwise.

    An init container's type is INIT here: only the pod spec tells a sidecar apart.
    """
    match = _FIELD_PATH.match(text or "")
    if match is None:
        return None
    return _FIELD_PATH_KINDS[match["list"]], match["name"]


def bare_container_id(container_id: str | None) -> str | None:
    """`containerd://3f…` → `3f…`; None stays None; an ID without a scheme is returned as it is."""
    if not container_id:
        return None
    return container_id.rpartition("://")[2] or None


# ---- from an event to kills ------------------------------------------------------------------------


def kills_from_event(
    event: core.Event | Mapping[str, Any],
    *,
    pod: core.Pod | None,
    node_memory_capacity: int | None = None,
) -> list[ChildOOMKill]:
    """Every kill an OOMKillChildProcess event stands for (its `newKills`, the newest
    `evidence.MAX_KILLS_PER_EVENT` of them at most), older first. Whether the event may count at all
    is `evidence.child_kill_problem`'s question, asked before this one.

    The kills share the event's time (eventTime, else lastTimestamp, firstTimestamp, creation time)
    and differ in their counter value, hence in identity.

    `pod` adds what only the pod knows: request, container type (sidecar), restartCount, the
    instance's startedAt, pod-level limit, oom_score_adj. It is ignored when its UID differs from the
    event's (a pod of the same name, recreated). Without it, the QoS class comes from the message, and
    oom_score_adj is known for Guaranteed and BestEffort only. The limit is the cgroup limit from the
    message (what the kernel enforced), else the pod spec's.

    Returns [] (never raises) for: another reason, an involved object that is not a Pod, a body that
    does not parse, a message not written by `format_message`, no container (neither fieldPath nor
    message), no pod UID (neither event nor pod), or no timestamp at all.
    """
    if not isinstance(event, core.Event):
        try:
            event = core.parse_event(event)
        except core.InvalidObject:
            return []
    if event.reason != REASON or event.involvedObject.kind not in (None, "Pod"):
        return []
    facts = parse_message(event.message)
    if facts is None:
        return []
    involved = event.involvedObject
    if pod is not None and involved.uid and pod.metadata.uid and pod.metadata.uid != involved.uid:
        pod = None
    where = _where(event, pod, facts)
    if where is None:
        return []
    namespace, name, pod_uid, container, at = where
    from_path = parse_field_path(involved.fieldPath)
    known = _what_the_pod_knows(pod, container, facts=facts, node_memory_capacity=node_memory_capacity,
                                container_type=from_path[0] if from_path else types.ContainerType.CONTAINER)
    node = event.source.host or known.node
    first = facts.oom_kill - min(facts.new_kills, evidence.MAX_KILLS_PER_EVENT) + 1
    base = ChildOOMKill(
        namespace=namespace, pod=name, pod_uid=pod_uid, container=container, container_type=known.container_type,
        node=node, at=at, started_at=known.started_at, restart_count=known.restart_count,
        exit_code=kills.OOM_EXIT_CODE, container_id=facts.container_id, request=known.request,
        limit_at_kill=facts.limit if facts.limit is not None else known.limit, qos_class=known.qos_class,
        oom_score_adj=known.oom_score_adj, pod_memory_limit=known.pod_limit, oom_kill_counter=first,
        hit_own_limit=facts.hit_limit,
    )
    return [dataclasses.replace(base, oom_kill_counter=counter) for counter in range(first, facts.oom_kill + 1)]


def _where(event: core.Event, pod: core.Pod | None,
           facts: ChildKillFacts) -> tuple[str, str, str, str, datetime.datetime] | None:
    """(namespace, pod, pod uid, container, time) of the kills, from the event and else the pod;
    None when any of them is unknown."""
    involved = event.involvedObject
    from_path = parse_field_path(involved.fieldPath)
    container = from_path[1] if from_path else facts.container
    pod_uid = involved.uid or (pod.metadata.uid if pod is not None else None)
    namespace = involved.namespace or event.metadata.namespace or (pod.metadata.namespace if pod else None)
    name = involved.name or (pod.metadata.name if pod else None)
    at = event.eventTime or event.lastTimestamp or event.firstTimestamp or event.metadata.creationTimestamp
    if not container or not pod_uid or not namespace or not name or at is None:
        return None
    return namespace, name, pod_uid, container, at


@dataclasses.dataclass(frozen=True)
class _PodFacts:
    """What only the pod knows of a child kill's container (defaults without the pod)."""

    container_type: types.ContainerType
    qos_class: types.QOSClass
    oom_score_adj: int | None
    request: int | None = None
    limit: int | None = None
    pod_limit: int | None = None
    node: str | None = None
    restart_count: int = 0
    started_at: datetime.datetime | None = None


def _what_the_pod_knows(pod: core.Pod | None, container: str, *, facts: ChildKillFacts, node_memory_capacity: int | None,
                        container_type: types.ContainerType) -> _PodFacts:
    """Without the pod, the QoS class comes from the message, and oom_score_adj is known for
    Guaranteed and BestEffort only."""
    if pod is None:
        adj = {types.QOSClass.GUARANTEED: qos.GUARANTEED_OOM_SCORE_ADJ,
               types.QOSClass.BEST_EFFORT: qos.BEST_EFFORT_OOM_SCORE_ADJ}.get(facts.qos_class)
        return _PodFacts(container_type=container_type, qos_class=facts.qos_class, oom_score_adj=adj)
    found = resources.find_container(pod, container)
    status = resources.find_status(pod, container)
    started_at = None
    if status is not None and bare_container_id(status.containerID) == facts.container_id and status.state.running is not None:
        started_at = status.state.running.startedAt
    return _PodFacts(
        container_type=found[1] if found is not None else container_type,
        qos_class=qos.effective_qos_class(pod),
        oom_score_adj=qos.oom_score_adj(pod=pod, container_name=container, node_memory_capacity=node_memory_capacity),
        request=resources.memory_request(pod, container),
        limit=resources.memory_limit(pod, container),
        pod_limit=resources.pod_memory_limit(pod),
        node=pod.spec.nodeName,
        restart_count=status.restartCount if status is not None else 0,
        started_at=started_at,
    )


def kill_from_event(
    event: core.Event | Mapping[str, Any],
    *,
    pod: core.Pod | None,
    node_memory_capacity: int | None = None,
) -> kills.OOMKill | None:
    """The newest kill an OOMKillChildProcess event stands for, or None (see `kills_from_event`).

    An event may stand for several kills (`newKills` > 1: two workers killed between two reads of the
    counter); use `kills_from_event` to count them all.
    """
    found = kills_from_event(event, pod=pod, node_memory_capacity=node_memory_capacity)
    return found[-1] if found else None


def same_kill(
    child: kills.OOMKill,
    status_kill: kills.OOMKill,
    *,
    tolerance: datetime.timedelta = DEFAULT_TOLERANCE,
) -> bool:
    """Whether a kill from the agent and a kill from the pod status are one and the same.

    The rule: the same pod UID and container name; when both carry a container ID, the same one
    (the agent reads the counter of the instance that was killed, and the pod status records the
    killed instance's ID in its terminated state), compared without the `containerd://` scheme; and
    both times known and at most `tolerance` apart. The agent's time is when it read the risen
    counter, at most one poll interval after the kill; finishedAt is when the runtime saw the main
    process exit, truncated to the second. So `tolerance` must exceed the poll interval + 1s.
    """
    if child.pod_uid != status_kill.pod_uid or child.container != status_kill.container:
        return False
    child_id, status_id = bare_container_id(child.container_id), bare_container_id(status_kill.container_id)
    if child_id and status_id and child_id != status_id:
        return False
    if child.at is None or status_kill.at is None:
        return False
    return abs(child.at - status_kill.at) <= tolerance
