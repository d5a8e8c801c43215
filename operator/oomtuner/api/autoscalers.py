"""Lenient models of the other autoscalers a workload may have: VerticalPodAutoscaler
(`autoscaling.k8s.io/v1`, a CRD that may be absent) and HorizontalPodAutoscaler (`autoscaling/v2`).

Only what tells whether one of them sizes the workload's memory is modelled: the target, VPA's
update mode and container policies, and HPA's metrics.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pydantic

from oomtuner.api import core

VPA_GROUP = "autoscaling.k8s.io"
VPA_VERSION = "v1"
VPA_PLURAL = "verticalpodautoscalers"
VPA_KIND = "VerticalPodAutoscaler"
HPA_GROUP = "autoscaling"
HPA_VERSION = "v2"
HPA_PLURAL = "horizontalpodautoscalers"
HPA_KIND = "HorizontalPodAutoscaler"
# VPA's default update mode (an unset updatePolicy) applies its recommendations.
VPA_DEFAULT_MODE = "Auto"
VPA_OFF = "Off"


class CrossVersionObjectReference(core._Lenient):
    apiVersion: str = ""
    kind: str = ""
    name: str = ""


class UpdatePolicy(core._Lenient):
    updateMode: str | None = None


class ContainerPolicy(core._Lenient):
    """One container's policy. Its other fields (maxAllowed, controlledResources, mode …) are kept as
    they are, so that raising minAllowed writes them back unchanged."""

    model_config = pydantic.ConfigDict(extra="allow", frozen=True)

    containerName: str = ""
    minAllowed: dict[str, core.QuantityText] = pydantic.Field(default_factory=dict)


class ResourcePolicy(core._Lenient):
    containerPolicies: list[ContainerPolicy] = pydantic.Field(default_factory=list)


class VPASpec(core._Lenient):
    targetRef: CrossVersionObjectReference = pydantic.Field(default_factory=CrossVersionObjectReference)
    updatePolicy: UpdatePolicy = pydantic.Field(default_factory=UpdatePolicy)
    resourcePolicy: ResourcePolicy = pydantic.Field(default_factory=ResourcePolicy)


class VerticalPodAutoscaler(core._Lenient):
    metadata: core.ObjectMeta = pydantic.Field(default_factory=core.ObjectMeta)
    spec: VPASpec = pydantic.Field(default_factory=VPASpec)

    @property
    def update_mode(self) -> str:
        return self.spec.updatePolicy.updateMode or VPA_DEFAULT_MODE


class MetricResource(core._Lenient):
    name: str = ""


class MetricSpec(core._Lenient):
    type: str = ""
    resource: MetricResource | None = None
    containerResource: MetricResource | None = None


class HPASpec(core._Lenient):
    scaleTargetRef: CrossVersionObjectReference = pydantic.Field(default_factory=CrossVersionObjectReference)
    metrics: list[MetricSpec] = pydantic.Field(default_factory=list)


class HorizontalPodAutoscaler(core._Lenient):
    metadata: core.ObjectMeta = pydantic.Field(default_factory=core.ObjectMeta)
    spec: HPASpec = pydantic.Field(default_factory=HPASpec)


def parse_vpa(body: Mapping[str, Any]) -> VerticalPodAutoscaler:
    """Raises core.InvalidObject naming the object and the field."""
    return core.parse_object(VerticalPodAutoscaler, body, kind=VPA_KIND)


def parse_hpa(body: Mapping[str, Any]) -> HorizontalPodAutoscaler:
    """Raises core.InvalidObject naming the object and the field."""
    return core.parse_object(HorizontalPodAutoscaler, body, kind=HPA_KIND)
