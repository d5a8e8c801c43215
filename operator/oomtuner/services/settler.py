"""Settler: lowers the operator's own raises once usage since the raise shows how much was used.

`domain.settle` decides; this room finds the recommendations to ask about and acts on the answer.
Every recommendation event (and the start-up listing) is looked at without an API call (`track`):
from its status alone, `domain.settle.blocked` says whether a container can be settled yet — nothing
raised, a kill since the raise, a suspected leak, too soon — and when to look again. When the answer
depends on usage, the background round (`due`) reads the recommendation and its workload afresh,
asks Prometheus for the working set since the raise (`prom.usage.Source.since_raise`) and decides.

A settle goes through the same path as a raise: the recommendation shows it (the container's
`settled`, its reason, condition `Settle`, a `ResourcesSettled` event on the recommendation); in
Auto mode the patcher applies it (dry run, server-side apply, cooldown, retries, held across
restarts), and an approval applies it in Recommend mode. Without Prometheus nothing is settled, and
the condition `Settle` says why. Observe mode settles nothing.
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
import threading
from typing import Callable

from oomtuner.api import policy, recommendation, types
from oomtuner.domain import held as domain_held
from oomtuner.domain import recommend, resources, settle, status, timestamps, workload
from oomtuner.kube import api, events, owners, store
from oomtuner.prom import metrics
from oomtuner.prom import usage as prom_usage
from oomtuner.services import announcer as announcer_mod
from oomtuner.services import held as held_mod
from oomtuner.services import patcher as patcher_mod
from oomtuner.services import policies as policies_mod
from oomtuner.services import recommendations as recommendations_mod

logger = logging.getLogger(__name__)

SETTLE = "Settle"
RETRY = datetime.timedelta(seconds=30)  # a look that failed on a passing API error is tried again after this


@dataclasses.dataclass(frozen=True)
class Look:
    """What one look at a recommendation found, per container with a raise to settle."""

    decisions: dict[str, settle.Decision]

    @property
    def settles(self) -> dict[str, settle.Decision]:
        return {name: d for name, d in self.decisions.items() if d.settles}

    def recheck_at(self) -> datetime.datetime | None:
        times = [d.recheck_at for d in self.decisions.values() if d.recheck_at is not None]
        return min(times) if times else None


def facts_of(rec: recommendation.OOMRecommendation, name: str, current: recommend.ContainerResources) -> settle.Facts:
    """What the recommendation's status says about container `name`, whose template values are
    `current`: what the operator applied and when, and its latest kill."""
    st = rec.status
    entry = status.applied_for(st, name)
    mine = [r for r in st.kills if r.container == name and r.at]
    latest = max(mine, key=lambda r: r.at or "", default=None)
    last_kill = None
    if latest is not None and (at := timestamps.parse(latest.at)) is not None:
        last_kill = settle.LastKill(at=at, limit=resources.bytes_or_none(latest.limitAtKill), request=resources.bytes_or_none(latest.requestAtKill),
                                    classification=latest.classification)
    leak = st.phase == types.Phase.SUSPECTED_LEAK or any(
        c.name == name and c.phase == types.Phase.SUSPECTED_LEAK for c in st.containers)
    return settle.Facts(
        request=current.request,
        limit=current.limit,
        original_request=resources.bytes_or_none(entry.original.request) if entry else None,
        original_limit=resources.bytes_or_none(entry.original.limit) if entry else None,
        raised_at=timestamps.parse(entry.raisedAt) if entry else None,
        last_kill=last_kill,
        settled_at=timestamps.parse(entry.settledAt) if entry else None,
        leak_suspected=leak,
    )


def _current(rec: recommendation.OOMRecommendation) -> dict[str, recommend.ContainerResources]:
    """The containers' current memory as the status last saw it (no API call)."""
    return {c.name: recommend.ContainerResources(name=c.name, type=c.type, request=resources.bytes_or_none(c.current.request),
                                                 limit=resources.bytes_or_none(c.current.limit)) for c in rec.status.containers}


