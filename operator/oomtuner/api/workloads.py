"""Lenient models of the workload objects the operator reads: Deployments, StatefulSets, DaemonSets,
ReplicaSets, Jobs, CronJobs, and a Pod as a workload of its own.

Only what the operator uses is modelled: metadata, the replica count (or a Job's parallelism, or a
DaemonSet's scheduled count), the selector's labels and the pod template. Like `api.core`, unknown
fields are ignored and an explicit null counts as absent. The pod template's spec stays a plain
mapping here: `domain.workload` parses it with `core.parse_pod`, whose errors name the field.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pydantic

from oomtuner.api import core, kinds


class LabelSelector(core._Lenient):
    matchLabels: dict[str, str] = pydantic.Field(default_factory=dict)


class PodTemplate(core._Lenient):
    metadata: core.ObjectMeta = pydantic.Field(default_factory=core.ObjectMeta)
    spec: dict[str, Any] = pydantic.Field(default_factory=dict)


class JobSpec(core._Lenient):
    # Kept as given: `domain.workload.desired_pods` decides what is a usable count.
    parallelism: Any = None
    selector: LabelSelector = pydantic.Field(default_factory=LabelSelector)
    template: PodTemplate = pydantic.Field(default_factory=PodTemplate)


class JobTemplate(core._Lenient):
    spec: JobSpec = pydantic.Field(default_factory=JobSpec)


class WorkloadSpec(core._Lenient):
    replicas: Any = None
    parallelism: Any = None
    selector: LabelSelector = pydantic.Field(default_factory=LabelSelector)
    template: PodTemplate = pydantic.Field(default_factory=PodTemplate)
    jobTemplate: JobTemplate = pydantic.Field(default_factory=JobTemplate)


class WorkloadStatus(core._Lenient):
    desiredNumberScheduled: Any = None


class WorkloadObject(core._Lenient):
    apiVersion: str = ""
    kind: str = ""
    metadata: core.ObjectMeta = pydantic.Field(default_factory=core.ObjectMeta)
    spec: WorkloadSpec = pydantic.Field(default_factory=WorkloadSpec)
    status: WorkloadStatus = pydantic.Field(default_factory=WorkloadStatus)
    # A bare Pod is its own template: its spec as given.
    podSpec: dict[str, Any] = pydantic.Field(default_factory=dict)

    @property
    def template(self) -> PodTemplate:
        """The pod template, wherever the kind keeps it (`api.kinds`)."""
        if self.kind == kinds.POD:
            return PodTemplate(metadata=self.metadata, spec=self.podSpec)
        if self.kind == kinds.CRON_JOB:
            return self.spec.jobTemplate.spec.template
        return self.spec.template


def parse(body: Mapping[str, Any]) -> WorkloadObject:
    """Parse a workload body that carries apiVersion and kind. Raises core.InvalidObject naming the
    object and the field when it cannot be read even leniently."""
    if not isinstance(body, Mapping):
        raise core.InvalidObject(f"workload: expected an object, got {type(body).__name__}")
    kind = str(body.get("kind") or "")
    if kind == kinds.POD:
        spec = body.get("spec")
        body = {**body, "spec": {}, "podSpec": spec if isinstance(spec, Mapping) else {}}
    return core.parse_object(WorkloadObject, body, kind=kind or "workload")
