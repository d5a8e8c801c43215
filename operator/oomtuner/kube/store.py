"""Reading and writing the operator's own custom resources.

An OOMRecommendation is created with only its spec and an ownerReference to the workload (so the
garbage collector removes it with the workload); everything the operator learns goes through the
status subresource. Status writes are optimistic: a PUT with the resourceVersion that was read, and
on 409 the caller's change is re-applied to a fresh copy. Nothing read is ever dropped on a conflict.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from typing import Any, Callable, Generic, Optional, TypeVar

from oomtuner.api import policy, recommendation, types
from oomtuner.kube import api

logger = logging.getLogger(__name__)

MAX_ATTEMPTS = 8


def _rec_path(namespace: str, name: str | None = None, *, sub: str | None = None) -> str:
    return api.namespaced(
        group=recommendation.GROUP,
        version=recommendation.VERSION,
        plural=recommendation.PLURAL,
        namespace=namespace,
        name=name,
        sub=sub,
    )


def _policy_path(namespace: str, name: str | None = None, *, sub: str | None = None) -> str:
    return api.namespaced(
        group=policy.GROUP, version=policy.VERSION, plural=policy.PLURAL, namespace=namespace, name=name, sub=sub
    )


def get_recommendation(client: api.Client, *, namespace: str, name: str) -> recommendation.OOMRecommendation | None:
    """The recommendation, or None on 404."""
    body = client.get_or_none(_rec_path(namespace, name))
    return recommendation.read(body) if body is not None else None


def list_recommendations(client: api.Client, *, namespace: str | None = None) -> list[recommendation.OOMRecommendation]:
    if namespace:
        path = _rec_path(namespace)
    else:
        path = api.cluster(group=recommendation.GROUP, version=recommendation.VERSION, plural=recommendation.PLURAL)
    result = []
    for body in client.list(path):
        try:
            result.append(recommendation.read(body))
        except recommendation.InvalidRecommendation as exc:
            logger.warning("skipping an unreadable recommendation: %s", exc)
    return result


def ensure_recommendation(
    client: api.Client,
    *,
    namespace: str,
    name: str,
    target: recommendation.TargetRef,
    owner_uid: str | None,
    labels: dict[str, str] | None = None,
    create_first: bool = False,
) -> recommendation.OOMRecommendation:
    """Get the recommendation, creating it (spec only) when it does not exist yet.

    `create_first` tries the create first and reads only when it exists already: one request
    instead of two for a workload's first kill, when the caller expects no recommendation yet.
    """
    if not create_first:
        existing = get_recommendation(client, namespace=namespace, name=name)
        if existing is not None:
            return existing
    metadata: dict[str, Any] = {
        "name": name,
        "namespace": namespace,
        "labels": {"app.kubernetes.io/managed-by": "oomtuner", **(labels or {})},
    }
    if owner_uid:
        metadata["ownerReferences"] = [
            {
                "apiVersion": target.apiVersion,
                "kind": target.kind,
                "name": target.name,
                "uid": owner_uid,
                "controller": False,
                "blockOwnerDeletion": False,
            }
        ]
    body = {
        "apiVersion": f"{recommendation.GROUP}/{recommendation.VERSION}",
        "kind": recommendation.KIND,
        "metadata": metadata,
        "spec": {"targetRef": target.model_dump(exclude_none=True)},
    }
    try:
        return recommendation.parse(client.create(_rec_path(namespace), body))
    except api.Conflict:  # created meanwhile by another writer
        found = get_recommendation(client, namespace=namespace, name=name)
        if found is None:
            raise
        return found


_T = TypeVar("_T")
_T_co = TypeVar("_T_co", covariant=True)


@dataclasses.dataclass(frozen=True)
class Edit(Generic[_T_co]):
    """What a mutation made of the status: the changed object, and what the caller wants to know of
    the change (the kills it added, how many it reclassified; None when nothing)."""

    obj: recommendation.OOMRecommendation
    result: _T_co


# Receives a deep copy of the recommendation; returns the edit, or None when nothing changes. It may
# run more than once (after a 409 it runs on a fresh copy): only the last run's result is returned.
Mutation = Callable[[recommendation.OOMRecommendation], Optional[Edit[_T]]]


def update_recommendation_status(
    client: api.Client,
    *,
    current: recommendation.OOMRecommendation,
    mutate: Mutation[_T],
) -> tuple[recommendation.OOMRecommendation, _T | None]:
    """Apply `mutate` to the status and write it; on a stale resourceVersion, re-read and retry.

    Returns the object as written (or as read, when nothing changed) and the result of the mutation
    that was written (None when nothing changed).
    """
    namespace = current.metadata.namespace or ""
    name = current.metadata.name
    obj = current
    for attempt in range(1, MAX_ATTEMPTS + 1):
        edit = mutate(obj.model_copy(deep=True))
        if edit is None:
            return obj, None
        body = edit.obj.model_dump(mode="json", exclude_none=True)
        body["metadata"] = {"name": name, "namespace": namespace, "resourceVersion": obj.metadata.resourceVersion}
        try:
            return recommendation.parse(client.replace(_rec_path(namespace, name, sub="status"), body)), edit.result
        except api.Conflict:
            if attempt == MAX_ATTEMPTS:
                # Still a conflict, so a passing failure (`api.passing`): the caller tries it again later.
                logger.warning("OOMRecommendation %s/%s: the status changed under %d writes in a row", namespace, name,
                               MAX_ATTEMPTS)
                raise
            fresh = get_recommendation(client, namespace=namespace, name=name)
            if fresh is None:
                raise
            obj = fresh
    raise AssertionError("unreachable: the last attempt returns or raises")


UNREADABLE = "Unreadable"


def mark_unreadable(client: api.Client, body: Mapping[str, Any], *, problem: str, now: str) -> bool:
    """Say on a recommendation the operator cannot read what is wrong with it: condition Ready
    False, reason Unreadable, `problem` (which names the field) as the message. The other conditions
    stay; the status is not parsed, only its conditions read as raw data. Returns whether it wrote
    (not when the same condition is there already, so a watch event of its own write changes
    nothing; nor on 404). The caller posts the RecommendationUnreadable event."""
    meta = _mapping(body.get("metadata"))
    status = _mapping(body.get("status"))
    raw = _items(status.get("conditions"))
    kept = [c for c in raw if isinstance(c, Mapping) and isinstance(c.get("type"), str) and c.get("type") != "Ready"]
    old = next((c for c in raw if isinstance(c, Mapping) and c.get("type") == "Ready"), {})
    message = problem[:types.SHORT_TEXT * 8]
    if old.get("status") == "False" and old.get("reason") == UNREADABLE and old.get("message") == message:
        return False
    ready = condition(type_="Ready", ok=False, reason=UNREADABLE, message=message, now=now,
                      generation=meta.get("generation") if isinstance(meta.get("generation"), int) else None)
    conditions = [dict(c) for c in kept][: types.MAX_CONDITIONS - 1] + [ready.model_dump(mode="json", exclude_none=True)]
    try:
        client.merge_patch(_rec_path(str(meta.get("namespace") or ""), str(meta.get("name") or ""), sub="status"),
                           {"status": {"conditions": conditions}})
    except api.NotFound:
        return False
    return True


def list_policies(client: api.Client, *, namespace: str | None = None) -> list[dict[str, Any]]:
    """Raw OOMPolicy bodies: parsing (and reporting what is invalid) is the caller's job."""
    if namespace:
        return client.list(_policy_path(namespace))
    return client.list(api.cluster(group=policy.GROUP, version=policy.VERSION, plural=policy.PLURAL))


