"""CustomResourceDefinitions generated from the pydantic models.

The models are the single source of truth: `oomtuner crds` writes what `definitions()` returns, and a
test fails when the checked-in `crds/` differ. Pydantic emits JSON Schema 2020-12 with `$defs`; the
API server wants a structural OpenAPI v3.0 schema. So this module inlines every `$ref`, turns
`anyOf [X, null]` into `nullable: true`, turns numeric `exclusiveMinimum: n` into the v3.0 boolean
form, and drops titles and defaults (defaults in a CRD make the API server rewrite stored objects;
the operator applies them when it reads).
"""

from __future__ import annotations

import copy
from typing import Any

import pydantic

from oomtuner.api import policy, recommendation, types

CATEGORY = "oomtuner"

_DROP = {"title", "default", "examples"}


def _inline(node: Any, defs: dict[str, Any]) -> Any:
    if isinstance(node, list):
        return [_inline(item, defs) for item in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        target = defs[node["$ref"].split("/")[-1]]
        merged = {**copy.deepcopy(target), **{k: v for k, v in node.items() if k != "$ref"}}
        return _inline(merged, defs)
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _DROP or key == "$defs":
            continue
        if key in ("properties", "patternProperties"):
            out[key] = {name: _inline(sub, defs) for name, sub in value.items()}
        else:
            out[key] = _inline(value, defs)
    return _structural(out)


def _structural(node: dict[str, Any]) -> dict[str, Any]:
    any_of = node.get("anyOf")
    if isinstance(any_of, list) and not node.get("x-kubernetes-int-or-string"):
        rest = [branch for branch in any_of if branch.get("type") != "null"]
        if len(rest) < len(any_of) and len(rest) == 1:
            node.pop("anyOf")
            node = {**rest[0], **node, "nullable": True}
    if node.get("x-kubernetes-int-or-string"):
        node.pop("type", None)
    if "allOf" in node and len(node["allOf"]) == 1:
        node = {**node.pop("allOf")[0], **node}
    if "enum" in node and "type" not in node:
        node["type"] = "string"
    for bound, flag in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
        value = node.get(bound)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            node[flag] = value
            node[bound] = True
    if node.get("type") == "object" and "additionalProperties" in node:
        if node["additionalProperties"] is False:
            node.pop("additionalProperties")
    names = node.pop("propertyNames", None)  # not allowed in a structural schema: say it in CEL
    if isinstance(names, dict) and "maxLength" in names:
        limit = names["maxLength"]
        node.setdefault("x-kubernetes-validations", []).append(
            {"rule": f"self.all(k, size(k) <= {limit})", "message": f"keys must be at most {limit} characters"})
    return node


def schema_of(model: type[pydantic.BaseModel]) -> dict[str, Any]:
    raw = model.model_json_schema(mode="validation")
    defs = raw.pop("$defs", {})
    result: dict[str, Any] = _inline(raw, defs)
    return result


def _conditions_schema() -> dict[str, Any]:
    """metav1.Condition's schema and bounds (type 316, reason 1024, message 32768 characters)."""
    return {
        "type": "array",
        "description": "The latest observations of the object's state, one per type.",
        "nullable": True,
        "maxItems": types.MAX_CONDITIONS,
        "x-kubernetes-list-type": "map",
        "x-kubernetes-list-map-keys": ["type"],
        "items": {
            "type": "object",
            "required": ["type", "status"],
            "properties": {
                "type": {"type": "string", "maxLength": 316, "description": "The condition's type, e.g. Ready or Applied."},
                "status": {"type": "string", "enum": ["True", "False", "Unknown"], "description": "True, False or Unknown."},
                "reason": {"type": "string", "maxLength": types.SHORT_TEXT,
                           "description": "Why the condition is so, as one CamelCase word."},
                "message": {"type": "string", "maxLength": 32768, "description": "Why the condition is so, in words."},
                "lastTransitionTime": {"type": "string", "format": "date-time", "nullable": True,
                                       "description": "When the status last changed."},
                "observedGeneration": {"type": "integer", "nullable": True,
                                       "description": "The spec generation the condition was set for."},
            },
        },
    }


def _top_schema(spec: type[pydantic.BaseModel], status: type[pydantic.BaseModel]) -> dict[str, Any]:
    status_schema = schema_of(status)
    status_schema["properties"]["conditions"] = _conditions_schema()
    status_schema.pop("required", None)
    return {
        "type": "object",
        "required": ["spec"],
        "properties": {
            "apiVersion": {"type": "string", "description": "The versioned schema of this object: oomtuner.dev/v1alpha1."},
            "kind": {"type": "string", "description": "The object's kind."},
            "metadata": {"type": "object"},  # the API server allows nothing else here
            "spec": schema_of(spec),
            "status": status_schema,
        },
    }


def _policy_schema(spec_model: type[pydantic.BaseModel] = policy.OOMPolicySpec,
                   status_model: type[pydantic.BaseModel] = policy.OOMPolicyStatus) -> dict[str, Any]:
    schema = _top_schema(spec_model, status_model)
    spec = schema["properties"]["spec"]
    # Rules the OpenAPI keywords cannot say. Each message names the field it is about.
    spec["x-kubernetes-validations"] = [
        {
            "rule": "!has(self.memory) || !has(self.memory.increaseFactor) || self.memory.increaseFactor > 1.0",
            "message": "spec.memory.increaseFactor must be greater than 1",
            "fieldPath": ".memory.increaseFactor",
        },
        {
            # The pattern admits only durations; one with a digit other than 0 is longer than 0.
            "rule": "!has(self.memory) || !has(self.memory.settle) || !has(self.memory.settle.after) || "
            "self.memory.settle.after.matches('[1-9]')",
            "message": "spec.memory.settle.after must be longer than 0",
            "fieldPath": ".memory.settle.after",
        },
        {
            "rule": "!has(self.selector) || !has(self.selector.matchExpressions) || "
            "self.selector.matchExpressions.all(e, (e.operator in ['In', 'NotIn']) == "
            "(has(e.values) && size(e.values) > 0))",
            "message": "spec.selector.matchExpressions: In and NotIn need values; Exists and DoesNotExist take none",
            "fieldPath": ".selector.matchExpressions",
        },
    ]
    schema.pop("required")
    return schema


def _recommendation_schema() -> dict[str, Any]:
    return _top_schema(recommendation.OOMRecommendationSpec, recommendation.OOMRecommendationStatus)


def _crd(
    *,
    kind: str,
    plural: str,
    scope: str = "Namespaced",
    short: str,
    schema: dict[str, Any],
    columns: list[dict[str, Any]],
    description: str,
) -> dict[str, Any]:
    schema = {"description": description, **schema}
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{plural}.{policy.GROUP}",
            "labels": {"app.kubernetes.io/name": "oomtuner", "app.kubernetes.io/part-of": "oomtuner"},
        },
        "spec": {
            "group": policy.GROUP,
            "scope": scope,
            "names": {
                "kind": kind,
                "listKind": f"{kind}List",
                "plural": plural,
                "singular": kind.lower(),
                "shortNames": [short],
                "categories": [CATEGORY],
            },
            "versions": [
                {
                    "name": policy.VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": columns,
                    "schema": {"openAPIV3Schema": schema},
                }
            ],
        },
    }


