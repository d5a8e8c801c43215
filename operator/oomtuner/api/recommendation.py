"""The OOMRecommendation custom resource: one per workload, with the evidence behind it.

The operator is the only writer of `status`; users write `spec.approved` (or run `oomtuner
approve`). Kills are kept in `status.kills`, newest last and capped at `MAX_KILLS`: their
identities are how a kill is counted once, even across operator restarts.
"""

from __future__ import annotations

from typing import Any

import pydantic

from oomtuner.api import core, kinds, policy, types

GROUP = policy.GROUP
VERSION = policy.VERSION
KIND = "OOMRecommendation"
PLURAL = "oomrecommendations"
MAX_KILLS = 20
# Pods with kills one recommendation remembers (pods that are gone are pruned first): about 150 bytes
# each, so the status stays well under etcd's request limit.
MAX_COUNTED = 5000
MAX_CHANGES = 20
# A kill's identity: `<pod uid>/<container>/<finishedAt>`, or a child kill's
# `<pod uid>/<container>/child/<container id>/<counter>`.
ID = types.UID + types.LABEL + 256


class TargetRef(pydantic.BaseModel):
    """The workload this recommendation is for, in the recommendation's namespace."""

    model_config = pydantic.ConfigDict(extra="forbid")

    apiVersion: str = pydantic.Field(min_length=1, max_length=types.SUBDOMAIN, description="The workload's apiVersion, e.g. apps/v1.")
    kind: str = pydantic.Field(pattern=kinds.KIND_PATTERN, max_length=16, description="The workload's kind, e.g. Deployment.")
    name: str = pydantic.Field(min_length=1, max_length=types.SUBDOMAIN, description="The workload's name.")


class OOMRecommendationSpec(pydantic.BaseModel):
    """The workload, and the user's approval. Written by the operator when it creates the object;
    users set only `approved`."""

    model_config = pydantic.ConfigDict(extra="forbid")

    targetRef: TargetRef = pydantic.Field(description="The workload this recommendation is for, in its namespace.")
    approved: bool | None = pydantic.Field(
        default=None, description="Set to true to apply this recommendation once."
    )


class Resources(pydantic.BaseModel):
    """A container's memory request and limit; unset when the container has none."""

    model_config = pydantic.ConfigDict(extra="ignore")

    request: types.Quantity | None = pydantic.Field(default=None, description="The memory request, a quantity such as 256Mi.")
    limit: types.Quantity | None = pydantic.Field(default=None, description="The memory limit, a quantity such as 512Mi.")


class ContainerStatus(pydantic.BaseModel):
    """One container of the workload: its memory now and recommended, and why."""

    model_config = pydantic.ConfigDict(extra="ignore")

    name: types.LabelName = pydantic.Field(description="The container's name in the pod template.")
    type: types.ContainerType = pydantic.Field(
        default=types.ContainerType.CONTAINER, description="container, init, sidecar (an init container that keeps running) or ephemeral.")
    current: Resources = pydantic.Field(default_factory=Resources, description="The memory the pod template has now.")
    recommended: Resources = pydantic.Field(default_factory=Resources, description="The memory oomtuner recommends.")
    classification: types.Classification = types.Classification.UNKNOWN
    phase: types.Phase = types.Phase.PENDING
    oomKills: int = pydantic.Field(default=0, description="OOM kills of this container counted so far.")
    lastOOMAt: str | None = pydantic.Field(default=None, max_length=types.TIMESTAMP, json_schema_extra=types.DATE_TIME,
                                           description="When it was last OOM-killed.")
    reason: str = pydantic.Field(default="", max_length=types.NOTES, description="The arithmetic behind the recommendation, one clause per rule.")
    cappedBy: str | None = pydantic.Field(default=None, max_length=types.SHORT_TEXT,
                                          description="The cap the recommendation stopped at (policy maxLimit, LimitRange, quota, node), if any.")
    settled: bool = pydantic.Field(
        default=False,
        description="The recommended memory settles a raise of the operator's own: lower than what it raised it to.",
    )


