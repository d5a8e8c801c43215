"""What a user of Auto mode relies on, end to end: each kill counted once whatever happens to the
operator, no raise without a kill at the memory in force, and nothing applied from a recommendation
that is not the workload's own.

Real: the lab's API server, controller-manager and scheduler, the CRDs and `oomtuner run` as a
process. Played: the kubelet (kwok runs the pods; kills are written into the pod status as a kubelet
writes them).
"""

from __future__ import annotations

import concurrent.futures
import time
from typing import Any

import pytest

from oomtuner.kube import api
from oomtuner_lab import inject
from tests.e2e import kit
from tests.e2e.conftest import OperatorProcess

pytestmark = [pytest.mark.e2e, pytest.mark.writes_pod_status]

RECS = "/apis/oomtuner.dev/v1alpha1/namespaces/{namespace}/oomrecommendations"


def _policy(kube: api.Client, namespace: str, spec: dict[str, Any]) -> None:
    kube.create(f"/apis/oomtuner.dev/v1alpha1/namespaces/{namespace}/oompolicies",
                {"apiVersion": "oomtuner.dev/v1alpha1", "kind": "OOMPolicy", "metadata": {"name": "policy"}, "spec": spec})
    kit.wait_for(lambda: ((kube.get(f"/apis/oomtuner.dev/v1alpha1/namespaces/{namespace}/oompolicies/policy")
                           .get("status") or {}).get("conditions")), timeout=30, what="the policy's status")


def _kill(core_v1: Any, namespace: str, pod: dict[str, Any], *, at: Any = None) -> None:
    inject.oom_kill(core_v1, namespace=namespace, pod=pod["metadata"]["name"], container="app", at=at or kit.utc())


