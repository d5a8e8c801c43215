"""A workload as the operator sees it: its identity, its pod template and who manages it.

Every kind (Deployment, StatefulSet, DaemonSet, ReplicaSet, Job, CronJob, bare Pod) is reduced to
the same shape, so recommending and patching need not know the kind. The pod template is parsed
with the same model as a pod (`api.core`), which is what it is.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from oomtuner.api import core, recommendation, types
from oomtuner.domain import patch, recommend, resources


@dataclass(frozen=True)
class Workload:
    api_version: str
    kind: str
    name: str
    namespace: str
    uid: str | None
    generation: int | None
    annotations: Mapping[str, str]
    template_labels: Mapping[str, str]
    template_annotations: Mapping[str, str]
    template: core.Pod
    managed_fields: tuple[Mapping[str, Any], ...] = field(default=())
    # How many pods the workload runs (`desired_pods`); None when not known yet.
    replicas: int | None = None

    @property
    def ref(self) -> recommendation.TargetRef:
        return recommendation.TargetRef(apiVersion=self.api_version, kind=self.kind, name=self.name)

    @property
    def display(self) -> str:
        return f"{self.kind}/{self.name}"

    @property
    def patchable(self) -> bool:
        return self.kind in patch.PATCHABLE

    def containers(self) -> list[recommend.ContainerResources]:
        """The template's containers with their memory request and limit, in bytes."""
        return containers_of(self.template)


def containers_of(pod: core.Pod) -> list[recommend.ContainerResources]:
    """Init containers and sidecars first, then regular ones, with their memory in bytes."""
    result: list[recommend.ContainerResources] = []
    for c in pod.spec.initContainers:
        kind = types.ContainerType.SIDECAR if resources.is_sidecar(c) else types.ContainerType.INIT
        result.append(_resources(c, kind))
    for c in pod.spec.containers:
        result.append(_resources(c, types.ContainerType.CONTAINER))
    return result


def _resources(c: core.Container, kind: types.ContainerType) -> recommend.ContainerResources:
    return recommend.ContainerResources(
        name=c.name, type=kind, request=resources.bytes_of(c.resources.requests), limit=resources.limit_bytes(c.resources.limits)
    )


def _template_of(kind: str, body: Mapping[str, Any]) -> Mapping[str, Any]:
    if kind == "Pod":
        return {"metadata": body.get("metadata") or {}, "spec": body.get("spec") or {}}
    node: Any = body
    for key in patch.TEMPLATE_PATH[kind]:
        node = (node or {}).get(key) if isinstance(node, Mapping) else None
    return node if isinstance(node, Mapping) else {}


def desired_pods(kind: str, body: Mapping[str, Any]) -> int | None:
    """How many pods the workload runs when it has what it asks for.

    spec.replicas of a Deployment, StatefulSet or ReplicaSet and the parallelism of a Job (a CronJob's
    jobTemplate) — 1 when unset, as the API server defaults them; 1 for a bare pod; a DaemonSet's
    status.desiredNumberScheduled, None before its controller has counted the nodes. An unknown kind,
    or a value that is not a whole number, gives None.
    """
    spec = body.get("spec")
    spec = spec if isinstance(spec, Mapping) else {}
    if kind == "Pod":
        return 1
    if kind in ("Deployment", "StatefulSet", "ReplicaSet"):
        return _count(spec.get("replicas"), unset=1)
    if kind == "CronJob":
        template = spec.get("jobTemplate")
        spec = template.get("spec") if isinstance(template, Mapping) else None
        spec = spec if isinstance(spec, Mapping) else {}
        kind = "Job"
    if kind == "Job":
        return _count(spec.get("parallelism"), unset=1)
    if kind == "DaemonSet":
        status = body.get("status")
        return _count(status.get("desiredNumberScheduled"), unset=None) if isinstance(status, Mapping) else None
    return None


def _count(value: Any, *, unset: int | None) -> int | None:
    if value is None:
        return unset
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def from_body(body: Mapping[str, Any]) -> Workload:
    """Build a Workload from a workload body that carries apiVersion and kind.

    Raises core.InvalidObject when the template cannot be read.
    """
    kind = str(body.get("kind") or "")
    meta = body.get("metadata") or {}
    template = _template_of(kind, body)
    tmeta = template.get("metadata") or {}
    pod = core.parse_pod(
        {
            "metadata": {"name": meta.get("name"), "namespace": meta.get("namespace"), **tmeta},
            "spec": template.get("spec") or {},
        }
    )
    return Workload(
        api_version=str(body.get("apiVersion") or ""),
        kind=kind,
        name=str(meta.get("name") or ""),
        namespace=str(meta.get("namespace") or ""),
        uid=meta.get("uid"),
        generation=meta.get("generation"),
        annotations=dict(meta.get("annotations") or {}),
        template_labels=dict(tmeta.get("labels") or {}),
        template_annotations=dict(tmeta.get("annotations") or {}),
        template=pod,
        managed_fields=tuple(meta.get("managedFields") or ()),
        replicas=desired_pods(kind, body),
    )
