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

from oomtuner.api import kinds, recommendation, types
from oomtuner.domain import quantity, recommend, resources


@dataclass(frozen=True)
class MemoryChange:
    """New memory for one container of the template; None leaves that value as it is."""

    container: str
    type: types.ContainerType
    request: int | None
    limit: int | None


def resources_of(change: MemoryChange) -> dict[str, Any]:
    """The container's `resources` that set this memory: `{requests: {memory}, limits: {memory}}`."""
    resources: dict[str, Any] = {}
    if change.request is not None:
        resources["requests"] = {"memory": quantity.format_bytes(change.request)}
    if change.limit is not None:
        resources["limits"] = {"memory": quantity.format_bytes(change.limit)}
    return resources


def _container_entry(change: MemoryChange) -> dict[str, Any]:
    return {"name": change.container, "resources": resources_of(change)}


def pod_spec_patch(changes: Sequence[MemoryChange]) -> dict[str, Any]:
    """The `spec` of a pod (template) that sets these containers' memory."""
    spec: dict[str, Any] = {}
    for key, container_types in (
        ("containers", {types.ContainerType.CONTAINER}),
        ("initContainers", {types.ContainerType.INIT, types.ContainerType.SIDECAR}),
    ):
        entries = [_container_entry(c) for c in changes if c.type in container_types]
        if entries:
            spec[key] = entries
    return spec


def template_patch(*, kind: str, changes: Sequence[MemoryChange]) -> dict[str, Any]:
    """The object's fields that set these containers' memory: the pod spec patch under the kind's
    template path (`spec.template.spec` for a Deployment; `spec` for a bare Pod). Also a
    strategic-merge patch, since containers merge by name. Raises KeyError for an unknown kind."""
    node: dict[str, Any] = {"spec": pod_spec_patch(changes)}
    for key in reversed(kinds.get(kind).template_path):
        node = {key: node}
    return node


def apply_body(*, api_version: str, kind: str, name: str, namespace: str, changes: Sequence[MemoryChange]) -> dict[str, Any]:
    """A server-side apply body for the workload. Raises KeyError for a kind without a pod template."""
    if not kinds.get(kind).template_path:
        raise KeyError(f"{kind} has no pod template")
    return {"apiVersion": api_version, "kind": kind, "metadata": {"name": name, "namespace": namespace},
            **template_patch(kind=kind, changes=changes)}


def resize_body(changes: Sequence[MemoryChange]) -> dict[str, Any]:
    """A strategic-merge body for a running pod's `resize` subresource (regular containers only)."""
    entries = [_container_entry(c) for c in changes if c.type == types.ContainerType.CONTAINER]
    return {"spec": {"containers": entries}}


def to_yaml(body: dict[str, Any]) -> str:
    return yaml.safe_dump(body, sort_keys=False)


def memory_changes(
    recommended: Sequence[recommendation.ContainerStatus], current: Sequence[recommend.ContainerResources],
    *, restate: bool = False,
) -> list[MemoryChange]:
    """What a patch must change for the workload's containers (`current`, as the template has them
    now) to get the recommended memory: a value only where the recommendation is higher, or, for a
    container whose recommendation settles the operator's own raise (`settled`), where it differs. A
    container the template no longer has is skipped. With `restate`, also the recommended values the
    template has already (for a repository's copy of the workload, which may lag the cluster), never
    one below the template's."""
    now = {c.name: c for c in current}
    changes = []
    for c in recommended:
        have = now.get(c.name)
        if have is None:
            continue
        request = _wanted(resources.bytes_of(c.recommended.model_dump(), "request"), have.request, unset=0,
                          settled=c.settled, restate=restate)
        limit = _wanted(resources.bytes_of(c.recommended.model_dump(), "limit"), have.limit, unset=None,
                        settled=c.settled, restate=restate)
        if request is not None or limit is not None:
            changes.append(MemoryChange(container=c.name, type=c.type, request=request, limit=limit))
    return changes


def _wanted(want: int | None, have: int | None, *, unset: int | None, settled: bool, restate: bool) -> int | None:
    """The value a patch sets (None: leave it). `unset` is what an unset value counts as: no request
    is 0, while no limit is above any (so any limit is a change)."""
    if want is None:
        return None
    if settled:
        return want if restate or have != want else None
    if have is None:
        have = unset
    if have is None or have < want or (restate and have == want):
        return want
    return None


def describe(changes: Sequence[MemoryChange]) -> str:
    """`app: request 192Mi limit 384Mi, sidecar: limit 128Mi`."""
    return ", ".join(
        f"{c.container}: " + " ".join(
            part for part in (
                f"request {quantity.format_bytes(c.request)}" if c.request is not None else "",
                f"limit {quantity.format_bytes(c.limit)}" if c.limit is not None else "",
            ) if part
        )
        for c in changes
    )
