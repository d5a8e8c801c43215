"""The operator, assembled: every service built from the settings, in one place.

`oomtuner run` builds one `App` and hands it to kopf as the operator's memo; the handlers
(`oomtuner.handlers`) reach the services through it and do nothing else. Everything here is
synchronous: the handlers run these entry points in worker threads, so the API calls they make never
block kopf's event loop. ARCHITECTURE.md draws the rooms and the flow of one kill through them.
"""

from __future__ import annotations

import datetime
import logging
import time
from typing import Any, Callable, Mapping

from oomtuner import config
from oomtuner.api import core, recommendation
from oomtuner.domain import child_kills, classify, evidence, timestamps
from oomtuner.domain import recommendations as recommendations_domain
from oomtuner.kube import api, events, owners, store
from oomtuner.prom import usage as prom_usage
from oomtuner.services import (
    announcer,
    caps,
    culprits,
    held,
    intake,
    nodes,
    patcher,
    policies,
    recommendations,
    recompute,
    recorder,
    settler,
)

logger = logging.getLogger(__name__)

NODE_OOM_REASONS = frozenset({classify.SYSTEM_OOM, classify.OOM_KILLING})
# Every event reason the Event watch hands over: node-wide OOMs and the node agent's child kills.
EVENT_REASONS = NODE_OOM_REASONS | {child_kills.REASON}


def utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


