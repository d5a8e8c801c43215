"""Field types shared by the custom resources.

A Kubernetes quantity is accepted in every form the API server takes (`512Mi`, `1G`, `1.5e9`,
`536870912`), so the CRD declares it as int-or-string with the API server's own pattern, and the
models keep the original text. Parsing into bytes is domain work (`domain.quantity`), which is where
bad values get a readable error for objects that slipped past the schema.
"""

from __future__ import annotations

import enum
from typing import Annotated, Any

import pydantic

# The regular expression the API server's OpenAPI uses for resource.Quantity, without the sign: a
# negative amount of memory is never meaningful here.
QUANTITY_PATTERN = (
    r"^(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))"
    r"(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
)

# Go-style durations with an extra `d` for days: `30s`, `10m`, `1h30m`, `7d`.
DURATION_PATTERN = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h|d))+$"


_QUANTITY_SCHEMA: dict[str, Any] = {
    "x-kubernetes-int-or-string": True,
    "anyOf": [{"type": "integer"}, {"type": "string"}],
    "pattern": QUANTITY_PATTERN,
}


def quantity_text(value: Any) -> Any:
    """Bare numbers are valid quantities (`memory: 1073741824`): keep them as text; a boolean is not."""
    if isinstance(value, bool):
        raise ValueError("a quantity must be a string like 512Mi or a number, not a boolean")
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value)
    return value


# A quantity as written by the user. Kept as text; `domain.quantity.parse_bytes` gives the bytes.
Quantity = Annotated[
    str,
    pydantic.BeforeValidator(quantity_text),
    pydantic.WithJsonSchema(_QUANTITY_SCHEMA),
]

Duration = Annotated[str, pydantic.Field(pattern=DURATION_PATTERN)]


class Mode(str, enum.Enum):
    """How far the operator may go for the workloads a policy selects."""

    OBSERVE = "Observe"
    RECOMMEND = "Recommend"
    AUTO = "Auto"


class VPAPolicy(str, enum.Enum):
    """What Auto mode does for a workload that a VerticalPodAutoscaler (not Off) also sizes."""

    CONFLICT = "Conflict"
    RAISE_MIN_ALLOWED = "RaiseMinAllowed"


class ApplyMethod(str, enum.Enum):
    """How Auto mode gets the new memory to the pods."""

    ROLLOUT = "Rollout"
    IN_PLACE = "InPlace"
    IN_PLACE_AND_ROLLOUT = "InPlaceAndRollout"


class RequestPolicy(str, enum.Enum):
    """How the memory request follows a raised limit."""

    KEEP_RATIO = "KeepRatio"
    EQUALS_LIMIT = "EqualsLimit"
    UNCHANGED = "Unchanged"
    FROM_USAGE = "FromUsage"


class Classification(str, enum.Enum):
    """Why the kernel killed the container."""

    LIMIT = "Limit"
    NODE = "Node"
    UNKNOWN = "Unknown"


class ContainerType(str, enum.Enum):
    CONTAINER = "container"
    INIT = "init"
    SIDECAR = "sidecar"
    EPHEMERAL = "ephemeral"


class QOSClass(str, enum.Enum):
    GUARANTEED = "Guaranteed"
    BURSTABLE = "Burstable"
    BEST_EFFORT = "BestEffort"


class Phase(str, enum.Enum):
    """Where an OOMRecommendation stands."""

    PENDING = "Pending"
    APPLIED = "Applied"
    CAPPED = "Capped"
    SUSPECTED_LEAK = "SuspectedLeak"
    CONFLICT = "Conflict"
    DISMISSED = "Dismissed"
    OBSERVED = "Observed"


class Condition(pydantic.BaseModel):
    """A status condition, shaped like metav1.Condition."""

    model_config = pydantic.ConfigDict(extra="ignore", populate_by_name=True)

    type: str
    status: str = pydantic.Field(pattern=r"^(True|False|Unknown)$")
    reason: str = ""
    message: str = ""
    lastTransitionTime: str | None = None
    observedGeneration: int | None = None
