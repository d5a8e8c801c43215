"""Policies: the valid OOMPolicies of each namespace and the valid ClusterOOMPolicies, and the status
the operator reports on each.

Fed by the OOMPolicy and ClusterOOMPolicy watches. A policy that does not validate is left out (its
workloads fall back to the next rule, then to the operator's default mode) and gets a `Valid=False`
condition and a `PolicyInvalid` event that name the field. Which policy governs a workload: the most
specific OOMPolicy of its namespace that selects it; else the most specific ClusterOOMPolicy whose
namespaceSelector selects the namespace (its labels, read at most every NAMESPACE_TTL) and whose
selector selects the workload (`domain.selection`). Policies needed before the watches have brought
them (at start-up) are read once (`learn`).
"""

from __future__ import annotations

import collections
import datetime
import logging
import threading
import time
from typing import Any, Callable, Mapping

from oomtuner import config
from oomtuner.api import core, kinds, policy, types
from oomtuner.domain import policies, selection, timestamps, workload
from oomtuner.kube import api, events, owners, store
from oomtuner.services import announcer as announcer_mod

logger = logging.getLogger(__name__)


def read_policy(body: Mapping[str, Any], *, namespace: str, name: str) -> tuple[policy.OOMPolicy | None, str | None]:
    """The policy in `body` and what is wrong with it (None when it is valid); never raises."""
    try:
        parsed = policy.parse(body, source=f"OOMPolicy {namespace}/{name}")
    except policy.InvalidPolicy as exc:
        return None, str(exc)
    found = policies.problem(parsed)
    return parsed, (f"OOMPolicy {namespace}/{name}: {found}" if found else None)


def read_cluster_policy(body: Mapping[str, Any]) -> tuple[policy.ClusterOOMPolicy | None, str | None]:
    """The ClusterOOMPolicy in `body` and what is wrong with it (None when it is valid); never raises."""
    name = policy.identify(body).name
    try:
        parsed = policy.parse_cluster(body, source=f"{policy.CLUSTER_KIND} {name}")
    except policy.InvalidPolicy as exc:
        return None, str(exc)
    found = policies.problem(parsed.as_policy())
    return parsed, (f"{policy.CLUSTER_KIND} {name}: {found}" if found else None)


def _same_status(old: policy.OOMPolicyStatus | None, new: policy.OOMPolicyStatus) -> bool:
    if old is None:
        return False
    old_cond = (old.conditions or [types.Condition(type="", status="Unknown")])[0]
    new_cond = (new.conditions or [types.Condition(type="", status="Unknown")])[0]
    return (
        old.observedGeneration == new.observedGeneration
        and old.matchedWorkloads == new.matchedWorkloads
        and old_cond.status == new_cond.status
        and old_cond.message == new_cond.message
    )


NAMESPACE_TTL = 30.0  # seconds a namespace's labels are trusted for choosing a ClusterOOMPolicy


