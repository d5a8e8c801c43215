"""Why the kernel killed a container: its own memory limit (Limit), the node running out (Node), or
not enough evidence to say (Unknown).

The fix depends on the answer (README, "How a kill is seen, counted and classified"): a Limit kill needs a higher limit, a Node
kill a higher request, so the scheduler reserves what the container really uses. Every answer comes
with its evidence as a sentence, because a recommendation must say why.

Evidence, strongest first:
1. A node OOM on the kill's node close in time: the kubelet's `SystemOOM` event (posted when the
   memory cgroup that ran out is the root, i.e. the whole machine) or node-problem-detector's
   `OOMKilling` for a machine-wide "Out of memory" (its memory-cgroup kills are not node OOMs).
2. No memory limit at all (neither on the container nor at pod level): the container cannot hit a
   limit it does not have, so only the node running out can have killed it.
3. A limit: the container most likely hit it.

Known blind spot: when the pods together exceed the node's allocatable memory, the kernel kills inside
the `kubepods` cgroup, which is not the root, and no SystemOOM event is posted. A container with a
limit killed that way is classified Limit. The node agent (reading cgroup counters) will close this.
"""

from __future__ import annotations

import dataclasses
import datetime
import re
from collections.abc import Mapping, Sequence
from typing import Literal

from oomtuner.api import core, types
from oomtuner.domain import duration, kills, qos, quantity

SYSTEM_OOM = "SystemOOM"
OOM_KILLING = "OOMKilling"
DEFAULT_WINDOW = datetime.timedelta(minutes=2)

_SYSTEM_OOM_VICTIM = re.compile(r"victim process: (?P<name>[^,]+)")
_KERNEL_VICTIM = re.compile(r"Killed process \d+ \((?P<name>[^)]*)\)")
_MEMCG_OOM = "Memory cgroup out of memory"


@dataclasses.dataclass(frozen=True)
class NodeOOM:
    """A machine-wide out-of-memory on a node, read from an event.

    `at` is when it (last) happened. An aggregated event (count > 1) stands for several OOMs between
    `first_at` and `at`. `victim` is the process the kernel killed, when the event names it.
    """

    node: str
    at: datetime.datetime
    victim: str | None
    source: Literal["SystemOOM", "OOMKilling"]
    first_at: datetime.datetime | None = None
    count: int = 1


def node_oom_from_event(event: core.Event) -> NodeOOM | None:
    """Read a node OOM from an event, or None if the event is not one.

    - reason "SystemOOM" on a Node (the kubelet: "System OOM encountered, victim process: X, pid: N",
      maybe prefixed "(combined from similar events): ");
    - reason "OOMKilling" on a Node (node-problem-detector's kernel monitor) unless the kernel line
      says "Memory cgroup out of memory", which is a container hitting its own limit.
    Returns None for any other reason, an involved object that is not a Node, a missing node name, or
    an event without any timestamp (lastTimestamp, eventTime, firstTimestamp, creationTimestamp).
    """
    reason = event.reason
    if reason not in (SYSTEM_OOM, OOM_KILLING):
        return None
    if event.involvedObject.kind != "Node" or not event.involvedObject.name:
        return None
    message = event.message or ""
    if reason == OOM_KILLING and _MEMCG_OOM in message:
        return None
    at = event.lastTimestamp or event.eventTime or event.firstTimestamp or event.metadata.creationTimestamp
    if at is None:
        return None
    pattern = _SYSTEM_OOM_VICTIM if reason == SYSTEM_OOM else _KERNEL_VICTIM
    victim_match = pattern.search(message)
    first_at = event.firstTimestamp if event.firstTimestamp is not None and event.firstTimestamp < at else None
    source: Literal["SystemOOM", "OOMKilling"] = "SystemOOM" if reason == SYSTEM_OOM else "OOMKilling"
    return NodeOOM(
        node=event.involvedObject.name,
        at=at,
        victim=victim_match["name"].strip() if victim_match else None,
        source=source,
        first_at=first_at,
        count=max(event.count or 1, 1),
    )


def _distance(node_oom: NodeOOM, at: datetime.datetime) -> datetime.timedelta:
    """How far `at` lies outside the span [first_at, at] of the node OOM (zero inside it)."""
    start = node_oom.first_at or node_oom.at
    if at < start:
        return start - at
    if at > node_oom.at:
        return at - node_oom.at
    return datetime.timedelta(0)


def _describe_node_oom(node_oom: NodeOOM) -> str:
    text = f"{node_oom.source} on node {node_oom.node} at {node_oom.at.isoformat()}"
    if node_oom.count > 1:
        text += f" ({node_oom.count}× since {(node_oom.first_at or node_oom.at).isoformat()})"
    if node_oom.victim:
        text += f", victim process {node_oom.victim}"
    return text


