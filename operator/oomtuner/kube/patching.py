"""Getting new memory onto a workload: server-side dry run, then server-side apply.

Every patch is first sent with `dryRun=All`, so admission rejections (quota, policy engines, CEL
validation) are recorded instead of half-applied. Ownership decides the rest:
- nobody else owns the memory fields: apply as field manager `oomtuner`;
- a manager that only *updated* them (a client that created the object, `kubectl edit`) owns them:
  take them over with `force`, since nothing will put the old value back;
- a manager that *declares* them (an Apply operation: Helm, Argo CD, Flux, `kubectl apply
  --server-side`) or one named in the respected list owns them: do not fight. The outcome is
  `conflict`, and the ready patch goes into the recommendation's `status.patch`.
"""

from __future__ import annotations

import enum
import logging
import re
from dataclasses import dataclass
from typing import Any, Collection, Sequence

from oomtuner.domain import patch, workload
from oomtuner.kube import api, owners

logger = logging.getLogger(__name__)

STRATEGIC_MERGE = "application/strategic-merge-patch+json"
_CONFLICT_MANAGER = re.compile(r'conflict with "([^"]+)"')


class Result(str, enum.Enum):
    APPLIED = "applied"
    CONFLICT = "conflict"
    REJECTED = "rejected"


@dataclass(frozen=True)
class Outcome:
    result: Result
    message: str
    patch_yaml: str
    managers: tuple[str, ...] = ()


def conflicting_managers(error: api.ApiError) -> list[str]:
    """Managers named in a 409 apply conflict, in order, without repeats."""
    found: list[str] = []
    texts = [str(c.get("message", "")) for c in error.causes] + [error.message]
    for text in texts:
        for name in _CONFLICT_MANAGER.findall(text):
            if name not in found:
                found.append(name)
    return found


def declared_by_apply(manager: str, managed_fields: Sequence[Any]) -> bool:
    return any(
        isinstance(entry, dict) and entry.get("manager") == manager and entry.get("operation") == "Apply"
        for entry in managed_fields
    )


def apply_memory(
    client: api.Client,
    *,
    target: workload.Workload,
    changes: Sequence[patch.MemoryChange],
    field_manager: str,
    respected_managers: Collection[str],
) -> Outcome:
    """Dry-run then apply the new memory to the workload's pod template."""
    body = patch.apply_body(
        api_version=target.api_version, kind=target.kind, name=target.name, namespace=target.namespace, changes=changes
    )
    text = patch.to_yaml(body)
    path = owners.path_of(kind=target.kind, namespace=target.namespace, name=target.name)
    force = False
    try:
        client.apply(path, body, field_manager=field_manager, dry_run=True)
    except api.Conflict as exc:
        managers = conflicting_managers(exc)
        blocking = [m for m in managers if m in respected_managers or declared_by_apply(m, target.managed_fields)]
        if blocking or not managers:
            owners_text = ", ".join(blocking or managers) or "another manager"
            return Outcome(
                Result.CONFLICT,
                f"the memory of {target.display} is managed by {owners_text}; apply status.patch through it",
                text,
                tuple(blocking or managers),
            )
        force = True
        try:
            client.apply(path, body, field_manager=field_manager, dry_run=True, force=True)
        except api.ApiError as exc2:
            return Outcome(Result.REJECTED, f"dry run rejected: {exc2.message}", text)
    except api.ApiError as exc:
        return Outcome(Result.REJECTED, f"dry run rejected: {exc.message}", text)
    try:
        client.apply(path, body, field_manager=field_manager, force=force)
    except api.Conflict as exc:
        return Outcome(Result.CONFLICT, f"apply conflicted: {exc.message}", text, tuple(conflicting_managers(exc)))
    except api.ApiError as exc:
        return Outcome(Result.REJECTED, f"apply rejected: {exc.message}", text)
    taken = " (took the fields over from an updating manager)" if force else ""
    return Outcome(Result.APPLIED, f"patched {target.display}{taken}", text)


def resize_pod(client: api.Client, *, namespace: str, pod: str, changes: Sequence[patch.MemoryChange]) -> str | None:
    """Raise a running pod's memory through the `resize` subresource. Returns an error text or None."""
    body = patch.resize_body(changes)
    if not body["spec"]["containers"]:
        return None
    path = api.namespaced(group="", version="v1", plural="pods", namespace=namespace, name=pod, sub="resize")
    try:
        client.request("PATCH", path, body=body, content_type=STRATEGIC_MERGE)
    except api.ApiError as exc:
        return exc.message
    return None