class Culprit(pydantic.BaseModel):
    """Who most likely ran a node out of memory: the container on the node using the most memory
    above its request near the kill. Without one (no usage data, or nobody above its request) only
    `reason` is set, and says why."""

    model_config = pydantic.ConfigDict(extra="ignore")

    namespace: types.LabelName | None = pydantic.Field(
        default=None, description="Its namespace (withheld when another namespace's culprits are not named here).")
    pod: types.Name | None = pydantic.Field(default=None, description="Its pod (withheld like the namespace).")
    container: types.LabelName | None = pydantic.Field(default=None, description="Its container (withheld like the namespace).")
    usage: types.Quantity | None = pydantic.Field(default=None, description="Its peak working set near the kill.")
    request: types.Quantity | None = pydantic.Field(default=None, description="Its memory request.")
    reason: str = pydantic.Field(default="", max_length=types.SENTENCE, description="The evidence, or why no culprit is named.")


class Kill(pydantic.BaseModel):
    """One OOM kill with its evidence."""

    model_config = pydantic.ConfigDict(extra="ignore")

    id: str = pydantic.Field(max_length=ID, description="The kill's identity, used to count it once.")
    pod: types.Name = pydantic.Field(description="The pod whose container was killed.")
    podUID: str | None = pydantic.Field(default=None, max_length=types.UID, description="That pod's UID.")
    container: types.LabelName = pydantic.Field(description="The container that was killed.")
    containerType: types.ContainerType = pydantic.Field(
        default=types.ContainerType.CONTAINER, description="container, init, sidecar or ephemeral.")
    node: types.Name | None = pydantic.Field(default=None, description="The node the pod ran on.")
    at: str | None = pydantic.Field(default=None, max_length=types.TIMESTAMP, json_schema_extra=types.DATE_TIME,
                                    description="When the container died (the kubelet's finishedAt, or when the agent saw it).")
    restartCount: int = pydantic.Field(default=0, description="The container's restart count after the kill.")
    limitAtKill: types.Quantity | None = pydantic.Field(default=None, description="The container's memory limit when it was killed.")
    requestAtKill: types.Quantity | None = pydantic.Field(default=None, description="The container's memory request when it was killed.")
    qosClass: types.QOSClass | None = pydantic.Field(default=None, description="The pod's QoS class: Guaranteed, Burstable or BestEffort.")
    oomScoreAdj: int | None = pydantic.Field(
        default=None, description="The oom_score_adj the kubelet gave the container (unknown for Burstable without the node's memory).")
    classification: types.Classification = types.Classification.UNKNOWN
    reason: str = pydantic.Field(default="", max_length=types.SENTENCE, description="Why it was classified so, in words.")
    startedAt: str | None = pydantic.Field(default=None, max_length=types.TIMESTAMP, json_schema_extra=types.DATE_TIME,
                                           description="When the killed container instance had started.")
    stale: bool = pydantic.Field(
        default=False,
        description="Killed below the memory the workload already had (an old pod during a rollout, a late "
        "report): recorded, raises nothing.",
    )
    culprit: Culprit | None = pydantic.Field(
        default=None,
        description="For a Node kill: the likely culprit on the node, or why none is named (set shortly after the kill).",
    )


class ChildKillsCounted(pydantic.BaseModel):
    """The node agent's kills of one container instance counted so far: its cgroup's OOM kill
    counter only grows within an instance, so the highest value counted says which are."""

    model_config = pydantic.ConfigDict(extra="ignore")

    containerID: str = pydantic.Field(max_length=types.UID, description="The container instance (runtime ID without the scheme).")
    counter: int = pydantic.Field(ge=0, description="The highest value of its OOM kill counter counted.")
    at: str | None = pydantic.Field(default=None, max_length=types.TIMESTAMP, json_schema_extra=types.DATE_TIME,
                                    description="When the agent reported that value.")


