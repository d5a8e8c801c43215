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

from oomtuner.api import core
from oomtuner.domain import workload
from oomtuner.kube import api

logger = logging.getLogger(__name__)

_PATHS: dict[str, tuple[str, str, str]] = {
    # kind: (group, version, plural)
    "ReplicaSet": ("apps", "v1", "replicasets"),
    "Deployment": ("apps", "v1", "deployments"),
    "StatefulSet": ("apps", "v1", "statefulsets"),
    "DaemonSet": ("apps", "v1", "daemonsets"),
    "Job": ("batch", "v1", "jobs"),
    "CronJob": ("batch", "v1", "cronjobs"),
    "Pod": ("", "v1", "pods"),
}

# kind → the owner kinds worth following from it.
_FOLLOW = {"Pod": {"ReplicaSet", "StatefulSet", "DaemonSet", "Job"}, "ReplicaSet": {"Deployment"}, "Job": {"CronJob"}}


def path_of(*, kind: str, namespace: str, name: str | None = None) -> str:
    group, version, plural = _PATHS[kind]
    return api.namespaced(group=group, version=version, plural=plural, namespace=namespace, name=name)


def _controller(meta: Mapping[str, Any]) -> Mapping[str, Any] | None:
    refs = meta.get("ownerReferences") or []
    for ref in refs:
        if ref.get("controller"):
            return dict(ref)
    return None


def read(client: api.Client, *, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
    """The workload body, or None when it is gone or cannot be read."""
    try:
        return client.get_or_none(path_of(kind=kind, namespace=namespace, name=name))
    except api.ApiError as exc:
        logger.warning("cannot read %s %s/%s: %s", kind, namespace, name, exc)
        return None


# The controller of a ReplicaSet or Job, by (namespace, kind, name, uid). An owner reference does not
# change, so a burst of kills in one Deployment reads its ReplicaSet once. Bounded; the oldest go.
_CHAIN: dict[tuple[str, str, str, str], tuple[str, str] | None] = {}
_CHAIN_CAPACITY = 10_000


def top_owner(client: api.Client, pod_body: Mapping[str, Any]) -> tuple[str, str]:
    """(kind, name) of the workload a pod belongs to, without reading the workload itself.

    Deployment (through its ReplicaSet), StatefulSet, DaemonSet, CronJob (through its Job), a bare
    ReplicaSet or Job, or ("Pod", name) for a bare pod. An intermediate owner is read once: its
    link upwards never changes, so it is cached. One that cannot be read ends the walk at the pod.
    """
    meta = pod_body.get("metadata") or {}
    namespace, pod_name = str(meta.get("namespace") or ""), str(meta.get("name") or "")
    ref = _controller(meta)
    if ref is None or ref.get("kind") not in _FOLLOW["Pod"]:
        return "Pod", pod_name
    kind, name = str(ref["kind"]), str(ref["name"])
    if kind not in _FOLLOW:  # StatefulSet, DaemonSet: the top already
        return kind, name
    key = (namespace, kind, name, str(ref.get("uid") or ""))
    if key not in _CHAIN:
        owner = read(client, kind=kind, namespace=namespace, name=name)
        if owner is None:
            return "Pod", pod_name
        up = _controller(owner.get("metadata") or {})
        if len(_CHAIN) >= _CHAIN_CAPACITY:
            _CHAIN.pop(next(iter(_CHAIN)))
        _CHAIN[key] = (str(up["kind"]), str(up["name"])) if up and up.get("kind") in _FOLLOW[kind] else None
    link = _CHAIN[key]
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


def resolve(client: api.Client, pod_body: Mapping[str, Any]) -> workload.Workload:
    """The top-most readable controller of the pod, as a Workload (the pod itself for bare pods)."""
    kind, name = top_owner(client, pod_body)
    return workload_of(client, pod_body, kind=kind, name=name)


def read_workload(client: api.Client, *, kind: str, namespace: str, name: str) -> workload.Workload | None:
    body = read(client, kind=kind, namespace=namespace, name=name)
    if body is None:
        return None
    return workload.from_body({**body, "apiVersion": _api_version(kind), "kind": kind})


def _api_version(kind: str) -> str:
    group, version, _ = _PATHS[kind]
    return f"{group}/{version}" if group else version


def pods_on_node(client: api.Client, *, node: str, namespaces: Sequence[str] = ()) -> list[core.Pod]:
    """All pods scheduled to a node (for naming the likely culprit of a node OOM); with `namespaces`,
    only theirs (an operator that watches some namespaces may list pods in those only)."""
    query = {"fieldSelector": f"spec.nodeName={node}"}
    if namespaces:
        bodies = [body for namespace in namespaces
                  for body in client.list(api.namespaced(group="", version="v1", plural="pods", namespace=namespace), query=query)]
    else:
        bodies = client.list("/api/v1/pods", query=query)
    pods = []
    for body in bodies:
        try:
            pods.append(core.parse_pod(body))
        except core.InvalidObject as exc:
            logger.warning("skipping pod: %s", exc)
    return pods
