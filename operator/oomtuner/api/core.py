"""Typed, lenient models of the built-in objects the operator reads: Pod, Node, Event and ResourceQuota.

Bodies arrive from watches as plain dicts. They are parsed here, at the edge, so the domain never reaches
into nested dicts (ARCHITECTURE.md, "Invariants"). The models are deliberately lenient, unlike the models of our own
custom resources:

- unknown fields are ignored, so a newer API server adding fields breaks nothing;
- every field is optional with a harmless default, and an explicit `null` counts as absent, because a
  pod that has just been created has no status, a container that never ran has no state, and kwok or a
  test may write a partial status;
- quantities stay text (`"512Mi"`, or a bare number coerced to text), trimmed of white space as
  Quantity.UnmarshalJSON trims it; turning them into bytes is domain work (`domain.quantity`),
  where a bad value gets a readable error;
- timestamps become timezone-aware `datetime`s in UTC (RFC 3339, "Z" accepted; a naive one is taken
  as UTC; an empty string counts as absent; one that falls outside the years 1 to 9999 once in UTC,
  such as `9999-12-31T23:59:59-23:59`, is refused: Go writes it back as a year no client can read).

Only the fields the operator uses are modelled. `parse_pod`, `parse_node`, `parse_event` and
`parse_resource_quota` raise `InvalidObject` with one readable line naming the object and the field,
never a raw pydantic dump.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from typing import Annotated, Any, TypeVar

import pydantic

from oomtuner.api import types

MEMORY = "memory"
CPU = "cpu"


def _timestamp_or_none(value: Any) -> Any:
    if value == "":
        return None
    return value


def _in_utc(value: datetime.datetime | None) -> datetime.datetime | None:
    if value is None:
        return None
    if value.tzinfo is None:
        return value.replace(tzinfo=datetime.timezone.utc)
    try:
        return value.astimezone(datetime.timezone.utc)
    except OverflowError:
        raise ValueError("the time falls outside the years 1 to 9999 in UTC") from None


# A resource quantity as written in the object, e.g. "512Mi". `domain.quantity.parse_bytes` gives bytes.
QuantityText = Annotated[str, pydantic.BeforeValidator(types.quantity_text)]

# A metav1.Time or metav1.MicroTime: aware datetime in UTC, or None when absent, null or "".
Timestamp = Annotated[
    datetime.datetime | None,
    pydantic.BeforeValidator(_timestamp_or_none),
    pydantic.AfterValidator(_in_utc),
]

ResourceList = dict[str, QuantityText]


class _Lenient(pydantic.BaseModel):
    """Base for every model here: ignore unknown fields and treat an explicit null as absent."""

    model_config = pydantic.ConfigDict(extra="ignore", frozen=True)

    @pydantic.model_validator(mode="before")
    @classmethod
    def _drop_nulls(cls, data: Any) -> Any:
        if isinstance(data, Mapping):
            return {key: value for key, value in data.items() if value is not None}
        return data


class OwnerReference(_Lenient):
    apiVersion: str = ""
    kind: str = ""
    name: str = ""
    uid: str = ""
    controller: bool = False


class ObjectMeta(_Lenient):
    name: str = ""
    namespace: str | None = None
    uid: str | None = None
    resourceVersion: str | None = None
    generation: int | None = None
    labels: dict[str, str] = pydantic.Field(default_factory=dict)
    annotations: dict[str, str] = pydantic.Field(default_factory=dict)
    ownerReferences: list[OwnerReference] = pydantic.Field(default_factory=list)
    creationTimestamp: Timestamp = None
    deletionTimestamp: Timestamp = None
    managedFields: list[dict[str, Any]] = pydantic.Field(default_factory=list)


class ResourceRequirements(_Lenient):
    requests: ResourceList = pydantic.Field(default_factory=dict)
    limits: ResourceList = pydantic.Field(default_factory=dict)


class Container(_Lenient):
    """A regular, init (restartPolicy Always makes it a sidecar) or ephemeral container spec."""

    name: str = ""
    image: str | None = None
    resources: ResourceRequirements = pydantic.Field(default_factory=ResourceRequirements)
    restartPolicy: str | None = None


class PodSpec(_Lenient):
    nodeName: str | None = None
    priority: int | None = None
    priorityClassName: str | None = None
    # Set and >= 0: the pod counts as Terminating for a ResourceQuota's scopes.
    activeDeadlineSeconds: int | None = None
    containers: list[Container] = pydantic.Field(default_factory=list)
    initContainers: list[Container] = pydantic.Field(default_factory=list)
    ephemeralContainers: list[Container] = pydantic.Field(default_factory=list)
    # Pod-level resources (PodLevelResources, beta in 1.34). None means "not set", which is not the
    # same as an empty object: GetPodQOS lets a set object decide the QoS class on its own.
    resources: ResourceRequirements | None = None
    overhead: ResourceList = pydantic.Field(default_factory=dict)


class ContainerStateRunning(_Lenient):
    startedAt: Timestamp = None


class ContainerStateTerminated(_Lenient):
    reason: str | None = None
    message: str | None = None
    exitCode: int | None = None
    signal: int | None = None
    startedAt: Timestamp = None
    finishedAt: Timestamp = None
    containerID: str | None = None


class ContainerStateWaiting(_Lenient):
    reason: str | None = None
    message: str | None = None


class ContainerState(_Lenient):
    running: ContainerStateRunning | None = None
    terminated: ContainerStateTerminated | None = None
    waiting: ContainerStateWaiting | None = None


class ContainerStatus(_Lenient):
    name: str = ""
    restartCount: int = 0
    containerID: str | None = None
    ready: bool = False
    state: ContainerState = pydantic.Field(default_factory=ContainerState)
    lastState: ContainerState = pydantic.Field(default_factory=ContainerState)
    # What the runtime actually enforces (1.33+, in-place resize aware). None on older clusters.
    resources: ResourceRequirements | None = None
    # What the kubelet admitted (InPlacePodVerticalScalingAllocatedStatus). None when not reported.
    allocatedResources: ResourceList | None = None


class PodStatus(_Lenient):
    phase: str | None = None
    qosClass: str | None = None
    startTime: Timestamp = None
    containerStatuses: list[ContainerStatus] = pydantic.Field(default_factory=list)
    initContainerStatuses: list[ContainerStatus] = pydantic.Field(default_factory=list)
    ephemeralContainerStatuses: list[ContainerStatus] = pydantic.Field(default_factory=list)


class Pod(_Lenient):
    apiVersion: str = "v1"
    kind: str = "Pod"
    metadata: ObjectMeta = pydantic.Field(default_factory=ObjectMeta)
    spec: PodSpec = pydantic.Field(default_factory=PodSpec)
    status: PodStatus = pydantic.Field(default_factory=PodStatus)


class NodeStatus(_Lenient):
    capacity: ResourceList = pydantic.Field(default_factory=dict)
    allocatable: ResourceList = pydantic.Field(default_factory=dict)


class Node(_Lenient):
    apiVersion: str = "v1"
    kind: str = "Node"
    metadata: ObjectMeta = pydantic.Field(default_factory=ObjectMeta)
    status: NodeStatus = pydantic.Field(default_factory=NodeStatus)


class ObjectReference(_Lenient):
    apiVersion: str | None = None
    kind: str | None = None
    name: str | None = None
    namespace: str | None = None
    uid: str | None = None
    fieldPath: str | None = None


class EventSource(_Lenient):
    component: str | None = None
    host: str | None = None


class Event(_Lenient):
    """A core/v1 Event. Aggregated events carry a count and first/last timestamps."""

    apiVersion: str = "v1"
    kind: str = "Event"
    metadata: ObjectMeta = pydantic.Field(default_factory=ObjectMeta)
    involvedObject: ObjectReference = pydantic.Field(default_factory=ObjectReference)
    reason: str | None = None
    message: str | None = None
    type: str | None = None
    source: EventSource = pydantic.Field(default_factory=EventSource)
    reportingComponent: str | None = None
    reportingInstance: str | None = None
    firstTimestamp: Timestamp = None
    lastTimestamp: Timestamp = None
    eventTime: Timestamp = None
    count: int | None = None


class ScopedResourceSelectorRequirement(_Lenient):
    scopeName: str = ""
    operator: str = ""
    values: list[str] = pydantic.Field(default_factory=list)


class ScopeSelector(_Lenient):
    matchExpressions: list[ScopedResourceSelectorRequirement] = pydantic.Field(default_factory=list)


class ResourceQuotaSpec(_Lenient):
    hard: ResourceList = pydantic.Field(default_factory=dict)
    scopes: list[str] = pydantic.Field(default_factory=list)
    scopeSelector: ScopeSelector | None = None


class ResourceQuotaStatus(_Lenient):
    # None until the resourcequota controller has synced the quota; then a copy of spec.hard and the
    # usage of every resource in it.
    hard: ResourceList | None = None
    used: ResourceList | None = None


class ResourceQuota(_Lenient):
    apiVersion: str = "v1"
    kind: str = "ResourceQuota"
    metadata: ObjectMeta = pydantic.Field(default_factory=ObjectMeta)
    spec: ResourceQuotaSpec = pydantic.Field(default_factory=ResourceQuotaSpec)
    status: ResourceQuotaStatus = pydantic.Field(default_factory=ResourceQuotaStatus)


class LimitRangeItem(_Lenient):
    type: str = ""
    max: ResourceList = pydantic.Field(default_factory=dict)


class LimitRangeSpec(_Lenient):
    limits: list[LimitRangeItem] = pydantic.Field(default_factory=list)


class LimitRange(_Lenient):
    apiVersion: str = "v1"
    kind: str = "LimitRange"
    metadata: ObjectMeta = pydantic.Field(default_factory=ObjectMeta)
    spec: LimitRangeSpec = pydantic.Field(default_factory=LimitRangeSpec)


class InvalidObject(ValueError):
    """A body that cannot be read even leniently; the message names the object and the field."""


_Model = TypeVar("_Model", bound=pydantic.BaseModel)


OOM_KILLED = "OOMKilled"
_STATUS_LISTS = ("containerStatuses", "initContainerStatuses", "ephemeralContainerStatuses")


def shows_oom_kill(body: Mapping[str, Any]) -> bool:
    """A cheap pre-filter on a raw pod body: does any container status say OOMKilled?

    Runs on every pod event, before any parsing, so it only walks the status lists (and never raises
    on odd shapes).
    """
    status = body.get("status") if isinstance(body, Mapping) else None
    if not isinstance(status, Mapping):
        return False
    for key in _STATUS_LISTS:
        statuses = status.get(key)
        for cs in statuses if isinstance(statuses, list) else ():
            for state_key in ("state", "lastState"):
                state = cs.get(state_key) if isinstance(cs, Mapping) else None
                term = state.get("terminated") if isinstance(state, Mapping) else None
                if isinstance(term, Mapping) and term.get("reason") == OOM_KILLED:
                    return True
    return False


def meta_of(body: Any) -> ObjectMeta:
    """The metadata of any body, read leniently even when the rest is invalid (to report on it);
    never raises."""
    meta = body.get("metadata") if isinstance(body, Mapping) else None
    try:
        return ObjectMeta.model_validate(meta if isinstance(meta, Mapping) else {})
    except pydantic.ValidationError:
        name = meta.get("name") if isinstance(meta, Mapping) else None
        return ObjectMeta(name=name if isinstance(name, str) else "")


def reason_of(body: Any) -> str | None:
    """An Event body's reason, read before parsing it (a cheap filter); None for anything else."""
    reason = body.get("reason") if isinstance(body, Mapping) else None
    return reason if isinstance(reason, str) else None


