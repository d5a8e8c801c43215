"""One policy for the fleet, end to end: a ClusterOOMPolicy governs the namespaces its
namespaceSelector selects, and a namespace's own OOMPolicy wins over it.

Real: the lab's API server with the ClusterOOMPolicy CRD, the operator process. Played: the kubelet
(kills written into pod status). The cluster policy selects only the test's namespace (by a label
the test puts on it) and is deleted at the end.
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator

import pytest

from oomtuner.kube import api
from oomtuner_lab import inject
from tests.e2e import kit
from tests.e2e.conftest import OperatorProcess

pytestmark = [pytest.mark.e2e, pytest.mark.writes_pod_status]

CLUSTER_POLICIES = "/apis/oomtuner.dev/v1alpha1/clusteroompolicies"


@pytest.fixture
def fleet(kube: api.Client, namespace: str) -> Iterator[str]:
    """A ClusterOOMPolicy in Auto mode with a 300Mi cap for namespaces labelled like the test's."""
    kube.merge_patch(f"/api/v1/namespaces/{namespace}", {"metadata": {"labels": {"oomtuner.dev/e2e-fleet": namespace}}})
    name = f"fleet-{namespace}"
    kube.create(CLUSTER_POLICIES, {
        "apiVersion": "oomtuner.dev/v1alpha1", "kind": "ClusterOOMPolicy", "metadata": {"name": name},
        "spec": {"namespaceSelector": {"matchLabels": {"oomtuner.dev/e2e-fleet": namespace}}, "mode": "Auto",
                 "memory": {"maxLimit": "300Mi"}}})
    try:
        yield name
    finally:
        with contextlib.suppress(api.ApiError):
            kube.delete(f"{CLUSTER_POLICIES}/{name}")


def _status(kube: api.Client, name: str) -> dict[str, Any]:
    return kube.get(f"{CLUSTER_POLICIES}/{name}").get("status") or {}


def _limit(kube: api.Client, namespace: str, name: str) -> str:
    body = kube.get(f"/apis/apps/v1/namespaces/{namespace}/deployments/{name}")
    return str(body["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["memory"])


def _kill(kube: api.Client, core_v1: Any, namespace: str, app: str) -> None:
    pod = kit.running_pods(kube, namespace, app)[0]
    inject.oom_kill(core_v1, namespace=namespace, pod=pod["metadata"]["name"], container="app", at=kit.utc())


def test_a_cluster_policy_governs_the_namespaces_it_selects_and_a_namespaces_own_wins(
        kube: api.Client, core_v1: Any, operator: OperatorProcess, namespace: str, fleet: str) -> None:
    status = kit.wait_for(lambda: (s := _status(kube, fleet)).get("conditions") and s, what="the cluster policy's status")
    assert status["conditions"][0]["status"] == "True" and status["matchedNamespaces"] == 1
    kube.create(f"/apis/apps/v1/namespaces/{namespace}/deployments", kit.deployment("web"))
    _kill(kube, core_v1, namespace, "web")
    rec = kit.wait_recommendation(kube, namespace, "deployment-web", lambda r: (r.get("status") or {}).get("phase") == "Applied",
                                  timeout=60)
    assert rec["status"]["policy"] == f"ClusterOOMPolicy/{fleet}" and rec["status"]["mode"] == "Auto"
    app = rec["status"]["containers"][0]
    assert app["cappedBy"] == "policy maxLimit 300Mi" and _limit(kube, namespace, "web") == "300Mi"

    # The namespace's own policy, selecting `api`, wins for `api`: Recommend, nothing patched.
    kube.create(f"/apis/oomtuner.dev/v1alpha1/namespaces/{namespace}/oompolicies", {
        "apiVersion": "oomtuner.dev/v1alpha1", "kind": "OOMPolicy", "metadata": {"name": "own"},
        "spec": {"selector": {"matchLabels": {"app": "api"}}, "mode": "Recommend"}})
    kit.wait_for(lambda: (kube.get(f"/apis/oomtuner.dev/v1alpha1/namespaces/{namespace}/oompolicies/own")
                          .get("status") or {}).get("conditions"), what="the namespace policy's status")
    kube.create(f"/apis/apps/v1/namespaces/{namespace}/deployments", kit.deployment("api"))
    _kill(kube, core_v1, namespace, "api")
    rec = kit.wait_recommendation(kube, namespace, "deployment-api", lambda r: (r.get("status") or {}).get("totalKills") == 1)
    assert rec["status"]["policy"] == "own" and rec["status"]["mode"] == "Recommend"
    assert _limit(kube, namespace, "api") == "256Mi"


def test_an_invalid_cluster_policy_says_which_field(kube: api.Client, operator: OperatorProcess, namespace: str) -> None:
    name = f"bad-{namespace}"
    kube.create(CLUSTER_POLICIES, {"apiVersion": "oomtuner.dev/v1alpha1", "kind": "ClusterOOMPolicy",
                                   "metadata": {"name": name},
                                   "spec": {"namespaceSelector": {"matchLabels": {"nobody": namespace}},
                                            "memory": {"maxLimit": "512"}}})
    try:
        status = kit.wait_for(lambda: (s := _status(kube, name)).get("conditions") and s, what="the status")
        cond = status["conditions"][0]
        assert cond["status"] == "False" and "spec.memory.maxLimit" in cond["message"] and "less than 1Mi" in cond["message"]
    finally:
        kube.delete(f"{CLUSTER_POLICIES}/{name}")
