"""A workload as the operator sees it: its identity, its pod template and who manages it.

Every kind (Deployment, StatefulSet, DaemonSet, ReplicaSet, Job, CronJob, bare Pod) is reduced to
the same shape, so recommending and patching need not know the kind. The pod template is parsed
with the same model as a pod (`api.core`), which is what it is.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from oomtuner.api import core, kinds, recommendation, types, workloads
from oomtuner.domain import recommend, resources


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
    # The equality part of its pod selector (spec.selector.matchLabels), which never changes: every pod
    # it owns carries these labels, whatever its template's labels were when the pod was made.
    selector: Mapping[str, str] = field(default_factory=dict)

    @property
    def ref(self) -> recommendation.TargetRef:
        return recommendation.TargetRef(apiVersion=self.api_version, kind=self.kind, name=self.name)

    @property
    def display(self) -> str:
        return f"{self.kind}/{self.name}"

    @property
    def patchable(self) -> bool:
        return kinds.patchable(self.kind)

    def containers(self) -> list[recommend.ContainerResources]:
        """The template's containers with their memory request and limit, in bytes."""
        return containers_of(self.template)


def adopts(target: Workload, rec: recommendation.OOMRecommendation) -> bool:
    """Whether `rec` belongs to `target`: its targetRef names it and an owner reference carries its
    uid. A recommendation someone else created under the workload's name, or one left from an
    earlier object of the same name, is not adopted: nothing is recorded in it or applied from it."""
    ref = rec.spec.targetRef
    if (ref.kind, ref.name) != (target.kind, target.name) or not target.uid:
        return False
    return any(o.uid == target.uid for o in rec.metadata.ownerReferences)


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


def desired_pods(obj: workloads.WorkloadObject) -> int | None:
    """How many pods the workload runs when it has what it asks for.

    spec.replicas of a Deployment, StatefulSet or ReplicaSet and the parallelism of a Job (a CronJob's
    jobTemplate) — 1 when unset, as the API server defaults them; 1 for a bare pod; a DaemonSet's
    status.desiredNumberScheduled, None before its controller has counted the nodes. An unknown kind,
    or a value that is not a whole number, gives None.
    """
    if obj.kind == kinds.POD:
        return 1
    if obj.kind in (kinds.DEPLOYMENT, kinds.STATEFUL_SET, kinds.REPLICA_SET):
        return _count(obj.spec.replicas, unset=1)
    if obj.kind == kinds.CRON_JOB:
        return _count(obj.spec.jobTemplate.spec.parallelism, unset=1)
    if obj.kind == kinds.JOB:
        return _count(obj.spec.parallelism, unset=1)
    if obj.kind == kinds.DAEMON_SET:
        return _count(obj.status.desiredNumberScheduled, unset=None)
    return None


def _count(value: Any, *, unset: int | None) -> int | None:
    if value is None:
        return unset
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def from_body(body: Mapping[str, Any]) -> Workload:
    """Build a Workload from a workload body that carries apiVersion and kind (`api.workloads`).

    Raises core.InvalidObject when the object or its template cannot be read.
    """
    return from_object(workloads.parse(body))


def from_object(obj: workloads.WorkloadObject) -> Workload:
    """The Workload of a parsed workload object. Raises core.InvalidObject when its template cannot
    be read, and KeyError for a kind the registry does not know."""
    kinds.get(obj.kind)
    meta, template = obj.metadata, obj.template
    tmeta = template.metadata
    pod = core.parse_pod({
        "metadata": {"name": meta.name, "namespace": meta.namespace, "labels": tmeta.labels, "annotations": tmeta.annotations},
        "spec": template.spec,
    })
    selector = obj.spec.jobTemplate.spec.selector if obj.kind == kinds.CRON_JOB else obj.spec.selector
    return Workload(
        api_version=obj.apiVersion,
        kind=obj.kind,
        name=meta.name,
        namespace=meta.namespace or "",
        uid=meta.uid,
        generation=meta.generation,
        annotations=dict(meta.annotations),
        template_labels=dict(tmeta.labels),
        template_annotations=dict(tmeta.annotations),
        template=pod,
        managed_fields=tuple(meta.managedFields),
        replicas=desired_pods(obj),
        selector=dict(selector.matchLabels),
    )