def parse_pod(body: Mapping[str, Any]) -> Pod:
    """Parse a Pod body (a dict, or kopf's Body). Missing fields get defaults; wrong types raise
    InvalidObject, e.g. `Pod ns/web-0: spec.containers[0].resources.limits.memory: ...`."""
    return _parse(Pod, body, kind="Pod")


def parse_node(body: Mapping[str, Any]) -> Node:
    """Parse a Node body. Raises InvalidObject like parse_pod."""
    return _parse(Node, body, kind="Node")


def parse_event(body: Mapping[str, Any]) -> Event:
    """Parse a core/v1 Event body. Raises InvalidObject like parse_pod."""
    return _parse(Event, body, kind="Event")


def parse_resource_quota(body: Mapping[str, Any]) -> ResourceQuota:
    """Parse a ResourceQuota body. Quantities stay text; raises InvalidObject like parse_pod."""
    return _parse(ResourceQuota, body, kind="ResourceQuota")


def parse_limit_range(body: Mapping[str, Any]) -> LimitRange:
    """Parse a LimitRange body. Quantities stay text; raises InvalidObject like parse_pod."""
    return _parse(LimitRange, body, kind="LimitRange")


def parse_object(model: type[_Model], body: Mapping[str, Any], *, kind: str) -> _Model:
    """Parse `body` into `model` (a lenient model of this package or of `api.workloads`). Raises
    InvalidObject like parse_pod."""
    return _parse(model, body, kind=kind)


