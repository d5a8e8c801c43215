"""Whether another autoscaler sizes a workload's memory, and raising a VPA's floor instead. Pure."""

from __future__ import annotations

from typing import Any

import pytest

from oomtuner.api import autoscalers, types
from oomtuner.domain import autoscalers as domain
from oomtuner.domain import patch, workload

MI = 1024 * 1024
WEB = workload.from_body({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "namespace": "shop"},
                          "spec": {"template": {"spec": {"containers": [{"name": "app"}]}}}})


def _vpa(mode: str | None, *, name: str = "web", kind: str = "Deployment", policies: list[dict[str, Any]] | None = None
         ) -> autoscalers.VerticalPodAutoscaler:
    spec: dict[str, Any] = {"targetRef": {"kind": kind, "name": name}}
    if mode is not None:
        spec["updatePolicy"] = {"updateMode": mode}
    if policies is not None:
        spec["resourcePolicy"] = {"containerPolicies": policies}
    return autoscalers.parse_vpa({"metadata": {"name": "vpa"}, "spec": spec})


def _hpa(*metrics: dict[str, Any], name: str = "web") -> autoscalers.HorizontalPodAutoscaler:
    return autoscalers.parse_hpa({"metadata": {"name": "hpa"},
                                  "spec": {"scaleTargetRef": {"kind": "Deployment", "name": name}, "metrics": list(metrics)}})


@pytest.mark.parametrize(("vpa", "sizes"), [
    (_vpa("Auto"), True), (_vpa(None), True), (_vpa("Recreate"), True), (_vpa("Initial"), True),
    (_vpa("InPlaceOrRecreate"), True), (_vpa("Off"), False), (_vpa("Auto", name="other"), False),
    (_vpa("Auto", kind="StatefulSet"), False),
])
def test_a_vpa_sizes_its_target_unless_it_is_off(vpa: autoscalers.VerticalPodAutoscaler, sizes: bool) -> None:
    assert bool(domain.sizing(WEB, vpas=[vpa], hpas=[])) is sizes


@pytest.mark.parametrize(("metrics", "sizes"), [
    ([{"type": "Resource", "resource": {"name": "memory"}}], True),
    ([{"type": "ContainerResource", "containerResource": {"name": "memory", "container": "app"}}], True),
    ([{"type": "Resource", "resource": {"name": "cpu"}}], False),
    ([{"type": "External", "external": {"metric": {"name": "queue"}}}], False),
    ([], False),
])
def test_an_hpa_sizes_memory_only_when_it_scales_on_it(metrics: list[dict[str, Any]], sizes: bool) -> None:
    assert bool(domain.sizing(WEB, vpas=[], hpas=[_hpa(*metrics)])) is sizes


def _change(request: int | None, limit: int | None) -> patch.MemoryChange:
    return patch.MemoryChange(container="app", type=types.ContainerType.CONTAINER, request=request, limit=limit)


def test_the_floor_rises_to_the_new_request_and_keeps_the_rest_of_the_policy() -> None:
    vpa = _vpa("Auto", policies=[{"containerName": "app", "maxAllowed": {"memory": "2Gi"}, "controlledValues": "RequestsOnly"},
                                 {"containerName": "side", "mode": "Off"}])
    policies = domain.min_allowed_policies(vpa, [_change(192 * MI, 384 * MI)])
    assert policies == [{"containerName": "app", "maxAllowed": {"memory": "2Gi"}, "controlledValues": "RequestsOnly",
                         "minAllowed": {"memory": "192Mi"}}, {"containerName": "side", "mode": "Off"}]


def test_a_container_without_a_policy_gets_one_and_a_floor_already_high_stays() -> None:
    assert domain.min_allowed_policies(_vpa("Auto"), [_change(None, 384 * MI)]) == [
        {"containerName": "app", "minAllowed": {"memory": "384Mi"}}]
    high = _vpa("Auto", policies=[{"containerName": "app", "minAllowed": {"memory": "1Gi"}}])
    assert domain.min_allowed_policies(high, [_change(192 * MI, 384 * MI)]) is None
