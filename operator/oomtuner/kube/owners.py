"""Owner resolution: from a pod to the workload that a patch must change.

Pod → ReplicaSet → Deployment, Pod → StatefulSet / DaemonSet, Pod → Job → CronJob, and bare pods.
A ReplicaSet with no controller is a workload of its own; a Job with no CronJob is one too (its
template is immutable, so it gets recommendations only). An owner that cannot be read (deleted,
forbidden) ends the walk at the last object that could be read.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable, Mapping, Sequence

from oomtuner.api import core, kinds
from oomtuner.domain import workload
from oomtuner.kube import api

logger = logging.getLogger(__name__)

def path_of(*, kind: str, namespace: str, name: str | None = None) -> str:
    entry = kinds.get(kind)
    return api.namespaced(group=entry.group, version=entry.version, plural=entry.plural, namespace=namespace, name=name)


def _controller(meta: Mapping[str, Any]) -> Mapping[str, Any] | None:
    refs = meta.get("ownerReferences") or []
    for ref in refs:
        if ref.get("controller"):
            return dict(ref)
    return None


def read(client: api.Client, *, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
    """The workload body, or None when it is gone or may not be read (refused for good). A passing
    failure (`api.passing`: no answer, 5xx, 429) is raised, so the caller tries again later instead
    of taking the pod for its own workload."""
    try:
        return client.get_or_none(path_of(kind=kind, namespace=namespace, name=name))
    except api.ApiError as exc:
        if api.passing(exc):
            raise
        logger.warning("cannot read %s %s/%s: %s", kind, namespace, name, exc)
        return None


class Chains:
    """The controller of each ReplicaSet or Job a pod pointed at, by (namespace, kind, name, uid).

    An owner reference does not change, so a burst of kills in one Deployment reads its ReplicaSet
    once. Bounded (the oldest go first) and safe to share between threads.
    """

    def __init__(self, *, capacity: int = 10_000):
        self.capacity = capacity
        self._links: dict[tuple[str, str, str, str], tuple[str, str] | None] = {}
        self._lock = threading.Lock()

    def get(self, key: tuple[str, str, str, str]) -> tuple[bool, tuple[str, str] | None]:
        with self._lock:
            if key in self._links:
                return True, self._links[key]
        return False, None

    def put(self, key: tuple[str, str, str, str], link: tuple[str, str] | None) -> None:
        with self._lock:
            self._links.pop(key, None)
            self._links[key] = link
            while len(self._links) > self.capacity:
                self._links.pop(next(iter(self._links)))


def top_owner(client: api.Client, pod_body: Mapping[str, Any], *, chains: Chains | None = None) -> tuple[str, str]:
    """(kind, name) of the workload a pod belongs to, without reading the workload itself.

    Deployment (through its ReplicaSet), StatefulSet, DaemonSet, CronJob (through its Job), a bare
    ReplicaSet or Job, or ("Pod", name) for a bare pod. An intermediate owner is read once when
    `chains` remembers it (its link upwards never changes). One that cannot be read ends the walk at
    the pod.
    """
    meta = pod_body.get("metadata") or {}
    namespace, pod_name = str(meta.get("namespace") or ""), str(meta.get("name") or "")
    ref = _controller(meta)
    if ref is None or ref.get("kind") not in kinds.get(kinds.POD).owners:
        return kinds.POD, pod_name
    kind, name = str(ref["kind"]), str(ref["name"])
    followed = kinds.get(kind).owners
    if not followed:  # StatefulSet, DaemonSet: the top already
        return kind, name
    key = (namespace, kind, name, str(ref.get("uid") or ""))
    known, link = chains.get(key) if chains is not None else (False, None)
    if not known:
        owner = read(client, kind=kind, namespace=namespace, name=name)
        if owner is None:
            return kinds.POD, pod_name
        up = _controller(owner.get("metadata") or {})
        link = (str(up["kind"]), str(up["name"])) if up and up.get("kind") in followed else None
        if chains is not None:
            chains.put(key, link)
    return link if link is not None else (kind, name)


def workload_of(client: api.Client, pod_body: Mapping[str, Any], *, kind: str, name: str) -> workload.Workload:
    """The workload `top_owner` named, read fresh (its template is the current memory); the pod
    itself for a bare pod, or when the workload cannot be read."""
    namespace = str((pod_body.get("metadata") or {}).get("namespace") or "")
    if kind != "Pod":
        found = read_workload(client, kind=kind, namespace=namespace, name=name)
        if found is not None:
            return found
    return workload.from_body({"apiVersion": "v1", "kind": "Pod",
                               **{k: v for k, v in pod_body.items() if k not in ("apiVersion", "kind")}})


class Workloads:
    """Workload reads for recording kills, kept for `ttl` seconds.

    A burst of kills in one Deployment reads the Deployment once, not once per status write. A
    recommendation computed from a read a second old is corrected by the next kill; a patch is not:
    `fresh` reads past the cache, and every patch is computed against such a read (never lower
    what a user raised a moment ago). Bounded; the oldest reads go first.
    """

    def __init__(self, client: api.Client, *, ttl: float = 2.0, capacity: int = 10_000,
                 clock: Callable[[], float] = time.monotonic):
        self.client = client
        self.ttl = ttl
        self.capacity = capacity
        self.clock = clock
        self._reads: dict[tuple[str, str, str], tuple[float, workload.Workload]] = {}
        self._lock = threading.Lock()

    def of_pod(self, pod_body: Mapping[str, Any], *, kind: str, name: str) -> workload.Workload:
        """`workload_of`, from a read at most `ttl` seconds old."""
        namespace = str((pod_body.get("metadata") or {}).get("namespace") or "")
        key = (kind, namespace, name)
        if kind != "Pod":
            with self._lock:
                cached = self._reads.get(key)
            if cached is not None and self.clock() - cached[0] < self.ttl:
                return cached[1]
        found = workload_of(self.client, pod_body, kind=kind, name=name)
        if found.kind == kind and kind != "Pod":
            self._keep(key, found)
        return found

    def fresh(self, target: workload.Workload) -> workload.Workload | None:
        """The workload read now (None when it is gone or unreadable); the cache keeps the read."""
        found = read_workload(self.client, kind=target.kind, namespace=target.namespace, name=target.name)
        if found is None:
            self.forget(target)
        elif target.kind != "Pod":
            self._keep((target.kind, target.namespace, target.name), found)
        return found

    def forget(self, target: workload.Workload) -> None:
        with self._lock:
            self._reads.pop((target.kind, target.namespace, target.name), None)

    def _keep(self, key: tuple[str, str, str], found: workload.Workload) -> None:
        with self._lock:
            self._reads.pop(key, None)
            self._reads[key] = (self.clock(), found)
            while len(self._reads) > self.capacity:
                self._reads.pop(next(iter(self._reads)))


def resolve(client: api.Client, pod_body: Mapping[str, Any], *, chains: Chains | None = None) -> workload.Workload:
    """The top-most readable controller of the pod, as a Workload (the pod itself for bare pods)."""
    kind, name = top_owner(client, pod_body, chains=chains)
    return workload_of(client, pod_body, kind=kind, name=name)


def read_workload(client: api.Client, *, kind: str, namespace: str, name: str) -> workload.Workload | None:
    body = read(client, kind=kind, namespace=namespace, name=name)
    if body is None:
        return None
    return workload.from_body({**body, "apiVersion": _api_version(kind), "kind": kind})


def _api_version(kind: str) -> str:
    return kinds.get(kind).api_version


def pods_on_node(client: api.Client, *, node: str, namespaces: Sequence[str] = ()) -> list[core.Pod]:
    """All pods scheduled to a node (for naming the likely culprit of a node OOM); with `namespaces`,
    only theirs (an operator that watches some namespaces may list pods in those only)."""
    query = {"fieldSelector": f"spec.nodeName={node}"}
    if namespaces:
        bodies = [body for namespace in namespaces
                  for body in client.list(api.namespaced(group="", version="v1", plural="pods", namespace=namespace), query=query)]
    else:
        bodies = client.list("/api/v1/pods", query=query)
    return _parsed_pods(bodies)


def _parsed_pods(bodies: Sequence[Mapping[str, Any]]) -> list[core.Pod]:
    """The pods of a list, parsed; an unreadable one is skipped with a warning."""
    pods = []
    for body in bodies:
        try:
            pods.append(core.parse_pod(body))
        except core.InvalidObject as exc:
            logger.warning("skipping pod: %s", exc)
    return pods


def _pods_matching(client: api.Client, target: workload.Workload) -> list[core.Pod]:
    """The pods in the workload's namespace that carry its selector's labels (all of the namespace's
    pods when it has none); unreadable ones are skipped."""
    selector = ",".join(f"{k}={v}" for k, v in sorted(target.selector.items()))
    bodies = client.list(api.namespaced(group="", version="v1", plural="pods", namespace=target.namespace),
                         query={"labelSelector": selector} if selector else None)
    return _parsed_pods(bodies)


def _controller_uid(meta: core.ObjectMeta) -> str | None:
    return next((o.uid for o in meta.ownerReferences if o.controller and o.uid), None)


def _owned_intermediates(client: api.Client, target: workload.Workload, kind: str) -> set[str]:
    """UIDs of the ReplicaSets (or Jobs) whose controller is `target`."""
    entry = kinds.get(kind)
    selector = ",".join(f"{k}={v}" for k, v in sorted(target.selector.items()))
    bodies = client.list(api.namespaced(group=entry.group, version=entry.version, plural=entry.plural,
                                        namespace=target.namespace),
                         query={"labelSelector": selector} if selector else None)
    owned = set()
    for body in bodies:
        meta = body.get("metadata") or {}
        ref = _controller(meta)
        if ref is not None and ref.get("uid") == target.uid and meta.get("uid"):
            owned.add(str(meta["uid"]))
    return owned


def owned_pods(client: api.Client, target: workload.Workload) -> list[core.Pod]:
    """The pods `target` owns: whose controller is it, or one of its ReplicaSets (a Deployment) or Jobs
    (a CronJob). Pods of other workloads whose labels happen to match are not among them."""
    if not target.uid:
        return []
    parents = {target.uid}
    if target.kind == kinds.DEPLOYMENT:
        parents = _owned_intermediates(client, target, kinds.REPLICA_SET)
    elif target.kind == kinds.CRON_JOB:
        parents = _owned_intermediates(client, target, kinds.JOB)
    return [p for p in _pods_matching(client, target) if _controller_uid(p.metadata) in parents]


def owned_running_pods(client: api.Client, target: workload.Workload) -> list[core.Pod]:
    return [p for p in owned_pods(client, target) if p.status.phase == "Running"]


def pod_uids(client: api.Client, target: workload.Workload) -> set[str]:
    """The UIDs of the pods that exist now and may belong to `target` (they carry its selector's
    labels). A pod whose UID is not among them is gone for good."""
    return {p.metadata.uid for p in _pods_matching(client, target) if p.metadata.uid}