class App:
    def __init__(self, *, client: api.Client, settings: config.Settings,
                 clock: Callable[[], datetime.datetime] = utcnow, usage: prom_usage.Source | None = None,
                 monotonic: Callable[[], float] = time.monotonic):
        self.client = client
        self.settings = settings
        self.clock = clock
        source = usage if usage is not None else prom_usage.from_settings(settings)
        workloads = owners.Workloads(client)
        self.announcer = announcer.Announcer(client, clock=clock)
        self.nodes = nodes.Nodes(client)
        self.policies = policies.Policies(client, settings=settings, announcer=self.announcer, clock=clock,
                                          monotonic=monotonic)
        self.recommendations = recommendations.Recommendations(client)
        self.caps = caps.Caps(client, nodes=self.nodes)
        self.recompute = recompute.Recompute(usage=source, caps=self.caps, memory_bound=self.nodes.largest_capacity)
        self.culprits = culprits.Culprits(client, settings=settings, usage=source, nodes=self.nodes,
                                          policies=self.policies, recommendations=self.recommendations,
                                          recompute=self.recompute, announcer=self.announcer, clock=clock)
        self.patcher = patcher.Patcher(client, settings=settings, recommendations=self.recommendations,
                                       workloads=workloads, announcer=self.announcer, clock=clock)
        self.held = held.HeldPatches(client=client, policies=self.policies, patcher=self.patcher,
                                     recommendations=self.recommendations, clock=clock)
        self.settler = settler.Settler(client, usage=source, policies=self.policies, recommendations=self.recommendations,
                                       patcher=self.patcher, held=self.held, announcer=self.announcer, clock=clock)
        self.recorder = recorder.Recorder(client, policies=self.policies, recommendations=self.recommendations,
                                          recompute=self.recompute, culprits=self.culprits, patcher=self.patcher,
                                          held=self.held, announcer=self.announcer, workloads=workloads, clock=clock,
                                          monotonic=monotonic)
        self.intake = intake.Intake(client, nodes=self.nodes, recorder=self.recorder,
                                    recommendations=self.recommendations, workloads=workloads, chains=owners.Chains(),
                                    monotonic=monotonic)

    # ---- entry points of the watches ------------------------------------------------------------

    def on_pod(self, body: Mapping[str, Any]) -> int:
        """A pod's status; returns how many kills this call recorded."""
        return self.intake.on_pod(body)

    def on_node(self, body: Mapping[str, Any], *, deleted: bool = False) -> None:
        try:
            node = core.parse_node(body)
        except core.InvalidObject as exc:
            logger.warning("ignoring unreadable Node: %s", exc)
            return
        self.nodes.update(node, deleted=deleted)

    def on_event(self, body: Mapping[str, Any]) -> classify.NodeOOM | None:
        """Node-wide OOMs (kubelet SystemOOM, node-problem-detector OOMKilling) are remembered; the node
        agent's OOMKillChildProcess events are kills."""
        reason = core.reason_of(body)
        if reason == child_kills.REASON:
            self.intake.on_child_kill(body)
            return None
        if reason not in NODE_OOM_REASONS:
            return None
        try:
            event = core.parse_event(body)
        except core.InvalidObject as exc:  # a malformed Event is logged, never fatal
            logger.warning("ignoring unreadable %s event: %s", reason, exc)
            return None
        problem = evidence.node_oom_problem(event)
        if problem is not None:  # anyone may post events: only the kubelet's of that node counts
            logger.warning("%s event %s/%s does not count: %s", reason, event.metadata.namespace, event.metadata.name, problem)
            return None
        return self.culprits.on_node_oom(event)

    def on_policy(self, body: Mapping[str, Any], *, deleted: bool = False) -> None:
        self.policies.on_policy(body, deleted=deleted)

    def on_cluster_policy(self, body: Mapping[str, Any], *, deleted: bool = False) -> None:
        self.policies.on_cluster_policy(body, deleted=deleted)

    def on_recommendation_deleted(self, body: Mapping[str, Any]) -> None:
        """A recommendation was deleted: forget what was remembered of it (its metrics, its cache)."""
        meta = core.meta_of(body)
        namespace, name = meta.namespace or "", meta.name
        self.announcer.gone(namespace, name)
        self.recommendations.forget(f"{namespace}/{name}")

    def on_recommendation(self, body: Mapping[str, Any]) -> bool:
        """Apply an approved recommendation once per approval. Returns True when it acted.

        Also schedules the Auto-mode patch its status says is held back by the cooldown: that is how
        the schedule comes back after a restart, when the watch lists every recommendation.
        """
        try:
            rec = recommendation.read(body)
            problem = recommendations_domain.problem(rec)
        except recommendation.InvalidRecommendation as exc:
            problem = str(exc)
        if problem is not None:
            self._unreadable(body, problem)
            return False
        self.announcer.memory(rec)
        self.held.hold(rec)
        self.settler.track(rec)
        if not rec.spec.approved or rec.status.appliedGeneration == rec.metadata.generation:
            return False
        if not rec.status.containers:
            return False
        ref = rec.spec.targetRef
        namespace = rec.metadata.namespace or ""
        with self.recommendations.hold(recommendations.key_of(rec)):
            target = owners.read_workload(self.client, kind=ref.kind, namespace=namespace, name=ref.name)
            if target is None:
                self.patcher.note(rec, reason="TargetMissing", message=f"{ref.kind}/{ref.name} does not exist", approval=True)
                return False
            self.patcher.apply(rec, target=target, chosen=self.policies.choose(target), trigger=patcher.Trigger.APPROVAL)
        return True

    def _unreadable(self, body: Mapping[str, Any], problem: str) -> None:
        """A recommendation the operator cannot read (hand-edited): say so on it, once, with the
        field, and go on with the other workloads."""
        logger.warning("unreadable OOMRecommendation: %s", problem)
        meta = core.meta_of(body)
        if not meta.name or not store.mark_unreadable(self.client, body, problem=problem,
                                                     now=timestamps.format(self.clock())):
            return
        self.announcer.post(involved={"apiVersion": f"{recommendation.GROUP}/{recommendation.VERSION}",
                                      "kind": recommendation.KIND, "name": meta.name, "namespace": meta.namespace,
                                      "uid": meta.uid},
                            reason=events.Reason.RECOMMENDATION_UNREADABLE, message=problem)

    # ---- start-up and background ----------------------------------------------------------------------

    def prime(self) -> str:
        """List the policies, nodes and recommendations once, before any kill is handled: kills
        replayed at start-up are then judged with the right policy (mode, caps), node capacities and
        the patches owed. Raises on an API error (the caller tries again). Returns what it read."""
        namespaces: list[str | None] = list(self.settings.namespaces) or [None]
        policies_read = sum(self.policies.learn(namespace) for namespace in namespaces) + self.policies.learn_cluster()
        nodes_read = 0
        for body in self.client.list(api.cluster(group="", version="v1", plural="nodes")):
            try:
                self.nodes.update(core.parse_node(body))
                nodes_read += 1
            except core.InvalidObject as exc:
                logger.warning("ignoring unreadable Node: %s", exc)
        recs = [rec for namespace in namespaces for rec in store.list_recommendations(self.client, namespace=namespace)]
        for rec in recs:
            self.held.hold(rec)
            self.settler.track(rec)
        owed = len(self.held.scheduled())
        return (f"read {policies_read} valid OOMPolicies and ClusterOOMPolicies, {nodes_read} Nodes and {len(recs)} OOMRecommendations "
                f"({owed} with a patch owed)")

    def apply_due(self) -> int:
        """Apply the held patches that are due; returns how many were tried."""
        return self.held.apply_due()

    def tick(self) -> None:
        """The background task's round: kills whose write failed, the patches that are due, then the
        raises that may be settled."""
        self.intake.retry()
        self.held.apply_due()
        self.settler.due()

    def flush(self, timeout: float) -> bool:
        """Post the events still queued (at shutdown)."""
        return self.announcer.flush(timeout)
