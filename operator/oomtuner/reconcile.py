"""What the operator does with what it watches: kills, node OOMs, policies and approvals.

This is the application layer between the kopf handlers (which only route watch events here) and
the domain and kube layers. Every method is synchronous and is run by the handlers in a worker
thread, so the API calls it makes never block kopf's event loop. State that must survive a restart
lives in the cluster (the recommendations' kill ledgers); the in-memory state here is a cache:
- node capacity and recent node-wide OOMs, fed by the Node and Event watches;
- the valid policies per namespace, fed by the OOMPolicy watch;
- the identities of kills already handled, so a pod's repeated status updates cost nothing;
- the Auto-mode patches held back by a cooldown, rebuilt from the recommendations' status (which
  says `CooldownActive`) when the watch lists them after a restart.
"""

from __future__ import annotations

import collections
import concurrent.futures
import datetime
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from oomtuner import config
from oomtuner.api import core, policy, recommendation, types
from oomtuner.domain import (
    child_kills,
    classify,
    duration,
    held,
    kills,
    ledger,
    patch,
    policies,
    quantity,
    quota,
    recommend,
    selection,
    timestamps,
    workload,
)
from oomtuner.kube import api, events, owners, patching, store
from oomtuner.prom import metrics
from oomtuner.prom import usage as prom_usage

logger = logging.getLogger(__name__)

SEEN_CAPACITY = 200_000
LIMIT_RANGE_TTL = 30.0  # seconds
# ResourceQuota usage moves with every pod, so quotas are read again sooner than LimitRanges.
RESOURCE_QUOTA_TTL = 10.0  # seconds
WARNINGS_REMEMBERED = 1_000  # distinct cap warnings remembered, so each is logged once
RECOMMENDATION_CACHE = 20_000
NODE_OOM_MEMORY = 64
DEFERRED_RETRY = datetime.timedelta(seconds=30)  # a held patch whose reads failed is tried again after this


def utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


RECENT_KILLS = 10_000


@dataclass(frozen=True)
class RecentKill:
    node: str
    at: datetime.datetime
    key: str  # namespace/name of the recommendation that holds it
    identity: str


@dataclass
class NodeInfo:
    capacity: int | None = None
    allocatable: int | None = None


def has_oom_status(body: Mapping[str, Any]) -> bool:
    """A cheap pre-filter on raw pod bodies: does any container status mention OOMKilled?

    Runs on every pod event, before any parsing, so it only walks the status lists.
    """
    status = body.get("status") or {}
    for key in ("containerStatuses", "initContainerStatuses", "ephemeralContainerStatuses"):
        for cs in status.get(key) or ():
            for state_key in ("state", "lastState"):
                term = ((cs or {}).get(state_key) or {}).get("terminated") or {}
                if term.get("reason") == "OOMKilled":
                    return True
    return False


