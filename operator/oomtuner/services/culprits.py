"""Culprits: node-wide OOMs, the kills they explain, and who most likely ran the node out.

- Node OOMs (the kubelet's `SystemOOM`, node-problem-detector's `OOMKilling`) are remembered per node,
  so a kill near one on its node is classified `Node` (`classify`).
- The kubelet's event and the container's status race. Kills recorded before the node OOM arrived
  are remembered for a while (`remember`), and a node OOM that comes after them classifies them again
  in their recommendations (`on_node_oom`).
- A `Node` kill's likely culprit — the container on that node using the most memory above its
  request near the kill (pods on the node, their working set from Prometheus) — is looked up in
  threads of their own, after the kill is recorded: the kill's event waits for it, nothing else does.
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import datetime
import logging
import threading
from typing import Any, Callable, Mapping

from oomtuner import config, culprits
from oomtuner.api import core, recommendation, types
from oomtuner.domain import classify, duration, kills, ledger, redaction, timestamps, workload
from oomtuner.kube import api, owners, store
from oomtuner.prom import usage as prom_usage
from oomtuner.services import announcer as announcer_mod
from oomtuner.services import nodes as nodes_mod
from oomtuner.services import policies as policies_mod
from oomtuner.services import recommendations as recommendations_mod
from oomtuner.services import recompute as recompute_mod

logger = logging.getLogger(__name__)

NODE_OOMS_PER_NODE = 64
RECENT_KILLS = 10_000
# A culprit lookup per place (node, time) of the kills being announced: (node, time).
Place = tuple[str, datetime.datetime | None]


@dataclasses.dataclass(frozen=True)
class RecentKill:
    node: str
    at: datetime.datetime
    key: str  # namespace/name of the recommendation that holds it
    identity: str


class Culprits:
    def __init__(self, client: api.Client, *, settings: config.Settings, usage: prom_usage.Source,
                 nodes: nodes_mod.Nodes, policies: policies_mod.Policies,
                 recommendations: recommendations_mod.Recommendations, recompute: recompute_mod.Recompute,
                 announcer: announcer_mod.Announcer, clock: Callable[[], datetime.datetime]):
        self._client = client
        self._settings = settings
        self._usage = usage
        self._nodes = nodes
        self._policies = policies
        self._recommendations = recommendations
        self._recompute = recompute
        self._announcer = announcer
        self._clock = clock
        self.window = duration.parse(settings.node_oom_window)
        self._node_ooms: dict[str, collections.deque[classify.NodeOOM]] = {}
        self._recent: collections.deque[RecentKill] = collections.deque(maxlen=RECENT_KILLS)
        self._lock = threading.Lock()
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=2, thread_name_prefix="oomtuner-culprits")
        self._futures: set[concurrent.futures.Future[None]] = set()

    # ---- classification -----------------------------------------------------------------------

    def judge(self, kill: kills.OOMKill) -> ledger.Classified:
        """The kill classified with the node OOMs known on its node."""
        with self._lock:
            ooms = list(self._node_ooms.get(kill.node or "", ()))
        cls, reason = classify.classify(kill, node_ooms=ooms, window=self.window)
        return ledger.Classified(kill=kill, classification=cls, reason=reason)

    def remember(self, key: str, items: list[ledger.Classified]) -> None:
        """Kills just recorded in `key` that a node OOM arriving later could reclassify."""
        with self._lock:
            for item in items:
                if item.kill.node and item.kill.at and item.classification != types.Classification.NODE:
                    self._recent.append(RecentKill(node=item.kill.node, at=item.kill.at, key=key, identity=item.kill.identity))

    def on_node_oom(self, event: core.Event) -> classify.NodeOOM | None:
        """Remember a node OOM read from `event` (None if it is not one), and classify again the
        kills near it that were recorded before it arrived."""
        found = classify.node_oom_from_event(event)
        if found is None:
            return None
        with self._lock:
            queue = self._node_ooms.setdefault(found.node, collections.deque(maxlen=NODE_OOMS_PER_NODE))
            if found in queue:
                return found
            queue.append(found)
        logger.info("node %s ran out of memory at %s (%s)", found.node, timestamps.format(found.at), found.source)
        self.reclassify_after(found)
        return found

    def reclassify_after(self, node_oom: classify.NodeOOM) -> int:
        """Classify again the kills recorded near `node_oom` on its node. Returns how many changed."""
        with self._lock:
            hits = [r for r in self._recent if r.node == node_oom.node and abs(r.at - node_oom.at) <= self.window]
        by_key: dict[str, set[str]] = collections.defaultdict(set)
        for hit in hits:
            by_key[hit.key].add(hit.identity)
        return sum(self._reclassify(key, identities) for key, identities in by_key.items())

    def _reclassify(self, key: str, identities: set[str]) -> int:
        namespace, _ = key.split("/", 1)
        with self._recommendations.hold(key):
            rec = self._recommendations.get(key)
            if rec is None:
                return 0
            ref = rec.spec.targetRef
            target = owners.read_workload(self._client, kind=ref.kind, namespace=namespace, name=ref.name)
            if target is None:
                return 0
            chosen = self._policies.choose(target)
            mode = self._policies.mode(chosen)
            histories: list[prom_usage.History] = []

            def mutate(obj: recommendation.OOMRecommendation) -> store.Edit[dict[str, str]] | None:
                changed: dict[str, str] = {}  # identity → node, of the kills that are Node now
                for record in obj.status.kills:
                    if record.id not in identities:
                        continue
                    again = self.judge(ledger.from_record(record, namespace=namespace).kill)
                    if again.classification != record.classification:
                        record.classification, record.reason = again.classification, again.reason
                        node_kill = again.classification == types.Classification.NODE
                        changed[record.id] = (record.node or "") if node_kill else ""
                if not changed:
                    return None
                now = self._clock()
                if not histories:
                    histories.append(self._recompute.history(target, chosen, obj.status.kills, now=now))
                self._recompute.apply(obj, target=target, chosen=chosen, mode=mode, added=[], now=now, history=histories[0])
                return store.Edit(obj, changed)

            rec, changed = self._recommendations.write_status(rec, mutate)
        if not changed:
            return 0
        at = {r.id: timestamps.parse(r.at) for r in rec.status.kills}
        places = {identity: (node, at.get(identity)) for identity, node in changed.items() if node}
        if places:
            self._submit(key=key, places=places)
        logger.info("%s: %d kill(s) reclassified after a node OOM", key, len(changed))
        return len(changed)

    # ---- culprits -----------------------------------------------------------------------------

    def announce(self, target: workload.Workload, items: list[ledger.Classified], *, key: str | None) -> None:
        """Announce kills. A Node kill's announcement waits for the likely culprit on its node, looked
        up in a culprit thread, which then also writes it into the kill records of the recommendation
        `key` (None: there is none, mode Observe). Other kills are announced at once."""
        blamed = [i for i in items if i.classification == types.Classification.NODE and i.kill.node]
        ids = {i.kill.identity for i in blamed}
        rest = [i for i in items if i.kill.identity not in ids]
        if rest:
            self._announcer.kills(target, rest)
        if blamed:
            places = {i.kill.identity: (i.kill.node or "", i.kill.at) for i in blamed}
            self._submit(key=key, places=places, announce=(target, blamed))

    def wait(self, timeout: float | None = None) -> None:
        """Wait for the lookups submitted so far (tests, shutdown)."""
        with self._lock:
            pending = list(self._futures)
        concurrent.futures.wait(pending, timeout=timeout)

    def _submit(self, **kwargs: Any) -> None:
        future = self._pool.submit(self._blame, **kwargs)
        with self._lock:
            self._futures.add(future)
        future.add_done_callback(self._done)

    def _done(self, future: concurrent.futures.Future[None]) -> None:
        with self._lock:
            self._futures.discard(future)

    def _blame(self, *, key: str | None, places: Mapping[str, Place],
               announce: tuple[workload.Workload, list[ledger.Classified]] | None = None) -> None:
        """Find the culprit of each Node kill (by identity: its node and time), post the kills'
        event when `announce` has them, and note the culprits in the recommendation `key`.
        Runs in a culprit thread: logs what goes wrong, never raises."""
        findings: dict[str, classify.CulpritFinding] = {}
        asked: dict[Place, classify.CulpritFinding] = {}
        victims = key.split("/", 1)[0] if key is not None else (announce[0].namespace if announce else "")
        for identity, place in places.items():
            if place not in asked:
                asked[place] = self.culprit(*place)
            # Shared per place, shown per victim: one victim's namespace may not read another's names.
            findings[identity] = self.visible(asked[place], victim_namespace=victims)
        try:
            if announce is not None:
                self._announcer.kills(*announce, culprits=findings)
            if key is not None:
                self._note(key, findings)
        except Exception:  # the culprit is evidence; losing it must not cost more
            logger.exception("announcing or writing the culprits of node OOM kills (%s) failed", key or "no recommendation")

    def culprit(self, node: str, at: datetime.datetime | None) -> classify.CulpritFinding:
        """The likely culprit of a node OOM on `node` at `at` (now when unknown), named in full;
        never raises. `visible` gives what a victim's namespace may read of it."""
        return culprits.on_node(self._client, self._usage, node=node, at=at or self._clock(),
                                capacity=self._nodes.capacity(node), namespaces=self._settings.namespaces)

    def visible(self, finding: classify.CulpritFinding, *, victim_namespace: str) -> classify.CulpritFinding:
        """The finding as the victim's namespace may read it (`domain.redaction.culprit`): another
        namespace's culprit is named only when the operator's settings allow it."""
        return redaction.culprit(finding, victim_namespace=victim_namespace, names=self._settings.culprit_names)

    def _note(self, key: str, findings: Mapping[str, classify.CulpritFinding]) -> None:
        """Write the culprits into the kill records they belong to (those still classified Node)."""
        with self._recommendations.hold(key):
            rec = self._recommendations.latest(key)
            if rec is None:
                return

            def mutate(obj: recommendation.OOMRecommendation) -> store.Edit[None] | None:
                changed = False
                for record in obj.status.kills:
                    found = findings.get(record.id)
                    if found is None or record.classification != types.Classification.NODE:
                        continue
                    culprit = ledger.culprit_record(found)
                    if record.culprit != culprit:
                        record.culprit, changed = culprit, True
                return store.Edit(obj, None) if changed else None

            self._recommendations.write_status(rec, mutate)
