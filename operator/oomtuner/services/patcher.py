"""Patcher: getting a recommendation's memory onto its workload, and saying how it went.

Auto mode and approvals come here. Before patching it checks the ignore annotation, whether the kind
may be patched, a suspected leak (Auto only) and the cooldown (Auto only: a patch inside it is held
back, and the caller schedules it, `services.held`). The patch itself is a server-side dry run and
apply (`kube.patching`); its outcome goes into the recommendation's status (condition `Applied`,
phase, `status.patch`) and into an event on the workload. With `applyMethod: InPlace*` the running
pods also get the memory through their `resize` subresource.
"""

from __future__ import annotations

import dataclasses
import datetime
import enum
import logging
from typing import Callable

from oomtuner import config
from oomtuner.api import policy, recommendation, types
from oomtuner.domain import autoscalers as domain_autoscalers
from oomtuner.domain import duration, held, patch, recommend, selection, status, timestamps, workload
from oomtuner.kube import api, events, owners, patching, store
from oomtuner.kube import autoscalers as kube_autoscalers
from oomtuner.prom import metrics
from oomtuner.services import announcer as announcer_mod
from oomtuner.services import recommendations as recommendations_mod

logger = logging.getLogger(__name__)


_EVENTS = {
    patching.Result.APPLIED: events.Reason.RESOURCES_PATCHED,
    patching.Result.CONFLICT: events.Reason.PATCH_CONFLICT,
    patching.Result.REJECTED: events.Reason.PATCH_FAILED,
}


class Trigger(str, enum.Enum):
    """Why a patch is attempted; the value is how events and logs say it."""

    AUTO = "auto"
    AFTER_COOLDOWN = "auto, after the cooldown"
    RETRY = "auto, tried again"
    SETTLE = "auto, settling a raise"
    APPROVAL = "approval"


@dataclasses.dataclass(frozen=True)
class HeldBack:
    """The patch waits for the cooldown: it is due at `due`."""

    due: datetime.datetime


