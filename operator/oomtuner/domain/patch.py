"""The server-side apply bodies that set memory on a workload's pod template.

An apply body names only what the operator owns: the memory request and limit of the containers it
changes, addressed by name inside the list-map of containers. Everything else in the object stays
with its current managers. The same body, rendered as YAML, is what `status.patch` offers when the
operator must not apply it itself (another manager owns the field).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import yaml

from oomtuner.api import types
from oomtuner.domain import quantity

# Where the pod template sits in each workload kind.
TEMPLATE_PATH: dict[str, tuple[str, ...]] = {
    "Deployment": ("spec", "template"),
    "StatefulSet": ("spec", "template"),
    "DaemonSet": ("spec", "template"),
    "ReplicaSet": ("spec", "template"),
    "Job": ("spec", "template"),
    "CronJob": ("spec", "jobTemplate", "spec", "template"),
}

# Kinds whose pod template may be patched in Auto mode. A Job's template is immutable and a bare
# Pod has none: those get recommendations only.
PATCHABLE = frozenset({"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "CronJob"})


@dataclass(frozen=True)
class MemoryChange:
    """New memory for one container of the template; None leaves that value as it is."""

    container: str
    type: types.ContainerType
    request: int | None
    limit: int | None


def _container_entry(change: MemoryChange) -> dict[str, Any]:
    resources: dict[str, Any] = {}
    if change.request is not None:
        resources["requests"] = {"memory": quantity.format_bytes(change.request)}
    if change.limit is not None:
        resources["limits"] = {"memory": quantity.format_bytes(change.limit)}
    return {"name": change.container, "resources": resources}


def pod_spec_patch(changes: Sequence[MemoryChange]) -> dict[str, Any]:
    """The `spec` of a pod (template) that sets these containers' memory."""
    spec: dict[str, Any] = {}
    for key, kinds in (
        ("containers", {types.ContainerType.CONTAINER}),
        ("initContainers", {types.ContainerType.INIT, types.ContainerType.SIDECAR}),
    ):
        entries = [_container_entry(c) for c in changes if c.type in kinds]
        if entries:
            spec[key] = entries
    return spec


def apply_body(*, api_version: str, kind: str, name: str, namespace: str, changes: Sequence[MemoryChange]) -> dict[str, Any]:
    """A server-side apply body for the workload. Raises KeyError for a kind without a template."""
    path = TEMPLATE_PATH[kind]
    node: dict[str, Any] = {"spec": pod_spec_patch(changes)}
    for key in reversed(path):
        node = {key: node}
    return {"apiVersion": api_version, "kind": kind, "metadata": {"name": name, "namespace": namespace}, **node}


def resize_body(changes: Sequence[MemoryChange]) -> dict[str, Any]:
    """A strategic-merge body for a running pod's `resize` subresource (regular containers only)."""
    entries = [_container_entry(c) for c in changes if c.type == types.ContainerType.CONTAINER]
    return {"spec": {"containers": entries}}


def to_yaml(body: dict[str, Any]) -> str:
    return yaml.safe_dump(body, sort_keys=False)