class Settler:
    def __init__(self, client: api.Client, *, usage: prom_usage.Source, policies: policies_mod.Policies,
                 recommendations: recommendations_mod.Recommendations, patcher: patcher_mod.Patcher,
                 held: held_mod.HeldPatches, announcer: announcer_mod.Announcer,
                 clock: Callable[[], datetime.datetime]):
        self._client = client
        self._usage = usage
        self._policies = policies
        self._recommendations = recommendations
        self._patcher = patcher
        self._held = held
        self._announcer = announcer
        self._clock = clock
        self._next: dict[str, datetime.datetime] = {}
        self._lock = threading.Lock()

    def scheduled(self) -> dict[str, datetime.datetime]:
        with self._lock:
            return dict(self._next)

    def _settings(self, rec: recommendation.OOMRecommendation) -> tuple[policy.OOMPolicy | None, types.Mode]:
        chosen = self._policies.named(rec.metadata.namespace or "", rec.status.policy) if rec.status.policy else None
        return chosen, (rec.status.mode or self._policies.mode(chosen))

    def track(self, rec: recommendation.OOMRecommendation) -> None:
        """Schedule a look at `rec` when the status alone says one may settle; no API call."""
        key = recommendations_mod.key_of(rec)
        chosen, mode = self._settings(rec)
        when = self._when(rec, chosen, mode) if rec.status.applied else None
        with self._lock:
            if when is None:
                self._next.pop(key, None)
            else:
                self._next[key] = min(when, self._next.get(key, when))

    def _when(self, rec: recommendation.OOMRecommendation, chosen: policy.OOMPolicy | None,
              mode: types.Mode) -> datetime.datetime | None:
        if mode == types.Mode.OBSERVE or rec.status.phase not in (types.Phase.APPLIED, types.Phase.CAPPED, types.Phase.PENDING):
            return None
        if any(c.settled for c in rec.status.containers):
            return None  # a settle is already recommended, waiting to be applied or approved
        settings = (chosen.spec.memory if chosen else policy.MemorySettings()).settle
        now = self._clock()
        times = []
        for name, current in _current(rec).items():
            verdict = settle.blocked(facts=facts_of(rec, name, current), settings=settings, now=now)
            if verdict is None:
                return now
            if verdict.recheck_at is not None:
                times.append(verdict.recheck_at)
        return min(times) if times else None

    def due(self) -> int:
        """Look at the recommendations whose time has come; returns how many were looked at."""
        now = self._clock()
        with self._lock:
            keys = [key for key, when in self._next.items() if when <= now]
            for key in keys:
                del self._next[key]
        for key in keys:
            try:
                self._look(key)
            except Exception as exc:  # noqa: BLE001 - a passing API error is tried again; others at the next event
                metrics.RECONCILE_ERRORS.labels(kind="settle").inc()
                if api.passing(exc):
                    with self._lock:
                        self._next.setdefault(key, self._clock() + RETRY)
                logger.warning("%s: settling failed: %s", key, exc)
        return len(keys)

    def _look(self, key: str) -> None:
        namespace, _ = key.split("/", 1)
        with self._recommendations.hold(key):
            rec = self._recommendations.get(key)
            if rec is None:
                return
            ref = rec.spec.targetRef
            target = owners.read_workload(self._client, kind=ref.kind, namespace=namespace, name=ref.name)
            if target is None or not workload.adopts(target, rec):
                return
            chosen = self._policies.choose(target)
            mode = self._policies.mode(chosen)
            if mode == types.Mode.OBSERVE:
                return
            look = self._decide(rec, target, chosen)
            rec = self._write(rec, look, mode=mode)
        if look.settles:
            self._announce(rec, look)
            if mode == types.Mode.AUTO:
                with self._recommendations.hold(key):
                    fresh = self._recommendations.get(key)
                    if fresh is not None:
                        held_back = self._patcher.apply(fresh, target=target, chosen=chosen, trigger=patcher_mod.Trigger.SETTLE)
                        if held_back is not None:
                            self._held.schedule(key, held_back.due)
        else:
            recheck = look.recheck_at()
            if recheck is not None:
                with self._lock:
                    self._next[key] = min(recheck, self._next.get(key, recheck))

    def _decide(self, rec: recommendation.OOMRecommendation, target: workload.Workload,
                chosen: policy.OOMPolicy | None) -> Look:
        settings = chosen.spec.memory if chosen else policy.MemorySettings()
        now = self._clock()
        facts = {c.name: facts_of(rec, c.name, c) for c in target.containers() if status.applied_for(rec.status, c.name)}
        open_ = {name: f for name, f in facts.items() if settle.blocked(facts=f, settings=settings.settle, now=now) is None}
        answer: prom_usage.SinceRaise | None = None
        if open_:
            since = min(f.raised_at for f in open_.values() if f.raised_at is not None)
            answer = self._usage.since_raise(prom_usage.SinceQuery(
                namespace=target.namespace, workload_kind=target.kind, workload_name=target.name,
                containers=tuple(sorted(open_)), since=since, now=now))
        decisions = {}
        for name, f in facts.items():
            usage = answer.usage.get(name) if answer is not None else None
            decision = settle.decide(facts=f, usage=usage, settings=settings, now=now)
            if decision.verdict == settle.Verdict.NO_USAGE and answer is not None and not answer.ok:
                decision = dataclasses.replace(decision, reason=f"{decision.reason} ({answer.message})")
            decisions[name] = decision
        return Look(decisions=decisions)

    def _write(self, rec: recommendation.OOMRecommendation, look: Look, *, mode: types.Mode) -> recommendation.OOMRecommendation:
        """The settle in the status: the settling containers' recommended memory and reason, the phase,
        the condition `Settle`, and (Auto) the patch owed. A look that settles nothing only updates the
        condition, and only when its message changes."""
        stamp = timestamps.format(self._clock())
        settling = look.settles
        text = "; ".join(f"{name}: {d.reason}" for name, d in sorted(look.decisions.items()))
        if not text:
            return rec

        def mutate(obj: recommendation.OOMRecommendation) -> store.Edit[None] | None:
            st = obj.status
            old = status.condition(st, SETTLE)
            if not settling and old is not None and old.message == text:
                return None
            for c in st.containers:
                decision = settling.get(c.name)
                if decision is None:
                    continue
                c.recommended = status.resources_of(decision.request, decision.limit)
                c.reason = decision.reason
                c.settled = True
                c.phase = types.Phase.PENDING
            if settling:
                st.recommended = status.summary(st.containers, recommended=True)
                st.phase = types.Phase.PENDING
                if mode == types.Mode.AUTO:
                    status.set_condition(st, types.Condition(
                        type="Applied", status="False", reason=domain_held.PENDING, lastTransitionTime=stamp,
                        message=f"{st.current} → {st.recommended} (settling) is to be applied"))
            status.set_condition(st, types.Condition(
                type=SETTLE, status="True" if settling else "False",
                reason=settle.Verdict.SETTLE.value if settling else _reason(look), message=text, lastTransitionTime=stamp))
            return store.Edit(obj, None)

        written, _ = self._recommendations.write_status(rec, mutate)
        return written

    def _announce(self, rec: recommendation.OOMRecommendation, look: Look) -> None:
        for name in look.settles:
            metrics.SETTLES.labels(namespace=rec.metadata.namespace or "", workload=rec.status.target or "",
                                   container=name).inc()
        message = "; ".join(f"{name}: {d.reason}" for name, d in sorted(look.settles.items()))
        logger.info("%s: %s", recommendations_mod.key_of(rec), message)
        self._announcer.post(involved=announcer_mod.involved_recommendation(rec), reason=events.Reason.RESOURCES_SETTLED,
                             message=f"{rec.status.target}: {rec.status.current} → {rec.status.recommended} ({message})")


def _reason(look: Look) -> str:
    verdicts = {d.verdict for d in look.decisions.values()}
    return verdicts.pop().value if len(verdicts) == 1 else "NotSettled"