class Counted(pydantic.BaseModel):
    """What has been counted of one container of one pod.

    A pod's status shows at most the two newest terminations of a container (`state` and
    `lastState`), so its two newest counted kills are all it takes to count each kill it shows
    exactly once, however many pods a burst kills and whatever their nodes' clocks say.
    """

    model_config = pydantic.ConfigDict(extra="ignore")

    podUID: str = pydantic.Field(max_length=types.UID, description="The pod's UID: a pod that is gone never shows a kill again.")
    container: str = pydantic.Field(max_length=types.LABEL, description="The container's name.")
    kills: list[types.Name] = pydantic.Field(
        default_factory=list,
        max_length=4,
        description="The newest kills counted from the pod status (at most two, oldest first), each by its "
        "finishedAt in UTC (or, where the kubelet gave none, its container ID).",
    )
    childKills: list[ChildKillsCounted] = pydantic.Field(
        default_factory=list, max_length=4, description="The node agent's kills counted, per container instance (at most two)."
    )
    instance: int | None = pydantic.Field(
        default=None, ge=0,
        description="The newest container instance (counted from 0, as restartCount counts) whose kill was counted.",
    )


class Applied(pydantic.BaseModel):
    """Memory the operator itself set on one container, and what the container had before."""

    model_config = pydantic.ConfigDict(extra="ignore")

    name: str = pydantic.Field(max_length=types.LABEL, description="The container's name.")
    original: Resources = pydantic.Field(
        default_factory=Resources, description="What the template had before the operator first changed it."
    )
    applied: Resources = pydantic.Field(default_factory=Resources, description="What the operator applied last.")
    at: str | None = pydantic.Field(default=None, max_length=types.TIMESTAMP, json_schema_extra=types.DATE_TIME,
                                    description="When it applied it.")
    raisedAt: str | None = pydantic.Field(default=None, max_length=types.TIMESTAMP, json_schema_extra=types.DATE_TIME,
                                          description="When the operator last raised it.")
    settledAt: str | None = pydantic.Field(
        default=None, max_length=types.TIMESTAMP, json_schema_extra=types.DATE_TIME, description="When the operator last settled a raise.")


class Change(pydantic.BaseModel):
    """One change the operator made to a container's memory: a raise after kills, or a settle."""

    model_config = pydantic.ConfigDict(extra="ignore")

    at: str = pydantic.Field(max_length=types.TIMESTAMP, json_schema_extra=types.DATE_TIME, description="When the change was applied.")
    container: str = pydantic.Field(max_length=types.LABEL, description="The container's name.")
    kind: str = pydantic.Field(pattern=r"^(Raise|Settle)$", max_length=8, description="Raise or Settle.")
    before: Resources = pydantic.Field(default_factory=Resources, description="The container's memory before.")
    after: Resources = pydantic.Field(default_factory=Resources, description="The container's memory after.")
    trigger: str = pydantic.Field(default="", max_length=types.SHORT_TEXT, description="auto, approval, settle …")


