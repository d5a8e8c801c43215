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
    REJECTED = "rejected"  # for good: the server said why (a 4xx)
    RETRY = "retry"  # a passing failure: 429, 5xx, a timeout, the server out of reach


def passing(error: BaseException) -> bool:
    """Whether a failed patch is worth trying again later (`api.passing`; a 409 on an apply is a
    conflict with another manager, sorted before this is asked)."""
    return api.passing(error)


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


def body_yaml(target: workload.Workload, changes: Sequence[patch.MemoryChange]) -> str:
    """The server-side apply body of these changes as YAML: what `status.patch` offers."""
    return patch.to_yaml(patch.apply_body(api_version=target.api_version, kind=target.kind, name=target.name,
                                          namespace=target.namespace, changes=changes))


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
    text = body_yaml(target, changes)
    path = owners.path_of(kind=target.kind, namespace=target.namespace, name=target.name)
    try:
        return _dry_run_then_apply(client, target=target, path=path, body=body, text=text,
                                   field_manager=field_manager, respected_managers=respected_managers)
    except Exception as exc:  # noqa: BLE001 - sorted below: passing failures are retried, others raised
        if not passing(exc):
            raise
        return Outcome(Result.RETRY, f"the API server did not answer the patch: {_short(exc)}", text)


def _short(exc: BaseException) -> str:
    if isinstance(exc, api.ApiError):
        return f"{exc.status} {exc.message}"
    return f"{type(exc).__name__}: {exc}".splitlines()[0][:300]


def _dry_run_then_apply(client: api.Client, *, target: workload.Workload, path: str, body: dict[str, Any], text: str,
                        field_manager: str, respected_managers: Collection[str]) -> Outcome:
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
            if passing(exc2):
                raise
            return Outcome(Result.REJECTED, f"dry run rejected: {exc2.message}", text)
    except api.ApiError as exc:
        if passing(exc):
            raise
        return Outcome(Result.REJECTED, f"dry run rejected: {exc.message}", text)
    try:
        client.apply(path, body, field_manager=field_manager, force=force)
    except api.Conflict as exc:
        return Outcome(Result.CONFLICT, f"apply conflicted: {exc.message}", text, tuple(conflicting_managers(exc)))
    except api.ApiError as exc:
        if passing(exc):
            raise
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
