"""Recorder: a batch of a workload's new kills, recorded and acted on.

One status write records the kills (the evidence in `status.kills`, the count in `status.counted`),
computes the recommendation again and, in Auto mode, marks it to be applied. Only the kills that
write added are announced (events, metrics), so a kill counted once is announced once — in every
mode: in Observe mode the recommendation records the kills too (phase Observed, nothing
recommended), since that record is how a restarted operator knows what it has counted. In Auto mode
the patcher then gets the recommendation; a patch that waits (the cooldown, a passing failure) is
scheduled with the held patches.
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
import time
from typing import Callable

from oomtuner.api import recommendation, types
from oomtuner.domain import kills, ledger, status, timestamps, workload
from oomtuner.kube import api, owners, store
from oomtuner.prom import usage as prom_usage
from oomtuner.services import announcer as announcer_mod
from oomtuner.services import culprits as culprits_mod
from oomtuner.services import held as held_mod
from oomtuner.services import patcher as patcher_mod
from oomtuner.services import policies as policies_mod
from oomtuner.services import recommendations as recommendations_mod
from oomtuner.services import recompute as recompute_mod

logger = logging.getLogger(__name__)

# The per-pod record is pruned of pods that are gone once it holds more pods than this, or than twice
# the workload's replicas and this, whichever is more; at most once per PRUNE_INTERVAL per workload.
PRUNE_ABOVE = 64
PRUNE_INTERVAL = 300.0  # seconds


@dataclasses.dataclass(frozen=True)
class Recorded:
    """What one write recorded: the kills it added, and the container whose applied memory somebody
    has since lowered (their value is in force now)."""

    added: list[ledger.Classified]
    overridden: list[str]


def _with_missed(status: recommendation.OOMRecommendationStatus, added: list[ledger.Classified]) -> list[ledger.Classified]:
    """The kills the pod status no longer shows (`ledger.missed`), classified as the kill after them."""
    after = {a.kill.identity: a for a in added}
    found = []
    for gone in ledger.missed(status, [a.kill for a in added]):
        later = min((a for a in after.values() if a.kill.pod_uid == gone.pod_uid and a.kill.container == gone.container
                     and (a.kill.instance or 0) > (gone.instance or 0)), key=lambda a: a.kill.instance or 0)
        found.append(ledger.Classified(kill=gone, classification=later.classification, reason=(
            f"restart {gone.instance} of the container happened while the operator was not watching, between two "
            "OOM kills; its reason is no longer in the pod status, and it is counted as an OOM kill like them")))
    return found


class Recorder:
    def __init__(self, client: api.Client, *, policies: policies_mod.Policies,
                 recommendations: recommendations_mod.Recommendations, recompute: recompute_mod.Recompute,
                 culprits: culprits_mod.Culprits, patcher: patcher_mod.Patcher, held: held_mod.HeldPatches,
                 announcer: announcer_mod.Announcer, workloads: owners.Workloads,
                 clock: Callable[[], datetime.datetime], monotonic: Callable[[], float] = time.monotonic):
        self._client = client
        self._policies = policies
        self._recommendations = recommendations
        self._recompute = recompute
        self._culprits = culprits
        self._patcher = patcher
        self._held = held
        self._announcer = announcer
        self._workloads = workloads
        self._clock = clock
        self._monotonic = monotonic
        self._pruned: dict[str, float] = {}

    def record(self, target: workload.Workload, fresh: list[kills.OOMKill]) -> int:
        """Record `fresh` kills of `target`; returns how many were new to its ledger. Call it under
        the lock of the workload's recommendation."""
        chosen = self._policies.choose(target)
        mode = self._policies.mode(chosen)
        classified = [self._culprits.judge(k) for k in fresh]
        now = self._clock()
        rec = self._recommendations.for_workload(target, now=timestamps.format(now))
        key = recommendations_mod.key_of(rec)
        gone = self._gone_pods(rec, target)
        before_phase = rec.status.phase
        histories: list[prom_usage.History] = []  # read once, and only when there is a new kill

        def mutate(obj: recommendation.OOMRecommendation) -> store.Edit[Recorded] | None:
            unseen = {k.identity for k in ledger.unseen(obj.status, [c.kill for c in classified])}
            added = [c for c in classified if c.kill.identity in unseen]
            if not added:
                return None
            added = _with_missed(obj.status, added) + added
            obj.status.kills = ledger.append(obj.status.kills, added)
            obj.status.counted = ledger.count(ledger.prune(obj.status.counted, gone=gone), [a.kill for a in added])
            overridden = status.forget_overridden(obj.status, target.containers())
            if not histories and mode != types.Mode.OBSERVE:
                histories.append(self._recompute.history(target, chosen, obj.status.kills, now=now))
            history = histories[0] if histories else prom_usage.History(
                outcome=prom_usage.Outcome.NOT_CONFIGURED, message="mode Observe: usage history is not read")
            self._recompute.apply(obj, target=target, chosen=chosen, mode=mode, added=added, now=now, history=history)
            return store.Edit(obj, Recorded(added=added, overridden=overridden))

        rec, recorded = self._recommendations.write_status(rec, mutate)
        if recorded is None:
            return 0
        for name in recorded.overridden:
            logger.info("%s %s/%s: container %s has less memory than the operator applied; that value is in force now",
                        target.kind, target.namespace, target.name, name)
        added = recorded.added
        self._culprits.remember(key, added)
        self._culprits.announce(target, added, key=key)
        self._announcer.detected(added)
        if mode == types.Mode.OBSERVE:
            self._announcer.phase(rec)
            return len(added)
        self._announcer.updated(rec, target=target, before=before_phase)
        if mode == types.Mode.AUTO and rec.status.phase in (types.Phase.PENDING, types.Phase.CAPPED):
            current = self._workloads.fresh(target)  # the patch compares with the workload as it is now
            if current is not None:
                held_back = self._patcher.apply(rec, target=current, chosen=chosen, trigger=patcher_mod.Trigger.AUTO)
                if held_back is not None:
                    self._held.schedule(key, held_back.due)
        return len(added)

    def _gone_pods(self, rec: recommendation.OOMRecommendation, target: workload.Workload) -> set[str]:
        """UIDs of pods in the per-pod record that no longer exist, read when the record has grown
        past its bound (and not within PRUNE_INTERVAL of the last time). Only pods the record held
        before this read can be dropped: one another writer adds meanwhile is never lost."""
        known = {c.podUID for c in rec.status.counted}
        bound = max(PRUNE_ABOVE, 2 * (target.replicas or 0) + PRUNE_ABOVE)
        key = recommendations_mod.key_of(rec)
        if len(known) <= bound or self._monotonic() - self._pruned.get(key, -PRUNE_INTERVAL) < PRUNE_INTERVAL:
            return set()
        if len(self._pruned) > 10_000:
            self._pruned.clear()
        self._pruned[key] = self._monotonic()
        try:
            alive = owners.pod_uids(self._client, target)
        except api.ApiError as exc:
            logger.warning("%s: cannot list the pods of %s to prune the kill record: %s", key, target.display, exc)
            return set()
        return known - alive