class OOMRecommendationStatus(pydantic.BaseModel):
    """The recommendation and its evidence. Written by the operator only."""

    model_config = pydantic.ConfigDict(extra="ignore")

    phase: types.Phase | None = None
    target: str | None = pydantic.Field(default=None, max_length=types.SHORT_TEXT, description="kind/name of the workload.")
    totalKills: int = pydantic.Field(default=0, description="OOM kills of the workload counted so far, all containers together.")
    current: str | None = pydantic.Field(default=None, max_length=types.SHORT_TEXT, description="Current memory, for display.")
    recommended: str | None = pydantic.Field(
        default=None, max_length=types.SHORT_TEXT, description="Recommended memory, for display."
    )
    containers: list[ContainerStatus] = pydantic.Field(
        default_factory=list, max_length=types.MAX_CONTAINERS, description="Per container of the workload, its memory now and recommended.")
    kills: list[Kill] = pydantic.Field(default_factory=list, max_length=MAX_KILLS,
                                       description="The newest kills with their evidence, oldest first (the last 20).")
    counted: list[Counted] = pydantic.Field(
        default_factory=list,
        max_length=MAX_COUNTED,
        description="Every kill counted, per pod and container, so a kill is counted once across restarts; "
        "entries of pods that are gone are dropped.",
    )
    applied: list[Applied] = pydantic.Field(
        default_factory=list, max_length=types.MAX_CONTAINERS,
        description="Per container, the memory the operator set and what it replaced.",
    )
    changes: list[Change] = pydantic.Field(
        default_factory=list, max_length=MAX_CHANGES,
        description="The operator's changes to the workload's memory, newest last (the last 20).",
    )
    nextAttemptAt: str | None = pydantic.Field(
        default=None, max_length=types.TIMESTAMP, json_schema_extra=types.DATE_TIME, description="When a patch that failed for a passing reason is tried again."
    )
    attempts: int | None = pydantic.Field(default=None, ge=0, description="Patch attempts that failed for a passing reason.")
    policy: str | None = pydantic.Field(default=None, max_length=types.SUBDOMAIN, description="The OOMPolicy that applied, if any.")
    mode: types.Mode | None = None
    dataSource: str | None = pydantic.Field(
        default=None, max_length=types.SHORT_TEXT,
        description="What the recommendation was computed from: kills only, or Prometheus.",
    )
    appliedAt: str | None = pydantic.Field(default=None, max_length=types.TIMESTAMP, json_schema_extra=types.DATE_TIME,
                                           description="When the operator last patched the workload.")
    appliedGeneration: int | None = pydantic.Field(
        default=None, description="The spec generation whose approval was applied."
    )
    patch: str | None = pydantic.Field(default=None, max_length=types.PATCH, description="The ready patch YAML, when not applied.")
    conditions: list[types.Condition] = pydantic.Field(default_factory=list, max_length=types.MAX_CONDITIONS)
    observedGeneration: int | None = pydantic.Field(default=None, description="The spec generation this status describes.")


class OOMRecommendation(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="ignore")

    apiVersion: str = f"{GROUP}/{VERSION}"
    kind: str = KIND
    metadata: core.ObjectMeta = pydantic.Field(default_factory=core.ObjectMeta)
    spec: OOMRecommendationSpec
    status: OOMRecommendationStatus = pydantic.Field(default_factory=OOMRecommendationStatus)


def name_for(*, kind: str, name: str) -> str:
    """The recommendation's name for a workload: `<kind>-<name>` in lower case, at most 253 chars."""
    return f"{kind}-{name}".lower()[:253]


def alternate_name_for(*, kind: str, name: str, uid: str) -> str:
    """Where a workload's recommendation goes when `name_for` is taken by an object that is not its
    own: `<kind>-<name>-<first 8 characters of its uid>`, at most 253 characters."""
    suffix = f"-{uid[:8].lower()}"
    return name_for(kind=kind, name=name)[: 253 - len(suffix)] + suffix


def parse(body: Any) -> OOMRecommendation:
    return OOMRecommendation.model_validate(body)


class InvalidRecommendation(ValueError):
    """A recommendation the operator cannot read; the message names the object and the field."""


def read(body: Any) -> OOMRecommendation:
    """Parse a recommendation body; raises InvalidRecommendation with one line naming the object and
    each field, e.g. `OOMRecommendation shop/deployment-web: status.kills[3].pod: ...`."""
    try:
        return parse(body)
    except pydantic.ValidationError as exc:
        meta = body.get("metadata") if isinstance(body, dict) else None
        meta = meta if isinstance(meta, dict) else {}
        where = f"{KIND} {meta.get('namespace') or ''}/{meta.get('name') or ''}"
        raise InvalidRecommendation(f"{where}: {core.describe(exc)}") from None