class Operator:
    """The operator's state and its reactions. One per process."""

    def __init__(
        self,
        *,
        client: api.Client,
        settings: config.Settings,
        clock: Callable[[], datetime.datetime] = utcnow,
        usage: prom_usage.Source | None = None,
    ):
        self.client = client
        self.settings = settings
        self.clock = clock
        # Usage history (Prometheus, or Disabled without a URL). Its queries block, bounded by a
        # timeout and a circuit breaker; they run in the worker thread of the handler, like API calls
        # (the culprit of a node OOM: in a culprit thread, below).
        self.usage = usage if usage is not None else prom_usage.from_settings(settings)
        # Workload reads for recording kills, a few seconds old at most; patches read afresh.
        self.workloads = owners.Workloads(client)
        self.nodes: dict[str, NodeInfo] = {}
        self.node_ooms: dict[str, collections.deque[classify.NodeOOM]] = {}
        self.policies: dict[str, dict[str, policy.OOMPolicy]] = collections.defaultdict(dict)
        self.seen: collections.OrderedDict[str, None] = collections.OrderedDict()
        self.node_oom_window = duration.parse(settings.node_oom_window)
        self.default_cooldown = duration.parse(settings.cooldown)
        self._locks: dict[str, threading.Lock] = collections.defaultdict(threading.Lock)
        self._guard = threading.Lock()
        self._phases: dict[str, types.Phase] = {}
        # LimitRanges and ResourceQuotas by (plural, namespace): when read, and what.
        self._lists: dict[tuple[str, str], tuple[float, list[dict[str, Any]]]] = {}
        self._warned: set[str] = set()  # cap warnings logged once each
        # Kills waiting for their workload's writer (see _handle_kills), by identity.
        self._pending: dict[str, dict[str, kills.OOMKill]] = collections.defaultdict(dict)
        self._writing: set[str] = set()
        self._recs: dict[str, recommendation.OOMRecommendation] = {}
        # Events go out from a few threads of their own: best effort, and never on a workload's lock.
        self.events = events.Poster(client)
        # The likely culprits of node OOMs are looked up (pods on the node, Prometheus) in threads of
        # their own, after the kill is recorded: a Node kill's event waits for its culprit, nothing else does.
        self._culprit_pool = concurrent.futures.ThreadPoolExecutor(max_workers=2, thread_name_prefix="oomtuner-culprits")
        # Auto-mode patches held back by a cooldown: recommendation key → when it ends.
        self._deferred: dict[str, datetime.datetime] = {}
        # Recently recorded kills not classified Node, for a SystemOOM that arrives after them.
        self._recent: collections.deque[RecentKill] = collections.deque(maxlen=RECENT_KILLS)

    def _write_status(self, rec: recommendation.OOMRecommendation, mutate: store.Mutation) -> recommendation.OOMRecommendation:
        """Write a recommendation's status and remember the result, so the next kill of the same
        workload starts from it without reading it again. A stale copy costs one 409 and a re-read;
        a recommendation deleted meanwhile is created again."""
        key = f"{rec.metadata.namespace}/{rec.metadata.name}"
        try:
            written = store.update_recommendation_status(self.client, current=rec, mutate=mutate)
        except api.NotFound:
            self._recs.pop(key, None)
            fresh = store.ensure_recommendation(
                self.client, namespace=rec.metadata.namespace or "", name=rec.metadata.name,
                target=rec.spec.targetRef,
                owner_uid=next((o.get("uid") for o in rec.metadata.ownerReferences or []), None),
            )
            written = store.update_recommendation_status(self.client, current=fresh, mutate=mutate)
        with self._guard:
            self._recs[key] = written
            while len(self._recs) > RECOMMENDATION_CACHE:
                self._recs.pop(next(iter(self._recs)))
        return written

    def _post(self, body: dict[str, Any]) -> None:
        self.events.submit(body)

    # ---- caches fed by watches -------------------------------------------------------------

    def on_node(self, body: Mapping[str, Any], *, deleted: bool = False) -> None:
        name = (body.get("metadata") or {}).get("name")
        if not name:
            return
        if deleted:
            self.nodes.pop(name, None)
            return
        status = body.get("status") or {}
        self.nodes[name] = NodeInfo(
            capacity=_bytes((status.get("capacity") or {}).get("memory")),
            allocatable=_bytes((status.get("allocatable") or {}).get("memory")),
        )

    def node_capacity(self, node: str | None) -> int | None:
        """The node's memory capacity; reads the Node once when the watch has not seen it yet."""
        if not node:
            return None
        info = self.nodes.get(node)
        if info is None:
            body = self.client.get_or_none(api.cluster(group="", version="v1", plural="nodes", name=node))
            if body is None:
                return None
            self.on_node(body)
            info = self.nodes.get(node)
        return info.capacity if info else None

    def on_event(self, body: Mapping[str, Any]) -> classify.NodeOOM | None:
        """Record node-wide OOMs (kubelet SystemOOM, node-problem-detector OOMKilling); hand the node
        agent's OOMKillChildProcess events to `on_child_kill`."""
        reason = body.get("reason")
        if reason == child_kills.REASON:
            self.on_child_kill(body)
            return None
        if reason not in ("SystemOOM", "OOMKilling"):
            return None
        try:
            event = core.Event.model_validate(body)
        except Exception as exc:  # a malformed Event is logged, never fatal
            logger.warning("ignoring unreadable %s event: %s", reason, exc)
            return None
        found = classify.node_oom_from_event(event)
        if found is None:
            return None
        queue = self.node_ooms.setdefault(found.node, collections.deque(maxlen=NODE_OOM_MEMORY))
        if found not in queue:
            queue.append(found)
            logger.info("node %s ran out of memory at %s (%s)", found.node, timestamps.format(found.at), found.source)
            self._reclassify_after(found)
        return found

    def _reclassify_after(self, node_oom: classify.NodeOOM) -> int:
        """A node OOM seen after kills near it on that node were recorded: classify them again.

        The kubelet's SystemOOM event and the container's status race; whichever arrives second, the
        kill ends up classified with both in view. Returns how many kills changed class.
        """
        with self._guard:
            hits = [r for r in self._recent
                    if r.node == node_oom.node and abs(r.at - node_oom.at) <= self.node_oom_window]
        by_key: dict[str, set[str]] = collections.defaultdict(set)
        for hit in hits:
            by_key[hit.key].add(hit.identity)
        changed = 0
        for key, identities in by_key.items():
            changed += self._reclassify_recommendation(key, identities)
        return changed

    def _reclassify_recommendation(self, key: str, identities: set[str]) -> int:
        namespace, name = key.split("/", 1)
        with self._locks[key]:
            rec = store.get_recommendation(self.client, namespace=namespace, name=name)
            if rec is None:
                return 0
            ref = rec.spec.targetRef
            target = owners.read_workload(self.client, kind=ref.kind, namespace=namespace, name=ref.name)
            if target is None:
                return 0
            chosen = self._policy_for(target)
            mode = selection.effective_mode(chosen, default=self.settings.default_mode)
            count = [0]
            usage_histories: list[prom_usage.History] = []
            places: dict[str, tuple[str, datetime.datetime | None]] = {}  # Node kills now, for their culprit

            def mutate(obj: recommendation.OOMRecommendation) -> recommendation.OOMRecommendation | None:
                count[0] = 0
                places.clear()
                for record in obj.status.kills:
                    if record.id not in identities:
                        continue
                    again = self._classify(ledger.from_record(record, namespace=namespace).kill)
                    if again.classification != record.classification:
                        record.classification, record.reason = again.classification, again.reason
                        count[0] += 1
                        if again.classification == types.Classification.NODE and record.node:
                            places[record.id] = (record.node, timestamps.parse(record.at))
                if not count[0]:
                    return None
                now = self.clock()
                if not usage_histories:
                    usage_histories.append(self._usage_history(target, chosen, obj.status.kills, now=now))
                self._recompute(obj, target=target, chosen=chosen, mode=mode, added=[], now=now,
                                usage_history=usage_histories[0])
                return obj

            rec = self._write_status(rec, mutate)
        if places:
            self._culprit_pool.submit(self._blame, key=key, places=dict(places))
        if count[0]:
            logger.info("%s: %d kill(s) reclassified after a node OOM", key, count[0])
        return count[0]

    # ---- policies ----------------------------------------------------------------------------

    def on_policy(self, body: Mapping[str, Any], *, deleted: bool = False) -> None:
        meta = body.get("metadata") or {}
        namespace, name = str(meta.get("namespace") or ""), str(meta.get("name") or "")
        if deleted:
            self.policies[namespace].pop(name, None)
            return
        now = timestamps.format(self.clock())
        generation = meta.get("generation")
        parsed, problem = _read_policy(body, namespace=namespace, name=name)
        if problem is not None or parsed is None:
            self.policies[namespace].pop(name, None)
            message = problem or "unreadable"
            logger.warning("OOMPolicy %s/%s is invalid: %s", namespace, name, message)
            condition = store.condition(type_="Valid", ok=False, reason="Invalid", message=message, now=now, generation=generation)
            status = policy.OOMPolicyStatus(observedGeneration=generation, conditions=[condition], matchedWorkloads=0)
        else:
            self.policies[namespace][name] = parsed
            matched = self._count_matched(namespace, parsed)
            condition = store.condition(
                type_="Valid", ok=True, reason="Valid", message="the policy is in effect", now=now, generation=generation
            )
            status = policy.OOMPolicyStatus(observedGeneration=generation, conditions=[condition], matchedWorkloads=matched)
        old = (body.get("status") or {})
        if _same_policy_status(old, status):
            return
        store.write_policy_status(self.client, namespace=namespace, name=name, status=status)
        if problem is not None:
            involved = {"apiVersion": f"{policy.GROUP}/{policy.VERSION}", "kind": policy.KIND, "name": name,
                        "namespace": namespace, "uid": meta.get("uid")}
            self._post(events.build(involved=involved, reason=events.Reason.POLICY_INVALID, message=problem, now=self.clock()))

    def _count_matched(self, namespace: str, chosen: policy.OOMPolicy) -> int:
        count = 0
        for kind in ("Deployment", "StatefulSet", "DaemonSet", "CronJob"):
            try:
                bodies = self.client.list(owners.path_of(kind=kind, namespace=namespace))
            except api.ApiError:
                continue
            for body in bodies:
                try:
                    wl = workload.from_body({**body, "kind": kind, "apiVersion": "v1"})
                except core.InvalidObject:
                    continue
                if selection.choose(list(self.policies[namespace].values()), wl.template_labels) is chosen:
                    count += 1
        return count

    # ---- kills -------------------------------------------------------------------------------

    def on_pod(self, body: Mapping[str, Any]) -> int:
        """Handle a pod's status. Returns how many kills were newly recorded."""
        if not has_oom_status(body):
            return 0
        pod = core.parse_pod(body)
        found = kills.kills_from_pod(pod, node_memory_capacity=self.node_capacity(pod.spec.nodeName))
        return self._handle_kills(body, found)

    def on_child_kill(self, body: Mapping[str, Any]) -> int:
        """An OOMKillChildProcess event from the node agent: a process other than the container's
        main one was killed, so the pod status shows nothing (unless the container restarted too)."""
        involved = body.get("involvedObject") or {}
        namespace = involved.get("namespace") or (body.get("metadata") or {}).get("namespace")
        name = involved.get("name")
        if not namespace or not name:
            return 0
        pod_body = self.client.get_or_none(api.namespaced(group="", version="v1", plural="pods", namespace=namespace, name=name))
        if pod_body is None:
            logger.info("pod %s/%s of an %s event is gone; nothing to attribute it to", namespace, name, child_kills.REASON)
            return 0
        pod = core.parse_pod(pod_body)
        capacity = self.node_capacity(pod.spec.nodeName)
        found = child_kills.kills_from_event(body, pod=pod, node_memory_capacity=capacity)
        if not found:
            return 0
        in_status = kills.kills_from_pod(pod, node_memory_capacity=capacity)
        if any(child_kills.same_kill(c, s) for c in found for s in in_status):
            return 0  # the container restarted: the pod-status kill is the one counted
        return self._handle_kills(pod_body, list(found))

    def _handle_kills(self, pod_body: Mapping[str, Any], found: list[kills.OOMKill]) -> int:
        """Queue a pod's unseen kills for its workload's recommendation; return how many this call
        recorded.

        A burst of kills in one workload (many replicas at once) must cost neither a status write
        per kill nor a worker thread per kill waiting for the workload: the first thread that finds
        no writer for the workload becomes its writer and records what has queued, batch after
        batch, until the queue is empty. The others queue their kills and return at once (0), so
        the worker threads stay free for the next pod events. A kill is marked seen only once it
        is recorded: when a write fails, the pod's next status event brings the kill back.
        """
        fresh = [k for k in found if k.identity not in self.seen]
        if not fresh:
            return 0
        kind, name = owners.top_owner(self.client, pod_body)
        namespace = str((pod_body.get("metadata") or {}).get("namespace") or "")
        key = f"{namespace}/{recommendation.name_for(kind=kind, name=name)}"
        with self._guard:
            queue = self._pending[key]
            for k in fresh:
                queue[k.identity] = k
            if key in self._writing:
                return 0
            self._writing.add(key)
        recorded = 0
        failure: Exception | None = None
        handed_over = False  # once the writer flag is down, another thread may hold it
        try:
            while True:
                with self._guard:
                    batch = list(self._pending.pop(key, {}).values())
                    if not batch:
                        self._writing.discard(key)
                        handed_over = True
                        break
                try:
                    with self._locks[key]:
                        target = self.workloads.of_pod(pod_body, kind=kind, name=name)
                        recorded += self._record(target, batch)
                except Exception as exc:  # the next batch may still go through; the first error is raised
                    failure = failure or exc
                    continue
                self._mark_seen(batch)
        finally:
            if not handed_over:  # an unexpected error: the next pod event of the workload writes again
                with self._guard:
                    self._writing.discard(key)
        if failure is not None:
            raise failure
        return recorded

    def _mark_seen(self, recorded: list[kills.OOMKill]) -> None:
        with self._guard:
            for k in recorded:
                self.seen[k.identity] = None
                self.seen.move_to_end(k.identity)
            while len(self.seen) > SEEN_CAPACITY:
                self.seen.popitem(last=False)

    def _policy_for(self, target: workload.Workload) -> policy.OOMPolicy | None:
        return selection.choose(list(self.policies.get(target.namespace, {}).values()), target.template_labels)

    def _classify(self, kill: kills.OOMKill) -> ledger.Classified:
        ooms = list(self.node_ooms.get(kill.node or "", ()))
        cls, reason = classify.classify(kill, node_ooms=ooms, window=self.node_oom_window)
        return ledger.Classified(kill=kill, classification=cls, reason=reason)

    def _record(self, target: workload.Workload, fresh: list[kills.OOMKill]) -> int:
        chosen = self._policy_for(target)
        mode = selection.effective_mode(chosen, default=self.settings.default_mode)
        classified = [self._classify(k) for k in fresh]
        now = self.clock()
        if mode == types.Mode.OBSERVE:
            self._announce_and_blame(target, classified, key=None)
            return len(classified)
        name = recommendation.name_for(kind=target.kind, name=target.name)
        # Not among the recommendations this process wrote: most often a workload's first kill, so
        # create first (after a restart an existing one costs one refused create, once).
        rec = self._recs.get(f"{target.namespace}/{name}") or store.ensure_recommendation(
            self.client, namespace=target.namespace, name=name, target=target.ref, owner_uid=target.uid,
            create_first=True,
        )
        added: list[ledger.Classified] = []
        before_phase = rec.status.phase
        usage_histories: list[prom_usage.History] = []  # read once, and only when there is a new kill

        def mutate(obj: recommendation.OOMRecommendation) -> recommendation.OOMRecommendation | None:
            unseen = ledger.unseen(obj.status.kills, [c.kill for c in classified])
            ids = {k.identity for k in unseen}
            added[:] = [c for c in classified if c.kill.identity in ids]
            if not added:
                return None
            obj.status.kills = ledger.append(obj.status.kills, added)
            if not usage_histories:
                usage_histories.append(self._usage_history(target, chosen, obj.status.kills, now=now))
            self._recompute(obj, target=target, chosen=chosen, mode=mode, added=added, now=now,
                            usage_history=usage_histories[0])
            return obj

        rec = self._write_status(rec, mutate)
        if not added:
            return 0
        with self._guard:
            for item in added:
                if item.kill.node and item.kill.at and item.classification != types.Classification.NODE:
                    self._recent.append(RecentKill(node=item.kill.node, at=item.kill.at,
                                                   key=f"{target.namespace}/{name}", identity=item.kill.identity))
        self._announce_and_blame(target, added, key=f"{target.namespace}/{name}")
        for item in added:
            if item.kill.at is not None:
                metrics.DETECTION_LATENCY.observe(max(0.0, (self.clock() - item.kill.at).total_seconds()))
        self._announce_recommendation(rec, target=target, before=before_phase)
        if mode == types.Mode.AUTO and rec.status.phase in (types.Phase.PENDING, types.Phase.CAPPED):
            fresh = self.workloads.fresh(target)  # the patch compares with the workload as it is now
            if fresh is not None:
                self._apply(rec, target=fresh, chosen=chosen, trigger="auto")
        return len(added)

    def _caps(self, target: workload.Workload, chosen: policy.OOMPolicy | None) -> recommend.Caps:
        settings = chosen.spec.memory if chosen else policy.MemorySettings()
        allocatable = [n.allocatable for n in self.nodes.values() if n.allocatable]
        return recommend.Caps(
            policy_max_limit=_bytes(settings.maxLimit),
            limit_range_max=self._limit_range_max(target.namespace),
            quota_headroom=self._quota_headroom(target, settings),
            largest_node_allocatable=max(allocatable) if allocatable else None,
        )

    def _limit_range_max(self, namespace: str) -> int | None:
        """The smallest Container or Pod max memory of the namespace's LimitRanges."""
        ranges = self._listed("limitranges", namespace, ttl=LIMIT_RANGE_TTL, what="LimitRanges",
                              consequence="recommendations are not capped by LimitRange max where they cannot be read")
        found: list[int] = []
        for lr in ranges:
            for item in (lr.get("spec") or {}).get("limits") or []:
                if item.get("type") in ("Container", "Pod"):
                    value = _bytes((item.get("max") or {}).get("memory"))
                    if value is not None:
                        found.append(value)
        return min(found) if found else None

    def _quota_headroom(self, target: workload.Workload, settings: policy.MemorySettings) -> int | None:
        """How much the workload's containers' limits may grow within the namespace's ResourceQuotas,
        their free room shared by the workload's pods (`domain.quota`); None when no quota bounds it
        or the quotas cannot be read."""
        bodies = self._resource_quota_bodies(target.namespace)
        if not bodies:
            return None
        # Only a DaemonSet whose controller has not counted its nodes yet has no replicas: assume a
        # pod on every node known here.
        pods = target.replicas if target.replicas is not None else max(len(self.nodes), 1)
        room = quota.headroom(bodies, pods=pods, template=target.template, admitted=target.kind == "Pod")
        for problem in room.skipped:
            self._warn_once(problem)
        for bound in (room.limits, room.requests):
            if bound is not None:
                logger.debug("%s %s/%s: %s", target.kind, target.namespace, target.name, bound)
        return quota.limit_headroom(room, containers=target.containers(), request_policy=settings.requestPolicy)

    def _resource_quota_bodies(self, namespace: str) -> list[dict[str, Any]]:
        """The namespace's ResourceQuotas."""
        return self._listed("resourcequotas", namespace, ttl=RESOURCE_QUOTA_TTL, what="ResourceQuotas",
                            consequence="recommendations are not capped by ResourceQuota headroom where they cannot be read")

    def _listed(self, plural: str, namespace: str, *, ttl: float, what: str, consequence: str) -> list[dict[str, Any]]:
        """A core/v1 list in `namespace`, read at most every `ttl` seconds: a burst of kills in one
        namespace reads it once, a change is seen after the TTL. [] when the list fails (no RBAC for
        it, any API error), with a warning once per cause."""
        now = time.monotonic()
        cached = self._lists.get((plural, namespace))
        if cached is not None and now - cached[0] < ttl:
            return cached[1]
        bodies: list[dict[str, Any]] = []
        try:
            bodies = self.client.list(api.namespaced(group="", version="v1", plural=plural, namespace=namespace))
        except api.ApiError as exc:
            # Missing permissions are the same everywhere: said once, not once per namespace.
            key = f"list {plural} {exc.status}" if exc.status in (401, 403) else f"list {plural} {namespace} {exc.status}"
            self._warn_once(f"cannot list {what} in {namespace}: {exc}; {consequence}", key=key)
        self._lists[(plural, namespace)] = (now, bodies)
        return bodies

    def _warn_once(self, message: str, *, key: str | None = None) -> None:
        """Log a warning about caps the first time (per `key`, the message by default); debug after."""
        key = key or message
        if key in self._warned:
            logger.debug("%s", message)
            return
        if len(self._warned) >= WARNINGS_REMEMBERED:
            self._warned.clear()
        self._warned.add(key)
        logger.warning("%s", message)

    def _usage_history(
        self,
        target: workload.Workload,
        chosen: policy.OOMPolicy | None,
        records: list[recommendation.Kill],
        *,
        now: datetime.datetime,
    ) -> prom_usage.History:
        """Usage of the killed containers over the policy's lookback; never raises."""
        known = [ledger.from_record(r, namespace=target.namespace).kill for r in records]
        lookback = duration.parse(chosen.spec.prometheus.lookback if chosen else policy.PrometheusSettings().lookback)
        query = prom_usage.Query(
            namespace=target.namespace,
            workload_kind=target.kind,
            workload_name=target.name,
            containers=prom_usage.containers_with_kills(known),
            kills=tuple(known),
            lookback=lookback,
            now=now,
        )
        try:
            return self.usage.history(query)
        except Exception as exc:  # a bug in the usage layer must not cost the recommendation
            logger.exception("usage history for %s/%s failed", target.namespace, target.name)
            return prom_usage.History(outcome=prom_usage.Outcome.UNAVAILABLE, message=f"usage lookup failed: {exc}")

    def _recompute(
        self,
        obj: recommendation.OOMRecommendation,
        *,
        target: workload.Workload,
        chosen: policy.OOMPolicy | None,
        mode: types.Mode,
        added: list[ledger.Classified],
        now: datetime.datetime,
        usage_history: prom_usage.History,
    ) -> None:
        """Fill the recommendation's status from its kill ledger, the workload's current memory and
        the usage history (when there is one)."""
        settings = chosen.spec.memory if chosen else policy.MemorySettings()
        namespace = target.namespace
        history = [ledger.from_record(r, namespace=namespace) for r in obj.status.kills]
        previous = {c.name: c for c in obj.status.containers}
        caps = self._caps(target, chosen)
        results: list[recommend.ContainerRecommendation] = []
        statuses: list[recommendation.ContainerStatus] = []
        for current in target.containers():
            mine = [h for h in history if h.kill.container == current.name]
            if not mine and current.name not in previous:
                continue
            result = recommend.recommend_container(
                current=current,
                kills=[h.kill for h in mine],
                classifications=[h.classification for h in mine],
                settings=settings,
                caps=caps,
                usage=usage_history.usage.get(current.name),
            )
            results.append(result)
            before = previous.get(current.name)
            total = (before.oomKills if before else 0) + sum(1 for a in added if a.kill.container == current.name)
            last = max((h.kill.at for h in mine if h.kill.at is not None), default=None)
            statuses.append(
                recommendation.ContainerStatus(
                    name=current.name,
                    type=current.type,
                    current=_resources(current.request, current.limit),
                    recommended=_resources(result.request, result.limit),
                    classification=result.classification,
                    phase=result.phase,
                    oomKills=total,
                    lastOOMAt=timestamps.format(last) if last else (before.lastOOMAt if before else None),
                    reason=result.reason,
                    cappedBy=result.capped_by,
                )
            )
        status = obj.status
        status.containers = statuses
        status.totalKills = sum(c.oomKills for c in statuses)
        status.target = target.display
        status.current = _summary(statuses, recommended=False)
        status.recommended = _summary(statuses, recommended=True)
        status.policy = chosen.metadata.name if chosen else None
        status.mode = mode
        status.dataSource = usage_history.data_source
        status.observedGeneration = obj.metadata.generation
        phase = recommend.overall_phase(results) if results else types.Phase.PENDING
        if phase == types.Phase.PENDING and not any(recommend.needs_change(r) for r in results) and status.appliedAt:
            phase = types.Phase.APPLIED
        status.phase = phase
        _set_condition(
            status,
            types.Condition(
                type="Ready",
                status="True",
                reason="Computed",
                message=f"computed from {len(history)} recorded kill(s) "
                + (f"and usage history ({status.dataSource})" if usage_history.usage else "without usage history"),
                lastTransitionTime=timestamps.format(now),
            ),
        )
        _set_condition(
            status,
            types.Condition(
                type="UsageHistory",
                status="True" if usage_history.ok else "False",
                reason=usage_history.outcome.value,
                message=usage_history.message,
                lastTransitionTime=timestamps.format(now),
            ),
        )

    # ---- announcing ---------------------------------------------------------------------------

    def _involved(self, target: workload.Workload) -> dict[str, Any]:
        return {"apiVersion": target.api_version, "kind": target.kind, "name": target.name,
                "namespace": target.namespace, "uid": target.uid}

    def _announce_kills(self, target: workload.Workload, items: list[ledger.Classified],
                        culprits: Mapping[str, classify.CulpritFinding] | None = None) -> None:
        """Count, log and post the kills: one event per container and class, naming every kill
        (a burst of a hundred replicas makes one event with the count, as the kubelet's recorder
        aggregates its own), and the likely culprits of Node kills when `culprits` (by kill identity)
        has them."""
        groups: dict[tuple[str, types.Classification], list[ledger.Classified]] = {}
        for item in items:
            metrics.OOM_KILLS.labels(
                namespace=target.namespace, workload=target.display, container=item.kill.container,
                classification=item.classification.value,
            ).inc()
            groups.setdefault((item.kill.container, item.classification), []).append(item)
        for group in groups.values():
            messages = [_kill_message(item) for item in group]
            for message in messages:
                logger.info("%s %s/%s: %s", target.kind, target.namespace, target.name, message)
            if len(messages) == 1:
                text = messages[0]
            else:
                shown = "; ".join(messages[:3])
                more = f"; and {len(messages) - 3} more" if len(messages) > 3 else ""
                text = f"{len(messages)} OOM kills: {shown}{more}"
            found = (culprits or {}).get
            notes = list(dict.fromkeys(f.reason for f in (found(item.kill.identity) for item in group) if f is not None))
            if notes:
                logger.info("%s %s/%s: %s", target.kind, target.namespace, target.name, "; ".join(notes))
                text = f"{text}; {'; '.join(notes)}"
            self._post(events.build(involved=self._involved(target), reason=events.Reason.OOM_KILL_DETECTED,
                                    message=text, now=self.clock()))

    def _announce_recommendation(
        self, rec: recommendation.OOMRecommendation, *, target: workload.Workload, before: types.Phase | None
    ) -> None:
        status = rec.status
        key = f"{rec.metadata.namespace}/{rec.metadata.name}"
        self._count_phase(key, status.phase)
        involved = {"apiVersion": f"{recommendation.GROUP}/{recommendation.VERSION}", "kind": recommendation.KIND,
                    "name": rec.metadata.name, "namespace": rec.metadata.namespace, "uid": rec.metadata.uid}
        text = "; ".join(f"{c.name}: {c.reason}" for c in status.containers)
        message = f"{status.target}: {status.current} → {status.recommended} ({text})"
        now = self.clock()
        self._post(events.build(involved=involved, reason=events.Reason.RECOMMENDATION_UPDATED, message=message, now=now))
        if status.phase != before and status.phase in (types.Phase.CAPPED, types.Phase.SUSPECTED_LEAK):
            reason = events.Reason.RECOMMENDATION_CAPPED if status.phase == types.Phase.CAPPED else events.Reason.SUSPECTED_LEAK
            detail = "; ".join(f"{c.name}: {c.reason}" for c in status.containers if c.phase == status.phase)
            for obj in (involved, self._involved(target)):
                self._post(events.build(involved=obj, reason=reason, message=detail or message, now=now))

    def _count_phase(self, key: str, phase: types.Phase | None) -> None:
        with self._guard:
            old = self._phases.get(key)
            if old is not None:
                metrics.RECOMMENDATIONS.labels(phase=old.value).dec()
            if phase is not None:
                self._phases[key] = phase
                metrics.RECOMMENDATIONS.labels(phase=phase.value).inc()

    # ---- the likely culprit of a node OOM ------------------------------------------------------

    def _announce_and_blame(self, target: workload.Workload, items: list[ledger.Classified], *, key: str | None) -> None:
        """Announce kills. A Node kill's announcement waits for the likely culprit on its node, looked
        up in a culprit thread (it reads the node's pods and asks Prometheus), which then also writes
        it into the kill records of the recommendation `key` (None: there is none, mode Observe).
        Other kills are announced at once and cost nothing more."""
        blamed = [i for i in items if i.classification == types.Classification.NODE and i.kill.node]
        ids = {i.kill.identity for i in blamed}
        rest = [i for i in items if i.kill.identity not in ids]
        if rest:
            self._announce_kills(target, rest)
        if blamed:
            places = {i.kill.identity: (i.kill.node or "", i.kill.at) for i in blamed}
            self._culprit_pool.submit(self._blame, key=key, places=places, announce=(target, blamed))

    def _blame(
        self,
        *,
        key: str | None,
        places: Mapping[str, tuple[str, datetime.datetime | None]],
        announce: tuple[workload.Workload, list[ledger.Classified]] | None = None,
    ) -> None:
        """Find the culprit of each Node kill (by identity: its node and time), post the kills'
        event when `announce` has them, and note the culprits in the recommendation `key`.
        Runs in a culprit thread: logs what goes wrong, never raises."""
        findings: dict[str, classify.CulpritFinding] = {}
        asked: dict[tuple[str, datetime.datetime | None], classify.CulpritFinding] = {}
        for identity, place in places.items():
            if place not in asked:
                asked[place] = self._culprit(*place)
            findings[identity] = asked[place]
        try:
            if announce is not None:
                self._announce_kills(*announce, culprits=findings)
            if key is not None:
                self._note_culprits(key, findings)
        except Exception:  # the culprit is evidence; losing it must not cost more
            logger.exception("announcing or writing the culprits of node OOM kills (%s) failed", key or "no recommendation")

    def _culprit(self, node: str, at: datetime.datetime | None) -> classify.CulpritFinding:
        """The likely culprit of a node OOM on `node` at `at` (now when unknown); never raises."""
        try:
            # Without Prometheus nothing is measured: the node's pods need not be read.
            pods = [] if isinstance(self.usage, prom_usage.Disabled) else owners.pods_on_node(
                self.client, node=node, namespaces=self.settings.namespaces)
            query = prom_usage.NodeQuery(
                node=node, pods=tuple((p.metadata.namespace or "", p.metadata.name) for p in pods), at=at or self.clock()
            )
            answer = self.usage.node_usage(query)
            if not answer.ok:
                return classify.no_culprit(f"no usage data: {answer.message}")
            return classify.culprit_on_node(pods, node=node, node_memory_capacity=self.node_capacity(node),
                                            usage=answer.usage, basis=answer.message)
        except Exception as exc:  # noqa: BLE001 - an API error or a bug: the kill is recorded anyway
            logger.warning("looking up the culprit of the node OOM on %s failed: %s", node, exc)
            return classify.no_culprit(f"the lookup failed: {exc}")

    def _note_culprits(self, key: str, findings: Mapping[str, classify.CulpritFinding]) -> None:
        """Write the culprits into the kill records they belong to (those still classified Node)."""
        namespace, name = key.split("/", 1)
        with self._locks[key]:
            rec = self._recs.get(key) or store.get_recommendation(self.client, namespace=namespace, name=name)
            if rec is None:
                return

            def mutate(obj: recommendation.OOMRecommendation) -> recommendation.OOMRecommendation | None:
                changed = False
                for record in obj.status.kills:
                    found = findings.get(record.id)
                    if found is None or record.classification != types.Classification.NODE:
                        continue
                    culprit = ledger.culprit_record(found)
                    if record.culprit != culprit:
                        record.culprit, changed = culprit, True
                return obj if changed else None

            self._write_status(rec, mutate)

    # ---- applying ------------------------------------------------------------------------------

    def on_recommendation(self, body: Mapping[str, Any]) -> bool:
        """Apply an approved recommendation once per approval. Returns True when it acted.

        Also schedules the Auto-mode patch its status says is held back by the cooldown: that is how
        the schedule comes back after a restart, when the watch lists every recommendation.
        """
        try:
            rec = recommendation.parse(body)
        except Exception as exc:
            logger.warning("ignoring unreadable OOMRecommendation: %s", exc)
            return False
        self._hold(rec)
        if not rec.spec.approved or rec.status.appliedGeneration == rec.metadata.generation:
            return False
        if not rec.status.containers:
            return False
        ref = rec.spec.targetRef
        namespace = rec.metadata.namespace or ""
        key = f"{namespace}/{rec.metadata.name}"
        with self._locks[key]:
            target = owners.read_workload(self.client, kind=ref.kind, namespace=namespace, name=ref.name)
            if target is None:
                self._note(rec, reason="TargetMissing", message=f"{ref.kind}/{ref.name} does not exist", generation=True)
                return False
            chosen = self._policy_for(target)
            self._apply(rec, target=target, chosen=chosen, trigger="approval")
        return True

    def _cooldown(self, chosen: policy.OOMPolicy | None) -> datetime.timedelta:
        return duration.parse(chosen.spec.cooldown) if chosen else self.default_cooldown

    def _hold(self, rec: recommendation.OOMRecommendation) -> None:
        """Schedule the Auto-mode patch that `rec`'s status holds back by the cooldown, if any.

        Runs on every recommendation event, the operator's own status writes included, so it makes
        no API call: the policy is the one the status names, as far as the policy watch has brought
        it. At start-up that watch may come after this one; the mode is then the one the status
        recorded, and the cooldown is judged when the patch is due. `apply_due` reads everything
        again (recommendation, workload, policy, mode, ignore annotations) before it patches, so an
        entry here is at worst an early look, never a patch the policy does not allow.
        """
        status = rec.status
        namespace = rec.metadata.namespace or ""
        chosen = self.policies.get(namespace, {}).get(status.policy) if status.policy else None
        if status.policy and chosen is None:
            mode, cooldown = status.mode, None
        else:
            mode, cooldown = selection.effective_mode(chosen, default=self.settings.default_mode), self._cooldown(chosen)
        if mode != types.Mode.AUTO:
            return
        due = held.due_at(status, cooldown=cooldown, now=self.clock())
        if due is None:
            return
        with self._guard:
            # What `_apply` scheduled, having read the policy and the workload, stands.
            self._deferred.setdefault(f"{namespace}/{rec.metadata.name}", due)

    def apply_due(self) -> int:
        """Apply the Auto-mode patches whose cooldown has ended. Returns how many were tried.

        The schedule is kept in memory. It is filled when a patch is held back (`_apply`) and from
        every recommendation event whose status says one is (`_hold`): after a restart, kopf's
        listing of the recommendations brings it back, and a cooldown that ended while the operator
        was down is due at once. Before patching, the recommendation and its workload are read
        afresh, and the phase, the policy's mode, the ignore annotations and the cooldown (from
        status.appliedAt) are judged again; a workload deleted meanwhile is skipped. A policy the
        status names but the policy watch has not brought yet is read first. A failure (an API error,
        the server out of reach) puts the patch back for another try after DEFERRED_RETRY.
        """
        now = self.clock()
        with self._guard:
            due = [key for key, when in self._deferred.items() if when <= now]
            for key in due:
                del self._deferred[key]
        for key in due:
            try:
                self._apply_held(key)
            except Exception as exc:  # noqa: BLE001 - an API error or an unreachable server: tried again, not lost
                metrics.RECONCILE_ERRORS.labels(kind="deferred patch").inc()
                logger.warning("%s: the patch held back by the cooldown is tried again in %s: %s",
                               key, duration.format(DEFERRED_RETRY), exc)
                with self._guard:
                    self._deferred.setdefault(key, self.clock() + DEFERRED_RETRY)
        return len(due)

    def _apply_held(self, key: str) -> None:
        namespace, name = key.split("/", 1)
        with self._locks[key]:
            rec = store.get_recommendation(self.client, namespace=namespace, name=name)
            if rec is None or rec.status.phase not in (types.Phase.PENDING, types.Phase.CAPPED):
                return
            ref = rec.spec.targetRef
            target = owners.read_workload(self.client, kind=ref.kind, namespace=namespace, name=ref.name)
            if target is None:
                return
            if rec.status.policy and rec.status.policy not in self.policies.get(namespace, {}):
                self._learn_policies(namespace)
            chosen = self._policy_for(target)
            if selection.effective_mode(chosen, default=self.settings.default_mode) != types.Mode.AUTO:
                return
            self._apply(rec, target=target, chosen=chosen, trigger="auto, after the cooldown")

    def _learn_policies(self, namespace: str) -> None:
        """Read a namespace's valid policies that the policy watch has not brought yet (at start-up
        it may come after the recommendations), so the policy chosen for a held patch is the right
        one. Only learnt: the watch still reports on each policy in its status."""
        for body in store.list_policies(self.client, namespace=namespace):
            name = str((body.get("metadata") or {}).get("name") or "")
            parsed, problem = _read_policy(body, namespace=namespace, name=name)
            if parsed is not None and problem is None:
                self.policies[namespace].setdefault(name, parsed)

    def _note(self, rec: recommendation.OOMRecommendation, *, reason: str, message: str, generation: bool = False,
              ok: bool = False) -> recommendation.OOMRecommendation:
        now = timestamps.format(self.clock())

        def mutate(obj: recommendation.OOMRecommendation) -> recommendation.OOMRecommendation:
            _set_condition(obj.status, types.Condition(type="Applied", status="True" if ok else "False", reason=reason, message=message, lastTransitionTime=now))
            if generation:
                obj.status.appliedGeneration = obj.metadata.generation
            return obj

        return self._write_status(rec, mutate)

    def _apply(
        self,
        rec: recommendation.OOMRecommendation,
        *,
        target: workload.Workload,
        chosen: policy.OOMPolicy | None,
        trigger: str,
    ) -> None:
        approval = trigger == "approval"
        if selection.ignored(target.annotations, target.template_annotations):
            self._note(rec, reason="Ignored", message=f"{target.display} is annotated {selection.IGNORE_ANNOTATION}: \"true\"", generation=approval)
            return
        if not target.patchable:
            self._note(rec, reason="NotPatchable", message=f"{target.kind} has no pod template the operator may change; apply status.patch to whatever creates it", generation=approval)
            return
        if not approval and rec.status.phase == types.Phase.SUSPECTED_LEAK:
            return
        now = self.clock()
        cooldown = self._cooldown(chosen)
        remaining = recommend.cooldown_remaining(last_applied=timestamps.parse(rec.status.appliedAt), cooldown=cooldown, now=now)
        if not approval and remaining > datetime.timedelta(0):
            self._note(rec, reason=held.COOLDOWN_ACTIVE, message=f"last patch at {rec.status.appliedAt}; next one allowed in {duration.format(remaining)}")
            with self._guard:
                self._deferred[f"{rec.metadata.namespace}/{rec.metadata.name}"] = now + remaining
            return
        current = {c.name: c for c in target.containers()}
        changes = []
        for c in rec.status.containers:
            now_res = current.get(c.name)
            if now_res is None:
                continue
            want_request = _bytes(c.recommended.request)
            want_limit = _bytes(c.recommended.limit)
            request = want_request if want_request is not None and (now_res.request or 0) < want_request else None
            limit = want_limit if want_limit is not None and (now_res.limit is None or now_res.limit < want_limit) else None
            if request is not None or limit is not None:
                changes.append(patch.MemoryChange(container=c.name, type=c.type, request=request, limit=limit))
        if not changes:
            self._note(rec, reason="UpToDate", message=f"{target.display} already has the recommended memory", generation=approval, ok=True)
            return
        outcome = patching.apply_memory(
            self.client,
            target=target,
            changes=changes,
            field_manager=self.settings.field_manager,
            respected_managers=set(self.settings.respected_managers),
        )
        metrics.PATCHES.labels(result=outcome.result.value).inc()
        if outcome.result == patching.Result.APPLIED:
            self.workloads.forget(target)
        resize_errors: list[str] = []
        if outcome.result == patching.Result.APPLIED and chosen is not None and chosen.spec.applyMethod in (
            types.ApplyMethod.IN_PLACE, types.ApplyMethod.IN_PLACE_AND_ROLLOUT
        ):
            resize_errors = self._resize_running(target, changes)
        stamp = timestamps.format(now)

        def mutate(obj: recommendation.OOMRecommendation) -> recommendation.OOMRecommendation:
            st = obj.status
            if approval:
                st.appliedGeneration = obj.metadata.generation
            if outcome.result == patching.Result.APPLIED:
                st.phase = types.Phase.APPLIED
                st.appliedAt = stamp
                st.patch = None
                for c in st.containers:
                    c.current = c.recommended.model_copy()
                    if c.phase == types.Phase.PENDING:  # Capped stays: more kills cannot raise it
                        c.phase = types.Phase.APPLIED
                st.current = _summary(st.containers, recommended=False)
                message = outcome.message + (f"; in-place resize failed: {'; '.join(resize_errors)}" if resize_errors else "")
                _set_condition(st, types.Condition(type="Applied", status="True", reason="Patched", message=message, lastTransitionTime=stamp))
            elif outcome.result == patching.Result.CONFLICT:
                st.phase = types.Phase.CONFLICT
                st.patch = outcome.patch_yaml
                _set_condition(st, types.Condition(type="Applied", status="False", reason="Conflict", message=outcome.message, lastTransitionTime=stamp))
            else:
                st.patch = outcome.patch_yaml
                _set_condition(st, types.Condition(type="Applied", status="False", reason="Rejected", message=outcome.message, lastTransitionTime=stamp))
            return obj

        rec = self._write_status(rec, mutate)
        self._count_phase(f"{rec.metadata.namespace}/{rec.metadata.name}", rec.status.phase)
        reason = {
            patching.Result.APPLIED: events.Reason.RESOURCES_PATCHED,
            patching.Result.CONFLICT: events.Reason.PATCH_CONFLICT,
            patching.Result.REJECTED: events.Reason.PATCH_FAILED,
        }[outcome.result]
        summary = ", ".join(
            f"{c.container}: " + " ".join(
                part for part in (
                    f"request {quantity.format_bytes(c.request)}" if c.request is not None else "",
                    f"limit {quantity.format_bytes(c.limit)}" if c.limit is not None else "",
                ) if part
            )
            for c in changes
        )
        message = f"{outcome.message} ({trigger}): {summary}"
        logger.info("%s %s/%s: %s", target.kind, target.namespace, target.name, message)
        self._post(events.build(involved=self._involved(target), reason=reason, message=message, now=self.clock()))

    def _resize_running(self, target: workload.Workload, changes: list[patch.MemoryChange]) -> list[str]:
        selector = ",".join(f"{k}={v}" for k, v in sorted(target.template_labels.items()))
        if not selector:
            return []
        errors = []
        for body in self.client.list(api.namespaced(group="", version="v1", plural="pods", namespace=target.namespace), query={"labelSelector": selector}):
            name = (body.get("metadata") or {}).get("name", "")
            if (body.get("status") or {}).get("phase") != "Running":
                continue
            error = patching.resize_pod(self.client, namespace=target.namespace, pod=name, changes=changes)
            if error:
                errors.append(f"{name}: {error}")
        return errors


