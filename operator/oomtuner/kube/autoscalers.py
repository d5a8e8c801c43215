"""Reading the VPAs and HPAs of a namespace, and raising a VPA's minAllowed.

VPA is a CRD that many clusters do not have: whether its API is served is asked once (and again
after DISCOVERY_TTL), and a cluster without it has no VPA. A list that fails (no RBAC for it) is
said once and treated as none, so the operator still works where it may not read autoscalers.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from oomtuner.api import autoscalers, core
from oomtuner.kube import api

logger = logging.getLogger(__name__)

DISCOVERY_TTL = 300.0  # seconds


class Autoscalers:
    def __init__(self, client: api.Client, *, clock: Callable[[], float] = time.monotonic):
        self._client = client
        self._clock = clock
        self._vpa_served: tuple[float, bool] | None = None
        self._warned: set[str] = set()
        self._lock = threading.Lock()

    def vpa_served(self) -> bool:
        with self._lock:
            known = self._vpa_served
        if known is not None and self._clock() - known[0] < DISCOVERY_TTL:
            return known[1]
        try:
            served = self._client.get_or_none(f"/apis/{autoscalers.VPA_GROUP}/{autoscalers.VPA_VERSION}") is not None
        except api.ApiError as exc:
            self._warn(f"cannot tell whether the VPA API is served: {exc}; taken as absent")
            served = False
        with self._lock:
            self._vpa_served = (self._clock(), served)
        return served

    def vpas(self, namespace: str) -> list[autoscalers.VerticalPodAutoscaler]:
        if not self.vpa_served():
            return []
        path = api.namespaced(group=autoscalers.VPA_GROUP, version=autoscalers.VPA_VERSION,
                              plural=autoscalers.VPA_PLURAL, namespace=namespace)
        return [v for v in (_parsed(autoscalers.parse_vpa, b) for b in self._list(path, "VerticalPodAutoscalers")) if v]

    def hpas(self, namespace: str) -> list[autoscalers.HorizontalPodAutoscaler]:
        path = api.namespaced(group=autoscalers.HPA_GROUP, version=autoscalers.HPA_VERSION,
                              plural=autoscalers.HPA_PLURAL, namespace=namespace)
        return [h for h in (_parsed(autoscalers.parse_hpa, b) for b in self._list(path, "HorizontalPodAutoscalers")) if h]

    def raise_min_allowed(self, vpa: autoscalers.VerticalPodAutoscaler, policies: Sequence[dict[str, Any]]) -> None:
        """Write the VPA's containerPolicies (with their minAllowed raised), if the VPA has not changed
        since it was read (its resourceVersion): a 409 says it did."""
        path = api.namespaced(group=autoscalers.VPA_GROUP, version=autoscalers.VPA_VERSION,
                              plural=autoscalers.VPA_PLURAL, namespace=vpa.metadata.namespace or "",
                              name=vpa.metadata.name)
        self._client.merge_patch(path, {"metadata": {"resourceVersion": vpa.metadata.resourceVersion},
                                        "spec": {"resourcePolicy": {"containerPolicies": list(policies)}}})

    def _list(self, path: str, what: str) -> list[dict[str, Any]]:
        try:
            return self._client.list(path)
        except api.ApiError as exc:
            if exc.status == 404:
                return []
            self._warn(f"cannot list {what} ({path}): {exc}; the workloads are taken as not sized by any")
            return []

    def _warn(self, message: str) -> None:
        with self._lock:
            if message in self._warned:
                return
            if len(self._warned) > 1000:
                self._warned.clear()
            self._warned.add(message)
        logger.warning("%s", message)


def _parsed(parse: Callable[[dict[str, Any]], Any], body: dict[str, Any]) -> Any:
    try:
        return parse(body)
    except core.InvalidObject as exc:
        logger.warning("skipping an autoscaler: %s", exc)
        return None
