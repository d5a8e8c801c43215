"""Owner resolution: from a pod to the workload that a patch must change.

Pod → ReplicaSet → Deployment, Pod → StatefulSet / DaemonSet, Pod → Job → CronJob, and bare pods.
A ReplicaSet with no controller is a workload of its own; a Job with no CronJob is one too (its
template is immutable, so it gets recommendations only). An owner that cannot be read (deleted,
forbidden) ends the walk at the last object that could be read.
"""

from __future__ import annotations

import logging
from typing import Any, Mapping

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


def resolve(client: api.Client, pod_body: Mapping[str, Any]) -> workload.Workload:
    """The top-most readable controller of the pod, as a Workload (the pod itself for bare pods).

    The workload itself is always read fresh (its template is the current memory); only the links
    between intermediate owners are cached.
    """
    body: Mapping[str, Any] = pod_body
    kind = "Pod"
    namespace = (pod_body.get("metadata") or {}).get("namespace") or ""
    while True:
        ref = _controller(body.get("metadata") or {})
        if ref is None or ref.get("kind") not in _FOLLOW.get(kind, set()):
            break
        key = (namespace, str(ref["kind"]), str(ref["name"]), str(ref.get("uid") or ""))
        link = _CHAIN.get(key, ("", "")) if ref["kind"] in ("ReplicaSet", "Job") else ("", "")
        if link is None or link[0]:
            # Known: skip reading the intermediate owner, go to its controller (or stop at it).
            target_kind, target_name = (ref["kind"], ref["name"]) if link is None else link
            owner = read(client, kind=target_kind, namespace=namespace, name=target_name)
            if owner is None:
                break
            body, kind = owner, target_kind
            if link is None:
                break
            continue
        owner = read(client, kind=ref["kind"], namespace=namespace, name=ref["name"])
        if owner is None:
            break
        if ref["kind"] in ("ReplicaSet", "Job"):
            up = _controller(owner.get("metadata") or {})
            if len(_CHAIN) >= _CHAIN_CAPACITY:
                _CHAIN.pop(next(iter(_CHAIN)))
            _CHAIN[key] = (str(up["kind"]), str(up["name"])) if up and up.get("kind") in _FOLLOW[ref["kind"]] else None
        body, kind = owner, ref["kind"]
    if kind == "Pod":
        body = {"apiVersion": "v1", "kind": "Pod", **{k: v for k, v in pod_body.items() if k not in ("apiVersion", "kind")}}
    else:
        body = {"apiVersion": _api_version(kind), "kind": kind, **{k: v for k, v in body.items() if k not in ("apiVersion", "kind")}}
    return workload.from_body(body)


def read_workload(client: api.Client, *, kind: str, namespace: str, name: str) -> workload.Workload | None:
    body = read(client, kind=kind, namespace=namespace, name=name)
    if body is None:
        return None
    return workload.from_body({**body, "apiVersion": _api_version(kind), "kind": kind})


def _api_version(kind: str) -> str:
    group, version, _ = _PATHS[kind]
    return f"{group}/{version}" if group else version


def pods_on_node(client: api.Client, *, node: str) -> list[core.Pod]:
    """All pods scheduled to a node (for naming the likely culprit of a node OOM)."""
    bodies = client.list("/api/v1/pods", query={"fieldSelector": f"spec.nodeName={node}"})
    pods = []
    for body in bodies:
        try:
            pods.append(core.parse_pod(body))
        except core.InvalidObject as exc:
            logger.warning("skipping pod: %s", exc)
    return pods