class Patcher:
    def __init__(self, client: api.Client, *, settings: config.Settings,
                 recommendations: recommendations_mod.Recommendations, workloads: owners.Workloads,
                 announcer: announcer_mod.Announcer, clock: Callable[[], datetime.datetime],
                 autoscalers: kube_autoscalers.Autoscalers | None = None):
        self._client = client
        self._settings = settings
        self._recommendations = recommendations
        self._workloads = workloads
        self._announcer = announcer
        self._clock = clock
        self._default_cooldown = duration.parse(settings.cooldown)
        self._autoscalers = autoscalers or kube_autoscalers.Autoscalers(client)

    def cooldown(self, chosen: policy.OOMPolicy | None) -> datetime.timedelta:
        return duration.parse(chosen.spec.cooldown) if chosen else self._default_cooldown

    def note(self, rec: recommendation.OOMRecommendation, *, reason: str, message: str, approval: bool = False,
             ok: bool = False) -> recommendation.OOMRecommendation:
        """Set the `Applied` condition (and, for an approval, mark its generation as acted on)."""
        now = timestamps.format(self._clock())

        def mutate(obj: recommendation.OOMRecommendation) -> store.Edit[None]:
            status.set_condition(obj.status, types.Condition(type="Applied", status="True" if ok else "False",
                                                             reason=reason, message=message, lastTransitionTime=now))
            if approval:
                obj.status.appliedGeneration = obj.metadata.generation
            return store.Edit(obj, None)

        return self._recommendations.write_status(rec, mutate)[0]

    def apply(self, rec: recommendation.OOMRecommendation, *, target: workload.Workload,
              chosen: policy.OOMPolicy | None, trigger: Trigger) -> HeldBack | None:
        """Patch the workload with the recommendation, or say why not. Returns HeldBack when the
        patch waits (the cooldown, or a passing failure to try again): the caller schedules it.
        Call it under the recommendation's lock."""
        approval = trigger == Trigger.APPROVAL
        refusal = _refusal(rec, target=target, approval=approval)
        if refusal is not None:
            if refusal[0]:
                self.note(rec, reason=refusal[0], message=refusal[1], approval=approval)
            return None
        now = self._clock()
        remaining = recommend.cooldown_remaining(last_applied=timestamps.parse(rec.status.appliedAt),
                                                 cooldown=self.cooldown(chosen), now=now)
        if not approval and remaining > datetime.timedelta(0):
            self.note(rec, reason=held.COOLDOWN_ACTIVE,
                      message=f"last patch at {rec.status.appliedAt}; next one allowed in {duration.format(remaining)}")
            return HeldBack(due=now + remaining)
        before = target.containers()
        changes = patch.memory_changes(rec.status.containers, before)
        if not changes:
            self._nothing_to_change(rec, target=target, approval=approval, stamp=timestamps.format(now), before=before,
                                    trigger=trigger)
            return None
        found = domain_autoscalers.sizing(target, vpas=self._autoscalers.vpas(target.namespace),
                                          hpas=self._autoscalers.hpas(target.namespace))
        if found:
            return self._autoscaled(rec, target=target, chosen=chosen, found=found, changes=changes,
                                    approval=approval, trigger=trigger)
        outcome = patching.apply_memory(
            self._client,
            target=target,
            changes=changes,
            field_manager=self._settings.field_manager,
            respected_managers=set(self._settings.respected_managers),
        )
        metrics.PATCHES.labels(result=outcome.result.value).inc()
        stamp = timestamps.format(now)
        if outcome.result == patching.Result.RETRY:
            attempts = (rec.status.attempts or 0) + 1
            due = now + held.retry_after(attempts)
            self._recommendations.write_status(rec, _retry_mutation(outcome, attempts=attempts, due=due, stamp=stamp,
                                                                    approval=approval))
            logger.warning("%s %s/%s: patch attempt %d failed, tried again at %s: %s", target.kind, target.namespace,
                           target.name, attempts, timestamps.format(due), outcome.message)
            return HeldBack(due=due)
        self._record(rec, outcome, target=target, chosen=chosen, changes=changes, before=before, approval=approval,
                     trigger=trigger, stamp=stamp)
        return None

    def _record(self, rec: recommendation.OOMRecommendation, outcome: patching.Outcome, *, target: workload.Workload,
                chosen: policy.OOMPolicy | None, changes: list[patch.MemoryChange],
                before: list[recommend.ContainerResources], approval: bool, trigger: Trigger, stamp: str) -> None:
        """A patch went out (or was refused for good): resize the running pods (InPlace), write the
        outcome into the status, and tell the workload."""
        settling = {c.name for c in rec.status.containers if c.settled}
        resize_errors: list[str] = []
        if outcome.result == patching.Result.APPLIED:
            self._workloads.forget(target)
            if chosen is not None and chosen.spec.applyMethod in (types.ApplyMethod.IN_PLACE,
                                                                  types.ApplyMethod.IN_PLACE_AND_ROLLOUT):
                # Raises go to the running pods at once; a settle lowers memory through the rollout only.
                resize_errors = self._resize_running(target, [c for c in changes if c.container not in settling])
            message = outcome.message + (f"; in-place resize failed: {'; '.join(resize_errors)}" if resize_errors else "")
            mutation = _applied_mutation(message, approval=approval, stamp=stamp, trigger=trigger.value, before=before)
        else:
            mutation = _refused_mutation(outcome, approval=approval, stamp=stamp)
        rec, _ = self._recommendations.write_status(rec, mutation)
        self._announcer.phase(rec)
        message = f"{outcome.message} ({trigger.value}): {patch.describe(changes)}"
        logger.info("%s %s/%s: %s", target.kind, target.namespace, target.name, message)
        reason = _EVENTS[outcome.result]
        if outcome.result == patching.Result.APPLIED and {ch.container for ch in changes} <= settling:
            reason = events.Reason.RESOURCES_SETTLED
        self._announcer.post(involved=announcer_mod.involved_workload(target), reason=reason, message=message)

    def _autoscaled(self, rec: recommendation.OOMRecommendation, *, target: workload.Workload,
                    chosen: policy.OOMPolicy | None, found: list[domain_autoscalers.Found],
                    changes: list[patch.MemoryChange], approval: bool, trigger: Trigger) -> HeldBack | None:
        """Another autoscaler sizes the workload: raise a VPA's minAllowed when the policy says so,
        else patch nothing and say who sizes it (phase Conflict)."""
        now = self._clock()
        stamp = timestamps.format(now)
        vpas = [f.vpa for f in found if f.vpa is not None]
        raise_floor = chosen is not None and chosen.spec.vpa == types.VPAPolicy.RAISE_MIN_ALLOWED
        if not raise_floor or len(vpas) != len(found):
            outcome = patching.Outcome(patching.Result.CONFLICT, domain_autoscalers.describe(found, target),
                                       patching.body_yaml(target, changes))
            self._recommendations.write_status(rec, _refused_mutation(outcome, approval=approval, stamp=stamp,
                                                                      reason="AutoscalerConflict"))
            self._announcer.post(involved=announcer_mod.involved_workload(target), reason=events.Reason.PATCH_CONFLICT,
                                 message=outcome.message)
            return None
        said = []
        for vpa in vpas:
            policies = domain_autoscalers.min_allowed_policies(vpa, changes)
            if policies is None:
                continue
            try:
                self._autoscalers.raise_min_allowed(vpa, policies)
            except Exception as exc:  # noqa: BLE001 - sorted as a patch failure is
                if not (isinstance(exc, api.Conflict) or patching.passing(exc)):
                    raise
                attempts = (rec.status.attempts or 0) + 1
                due = now + held.retry_after(attempts)
                retry = patching.Outcome(patching.Result.RETRY, f"raising the minAllowed of VPA {vpa.metadata.name}: {exc}", "")
                self._recommendations.write_status(rec, _retry_mutation(retry, attempts=attempts, due=due, stamp=stamp,
                                                                        approval=approval))
                return HeldBack(due=due)
            said.append(f"raised the minAllowed.memory of VerticalPodAutoscaler {vpa.metadata.name} ({patch.describe(changes)})")
        message = "; ".join(said) or "the VerticalPodAutoscaler's minAllowed already covers the recommendation"
        self._recommendations.write_status(rec, _vpa_mutation(message, approval=approval, stamp=stamp))
        self._announcer.post(involved=announcer_mod.involved_workload(target), reason=events.Reason.RESOURCES_PATCHED,
                             message=f"{message} ({trigger.value})")
        return None

    def _nothing_to_change(self, rec: recommendation.OOMRecommendation, *, target: workload.Workload, approval: bool,
                           stamp: str, before: list[recommend.ContainerResources], trigger: Trigger) -> None:
        owed = status.condition(rec.status, "Applied")
        if owed is not None and owed.reason in (held.PENDING, held.RETRYING) and held.raises_memory(rec.status.containers):
            # An earlier attempt went through and its outcome was never written (a crash, a timeout
            # on the answer): the template has the memory. Record it as applied.
            self._recommendations.write_status(rec, _applied_mutation(
                f"{target.display} already has the recommended memory (an earlier attempt went through)",
                approval=approval, stamp=stamp, trigger=trigger.value, before=before))
            return
        self.note(rec, reason="UpToDate", message=f"{target.display} already has the recommended memory",
                  approval=approval, ok=True)

    def _resize_running(self, target: workload.Workload, changes: list[patch.MemoryChange]) -> list[str]:
        """Raise the memory of the workload's running pods in place: only pods it owns (through its
        ReplicaSets or Jobs), never another workload's pods whose labels happen to match."""
        if not changes:
            return []
        errors = []
        for pod in owners.owned_running_pods(self._client, target):
            error = patching.resize_pod(self._client, namespace=target.namespace, pod=pod.metadata.name, changes=changes)
            if error:
                errors.append(f"{pod.metadata.name}: {error}")
        return errors


