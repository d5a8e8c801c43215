"""Which policy governs a workload (label selector semantics, tie-breaking) and the ignore
annotation. Pure domain logic."""

from __future__ import annotations

from typing import Any

import pytest

from oomtuner.api import policy, types
from oomtuner.domain import selection


def _policy(name: str, selector: dict | None = None, mode: str | None = None) -> policy.OOMPolicy:
    spec: dict = {}
    if selector is not None:
        spec["selector"] = selector
    if mode is not None:
        spec["mode"] = mode
    return policy.parse({"metadata": {"name": name, "namespace": "ns"}, "spec": spec})


@pytest.mark.parametrize(
    ("selector", "labels", "expected"),
    [
        (None, {"app": "x"}, True),
        ({}, {}, True),
        ({"matchLabels": {"app": "web"}}, {"app": "web", "tier": "fe"}, True),
        ({"matchLabels": {"app": "web"}}, {"app": "api"}, False),
        ({"matchExpressions": [{"key": "tier", "operator": "In", "values": ["fe", "be"]}]}, {"tier": "be"}, True),
        ({"matchExpressions": [{"key": "tier", "operator": "In", "values": ["fe"]}]}, {}, False),
        ({"matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["fe"]}]}, {}, True),
        ({"matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["fe"]}]}, {"tier": "fe"}, False),
        ({"matchExpressions": [{"key": "canary", "operator": "Exists"}]}, {"canary": ""}, True),
        ({"matchExpressions": [{"key": "canary", "operator": "DoesNotExist"}]}, {"canary": "1"}, False),
    ],
)
def test_label_selector(selector: dict | None, labels: dict, expected: bool) -> None:
    sel = policy.LabelSelector.model_validate(selector) if selector is not None else None
    assert selection.matches(sel, labels) is expected


def test_most_specific_policy_wins_then_name() -> None:
    broad = _policy("a-broad")
    narrow = _policy("z-narrow", {"matchLabels": {"app": "web"}})
    other = _policy("b-other", {"matchLabels": {"app": "api"}})
    assert selection.choose([broad, narrow, other], {"app": "web"}) is narrow
    assert selection.choose([narrow, broad], {"app": "db"}) is broad
    assert selection.choose([other], {"app": "db"}) is None
    twin = _policy("a-twin", {"matchLabels": {"app": "web"}})
    assert selection.choose([narrow, twin], {"app": "web"}) is twin


def test_effective_mode_falls_back_to_default() -> None:
    assert selection.effective_mode(None, default=types.Mode.RECOMMEND) == types.Mode.RECOMMEND
    assert selection.effective_mode(_policy("p"), default=types.Mode.OBSERVE) == types.Mode.OBSERVE
    assert selection.effective_mode(_policy("p", mode="Auto"), default=types.Mode.OBSERVE) == types.Mode.AUTO


@pytest.mark.parametrize(
    ("annotations", "expected"),
    [({}, False), ({"oomtuner.dev/ignore": "true"}, True), ({"oomtuner.dev/ignore": "True "}, True),
     ({"oomtuner.dev/ignore": "false"}, False), (None, False)],
)
def test_ignore_annotation(annotations: dict | None, expected: bool) -> None:
    assert selection.ignored(None, annotations) is expected


def test_invalid_policy_message_names_object_and_field() -> None:
    with pytest.raises(policy.InvalidPolicy) as err:
        policy.parse({"metadata": {"name": "p", "namespace": "team"}, "spec": {"memory": {"increaseFactor": 0.5}}})
    assert "OOMPolicy team/p" in str(err.value)
    assert "spec.memory.increaseFactor" in str(err.value)
    with pytest.raises(policy.InvalidPolicy) as err:
        policy.parse({"metadata": {"name": "p", "namespace": "team"}, "spec": {"mode": "Yolo"}})
    assert "spec.mode" in str(err.value)


# ---- ClusterOOMPolicies ----------------------------------------------------------------------------


def _cluster(name: str, *, namespaces: dict[str, str] | None = None, labels: dict[str, str] | None = None) -> Any:
    spec: dict[str, Any] = {}
    if namespaces is not None:
        spec["namespaceSelector"] = {"matchLabels": namespaces}
    if labels is not None:
        spec["selector"] = {"matchLabels": labels}
    return policy.parse_cluster({"metadata": {"name": name}, "spec": spec})


def test_the_most_specific_cluster_policy_that_selects_namespace_and_workload_wins() -> None:
    fleet = [_cluster("all"), _cluster("prod", namespaces={"env": "prod"}),
             _cluster("prod-web", namespaces={"env": "prod"}, labels={"app": "web"}), _cluster("dev", namespaces={"env": "dev"})]
    assert selection.choose_cluster(fleet, namespace_labels={"env": "prod"}, labels={"app": "web"}).metadata.name == "prod-web"
    assert selection.choose_cluster(fleet, namespace_labels={"env": "prod"}, labels={"app": "db"}).metadata.name == "prod"
    assert selection.choose_cluster(fleet, namespace_labels={}, labels={"app": "web"}).metadata.name == "all"
    assert selection.choose_cluster(fleet[1:], namespace_labels={"env": "qa"}, labels={}) is None
    # Ties go to the first name.
    tie = [_cluster("b", namespaces={"env": "prod"}), _cluster("a", namespaces={"env": "prod"})]
    assert selection.choose_cluster(tie, namespace_labels={"env": "prod"}, labels={}).metadata.name == "a"


def test_a_cluster_policy_stands_for_an_oompolicy_named_after_it() -> None:
    found = _cluster("fleet", namespaces={"env": "prod"}).as_policy()
    assert found.metadata.name == "ClusterOOMPolicy/fleet" and found.spec.mode is None