def _kill_message(item: ledger.Classified) -> str:
    k = item.kill
    limit = quantity.humanize(k.limit_at_kill) if k.limit_at_kill is not None else "none"
    adj = "unknown" if k.oom_score_adj is None else str(k.oom_score_adj)
    return (
        f"{k.container_type.value} {k.container} of pod {k.pod} was OOM-killed"
        f"{' at ' + timestamps.format(k.at) if k.at else ''} on node {k.node or 'unknown'}: {item.classification.value}"
        f" ({item.reason}); memory limit {limit}, QoS {k.qos_class.value}, oom_score_adj {adj}"
    )


def _read_policy(body: Mapping[str, Any], *, namespace: str, name: str) -> tuple[policy.OOMPolicy | None, str | None]:
    """The policy in `body` and what is wrong with it (None when it is valid); never raises."""
    try:
        parsed = policy.parse(body, source=f"OOMPolicy {namespace}/{name}")
    except policy.InvalidPolicy as exc:
        return None, str(exc)
    found = policies.problem(parsed)
    return parsed, (f"OOMPolicy {namespace}/{name}: {found}" if found else None)


def _same_policy_status(old: Mapping[str, Any], new: policy.OOMPolicyStatus) -> bool:
    conds = old.get("conditions") or []
    old_cond = conds[0] if conds else {}
    new_cond = (new.conditions or [types.Condition(type="", status="Unknown")])[0]
    return (
        old.get("observedGeneration") == new.observedGeneration
        and old.get("matchedWorkloads") == new.matchedWorkloads
        and old_cond.get("status") == new_cond.status
        and old_cond.get("message") == new_cond.message
    )


