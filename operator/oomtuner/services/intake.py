"""Intake: kills as they arrive from pod statuses and the node agent, batched per workload.

A burst of kills in one workload (many replicas at once) must cost neither a status write per kill
nor a worker thread per kill waiting for the workload: the first thread that finds no writer for the
workload becomes its writer and records what has queued, batch after batch, until the queue is
empty. The others queue their kills and return at once, so the worker threads stay free for the next
pod events.

`seen` remembers the identities of kills already recorded, so a pod's repeated status updates cost
nothing. It is a cache, not the record: the recommendation's ledger is (`services.recorder`). A kill
is marked seen only once it is recorded; when a write fails, the batch stays queued and is written
again (`retry`, every second from the background task, once `RETRY_AFTER` has passed), so a kill
is not lost when its pod sends no further event. So is a pod whose handling failed before its kills
were queued (its owner could not be read while the API server restarted).
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from typing import Any, Callable, Mapping

from oomtuner.api import core, recommendation
from oomtuner.domain import child_kills, evidence, kills
from oomtuner.kube import api, owners
from oomtuner.prom import metrics
from oomtuner.services import nodes as nodes_mod
from oomtuner.services import recommendations as recommendations_mod
from oomtuner.services import recorder as recorder_mod

logger = logging.getLogger(__name__)

SEEN_CAPACITY = 200_000
RETRY_AFTER = 5.0  # seconds before a batch whose write failed is written again


class Intake:
    def __init__(self, client: api.Client, *, nodes: nodes_mod.Nodes, recorder: recorder_mod.Recorder,
                 recommendations: recommendations_mod.Recommendations, workloads: owners.Workloads,
                 chains: owners.Chains, monotonic: Callable[[], float] = time.monotonic):
        self._client = client
        self._nodes = nodes
        self._recorder = recorder
        self._recommendations = recommendations
        self._workloads = workloads
        self._chains = chains
        self._seen: collections.OrderedDict[str, None] = collections.OrderedDict()
        self._pending: dict[str, dict[str, kills.OOMKill]] = collections.defaultdict(dict)
        self._writing: set[str] = set()
        # key → the last pod that brought kills for it, and its workload's (kind, name)
        self._sources: dict[str, tuple[Mapping[str, Any], str, str]] = {}
        self._retry_at: dict[str, float] = {}
        # what failed before its kills were queued → (how to handle it again, when)
        self._later: dict[str, tuple[Callable[[], int], float]] = {}
        self._monotonic = monotonic
        self._lock = threading.Lock()

    def on_pod(self, body: Mapping[str, Any]) -> int:
        """Handle a pod's status. Returns how many kills this call recorded."""
        if not core.shows_oom_kill(body):
            return 0
        pod = core.parse_pod(body)
        try:
            capacity = self._nodes.capacity(pod.spec.nodeName)
        except Exception as exc:
            self._later_if_passing(exc, f"pod {pod.metadata.namespace}/{pod.metadata.name}", lambda: self.on_pod(body))
            raise
        found = kills.kills_from_pod(pod, node_memory_capacity=capacity)
        return self._handle(body, pod, found)

    def on_child_kill(self, body: Mapping[str, Any]) -> int:
        """An OOMKillChildProcess event from the node agent: a process other than the container's
        main one was killed, so the pod status shows nothing (unless the container restarted too)."""
        event = core.parse_event(body)
        namespace = event.involvedObject.namespace or event.metadata.namespace
        name = event.involvedObject.name
        if not namespace or not name:
            return 0
        pod_body = self._client.get_or_none(api.namespaced(group="", version="v1", plural="pods", namespace=namespace, name=name))
        if pod_body is None:
            logger.info("pod %s/%s of an %s event is gone; nothing to attribute it to", namespace, name, child_kills.REASON)
            return 0
        pod = core.parse_pod(pod_body)
        problem = evidence.child_kill_problem(event, pod=pod)
        if problem is not None:  # anyone may post events: only the agent on the pod's node counts
            logger.warning("%s event %s/%s does not count: %s", child_kills.REASON, event.metadata.namespace,
                           event.metadata.name, problem)
            return 0
        capacity = self._nodes.capacity(pod.spec.nodeName)
        found = child_kills.kills_from_event(event, pod=pod, node_memory_capacity=capacity)
        if not found:
            return 0
        in_status = kills.kills_from_pod(pod, node_memory_capacity=capacity)
        if any(child_kills.same_kill(c, s) for c in found for s in in_status):
            return 0  # the container restarted: the pod-status kill is the one counted
        return self._handle(pod_body, pod, list(found))

    def seen(self, identity: str) -> bool:
        with self._lock:
            return identity in self._seen

    def _handle(self, pod_body: Mapping[str, Any], pod: core.Pod, found: list[kills.OOMKill]) -> int:
        """Queue a pod's unseen kills for its workload's recommendation; return how many this call
        recorded (0 when another thread is the workload's writer and will record them)."""
        with self._lock:
            fresh = [k for k in found if k.identity not in self._seen]
        if not fresh:
            return 0
        try:
            kind, name = owners.top_owner(self._client, pod_body, chains=self._chains)
        except Exception as exc:
            self._later_if_passing(exc, f"kills of pod {pod.metadata.namespace}/{pod.metadata.name}",
                                   lambda: self._handle(pod_body, pod, found))
            raise
        key = f"{pod.metadata.namespace or ''}/{recommendation.name_for(kind=kind, name=name)}"
        with self._lock:
            queue = self._pending[key]
            for k in fresh:
                queue[k.identity] = k
            self._sources[key] = (pod_body, kind, name)
        return self._drain(key)

    def _drain(self, key: str) -> int:
        """Record what has queued for `key`, batch after batch, unless another thread is its writer.
        A batch whose write fails waits in the queue for `retry` (the pod may never send another
        event); the first error is raised."""
        with self._lock:
            if key in self._writing or key not in self._sources:
                return 0
            self._writing.add(key)
            pod_body, kind, name = self._sources[key]
        recorded = 0
        failure: Exception | None = None
        handed_over = False  # once the writer flag is down, another thread may hold it
        try:
            while True:
                with self._lock:
                    batch = list(self._pending.pop(key, {}).values())
                    if not batch:
                        self._writing.discard(key)
                        self._sources.pop(key, None)
                        self._retry_at.pop(key, None)
                        handed_over = True
                        break
                try:
                    with self._recommendations.hold(key):
                        target = self._workloads.of_pod(pod_body, kind=kind, name=name)
                        recorded += self._recorder.record(target, batch)
                except Exception as exc:  # a passing failure is kept for `retry`; the first error is raised
                    with self._lock:
                        if api.passing(exc):
                            queue = self._pending[key]
                            for k in batch:
                                queue.setdefault(k.identity, k)
                            self._retry_at[key] = self._monotonic() + RETRY_AFTER
                        else:  # refused for good (the namespace is going, RBAC): the pod's next event brings them back
                            self._pending.pop(key, None)
                            self._sources.pop(key, None)
                            self._retry_at.pop(key, None)
                        self._writing.discard(key)
                        handed_over = True
                    failure = exc
                    break
                self._mark_seen(batch)
        finally:
            if not handed_over:  # an unexpected error: the next event or `retry` writes again
                with self._lock:
                    self._writing.discard(key)
        if failure is not None:
            raise failure
        return recorded

    def waiting(self) -> int:
        """Kills queued or waiting for another try (a pod waiting to be handled again counts one)."""
        with self._lock:
            return sum(len(q) for q in self._pending.values()) + len(self._later)

    def _later_if_passing(self, exc: Exception, what: str, again: Callable[[], int]) -> None:
        """Before its kills are queued, a pod's handling failed: on a passing failure (the API server
        restarting) it is handled again by `retry`, since the pod may send no further event."""
        if api.passing(exc):
            with self._lock:
                self._later[what] = (again, self._monotonic() + RETRY_AFTER)

    def retry(self) -> int:
        """Handle again the pods whose handling failed before their kills were queued, and write again
        the batches whose write failed, once their wait is over. Returns how many kills this recorded.
        Errors are logged: what failed waits for the next try."""
        now = self._monotonic()
        with self._lock:
            later = [(what, again) for what, (again, at) in self._later.items() if at <= now]
            for what, _ in later:
                del self._later[what]
        recorded = 0
        for what, again in later:
            try:
                recorded += again()
            except Exception as exc:  # noqa: BLE001 - a passing failure put it back in `_later`
                metrics.RECONCILE_ERRORS.labels(kind="kill retry").inc()
                logger.warning("%s: handling failed again: %s", what, exc)
        with self._lock:
            due = [key for key, at in self._retry_at.items() if at <= now]
        for key in due:
            try:
                recorded += self._drain(key)
            except Exception as exc:  # noqa: BLE001 - still failing: kept, tried again later
                metrics.RECONCILE_ERRORS.labels(kind="kill retry").inc()
                logger.warning("%s: recording its kills failed again, tried again in %gs: %s", key, RETRY_AFTER, exc)
        return recorded

    def _mark_seen(self, recorded: list[kills.OOMKill]) -> None:
        with self._lock:
            for k in recorded:
                self._seen[k.identity] = None
                self._seen.move_to_end(k.identity)
            while len(self._seen) > SEEN_CAPACITY:
                self._seen.popitem(last=False)