def classify(
    kill: kills.OOMKill, *, node_ooms: Sequence[NodeOOM], window: datetime.timedelta = DEFAULT_WINDOW
) -> tuple[types.Classification, str]:
    """Classify a kill and say why, in one sentence of evidence.

    Rules, in order:
    1. A node OOM on the kill's node within `window` of the kill's finishedAt → Node (the nearest one
       is cited, with the time between them).
    2. The kill has no finishedAt but its node had a node OOM → Unknown: the two cannot be matched in
       time, and either explanation fits.
    3. No container memory limit and no pod-level limit → Node: only the node running out can kill it.
    4. A container memory limit → Limit (the limit is cited).
    5. Only a pod-level limit → Limit: the pod's cgroup limit, shared by its containers, was reached.
    A kill without a node name can only be matched by rules 3-5.
    """
    on_node = [n for n in node_ooms if kill.node and n.node == kill.node]
    if kill.at is not None:
        near = [n for n in on_node if _distance(n, kill.at) <= window]
        if near:
            killed_at = kill.at
            nearest = min(near, key=lambda n: (_distance(n, killed_at), n.at))
            start = nearest.first_at or nearest.at
            if killed_at < start:
                when = f"{duration.format(start - killed_at)} after the kill"
            elif killed_at > nearest.at:
                when = f"{duration.format(killed_at - nearest.at)} before the kill"
            elif nearest.first_at is not None:
                when = "the kill happened while they lasted"
            else:
                when = "at the same moment as the kill"
            return types.Classification.NODE, f"node ran out of memory: {_describe_node_oom(nearest)}, {when}"
    elif on_node:
        latest = max(on_node, key=lambda n: n.at)
        return (
            types.Classification.UNKNOWN,
            f"the kill has no finishedAt, so it cannot be matched with {_describe_node_oom(latest)}",
        )
    quiet = f"no node OOM seen on {kill.node} within ±{duration.format(window)}" if kill.node else "node unknown"
    if kill.limit_at_kill is None and kill.pod_memory_limit is None:
        return (
            types.Classification.NODE,
            f"no memory limit: only the node running out can kill it ({quiet})",
        )
    if kill.limit_at_kill is not None:
        return (
            types.Classification.LIMIT,
            f"hit its memory limit {quantity.humanize(kill.limit_at_kill)} ({quiet})",
        )
    pod_limit = quantity.humanize(kill.pod_memory_limit or 0)
    return (
        types.Classification.LIMIT,
        f"no container limit: the pod-level memory limit {pod_limit} shared by its containers was reached ({quiet})",
    )


@dataclasses.dataclass(frozen=True)
class Culprit:
    """The container on a node using the most memory beyond its request: the likely cause of a node OOM."""

    namespace: str | None
    pod: str | None
    container: str | None
    usage_bytes: int
    request_bytes: int | None
    excess_bytes: int

    @property
    def reason(self) -> str:
        """One sentence of evidence, e.g. "shop/web-0/app uses 900Mi, 700Mi above its request 200Mi";
        a culprit whose names are withheld (`redaction.culprit`) is "a container in another namespace"."""
        request = quantity.humanize(self.request_bytes) if self.request_bytes else "none"
        who = f"{self.namespace}/{self.pod}/{self.container}" if self.pod else "a container in another namespace"
        return (
            f"{who} uses {quantity.humanize(self.usage_bytes)}, "
            f"{quantity.humanize(self.excess_bytes)} above its request ({request})"
        )


def likely_culprit(candidates: Sequence[qos.VictimCandidate]) -> Culprit | None:
    """Name the container using the most memory above its request on a node that ran out.

    Candidates without measured usage are skipped (a request says nothing about use); a missing request
    counts as 0. Returns None when no candidate has usage, or when nobody is above its request (then
    the node is overcommitted by something outside the pods, or by limits, and no container is to
    blame). Ties go to namespace/pod/container order, so the answer is deterministic.
    """
    best: Culprit | None = None
    for candidate in sorted(candidates, key=lambda c: (c.namespace, c.pod, c.container)):
        if candidate.usage_bytes is None:
            continue
        excess = candidate.usage_bytes - (candidate.request_bytes or 0)
        if excess <= 0:
            continue
        if best is None or excess > best.excess_bytes:
            best = Culprit(
                namespace=candidate.namespace,
                pod=candidate.pod,
                container=candidate.container,
                usage_bytes=candidate.usage_bytes,
                request_bytes=candidate.request_bytes,
                excess_bytes=excess,
            )
    return best


@dataclasses.dataclass(frozen=True)
class CulpritFinding:
    """The answer to "who ran the node out of memory?": the likely culprit, or None, and the evidence
    (or why nobody is named) as one sentence."""

    culprit: Culprit | None
    reason: str
    basis: str = ""  # where the usage came from, when a culprit is named


def no_culprit(why: str) -> CulpritFinding:
    return CulpritFinding(culprit=None, reason=f"no culprit named: {why}")


def culprit_on_node(
    pods: Sequence[core.Pod],
    *,
    node: str,
    node_memory_capacity: int | None,
    usage: Mapping[tuple[str, str, str], int],
    basis: str,
) -> CulpritFinding:
    """The likely culprit of a node OOM among the pods on that node (`likely_culprit`).

    `usage` maps (namespace, pod, container) to the working set measured near the kill; requests come
    from the pod specs, in-place-resize aware. `basis` says where the usage comes from (e.g. "peak
    working set over the 5m up to the kill, from Prometheus") and ends the evidence. Regular containers
    and sidecars are the candidates. Needs the node's memory capacity (a candidate's oom_score_adj
    depends on it); without it nobody is named.
    """
    if not usage:
        return no_culprit(f"no usage data for the pods on node {node}")
    if node_memory_capacity is None or node_memory_capacity <= 0:
        return no_culprit(f"the memory capacity of node {node} is unknown")
    by_pod = qos.usage_by_pod(usage)
    candidates: list[qos.VictimCandidate] = []
    for pod in pods:
        measured = by_pod.get((pod.metadata.namespace or "", pod.metadata.name), {})
        candidates += qos.candidates_from_pod(pod, node_memory_capacity=node_memory_capacity, usage=measured)
    found = likely_culprit(candidates)
    if found is not None:
        return CulpritFinding(culprit=found, reason=f"likely culprit: {found.reason}; {basis}", basis=basis)
    measured_count = sum(1 for c in candidates if c.usage_bytes is not None)
    if not measured_count:
        return no_culprit(f"no usage data for the containers of the {len(pods)} pod(s) on node {node}")
    return no_culprit(
        f"none of the {measured_count} measured container(s) on node {node} used more than its memory request "
        f"({basis}): the memory went to something outside the measured containers"
    )