def _set_condition(status: recommendation.OOMRecommendationStatus, cond: types.Condition) -> None:
    kept = [c for c in status.conditions if c.type != cond.type]
    old = next((c for c in status.conditions if c.type == cond.type), None)
    if old is not None and old.status == cond.status:
        cond = cond.model_copy(update={"lastTransitionTime": old.lastTransitionTime or cond.lastTransitionTime})
    status.conditions = kept + [cond]


def _bytes(value: Any) -> int | None:
    if value is None:
        return None
    try:
        return quantity.parse_bytes(value)
    except quantity.QuantityError:
        return None


def _resources(request: int | None, limit: int | None) -> recommendation.Resources:
    return recommendation.Resources(
        request=quantity.format_bytes(request) if request is not None else None,
        limit=quantity.format_bytes(limit) if limit is not None else None,
    )


def _summary(containers: list[recommendation.ContainerStatus], *, recommended: bool) -> str:
    parts = []
    for c in containers:
        res = c.recommended if recommended else c.current
        request = _bytes(res.request)
        limit = _bytes(res.limit)
        shown = "/".join(quantity.humanize(v) if v is not None else "-" for v in (request, limit))
        parts.append(f"{c.name}={shown}" if len(containers) > 1 else shown)
    return ",".join(parts)