def _refusal(rec: recommendation.OOMRecommendation, *, target: workload.Workload,
             approval: bool) -> tuple[str, str] | None:
    """Why the recommendation is not applied to `target` at all: (reason, message) for the `Applied`
    condition, ("", "") to skip without a word (a suspected leak in Auto mode), None to go on."""
    if not workload.adopts(target, rec):
        return "NotAdopted", (f"this recommendation does not belong to {target.display} (uid {target.uid}): its "
                              "targetRef or owner reference names another object; nothing is applied from it")
    if selection.ignored(target.annotations, target.template_annotations):
        return "Ignored", f"{target.display} is annotated {selection.IGNORE_ANNOTATION}: \"true\""
    if not target.patchable:
        return "NotPatchable", f"{target.kind} has no pod template the operator may change; apply status.patch to whatever creates it"
    if not approval and rec.status.phase == types.Phase.SUSPECTED_LEAK:
        return "", ""
    return None


def _applied_mutation(message: str, *, approval: bool, stamp: str, trigger: str,
                      before: list[recommend.ContainerResources]) -> store.Mutation[None]:
    def mutate(obj: recommendation.OOMRecommendation) -> store.Edit[None]:
        st = obj.status
        if approval:
            st.appliedGeneration = obj.metadata.generation
        status.record_applied(st, before=before, stamp=stamp, trigger=trigger)
        st.phase = types.Phase.APPLIED
        st.appliedAt = stamp
        st.patch = None
        st.attempts, st.nextAttemptAt = None, None
        for c in st.containers:
            c.current = c.recommended.model_copy()
            if c.phase == types.Phase.PENDING:  # Capped stays: more kills cannot raise it
                c.phase = types.Phase.APPLIED
        st.current = status.summary(st.containers, recommended=False)
        status.set_condition(st, types.Condition(type="Applied", status="True", reason="Patched", message=message,
                                                 lastTransitionTime=stamp))
        return store.Edit(obj, None)

    return mutate


