"""Field types shared by the custom resources.

A Kubernetes quantity is accepted in the forms people write (`512Mi`, `1G`, `1.5e9`, `536870912`),
so the CRD declares it as int-or-string with a pattern (`QUANTITY_PATTERN`), and the models keep the
original text. Parsing into bytes is domain work (`domain.quantity`), which is where
bad values get a readable error for objects that slipped past the schema.
"""

from __future__ import annotations

import enum
from typing import Annotated, Any

import pydantic


def _number(whole_digits: str) -> str:
    """Digits with an optional fraction of at most 9 digits (a nano unit), or a bare fraction."""
    return rf"({whole_digits}(\.[0-9]{{0,9}})?|\.[0-9]{{1,9}})"


# The quantities a custom resource of ours may hold: the API server's quantity grammar without a sign,
# bounded so that every value it admits is a whole number of bytes below 2^63 (int64), because a
# pattern cannot compare values. So the digits before the point depend on the suffix: 18 without one
# (or with n, u, m, or a negative exponent), 15 with k or Ki, 12 with M or Mi, 9 with G, Gi or an
# exponent up to e9, 6 with T or Ti, 3 with P or Pi, one digit up to 8 with E and up to 7 with Ei.
# `domain.quantity.parse_bytes` accepts every string it matches (a property test says so); anything
# longer or larger is refused at admission with the pattern in the message.
QUANTITY_PATTERN = (
    "^("
    + _number("[0-9]{1,18}") + r"([num]|[eE]-[0-9]{1,2})?"
    + "|" + _number("[0-9]{1,15}") + "(k|Ki)"
    + "|" + _number("[0-9]{1,12}") + "(M|Mi)"
    + "|" + _number("[0-9]{1,9}") + r"(G|Gi|[eE]\+?[0-9])"
    + "|" + _number("[0-9]{1,6}") + "(T|Ti)"
    + "|" + _number("[0-9]{1,3}") + "(P|Pi)"
    + "|" + _number("[0-8]") + "E"
    + "|" + _number("[0-7]") + "Ei"
    + ")$"
)

# Go-style durations with an extra `d` for days: `30s`, `10m`, `1h30m`, `7d`.
DURATION_PATTERN = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h|d))+$"

# Bounds on what a custom resource may hold (README, "Size bounds"), so that anyone allowed to edit
# one cannot make the API server, etcd and the operator carry megabytes per object. Names follow
# Kubernetes' own: a DNS subdomain (pod, node, workload names) is 253 characters, a DNS label
# (namespace, container names) 63, a label key 317 (a 253-character prefix, `/`, 63) and a value 63.
SUBDOMAIN = 253
LABEL = 63
LABEL_KEY = 317
UID = 128
TIMESTAMP = 64
QUANTITY = 64
DURATION = 64
SHORT_TEXT = 1024  # a reason code, a cap's description, a value shown in a column
SENTENCE = 4096  # a kill's evidence or a culprit's, one or two sentences with numbers
NOTES = 16384  # a container's whole arithmetic, one clause per rule
PATCH = 65536  # the ready patch YAML: every container's request and limit
MAX_CONTAINERS = 512  # containers of one workload the status lists
MAX_CONDITIONS = 16
MAX_LABELS = 64  # matchLabels of a selector
MAX_EXPRESSIONS = 32  # matchExpressions of a selector
MAX_VALUES = 64  # values of one matchExpression

# A time field's JSON schema extra: RFC 3339 (`2026-11-26T10:04:59Z`), which the API server checks and
# `kubectl explain` shows. Pydantic keeps it next to the field's anyOf, so the CRD stays structural.
DATE_TIME: dict[str, Any] = {"format": "date-time"}

Name = Annotated[str, pydantic.Field(max_length=SUBDOMAIN)]
LabelName = Annotated[str, pydantic.Field(max_length=LABEL)]


_QUANTITY_SCHEMA: dict[str, Any] = {
    "x-kubernetes-int-or-string": True,
    "anyOf": [{"type": "integer"}, {"type": "string"}],
    "pattern": QUANTITY_PATTERN,
    "maxLength": QUANTITY,
}


# What Go's strings.TrimSpace trims (unicode.IsSpace): Quantity.UnmarshalJSON trims a quantity so.
_GO_SPACE = "\t\n\v\f\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"


def quantity_text(value: Any) -> Any:
    """Bare numbers are valid quantities (`memory: 1073741824`): keep them as text; a boolean is not.
    Text is trimmed as the API server trims it; a whole number beyond 128 bits cannot be one."""
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


# A quantity as written by the user. Kept as text; `domain.quantity.parse_bytes` gives the bytes.
Quantity = Annotated[
    str,
    pydantic.BeforeValidator(quantity_text),
    pydantic.WithJsonSchema(_QUANTITY_SCHEMA),
]

Duration = Annotated[str, pydantic.Field(pattern=DURATION_PATTERN, max_length=DURATION)]


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

    type: str = pydantic.Field(max_length=316)
    status: str = pydantic.Field(pattern=r"^(True|False|Unknown)$")
    reason: str = pydantic.Field(default="", max_length=SHORT_TEXT)
    message: str = pydantic.Field(default="", max_length=32768)
    lastTransitionTime: str | None = pydantic.Field(default=None, max_length=TIMESTAMP)
    observedGeneration: int | None = None