def list_cluster_policies(client: api.Client) -> list[dict[str, Any]]:
    """Raw ClusterOOMPolicy bodies ([] where the CRD is not installed yet)."""
    try:
        return client.list(api.cluster(group=policy.GROUP, version=policy.VERSION, plural=policy.CLUSTER_PLURAL))
    except api.NotFound:
        return []


def write_cluster_policy_status(client: api.Client, *, name: str, status: policy.ClusterOOMPolicyStatus) -> None:
    """Merge-patch a ClusterOOMPolicy's status; 404 (deleted meanwhile) is ignored."""
    body = {"status": status.model_dump(mode="json", exclude_none=True)}
    try:
        client.merge_patch(api.cluster(group=policy.GROUP, version=policy.VERSION, plural=policy.CLUSTER_PLURAL,
                                       name=name) + "/status", body)
    except api.NotFound:
        pass


def write_policy_status(
    client: api.Client,
    *,
    namespace: str,
    name: str,
    status: policy.OOMPolicyStatus,
) -> None:
    """Merge-patch the policy's status; 404 (deleted meanwhile) is ignored."""
    body = {"status": status.model_dump(mode="json", exclude_none=True)}
    try:
        client.merge_patch(_policy_path(namespace, name, sub="status"), body)
    except api.NotFound:
        pass


def condition(*, type_: str, ok: bool, reason: str, message: str, now: str, generation: int | None) -> types.Condition:
    return types.Condition(
        type=type_,
        status="True" if ok else "False",
        reason=reason,
        message=message,
        lastTransitionTime=now,
        observedGeneration=generation,
    )


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _items(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []
