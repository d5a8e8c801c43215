"""Kubernetes Events the operator posts, on workloads and on recommendations.

Events are core/v1 Events, so `kubectl describe` and `kubectl get events` show them. Posting an
event is best effort: a failure is logged and never stops a reconcile.
"""

from __future__ import annotations

import datetime
import enum
import logging
import uuid
from typing import Any

from oomtuner.kube import api

logger = logging.getLogger(__name__)

COMPONENT = "oomtuner"


class Reason(str, enum.Enum):
    OOM_KILL_DETECTED = "OOMKillDetected"
    RECOMMENDATION_UPDATED = "RecommendationUpdated"
    RESOURCES_PATCHED = "ResourcesPatched"
    PATCH_FAILED = "PatchFailed"
    PATCH_CONFLICT = "PatchConflict"
    RECOMMENDATION_CAPPED = "RecommendationCapped"
    SUSPECTED_LEAK = "SuspectedLeak"
    POLICY_INVALID = "PolicyInvalid"


WARNINGS = {
    Reason.OOM_KILL_DETECTED,
    Reason.PATCH_FAILED,
    Reason.PATCH_CONFLICT,
    Reason.RECOMMENDATION_CAPPED,
    Reason.SUSPECTED_LEAK,
    Reason.POLICY_INVALID,
}


def build(
    *,
    involved: dict[str, Any],
    reason: Reason,
    message: str,
    now: datetime.datetime,
    instance: str = "",
) -> dict[str, Any]:
    """The body of a core/v1 Event about `involved` ({apiVersion, kind, name, namespace, uid})."""
    stamp = now.astimezone(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    micro = now.astimezone(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    name = f"{involved['name']}.{uuid.uuid4().hex[:16]}"[-253:].lstrip(".-")
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": name, "namespace": involved["namespace"]},
        "involvedObject": {k: v for k, v in involved.items() if v is not None},
        "reason": reason.value,
        "message": message[:1024],
        "type": "Warning" if reason in WARNINGS else "Normal",
        "source": {"component": COMPONENT},
        "reportingComponent": COMPONENT,
        "reportingInstance": instance or COMPONENT,
        "firstTimestamp": stamp,
        "lastTimestamp": stamp,
        "eventTime": micro,
        "action": reason.value,
        "count": 1,
    }


def post(client: api.Client, body: dict[str, Any]) -> None:
    """Create the event; logs and swallows API errors."""
    namespace = body["metadata"]["namespace"]
    try:
        client.create(api.namespaced(group="", version="v1", plural="events", namespace=namespace), body)
    except api.ApiError as exc:
        logger.warning("could not post event %s on %s/%s: %s", body["reason"], namespace,
                       body["involvedObject"].get("name"), exc)
