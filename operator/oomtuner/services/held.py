"""Held patches: Auto-mode patches owed and not applied yet — held back by the cooldown, waiting to
be tried again after a passing failure, or never tried (the operator stopped after recording the
kill) — applied when they are due (`domain.held` reads that from the status).

The schedule is kept in memory: filled when the patcher holds a patch back (`schedule`) and from
every recommendation event whose status says one is owed (`hold`). After a restart, the listing of
the recommendations at start-up brings it back, and a patch that fell due while the operator was
down is due at once. Before patching, the recommendation and its workload are read afresh, and the
phase, the policy's mode, the ignore annotations and the cooldown are judged again; a workload
deleted meanwhile is skipped. A failure to read them (an API error, the server out of reach) puts
the patch back for another try after RETRY.
"""

from __future__ import annotations

import datetime
import logging
import threading
from typing import Callable

from oomtuner.api import recommendation, types
from oomtuner.domain import duration
from oomtuner.domain import held as domain_held
from oomtuner.kube import api, owners
from oomtuner.prom import metrics
from oomtuner.services import patcher as patcher_mod
from oomtuner.services import policies as policies_mod
from oomtuner.services import recommendations as recommendations_mod

logger = logging.getLogger(__name__)

RETRY = datetime.timedelta(seconds=30)  # a held patch whose reads failed is tried again after this


class HeldPatches:
    def __init__(self, *, client: api.Client, policies: policies_mod.Policies, patcher: patcher_mod.Patcher,
                 recommendations: recommendations_mod.Recommendations, clock: Callable[[], datetime.datetime]):
        self._client = client
        self._policies = policies
        self._patcher = patcher
        self._recommendations = recommendations
        self._clock = clock
        self._due: dict[str, datetime.datetime] = {}
        self._lock = threading.Lock()

    def schedule(self, key: str, due: datetime.datetime) -> None:
        """The patch of `key` is held back until `due` (the patcher's judgement stands)."""
        with self._lock:
            self._due[key] = due

    def scheduled(self) -> dict[str, datetime.datetime]:
        with self._lock:
            return dict(self._due)

    def hold(self, rec: recommendation.OOMRecommendation) -> None:
        """Schedule the patch that `rec`'s status holds back, if any.

        Runs on every recommendation event, the operator's own status writes included, so it makes
        no API call: the policy is the one the status names, as far as the policy watch has brought
        it. At start-up that watch may come after this one; the mode is then the one the status
        recorded, and the cooldown is judged when the patch is due.
        """
        st = rec.status
        namespace = rec.metadata.namespace or ""
        chosen = self._policies.named(namespace, st.policy) if st.policy else None
        if st.policy and chosen is None:
            mode, cooldown = st.mode, None
        else:
            mode, cooldown = self._policies.mode(chosen), self._patcher.cooldown(chosen)
        if mode != types.Mode.AUTO:
            return
        due = domain_held.due_at(st, cooldown=cooldown, now=self._clock())
        if due is None:
            return
        with self._lock:
            # What the patcher scheduled, having read the policy and the workload, stands.
            self._due.setdefault(recommendations_mod.key_of(rec), due)

    def apply_due(self) -> int:
        """Apply the held patches whose cooldown has ended. Returns how many were tried."""
        now = self._clock()
        with self._lock:
            due = [key for key, when in self._due.items() if when <= now]
            for key in due:
                del self._due[key]
        for key in due:
            try:
                self._apply(key)
            except Exception as exc:  # noqa: BLE001 - an API error or an unreachable server: tried again, not lost
                metrics.RECONCILE_ERRORS.labels(kind="deferred patch").inc()
                logger.warning("%s: the patch held back by the cooldown is tried again in %s: %s",
                               key, duration.format(RETRY), exc)
                with self._lock:
                    self._due.setdefault(key, self._clock() + RETRY)
        return len(due)

    def _apply(self, key: str) -> None:
        namespace, _ = key.split("/", 1)
        with self._recommendations.hold(key):
            rec = self._recommendations.get(key)
            if rec is None or rec.status.phase not in (types.Phase.PENDING, types.Phase.CAPPED):
                return
            ref = rec.spec.targetRef
            target = owners.read_workload(self._client, kind=ref.kind, namespace=namespace, name=ref.name)
            if target is None:
                return
            if rec.status.policy and not self._policies.known(namespace, rec.status.policy):
                self._policies.learn(namespace)
            chosen = self._policies.choose(target)
            if self._policies.mode(chosen) != types.Mode.AUTO:
                return
            applied = next((c for c in rec.status.conditions if c.type == "Applied"), None)
            trigger = {domain_held.RETRYING: patcher_mod.Trigger.RETRY, domain_held.COOLDOWN_ACTIVE:
                       patcher_mod.Trigger.AFTER_COOLDOWN}.get(applied.reason if applied else "", patcher_mod.Trigger.AUTO)
            held_back = self._patcher.apply(rec, target=target, chosen=chosen, trigger=trigger)
            if held_back is not None:
                self.schedule(key, held_back.due)
