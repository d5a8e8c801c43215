"""Caps: the bounds of a recommendation that live in the cluster — the namespace's LimitRange max,
its ResourceQuota headroom and the largest node's allocatable memory — plus the policy's maxLimit.

LimitRanges and ResourceQuotas are listed at most once per TTL and namespace, so a burst of kills
in one namespace reads them once; a change is seen after the TTL. A list that fails (no RBAC for
it, any API error) caps nothing, with a warning once per cause.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable

from oomtuner.api import policy
from oomtuner.domain import caps as domain_caps
from oomtuner.domain import quota, resources, workload
from oomtuner.kube import api
from oomtuner.services import nodes as nodes_mod

logger = logging.getLogger(__name__)

LIMIT_RANGE_TTL = 30.0  # seconds
# ResourceQuota usage moves with every pod, so quotas are read again sooner than LimitRanges.
RESOURCE_QUOTA_TTL = 10.0  # seconds
WARNINGS_REMEMBERED = 1_000  # distinct warnings remembered, so each is logged once


class Caps:
    def __init__(self, client: api.Client, *, nodes: nodes_mod.Nodes, clock: Callable[[], float] = time.monotonic):
        self._client = client
        self._nodes = nodes
        self._clock = clock
        self._lists: dict[tuple[str, str], tuple[float, list[dict[str, Any]]]] = {}
        self._warned: set[str] = set()
        self._lock = threading.Lock()

    def for_workload(self, target: workload.Workload, chosen: policy.OOMPolicy | None) -> domain_caps.Caps:
        settings = chosen.spec.memory if chosen else policy.MemorySettings()
        return domain_caps.Caps(
            policy_max_limit=resources.bytes_or_none(settings.maxLimit),
            limit_range_max=self.limit_range_max(target.namespace),
            quota_headroom=self.quota_headroom(target, settings),
            largest_node_allocatable=self._nodes.largest_allocatable(),
        )

    def limit_range_max(self, namespace: str) -> int | None:
        """The smallest Container or Pod max memory of the namespace's LimitRanges."""
        bodies = self._listed("limitranges", namespace, ttl=LIMIT_RANGE_TTL, what="LimitRanges",
                              consequence="recommendations are not capped by LimitRange max where they cannot be read")
        return domain_caps.limit_range_max(bodies)

    def quota_headroom(self, target: workload.Workload, settings: policy.MemorySettings) -> int | None:
        """How much the workload's containers' limits may grow within the namespace's ResourceQuotas,
        their free room shared by the workload's pods (`domain.quota`); None when no quota bounds it
        or the quotas cannot be read."""
        bodies = self._listed("resourcequotas", target.namespace, ttl=RESOURCE_QUOTA_TTL, what="ResourceQuotas",
                              consequence="recommendations are not capped by ResourceQuota headroom where they cannot be read")
        if not bodies:
            return None
        # Only a DaemonSet whose controller has not counted its nodes yet has no replicas: assume a
        # pod on every node known here.
        pods = target.replicas if target.replicas is not None else max(self._nodes.count(), 1)
        room = quota.headroom(bodies, pods=pods, template=target.template, admitted=target.kind == "Pod")
        for problem in room.skipped:
            self._warn_once(problem)
        for bound in (room.limits, room.requests):
            if bound is not None:
                logger.debug("%s %s/%s: %s", target.kind, target.namespace, target.name, bound)
        return quota.limit_headroom(room, containers=target.containers(), request_policy=settings.requestPolicy)

    def _listed(self, plural: str, namespace: str, *, ttl: float, what: str, consequence: str) -> list[dict[str, Any]]:
        """A core/v1 list in `namespace`, read at most every `ttl` seconds; [] when the list fails."""
        now = self._clock()
        with self._lock:
            cached = self._lists.get((plural, namespace))
        if cached is not None and now - cached[0] < ttl:
            return cached[1]
        bodies: list[dict[str, Any]] = []
        try:
            bodies = self._client.list(api.namespaced(group="", version="v1", plural=plural, namespace=namespace))
        except api.ApiError as exc:
            # Missing permissions are the same everywhere: said once, not once per namespace.
            key = f"list {plural} {exc.status}" if exc.status in (401, 403) else f"list {plural} {namespace} {exc.status}"
            self._warn_once(f"cannot list {what} in {namespace}: {exc}; {consequence}", key=key)
        with self._lock:
            self._lists[(plural, namespace)] = (now, bodies)
        return bodies

    def _warn_once(self, message: str, *, key: str | None = None) -> None:
        """Log a warning the first time (per `key`, the message by default); debug after."""
        key = key or message
        with self._lock:
            seen = key in self._warned
            if not seen:
                if len(self._warned) >= WARNINGS_REMEMBERED:
                    self._warned.clear()
                self._warned.add(key)
        if seen:
            logger.debug("%s", message)
        else:
            logger.warning("%s", message)
