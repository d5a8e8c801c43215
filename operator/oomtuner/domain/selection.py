"""Which OOMPolicy governs a workload, and whether the operator may touch it at all.

Several policies may live in one namespace. The one whose selector matches the workload's pod
template labels governs it; when several match, the most specific selector (the most requirements)
wins, then the name in alphabetical order, so the choice never depends on watch order. A namespace's
own OOMPolicy always wins over a ClusterOOMPolicy; among ClusterOOMPolicies the same rule holds,
counting the requirements of both their selectors (`choose_cluster`).
"""

from __future__ import annotations

from typing import Mapping, Sequence

from oomtuner.api import policy, types

IGNORE_ANNOTATION = "oomtuner.dev/ignore"


def matches(selector: policy.LabelSelector | None, labels: Mapping[str, str]) -> bool:
    """metav1.LabelSelector semantics. An empty or missing selector matches everything."""
    if selector is None:
        return True
    for key, value in (selector.matchLabels or {}).items():
        if labels.get(key) != value:
            return False
    for req in selector.matchExpressions or []:
        present = req.key in labels
        values = req.values or []
        if req.operator == "In" and not (present and labels[req.key] in values):
            return False
        if req.operator == "NotIn" and present and labels[req.key] in values:
            return False
        if req.operator == "Exists" and not present:
            return False
        if req.operator == "DoesNotExist" and present:
            return False
    return True


def _requirements(sel: policy.LabelSelector | None) -> int:
    return 0 if sel is None else len(sel.matchLabels or {}) + len(sel.matchExpressions or [])


def _specificity(p: policy.OOMPolicy) -> int:
    return _requirements(p.spec.selector)


def choose(policies: Sequence[policy.OOMPolicy], labels: Mapping[str, str]) -> policy.OOMPolicy | None:
    """The policy that governs a workload with these pod template labels, or None."""
    candidates = [p for p in policies if matches(p.spec.selector, labels)]
    if not candidates:
        return None
    candidates.sort(key=lambda p: (-_specificity(p), p.metadata.name))
    return candidates[0]


def _cluster_specificity(p: policy.ClusterOOMPolicy) -> int:
    return _requirements(p.spec.selector) + _requirements(p.spec.namespaceSelector)


def choose_cluster(policies: Sequence[policy.ClusterOOMPolicy], *, namespace_labels: Mapping[str, str],
                   labels: Mapping[str, str]) -> policy.ClusterOOMPolicy | None:
    """The ClusterOOMPolicy that governs a workload no OOMPolicy of its namespace selects: among those
    whose namespaceSelector matches the namespace's labels and whose selector matches the workload's
    pod template labels, the most specific (the most requirements of both selectors together), then
    the name in alphabetical order."""
    candidates = [p for p in policies if matches(p.spec.namespaceSelector, namespace_labels)
                  and matches(p.spec.selector, labels)]
    if not candidates:
        return None
    candidates.sort(key=lambda p: (-_cluster_specificity(p), p.metadata.name))
    return candidates[0]


def effective_mode(chosen: policy.OOMPolicy | None, *, default: types.Mode) -> types.Mode:
    if chosen is None or chosen.spec.mode is None:
        return default
    return chosen.spec.mode


def ignored(*annotation_sets: Mapping[str, str] | None) -> bool:
    """True when any of the given annotation maps carries `oomtuner.dev/ignore: "true"`."""
    return any((a or {}).get(IGNORE_ANNOTATION, "").strip().lower() == "true" for a in annotation_sets)