def _parse(model: type[_Model], body: Mapping[str, Any], *, kind: str) -> _Model:
    where = f"{kind} {_object_name(body)}".rstrip()
    if not isinstance(body, Mapping):
        raise InvalidObject(f"{where}: expected an object, got {type(body).__name__}")
    try:
        return model.model_validate(dict(body))
    except pydantic.ValidationError as exc:
        raise InvalidObject(f"{where}: {describe(exc)}") from None


def _object_name(body: Any) -> str:
    if not isinstance(body, Mapping):
        return ""
    meta = body.get("metadata")
    if not isinstance(meta, Mapping):
        return ""
    namespace, name = meta.get("namespace"), meta.get("name")
    if namespace and name:
        return f"{namespace}/{name}"
    return str(name or "")


def describe(exc: pydantic.ValidationError) -> str:
    """The problems of a validation error on one line: `field.path[0]: what is wrong (got value)`."""
    problems = []
    for error in exc.errors():
        field = ""
        for part in error["loc"]:
            if isinstance(part, int):
                field += f"[{part}]"
            else:
                field += f".{part}" if field else str(part)
        value = repr(error.get("input"))
        if len(value) > 40:
            value = value[:37] + "..."
        message = error["msg"].removeprefix("Value error, ")
        problems.append(f"{field or '(root)'}: {message} (got {value})")
    return "; ".join(problems)