def definitions() -> dict[str, dict[str, Any]]:
    """File name → CRD body, for every custom resource of the project."""
    age = {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}
    return {
        f"{policy.GROUP}_{policy.PLURAL}.yaml": _crd(
            kind=policy.KIND,
            plural=policy.PLURAL,
            short="oompol",
            schema=_policy_schema(),
            description="How far oomtuner may go for the workloads it selects: Observe, Recommend or Auto.",
            columns=[
                {"name": "Mode", "type": "string", "jsonPath": ".spec.mode"},
                {"name": "Apply", "type": "string", "jsonPath": ".spec.applyMethod", "priority": 1},
                {"name": "Max Limit", "type": "string", "jsonPath": ".spec.memory.maxLimit"},
                {"name": "Cooldown", "type": "string", "jsonPath": ".spec.cooldown", "priority": 1},
                {"name": "Workloads", "type": "integer", "jsonPath": ".status.matchedWorkloads"},
                {
                    "name": "Valid",
                    "type": "string",
                    "jsonPath": ".status.conditions[?(@.type=='Valid')].status",
                },
                age,
            ],
        ),
        f"{policy.GROUP}_{policy.CLUSTER_PLURAL}.yaml": _crd(
            kind=policy.CLUSTER_KIND,
            plural=policy.CLUSTER_PLURAL,
            scope="Cluster",
            short="coompol",
            schema=_policy_schema(policy.ClusterOOMPolicySpec, policy.ClusterOOMPolicyStatus),
            description="An OOMPolicy for every namespace its namespaceSelector selects; a namespace's own "
            "OOMPolicy that selects a workload wins over it.",
            columns=[
                {"name": "Mode", "type": "string", "jsonPath": ".spec.mode"},
                {"name": "Max Limit", "type": "string", "jsonPath": ".spec.memory.maxLimit"},
                {"name": "Namespaces", "type": "integer", "jsonPath": ".status.matchedNamespaces"},
                {"name": "Valid", "type": "string", "jsonPath": ".status.conditions[?(@.type=='Valid')].status"},
                age,
            ],
        ),
        f"{recommendation.GROUP}_{recommendation.PLURAL}.yaml": _crd(
            kind=recommendation.KIND,
            plural=recommendation.PLURAL,
            short="oomrec",
            schema=_recommendation_schema(),
            description="The memory a workload needs after OOM kills, with the evidence.",
            columns=[
                {"name": "Target", "type": "string", "jsonPath": ".status.target"},
                {"name": "Kills", "type": "integer", "jsonPath": ".status.totalKills"},
                {"name": "Current", "type": "string", "jsonPath": ".status.current"},
                {"name": "Recommended", "type": "string", "jsonPath": ".status.recommended"},
                {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
                {"name": "Source", "type": "string", "jsonPath": ".status.dataSource", "priority": 1},
                {"name": "Policy", "type": "string", "jsonPath": ".status.policy", "priority": 1},
                age,
            ],
        ),
    }
