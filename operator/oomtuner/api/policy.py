"""The OOMPolicy custom resource: how far the operator may go in a namespace.

Defaults live here as model defaults and are applied when the operator reads a policy. They are NOT
written into the CRD schema, so the API server never rewrites the objects users apply.
"""

from __future__ import annotations

from typing import Annotated, Any

import pydantic

from oomtuner.api import core, types

GROUP = "oomtuner.dev"
VERSION = "v1alpha1"
KIND = "OOMPolicy"
PLURAL = "oompolicies"


class LabelSelectorRequirement(pydantic.BaseModel):
    """One rule of a label selector: a key, an operator and, for In and NotIn, values."""

    model_config = pydantic.ConfigDict(extra="forbid")

    key: str = pydantic.Field(min_length=1, max_length=types.LABEL_KEY, description="The label key the rule is about.")
    operator: str = pydantic.Field(pattern=r"^(In|NotIn|Exists|DoesNotExist)$", max_length=16,
                                   description="In, NotIn, Exists or DoesNotExist.")
    values: list[types.LabelName] | None = pydantic.Field(
        default=None, max_length=types.MAX_VALUES,
        description="The label values for In and NotIn (at least one); empty for Exists and DoesNotExist.")


class LabelSelector(pydantic.BaseModel):
    """A label selector on pod template labels, as metav1.LabelSelector."""

    model_config = pydantic.ConfigDict(extra="forbid")

    matchLabels: dict[Annotated[str, pydantic.Field(max_length=types.LABEL_KEY)], types.LabelName] | None = pydantic.Field(
        default=None, json_schema_extra={"maxProperties": types.MAX_LABELS},
        description="Labels the pod template must carry, each with this value.",
    )
    matchExpressions: list[LabelSelectorRequirement] | None = pydantic.Field(
        default=None, max_length=types.MAX_EXPRESSIONS,
        description="Rules the pod template's labels must all meet, in addition to matchLabels.")

    @pydantic.field_validator("matchLabels")
    @classmethod
    def _bounded(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        if value is not None and len(value) > types.MAX_LABELS:
            raise ValueError(f"at most {types.MAX_LABELS} labels")
        return value


class SettleSettings(pydantic.BaseModel):
    """When and how far oomtuner lowers a limit it raised itself, once usage since the raise is known.

    An object rather than "Off or settings": a structural CRD schema cannot hold a string or an object
    in one field, so `enabled: false` turns settling off. The defaults are the ones bench/quality.py
    measured best (bench/README.md, "Settle").
    """

    model_config = pydantic.ConfigDict(extra="forbid")

    enabled: bool = pydantic.Field(
        default=True,
        description="Lower a limit oomtuner raised once usage since the raise is known. false: never lower. Default true.",
    )
    after: types.Duration = pydantic.Field(
        default="24h",
        description=(
            "How long after its last raise, with no kill since, a container is settled: usage history "
            "must cover at least 90% of that time. A duration such as 24h or 2d. Default 24h."
        ),
    )
    margin: float = pydantic.Field(
        default=0.09,
        ge=0,
        le=1,
        description=(
            "Head-room of the settled limit over the limit at the last kill and over the peak working "
            "set since the raise, as a fraction in [0, 1]. Never below the limit the workload had before "
            "oomtuner raised it. Default 0.09."
        ),
    )


class MemorySettings(pydantic.BaseModel):
    """How a memory recommendation is computed (README, "How a recommendation is computed")."""

    model_config = pydantic.ConfigDict(extra="forbid")

    increaseFactor: float = pydantic.Field(
        default=1.5,
        gt=1,
        le=10,
        description="A Limit kill raises the limit to at least limit × increaseFactor. Must be > 1.",
    )
    minIncrease: types.Quantity = pydantic.Field(
        default="64Mi", description="A Limit kill raises the limit by at least this much."
    )
    margin: float = pydantic.Field(
        default=0.15,
        ge=0,
        le=1,
        description="Head-room over observed usage, as a fraction in [0, 1].",
    )
    maxLimit: types.Quantity | None = pydantic.Field(
        default=None, description="Never recommend a limit above this. At the cap the phase is Capped."
    )
    requestPolicy: types.RequestPolicy = pydantic.Field(
        default=types.RequestPolicy.KEEP_RATIO,
        description="How the request follows a raised (or settled) limit.",
    )
    settle: SettleSettings = pydantic.Field(
        default_factory=SettleSettings,
        description="Lowering oomtuner's own raise once usage since it is known; enabled: false turns it off.",
    )


class PrometheusSettings(pydantic.BaseModel):
    """How usage history is read from Prometheus (when the operator has one)."""

    model_config = pydantic.ConfigDict(extra="forbid")

    lookback: types.Duration = pydantic.Field(
        default="7d", description="How far back usage history is read, e.g. 24h or 7d."
    )


class OOMPolicySpec(pydantic.BaseModel):
    """How far oomtuner may go for the workloads this policy selects in its namespace."""

    model_config = pydantic.ConfigDict(extra="forbid")

    selector: LabelSelector | None = pydantic.Field(
        default=None,
        description="Selects workloads by their pod template labels. Empty selects every workload.",
    )
    mode: types.Mode | None = pydantic.Field(
        default=None,
        description="Observe, Recommend or Auto. Unset means the operator's default mode.",
    )
    applyMethod: types.ApplyMethod = pydantic.Field(
        default=types.ApplyMethod.ROLLOUT,
        description="In Auto mode: Rollout patches the pod template; InPlace also resizes running pods.",
    )
    vpa: types.VPAPolicy = pydantic.Field(
        default=types.VPAPolicy.CONFLICT,
        description="When a VerticalPodAutoscaler (updateMode not Off) also sizes the workload: Conflict patches "
        "nothing and says so; RaiseMinAllowed raises the VPA's minAllowed.memory for the container instead.",
    )
    memory: MemorySettings = pydantic.Field(
        default_factory=MemorySettings, description="How a memory recommendation is computed, capped and settled.")
    cooldown: types.Duration = pydantic.Field(
        default="10m", description="The least time between two patches of one workload."
    )
    prometheus: PrometheusSettings = pydantic.Field(
        default_factory=PrometheusSettings, description="How usage history is read from Prometheus.")


class OOMPolicyStatus(pydantic.BaseModel):
    """What the operator made of the policy. Written by the operator only."""

    model_config = pydantic.ConfigDict(extra="ignore")

    observedGeneration: int | None = pydantic.Field(default=None, description="The spec generation this status describes.")
    conditions: list[types.Condition] | None = pydantic.Field(default=None, max_length=types.MAX_CONDITIONS)
    matchedWorkloads: int | None = pydantic.Field(default=None, description="The workloads of the namespace this policy governs, when it was last read.")


class OOMPolicy(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="ignore")

    apiVersion: str = f"{GROUP}/{VERSION}"
    kind: str = KIND
    metadata: core.ObjectMeta = pydantic.Field(default_factory=core.ObjectMeta)
    spec: OOMPolicySpec = pydantic.Field(default_factory=OOMPolicySpec)
    status: OOMPolicyStatus | None = None


CLUSTER_KIND = "ClusterOOMPolicy"
CLUSTER_PLURAL = "clusteroompolicies"


class ClusterOOMPolicySpec(OOMPolicySpec):
    """An OOMPolicy's spec, for the namespaces `namespaceSelector` selects (README, "One policy for
    the fleet")."""

    namespaceSelector: LabelSelector | None = pydantic.Field(
        default=None,
        description="Selects the namespaces it governs by their labels. Empty selects every namespace.",
    )


class ClusterOOMPolicyStatus(OOMPolicyStatus):
    """Written by the operator: whether the policy is valid, and how many namespaces it selects."""

    matchedNamespaces: int | None = pydantic.Field(default=None, description="Namespaces the namespaceSelector selects.")


class ClusterOOMPolicy(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="ignore")

    apiVersion: str = f"{GROUP}/{VERSION}"
    kind: str = CLUSTER_KIND
    metadata: core.ObjectMeta = pydantic.Field(default_factory=core.ObjectMeta)
    spec: ClusterOOMPolicySpec = pydantic.Field(default_factory=ClusterOOMPolicySpec)
    status: ClusterOOMPolicyStatus | None = None

    def as_policy(self) -> OOMPolicy:
        """The same settings as an OOMPolicy of the namespace it governs, named `ClusterOOMPolicy/<name>`
        so that everyone who shows it (status.policy, events, explain) says where it came from."""
        spec = OOMPolicySpec.model_validate(self.spec.model_dump(exclude={"namespaceSelector"}))
        return OOMPolicy(metadata=core.ObjectMeta(name=cluster_ref(self.metadata.name)), spec=spec)


def cluster_ref(name: str) -> str:
    return f"{CLUSTER_KIND}/{name}"


def parse_cluster(body: Any, *, source: str = "") -> ClusterOOMPolicy:
    """Parse a ClusterOOMPolicy body. Raises InvalidPolicy with a one-line, readable message."""
    try:
        return ClusterOOMPolicy.model_validate(body)
    except pydantic.ValidationError as exc:
        raise InvalidPolicy(_describe(exc, body=body, source=source or f"{CLUSTER_KIND} {identify(body).name}")) from None


def identify(body: Any) -> core.ObjectMeta:
    """The metadata of a policy body, read leniently even when the rest is invalid (to report on it)."""
    return core.meta_of(body)


def status_of(body: Any) -> OOMPolicyStatus | None:
    """The status a policy body carries now; None when it has none that can be read."""
    found = body.get("status") if isinstance(body, dict) else None
    try:
        return OOMPolicyStatus.model_validate(found or {})
    except pydantic.ValidationError:
        return None


def cluster_status_of(body: Any) -> ClusterOOMPolicyStatus | None:
    """The status a ClusterOOMPolicy body carries now; None when it has none that can be read."""
    found = body.get("status") if isinstance(body, dict) else None
    try:
        return ClusterOOMPolicyStatus.model_validate(found or {})
    except pydantic.ValidationError:
        return None


class InvalidPolicy(ValueError):
    """A policy body the operator cannot use; the message names the object and the field."""


def parse(body: Any, *, source: str = "") -> OOMPolicy:
    """Parse an OOMPolicy body. Raises InvalidPolicy with a one-line, readable message."""
    try:
        policy = OOMPolicy.model_validate(body)
    except pydantic.ValidationError as exc:
        raise InvalidPolicy(_describe(exc, body=body, source=source)) from None
    return policy


def _describe(exc: pydantic.ValidationError, *, body: Any, source: str) -> str:
    name = ""
    if isinstance(body, dict):
        meta = body.get("metadata") or {}
        if isinstance(meta, dict):
            ns, nm = meta.get("namespace"), meta.get("name")
            name = f"{ns}/{nm}" if ns else str(nm or "")
    where = source or f"OOMPolicy {name}".strip()
    problems = []
    for err in exc.errors():
        field = ".".join(str(p) for p in err["loc"])
        problems.append(f"{field}: {err['msg']}")
    return f"{where}: " + "; ".join(problems)