def _retry_mutation(outcome: patching.Outcome, *, attempts: int, due: datetime.datetime, stamp: str,
                    approval: bool) -> store.Mutation[None]:
    def mutate(obj: recommendation.OOMRecommendation) -> store.Edit[None]:
        st = obj.status
        st.attempts, st.nextAttemptAt = attempts, timestamps.format(due)
        st.patch = outcome.patch_yaml
        status.set_condition(st, types.Condition(
            type="Applied", status="False", reason=held.RETRYING, lastTransitionTime=stamp,
            message=f"attempt {attempts} failed ({outcome.message}); tried again at {timestamps.format(due)}"))
        return store.Edit(obj, None)

    return mutate


def _vpa_mutation(message: str, *, approval: bool, stamp: str) -> store.Mutation[None]:
    def mutate(obj: recommendation.OOMRecommendation) -> store.Edit[None]:
        st = obj.status
        if approval:
            st.appliedGeneration = obj.metadata.generation
        st.phase = types.Phase.APPLIED
        st.appliedAt = stamp
        st.patch = None
        st.attempts, st.nextAttemptAt = None, None
        status.set_condition(st, types.Condition(type="Applied", status="True", reason="VPAMinAllowedRaised",
                                                 message=message, lastTransitionTime=stamp))
        return store.Edit(obj, None)

    return mutate


def _refused_mutation(outcome: patching.Outcome, *, approval: bool, stamp: str,
                      reason: str | None = None) -> store.Mutation[None]:
    def mutate(obj: recommendation.OOMRecommendation) -> store.Edit[None]:
        st = obj.status
        if approval:
            st.appliedGeneration = obj.metadata.generation
        st.patch = outcome.patch_yaml or st.patch
        st.attempts, st.nextAttemptAt = None, None
        if outcome.result == patching.Result.CONFLICT:
            st.phase = types.Phase.CONFLICT
            why = reason or "Conflict"
        else:
            why = reason or "Rejected"
        status.set_condition(st, types.Condition(type="Applied", status="False", reason=why,
                                                 message=outcome.message, lastTransitionTime=stamp))
        return store.Edit(obj, None)

    return mutate
