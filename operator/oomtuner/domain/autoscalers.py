"""Never fight another autoscaler: whether a VPA or an HPA sizes a workload's memory, and how to
hand a raise to a VPA instead of the pod template.

Two controllers that size the same pods undo each other's work (a VPA in Auto mode sets the
requests it recommends at every pod creation; an HPA that scales on memory adds pods when memory
rises). So an Auto patch is not made when either is found: the recommendation says which object
sizes the workload. With the policy's `vpa: RaiseMinAllowed`, a VPA's floor for the container
(`resourcePolicy.containerPolicies[].minAllowed.memory`) is raised instead, so VPA itself never
recommends below what a kill proved necessary.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from oomtuner.api import autoscalers, core
from oomtuner.domain import patch, quantity, resources, workload

MEMORY = core.MEMORY


@dataclasses.dataclass(frozen=True)
class Found:
    """An autoscaler that sizes the workload's memory, and why it counts."""

    kind: str
    name: str
    why: str
    vpa: autoscalers.VerticalPodAutoscaler | None = None

    @property
    def display(self) -> str:
        return f"{self.kind} {self.name}"


def _targets(ref: autoscalers.CrossVersionObjectReference, target: workload.Workload) -> bool:
    return ref.kind == target.kind and ref.name == target.name


def sizing(target: workload.Workload, *, vpas: Sequence[autoscalers.VerticalPodAutoscaler],
           hpas: Sequence[autoscalers.HorizontalPodAutoscaler]) -> list[Found]:
    """The VPAs whose update mode is not Off and the HPAs that scale on memory, targeting `target`."""
    found = []
    for vpa in vpas:
        if _targets(vpa.spec.targetRef, target) and vpa.update_mode != autoscalers.VPA_OFF:
            found.append(Found(autoscalers.VPA_KIND, vpa.metadata.name, f"updateMode {vpa.update_mode}", vpa=vpa))
    for hpa in hpas:
        if not _targets(hpa.spec.scaleTargetRef, target):
            continue
        on_memory = [m for m in hpa.spec.metrics if (m.resource is not None and m.resource.name == MEMORY)
                     or (m.containerResource is not None and m.containerResource.name == MEMORY)]
        if on_memory:
            found.append(Found(autoscalers.HPA_KIND, hpa.metadata.name, "it scales on memory"))
    return found


def describe(found: Sequence[Found], target: workload.Workload) -> str:
    who = "; ".join(f"{f.display} ({f.why})" for f in found)
    return (f"{who} sizes {target.display} too: the operator does not patch it, so as not to fight it; "
            "apply status.patch through that autoscaler, remove it, or (a VPA) let the policy raise its "
            "minAllowed (vpa: RaiseMinAllowed)")


def min_allowed_policies(vpa: autoscalers.VerticalPodAutoscaler,
                         changes: Sequence[patch.MemoryChange]) -> list[dict[str, Any]] | None:
    """The VPA's containerPolicies with each changed container's minAllowed.memory raised to its new
    request (the value VPA sizes; its limits keep the template's ratio), or to its new limit when it
    gets no request. None when nothing rises (the floors are already there)."""
    policies = [dict(p.model_dump(exclude_unset=True)) for p in vpa.spec.resourcePolicy.containerPolicies]
    changed = False
    for change in changes:
        floor = change.request if change.request is not None else change.limit
        if floor is None:
            continue
        entry = next((p for p in policies if p.get("containerName") == change.container), None)
        if entry is None:
            entry = {"containerName": change.container}
            policies.append(entry)
        have = resources.bytes_of(entry.get("minAllowed") or {})
        if have is None or have < floor:
            entry["minAllowed"] = {**(entry.get("minAllowed") or {}), MEMORY: quantity.format_bytes(floor)}
            changed = True
    return policies if changed else None