def _limit(kube: api.Client, namespace: str, name: str) -> str:
    body = kube.get(f"/apis/apps/v1/namespaces/{namespace}/deployments/{name}")
    return str(body["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["memory"])


def _total(kube: api.Client, namespace: str, name: str = "deployment-web") -> int:
    rec = kit.recommendation(kube, namespace, name)
    return int(((rec or {}).get("status") or {}).get("totalKills") or 0)


def _wait_started(operator: OperatorProcess) -> None:
    """The restarted operator has listed policies, nodes and recommendations, and then the pods."""
    kit.wait_for(lambda: "start-up: read" in operator.log_tail(400), timeout=60, what="the operator's start-up listing")
    time.sleep(5)  # the pods' listing follows; a kill counted twice would be written by now


def test_a_kill_at_an_old_limit_during_a_rollout_raises_nothing(kube: api.Client, core_v1: Any,
                                                                operator: OperatorProcess, namespace: str) -> None:
    """A paused rollout keeps the old pods at 256Mi after the Deployment went to 384Mi: their kills
    are recorded, marked stale, and raise nothing, even after the cooldown."""
    _policy(kube, namespace, {"mode": "Auto", "cooldown": "1s"})
    kube.create(f"/apis/apps/v1/namespaces/{namespace}/deployments", kit.deployment("web", replicas=2))
    first, second = kit.running_pods(kube, namespace, "web", count=2)[:2]
    kube.merge_patch(f"/apis/apps/v1/namespaces/{namespace}/deployments/web", {"spec": {"paused": True}})
    _kill(core_v1, namespace, first)
    kit.wait_for(lambda: _limit(kube, namespace, "web") == "384Mi", what="the first patch")
    kit.wait_recommendation(kube, namespace, "deployment-web", lambda r: r["status"].get("phase") == "Applied")
    time.sleep(2)  # the cooldown is over: only the stale rule stands between this kill and a raise

    _kill(core_v1, namespace, second)
    rec = kit.wait_recommendation(kube, namespace, "deployment-web", lambda r: r["status"]["totalKills"] == 2)
    time.sleep(3)
    assert _limit(kube, namespace, "web") == "384Mi"
    rec = kit.recommendation(kube, namespace, "deployment-web")
    assert rec is not None
    stale = next(k for k in rec["status"]["kills"] if k["pod"] == second["metadata"]["name"])
    assert stale["stale"] is True and "stale: killed at 256Mi, template already 384Mi" in stale["reason"]
    app = next(c for c in rec["status"]["containers"] if c["name"] == "app")
    assert app["recommended"]["limit"] == "384Mi" and "stale" in app["reason"]
    assert rec["status"]["phase"] == "Applied"
    assert len(kit.events_for(kube, namespace, reason="ResourcesPatched", name="web")) == 1
    # The rollout stays paused: every pod still runs at 256Mi.
    pods = kube.list(f"/api/v1/namespaces/{namespace}/pods", query={"labelSelector": "app=web"})
    assert all(p["spec"]["containers"][0]["resources"]["limits"]["memory"] == "256Mi" for p in pods)  # paused: old pods


def test_a_burst_in_one_second_then_restarts_counts_each_kill_once(kube: api.Client, core_v1: Any,
                                                                   operator: OperatorProcess, namespace: str) -> None:
    """More replicas than the kill records keep, all killed in the same second, then the operator
    restarts twice: the count stays exact."""
    replicas = 25
    kube.create(f"/apis/apps/v1/namespaces/{namespace}/deployments", kit.deployment("web", replicas=replicas))
    pods = kit.running_pods(kube, namespace, "web", count=replicas)
    at = kit.utc()
    with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(lambda pod: _kill(core_v1, namespace, pod, at=at), pods))
    kit.wait_recommendation(kube, namespace, "deployment-web", lambda r: (r.get("status") or {}).get("totalKills") == replicas,
                            timeout=60)
    events = len(kit.events_for(kube, namespace, reason="OOMKillDetected", name="web"))
    for _ in range(2):
        operator.restart()
        _wait_started(operator)
        assert _total(kube, namespace) == replicas
    rec = kit.recommendation(kube, namespace, "deployment-web")
    assert rec is not None and len(rec["status"]["counted"]) == replicas
    assert len(kit.events_for(kube, namespace, reason="OOMKillDetected", name="web")) == events


def test_observe_mode_records_each_kill_once_across_restarts(kube: api.Client, core_v1: Any,
                                                             operator: OperatorProcess, namespace: str) -> None:
    _policy(kube, namespace, {"mode": "Observe"})
    kube.create(f"/apis/apps/v1/namespaces/{namespace}/deployments", kit.deployment("web"))
    pod = kit.running_pods(kube, namespace, "web")[0]
    for n in range(1, 4):
        _kill(core_v1, namespace, pod, at=kit.utc())
        kit.wait_for(lambda n=n: _total(kube, namespace) == n, what=f"kill {n} recorded")
        time.sleep(1.1)  # the next kill finishes in a later second
    rec = kit.recommendation(kube, namespace, "deployment-web")
    assert rec is not None and rec["status"]["phase"] == "Observed" and rec["status"]["mode"] == "Observe"
    app = rec["status"]["containers"][0]
    assert app["oomKills"] == 3 and not (app.get("recommended") or {}).get("limit")
    assert rec["status"].get("recommended") is None
    kit.wait_for(lambda: len(kit.events_for(kube, namespace, reason="OOMKillDetected", name="web")) == 3,
                 what="three OOMKillDetected events")
    line = next(x for x in operator.metrics().splitlines()
                if x.startswith("oomtuner_oom_kills_total{") and f'namespace="{namespace}"' in x)
    assert line.endswith(" 3.0")

    operator.restart()
    _wait_started(operator)
    assert _total(kube, namespace) == 3
    assert len(kit.events_for(kube, namespace, reason="OOMKillDetected", name="web")) == 3
    assert not [x for x in operator.metrics().splitlines()
                if x.startswith("oomtuner_oom_kills_total{") and f'namespace="{namespace}"' in x]
    assert kube.get(f"/apis/apps/v1/namespaces/{namespace}/deployments/web")["metadata"]["generation"] == 1


def test_a_recommendation_made_for_something_else_is_not_adopted(kube: api.Client, core_v1: Any,
                                                                 operator: OperatorProcess, namespace: str) -> None:
    """Someone creates `deployment-web` pointing at another Deployment, and approves it. The
    operator records web's kills in a recommendation of its own and applies nothing from the other."""
    _policy(kube, namespace, {"mode": "Auto"})
    kube.create(f"/apis/apps/v1/namespaces/{namespace}/deployments", kit.deployment("web"))
    kube.create(f"/apis/apps/v1/namespaces/{namespace}/deployments", kit.deployment("other"))
    kube.create(RECS.format(namespace=namespace), {
        "apiVersion": "oomtuner.dev/v1alpha1", "kind": "OOMRecommendation", "metadata": {"name": "deployment-web"},
        "spec": {"targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "other"}, "approved": True}})
    web = kube.get(f"/apis/apps/v1/namespaces/{namespace}/deployments/web")
    own = f"deployment-web-{web['metadata']['uid'][:8]}"
    _kill(core_v1, namespace, kit.running_pods(kube, namespace, "web")[0])

    rec = kit.wait_recommendation(kube, namespace, own, lambda r: (r.get("status") or {}).get("totalKills") == 1)
    assert rec["metadata"]["ownerReferences"][0]["uid"] == web["metadata"]["uid"]
    kit.wait_for(lambda: _limit(kube, namespace, "web") == "384Mi", what="web patched from its own recommendation")
    impostor = kit.wait_recommendation(kube, namespace, "deployment-web", lambda r: any(
        c["type"] == "Adopted" and c["status"] == "False" for c in (r.get("status") or {}).get("conditions") or []))
    assert not impostor["status"].get("kills")
    assert _limit(kube, namespace, "other") == "256Mi"


def _report_resources(kube: api.Client, namespace: str, name: str) -> None:
    path = f"/api/v1/namespaces/{namespace}/pods/{name}"
    body = kube.get(path)
    for status in body["status"]["containerStatuses"]:
        status["resources"] = next(c["resources"] for c in body["spec"]["containers"] if c["name"] == status["name"])
    kube.replace(f"{path}/status", body)


def test_in_place_resize_touches_only_the_pods_the_workload_owns(kube: api.Client, core_v1: Any,
                                                                 operator: OperatorProcess, namespace: str) -> None:
    """A canary Deployment whose pods carry web's labels and more: web's in-place resize leaves its
    pods alone."""
    _policy(kube, namespace, {"mode": "Auto", "applyMethod": "InPlace"})
    kube.create(f"/apis/apps/v1/namespaces/{namespace}/deployments", kit.deployment("web"))
    canary = kit.deployment("web-canary")
    labels = {"app": "web", "track": "canary"}
    canary["metadata"]["labels"] = labels
    canary["spec"]["selector"] = {"matchLabels": labels}
    canary["spec"]["template"]["metadata"]["labels"] = labels
    kube.create(f"/apis/apps/v1/namespaces/{namespace}/deployments", canary)
    pods = kit.running_pods(kube, namespace, "web", count=2)
    web_pod = next(p for p in pods if "track" not in p["metadata"]["labels"])
    canary_pod = next(p for p in pods if "track" in p["metadata"]["labels"])
    # The old pod stays (no rollout replaces it), and both pods say what they run with, as a kubelet
    # that supports resize does (the API server refuses a resize on a node that does not).
    kube.merge_patch(f"/apis/apps/v1/namespaces/{namespace}/deployments/web", {"spec": {"paused": True}})
    for pod in (web_pod, canary_pod):
        _report_resources(kube, namespace, pod["metadata"]["name"])
    _kill(core_v1, namespace, web_pod)

    kit.wait_for(lambda: _limit(kube, namespace, "web") == "384Mi", what="web patched")
    rec = kit.wait_recommendation(kube, namespace, "deployment-web", lambda r: r["status"].get("phase") == "Applied")
    applied = next(c for c in rec["status"]["conditions"] if c["type"] == "Applied")
    assert "in-place resize failed" not in applied["message"], applied["message"]

    def limit_of(pod: dict[str, Any]) -> str:
        body = kube.get(f"/api/v1/namespaces/{namespace}/pods/{pod['metadata']['name']}")
        return str(body["spec"]["containers"][0]["resources"]["limits"]["memory"])

    kit.wait_for(lambda: limit_of(web_pod) == "384Mi", what="web's pod resized in place")
    assert limit_of(canary_pod) == "256Mi"
    assert _limit(kube, namespace, "web-canary") == "256Mi"
