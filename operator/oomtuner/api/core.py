"""Typed, lenient models of the built-in objects the operator reads: Pod, Node, Event and ResourceQuota.

Bodies arrive from watches as plain dicts. They are parsed here, at the edge, so the domain never reaches
into nested dicts (STYLE habit 2). The models are deliberately lenient, unlike the models of our own
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

MEMORY = "memory"
CPU = "cpu"


# What Go's strings.TrimSpace trims (unicode.IsSpace): Quantity.UnmarshalJSON trims a quantity so.
_GO_SPACE = "\t\n\v\f\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"


def _quantity_text(value: Any) -> Any:
    """Bare numbers in a resource list are valid quantities (`memory: 1073741824`); keep them as text.
    Text is trimmed as the API server trims it; a whole number beyond 4300 digits cannot be one."""
    if isinstance(value, bool):
        raise ValueError("a quantity must be a string like 512Mi or a number, not a boolean")
    if isinstance(value, int):
        if value.bit_length() > 128:
            raise ValueError("a quantity this large cannot be held (more than 2^63-1)")
        return str(value)
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, str):
        return value.strip(_GO_SPACE)
    return value


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
QuantityText = Annotated[str, pydantic.BeforeValidator(_quantity_text)]

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


class InvalidObject(ValueError):
    """A body that cannot be read even leniently; the message names the object and the field."""


_Model = TypeVar("_Model", bound=pydantic.BaseModel)


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
