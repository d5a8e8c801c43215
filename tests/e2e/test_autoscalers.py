"""Never fight another autoscaler, end to end: a VerticalPodAutoscaler (VPA's own CRD, installed on
the lab from its Go module) or an HPA that scales on memory keeps Auto mode from patching the
workload; with `vpa: RaiseMinAllowed` the VPA's floor is raised instead.

Real: the lab's API server with VPA's CRDs, the operator process, HPA objects (autoscaling/v2).
Played: the kubelet (kills written into pod status). No VPA or HPA controller runs: what is tested is
what oomtuner does when their objects exist.
"""

from __future__ import annotations

import pathlib
import subprocess
import time
from typing import Any

import pytest
import yaml

from oomtuner.kube import api
from oomtuner_lab import inject
from tests.e2e import kit
from tests.e2e.conftest import ROOT, OperatorProcess

pytestmark = [pytest.mark.e2e, pytest.mark.writes_pod_status]

VPAS = "/apis/autoscaling.k8s.io/v1/namespaces/{namespace}/verticalpodautoscalers"
HPAS = "/apis/autoscaling/v2/namespaces/{namespace}/horizontalpodautoscalers"


@pytest.fixture(scope="module")
def vpa_crds(kube: api.Client) -> None:
    """VPA's own CRDs, from the vertical-pod-autoscaler Go module (downloaded, not built)."""
    done = subprocess.run(["bash", str(ROOT / "hack" / "vpa" / "build.sh"), "--crds-only"], capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr
    share = pathlib.Path(subprocess.run(["bash", str(ROOT / "hack" / "vpa" / "build.sh"), "--print-dir"],
                                        capture_output=True, text=True, check=True).stdout.strip()) / "share"
    for body in yaml.safe_load_all((share / "vpa-v1-crd-gen.yaml").read_text()):
        if body and body.get("kind") == "CustomResourceDefinition":
            kube.apply(f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{body['metadata']['name']}", body,
                       field_manager="oomtuner-e2e", force=True)
    kit.wait_for(lambda: kube.get_or_none("/apis/autoscaling.k8s.io/v1"), timeout=60, what="the VPA API to be served")


def _policy(kube: api.Client, namespace: str, spec: dict[str, Any]) -> None:
    kube.create(f"/apis/oomtuner.dev/v1alpha1/namespaces/{namespace}/oompolicies",
                {"apiVersion": "oomtuner.dev/v1alpha1", "kind": "OOMPolicy", "metadata": {"name": "policy"}, "spec": spec})
    kit.wait_for(lambda: ((kube.get(f"/apis/oomtuner.dev/v1alpha1/namespaces/{namespace}/oompolicies/policy")
                           .get("status") or {}).get("conditions")), what="the policy's status")


def _vpa(kube: api.Client, namespace: str, *, mode: str, policies: list[dict[str, Any]] | None = None) -> None:
    spec: dict[str, Any] = {"targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
                            "updatePolicy": {"updateMode": mode}}
    if policies is not None:
        spec["resourcePolicy"] = {"containerPolicies": policies}
    kube.create(VPAS.format(namespace=namespace), {"apiVersion": "autoscaling.k8s.io/v1", "kind": "VerticalPodAutoscaler",
                                                   "metadata": {"name": "web-vpa"}, "spec": spec})


def _hpa(kube: api.Client, namespace: str, resource: str) -> None:
    kube.create(HPAS.format(namespace=namespace), {
        "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "metadata": {"name": "web-hpa"},
        "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
                 "minReplicas": 1, "maxReplicas": 3,
                 "metrics": [{"type": "Resource", "resource": {"name": resource, "target": {"type": "Utilization",
                                                                                            "averageUtilization": 80}}}]}})


def _kill_web(kube: api.Client, core_v1: Any, namespace: str) -> None:
    kube.create(f"/apis/apps/v1/namespaces/{namespace}/deployments", kit.deployment("web"))
    pod = kit.running_pods(kube, namespace, "web")[0]
    inject.oom_kill(core_v1, namespace=namespace, pod=pod["metadata"]["name"], container="app", at=kit.utc())