class Policies:
    def __init__(self, client: api.Client, *, settings: config.Settings, announcer: announcer_mod.Announcer,
                 clock: Callable[[], datetime.datetime], monotonic: Callable[[], float] = time.monotonic):
        self._client = client
        self._settings = settings
        self._announcer = announcer
        self._clock = clock
        self._monotonic = monotonic
        self._valid: dict[str, dict[str, policy.OOMPolicy]] = collections.defaultdict(dict)
        self._cluster: dict[str, policy.ClusterOOMPolicy] = {}
        self._labels: dict[str, tuple[float, dict[str, str]]] = {}
        self._lock = threading.Lock()

    # ---- reading --------------------------------------------------------------------------------

    def choose(self, target: workload.Workload) -> policy.OOMPolicy | None:
        """The policy that governs the workload, or None: its namespace's own first, then a
        ClusterOOMPolicy (as the OOMPolicy it stands for, named `ClusterOOMPolicy/<name>`)."""
        with self._lock:
            candidates = list(self._valid.get(target.namespace, {}).values())
            fleet = list(self._cluster.values())
        own = selection.choose(candidates, target.template_labels)
        if own is not None or not fleet:
            return own
        found = selection.choose_cluster(fleet, namespace_labels=self._namespace_labels(target.namespace),
                                         labels=target.template_labels)
        return found.as_policy() if found is not None else None

    def mode(self, chosen: policy.OOMPolicy | None) -> types.Mode:
        return selection.effective_mode(chosen, default=self._settings.default_mode)

    def named(self, namespace: str, name: str) -> policy.OOMPolicy | None:
        """The policy a status names: an OOMPolicy of the namespace, or `ClusterOOMPolicy/<name>`."""
        with self._lock:
            if name.startswith(policy.cluster_ref("")):
                found = self._cluster.get(name.removeprefix(policy.cluster_ref("")))
                return found.as_policy() if found is not None else None
            return self._valid.get(namespace, {}).get(name)

    def _namespace_labels(self, namespace: str) -> dict[str, str]:
        now = self._monotonic()
        with self._lock:
            cached = self._labels.get(namespace)
        if cached is not None and now - cached[0] < NAMESPACE_TTL:
            return cached[1]
        try:
            body = self._client.get_or_none(api.cluster(group="", version="v1", plural="namespaces", name=namespace))
        except api.ApiError as exc:
            logger.warning("cannot read namespace %s for its ClusterOOMPolicy: %s; none applies there", namespace, exc)
            body = None
        labels = dict(core.meta_of(body).labels) if body is not None else {}
        with self._lock:
            if len(self._labels) > 10_000:
                self._labels.clear()
            self._labels[namespace] = (now, labels)
        return labels

    def known(self, namespace: str, name: str) -> bool:
        return self.named(namespace, name) is not None

    def learn(self, namespace: str | None) -> int:
        """Read the valid policies of a namespace (None: of all) that the watch has not brought yet,
        so the policy chosen at start-up is the right one. Only learnt: the watch still reports on
        each policy in its status. Returns how many valid policies were read."""
        learnt = 0
        for body in store.list_policies(self._client, namespace=namespace):
            meta = policy.identify(body)
            where, name = meta.namespace or namespace or "", meta.name
            parsed, problem = read_policy(body, namespace=where, name=name)
            if parsed is not None and problem is None:
                learnt += 1
                with self._lock:
                    self._valid[where].setdefault(name, parsed)
        return learnt

    def learn_cluster(self) -> int:
        """Read the valid ClusterOOMPolicies (at start-up, before the watch). Returns how many."""
        learnt = 0
        for body in store.list_cluster_policies(self._client):
            parsed, problem = read_cluster_policy(body)
            if parsed is not None and problem is None:
                learnt += 1
                with self._lock:
                    self._cluster.setdefault(parsed.metadata.name, parsed)
        return learnt

    def on_cluster_policy(self, body: Mapping[str, Any], *, deleted: bool = False) -> None:
        """Take a ClusterOOMPolicy from the watch: keep it when valid, and report on it in its status
        (with the number of namespaces it selects)."""
        meta = policy.identify(body)
        if deleted:
            with self._lock:
                self._cluster.pop(meta.name, None)
            return
        now = timestamps.format(self._clock())
        parsed, problem = read_cluster_policy(body)
        if problem is not None or parsed is None:
            with self._lock:
                self._cluster.pop(meta.name, None)
            message = problem or "unreadable"
            logger.warning("%s %s is invalid: %s", policy.CLUSTER_KIND, meta.name, message)
            condition = store.condition(type_="Valid", ok=False, reason="Invalid", message=message, now=now,
                                        generation=meta.generation)
            status = policy.ClusterOOMPolicyStatus(observedGeneration=meta.generation, conditions=[condition])
        else:
            with self._lock:
                self._cluster[meta.name] = parsed
            condition = store.condition(type_="Valid", ok=True, reason="Valid", message="the policy is in effect",
                                        now=now, generation=meta.generation)
            status = policy.ClusterOOMPolicyStatus(observedGeneration=meta.generation, conditions=[condition],
                                                   matchedNamespaces=self._count_namespaces(parsed))
        old = policy.cluster_status_of(body)
        if old is not None and _same_status(old, status) and old.matchedNamespaces == status.matchedNamespaces:
            return
        store.write_cluster_policy_status(self._client, name=meta.name, status=status)
        if problem is not None:
            involved = {"apiVersion": f"{policy.GROUP}/{policy.VERSION}", "kind": policy.CLUSTER_KIND, "name": meta.name,
                        "namespace": "default", "uid": meta.uid}
            self._announcer.post(involved=involved, reason=events.Reason.POLICY_INVALID, message=problem)

    def _count_namespaces(self, chosen: policy.ClusterOOMPolicy) -> int | None:
        try:
            bodies = self._client.list(api.cluster(group="", version="v1", plural="namespaces"))
        except api.ApiError:
            return None
        return sum(1 for b in bodies if selection.matches(chosen.spec.namespaceSelector, core.meta_of(b).labels))

    # ---- the watch --------------------------------------------------------------------------------

    def on_policy(self, body: Mapping[str, Any], *, deleted: bool = False) -> None:
        """Take a policy from the watch: keep it when valid, and report on it in its status."""
        meta = policy.identify(body)
        namespace, name = meta.namespace or "", meta.name
        if deleted:
            with self._lock:
                self._valid[namespace].pop(name, None)
            return
        now = timestamps.format(self._clock())
        generation = meta.generation
        parsed, problem = read_policy(body, namespace=namespace, name=name)
        if problem is not None or parsed is None:
            with self._lock:
                self._valid[namespace].pop(name, None)
            message = problem or "unreadable"
            logger.warning("OOMPolicy %s/%s is invalid: %s", namespace, name, message)
            condition = store.condition(type_="Valid", ok=False, reason="Invalid", message=message, now=now, generation=generation)
            status = policy.OOMPolicyStatus(observedGeneration=generation, conditions=[condition], matchedWorkloads=0)
        else:
            with self._lock:
                self._valid[namespace][name] = parsed
            matched = self._count_matched(namespace, parsed)
            condition = store.condition(
                type_="Valid", ok=True, reason="Valid", message="the policy is in effect", now=now, generation=generation
            )
            status = policy.OOMPolicyStatus(observedGeneration=generation, conditions=[condition], matchedWorkloads=matched)
        if _same_status(policy.status_of(body), status):
            return
        store.write_policy_status(self._client, namespace=namespace, name=name, status=status)
        if problem is not None:
            involved = {"apiVersion": f"{policy.GROUP}/{policy.VERSION}", "kind": policy.KIND, "name": name,
                        "namespace": namespace, "uid": meta.uid}
            self._announcer.post(involved=involved, reason=events.Reason.POLICY_INVALID, message=problem)

    def _count_matched(self, namespace: str, chosen: policy.OOMPolicy) -> int:
        """How many of the namespace's workloads this policy governs (the top-level kinds)."""
        with self._lock:
            candidates = list(self._valid[namespace].values())
        count = 0
        for kind in kinds.top_level():
            try:
                bodies = self._client.list(owners.path_of(kind=kind.kind, namespace=namespace))
            except api.ApiError:
                continue
            for body in bodies:
                try:
                    wl = workload.from_body({**body, "kind": kind.kind, "apiVersion": kind.api_version})
                except core.InvalidObject:
                    continue
                if selection.choose(candidates, wl.template_labels) is chosen:
                    count += 1
        return count