def _limit(kube: api.Client, namespace: str) -> str:
    body = kube.get(f"/apis/apps/v1/namespaces/{namespace}/deployments/web")
    return str(body["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["memory"])


def _applied(rec: dict[str, Any]) -> dict[str, Any]:
    return next((c for c in (rec.get("status") or {}).get("conditions") or [] if c["type"] == "Applied"), {})


def test_a_vpa_that_applies_its_recommendations_means_no_patch(kube: api.Client, core_v1: Any, vpa_crds: None,
                                                                operator: OperatorProcess, namespace: str) -> None:
    _policy(kube, namespace, {"mode": "Auto"})
    _vpa(kube, namespace, mode="Auto")
    _kill_web(kube, core_v1, namespace)
    rec = kit.wait_recommendation(kube, namespace, "deployment-web", lambda r: _applied(r).get("reason") == "AutoscalerConflict",
                                  timeout=60)
    assert rec["status"]["phase"] == "Conflict"
    assert "VerticalPodAutoscaler web-vpa (updateMode Auto) sizes Deployment/web" in _applied(rec)["message"]
    assert "limits:\n" in rec["status"]["patch"] and "384Mi" in rec["status"]["patch"]
    time.sleep(2)
    assert _limit(kube, namespace) == "256Mi"
    kit.wait_for(lambda: kit.events_for(kube, namespace, reason="PatchConflict", name="web"), what="a PatchConflict event")


def test_raise_min_allowed_hands_the_raise_to_the_vpa(kube: api.Client, core_v1: Any, vpa_crds: None,
                                                      operator: OperatorProcess, namespace: str) -> None:
    _policy(kube, namespace, {"mode": "Auto", "vpa": "RaiseMinAllowed"})
    _vpa(kube, namespace, mode="Recreate", policies=[{"containerName": "app", "maxAllowed": {"memory": "2Gi"}}])
    _kill_web(kube, core_v1, namespace)
    rec = kit.wait_recommendation(kube, namespace, "deployment-web", lambda r: _applied(r).get("reason") == "VPAMinAllowedRaised",
                                  timeout=60)
    vpa = kube.get(f"{VPAS.format(namespace=namespace)}/web-vpa")
    (app,) = vpa["spec"]["resourcePolicy"]["containerPolicies"]
    assert app["minAllowed"] == {"memory": "192Mi"} and app["maxAllowed"] == {"memory": "2Gi"}  # the request, KeepRatio
    assert rec["status"]["phase"] == "Applied" and _limit(kube, namespace) == "256Mi"


def test_an_hpa_on_memory_means_no_patch_and_one_on_cpu_does_not(kube: api.Client, core_v1: Any,
                                                                 operator: OperatorProcess, namespace: str) -> None:
    _policy(kube, namespace, {"mode": "Auto"})
    _hpa(kube, namespace, "memory")
    _kill_web(kube, core_v1, namespace)
    rec = kit.wait_recommendation(kube, namespace, "deployment-web", lambda r: _applied(r).get("reason") == "AutoscalerConflict",
                                  timeout=60)
    assert "HorizontalPodAutoscaler web-hpa (it scales on memory)" in _applied(rec)["message"]
    assert _limit(kube, namespace) == "256Mi"
    # Scaling on CPU only does not size memory: the next kill is patched.
    kube.delete(f"{HPAS.format(namespace=namespace)}/web-hpa")
    _hpa(kube, namespace, "cpu")
    pod = kit.running_pods(kube, namespace, "web")[0]
    time.sleep(1)  # finishedAt is in whole seconds: a second kill of the container in the same second is the same kill
    inject.oom_kill(core_v1, namespace=namespace, pod=pod["metadata"]["name"], container="app", at=kit.utc())
    kit.wait_for(lambda: _limit(kube, namespace) == "384Mi", timeout=60, what="the patch once nothing else sizes memory")
