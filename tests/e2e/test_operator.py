"""The operator end to end: `oomtuner run` as a process against a real cluster.

Real: the API server, controller-manager (rollouts, garbage collection), scheduler, the CRDs and
the operator process. Played: the kubelet — kwok runs the pods, and an OOM kill is written into
the pod status as the kubelet writes it (restartCount+1, lastState.terminated OOMKilled 137); a
node-wide OOM is the kubelet's SystemOOM event on the Node.
"""

from __future__ import annotations

import datetime
import time
from typing import Any

import pytest

from oomtuner.domain import quantity
from oomtuner.kube import api
from oomtuner_lab import inject
from tests.e2e import kit
from tests.e2e.conftest import OperatorProcess

pytestmark = [pytest.mark.e2e, pytest.mark.writes_pod_status]

MI = 1024 * 1024


def _policy(kube: api.Client, namespace: str, spec: dict[str, Any], name: str = "policy") -> None:
    kube.create(f"/apis/oomtuner.dev/v1alpha1/namespaces/{namespace}/oompolicies",
                {"apiVersion": "oomtuner.dev/v1alpha1", "kind": "OOMPolicy", "metadata": {"name": name}, "spec": spec})
    # The operator reports on every policy it reads; wait for it so the policy is in effect.
    kit.wait_for(lambda: ((kube.get(f"/apis/oomtuner.dev/v1alpha1/namespaces/{namespace}/oompolicies/{name}")
                           .get("status") or {}).get("conditions")), timeout=30, what=f"policy {name} status")


def _template_resources(kube: api.Client, namespace: str, kind_path: str, name: str, index: int = 0) -> dict[str, Any]:
    obj = kube.get(f"/apis/apps/v1/namespaces/{namespace}/{kind_path}/{name}")
    return obj["spec"]["template"]["spec"]["containers"][index].get("resources") or {}


def _kill(core_v1: Any, namespace: str, pod: dict[str, Any], container: str = "app", *, kind: str = "container",
          at: datetime.datetime | None = None) -> None:
    inject.oom_kill(core_v1, namespace=namespace, pod=pod["metadata"]["name"], container=container,
                    container_kind=kind, at=at or kit.utc())  # type: ignore[arg-type]


def _container_status(rec: dict[str, Any], name: str = "app") -> dict[str, Any]:
    return next(c for c in rec["status"]["containers"] if c["name"] == name)


def _held_back(rec: dict[str, Any], kills: int) -> bool:
    """The kill is recorded and the patch held back by the cooldown: two status writes, a moment apart."""
    applied = next((c for c in rec["status"].get("conditions") or [] if c["type"] == "Applied"), {})
    return rec["status"].get("totalKills") == kills and applied.get("reason") == "CooldownActive"


def test_recommend_mode_explains_the_kill_and_leaves_the_workload(kube: api.Client, core_v1: Any, operator: OperatorProcess, namespace: str) -> None:
    kube.create(f"/apis/apps/v1/namespaces/{namespace}/deployments", kit.deployment("web"))
    pod = kit.running_pods(kube, namespace, "web")[0]
    generation = kube.get(f"/apis/apps/v1/namespaces/{namespace}/deployments/web")["metadata"]["generation"]
    _kill(core_v1, namespace, pod)

    rec = kit.wait_recommendation(kube, namespace, "deployment-web", lambda r: (r.get("status") or {}).get("totalKills") == 1)
    status = rec["status"]
    kill = status["kills"][0]
    assert kill["pod"] == pod["metadata"]["name"] and kill["container"] == "app"
    assert kill["qosClass"] == "Burstable"
    node_capacity = kube.get(f"/api/v1/nodes/{pod['spec']['nodeName']}")["status"]["capacity"]["memory"]
    from oomtuner.domain import quantity
    expected_adj = 1000 - (1000 * 128 * MI) // quantity.parse_bytes(node_capacity)
    assert kill["oomScoreAdj"] == expected_adj
    assert kill["classification"] == "Limit" and kill["limitAtKill"] == "256Mi"
    app = _container_status(rec)
    assert quantity.parse_bytes(app["recommended"]["limit"]) == 384 * MI  # 256Mi × 1.5
    assert quantity.parse_bytes(app["recommended"]["request"]) == 192 * MI  # KeepRatio
    assert status["phase"] == "Pending" and status["target"] == "Deployment/web" and status["mode"] == "Recommend"
    assert rec["metadata"]["ownerReferences"][0]["name"] == "web"
    # Untouched workload.
    dep = kube.get(f"/apis/apps/v1/namespaces/{namespace}/deployments/web")
    assert dep["metadata"]["generation"] == generation
    assert _template_resources(kube, namespace, "deployments", "web")["limits"]["memory"] == "256Mi"
    detected = kit.wait_for(lambda: kit.events_for(kube, namespace, reason="OOMKillDetected", name="web"), what="OOMKillDetected event")
    assert "oom_score_adj" in detected[0]["message"] and detected[0]["type"] == "Warning"
    kit.wait_for(lambda: kit.events_for(kube, namespace, reason="RecommendationUpdated", name="deployment-web"),
                 what="a RecommendationUpdated event")
    # The pod was never written to by the operator.
    fresh = kube.get(f"/api/v1/namespaces/{namespace}/pods/{pod['metadata']['name']}")
    assert not any(k.startswith("kopf") for k in (fresh["metadata"].get("annotations") or {}))
    assert not fresh["metadata"].get("finalizers")
    assert all(m["manager"] != "oomtuner" for m in fresh["metadata"].get("managedFields") or [])


def test_auto_mode_patches_rolls_out_and_respects_the_cooldown(kube: api.Client, core_v1: Any, operator: OperatorProcess, namespace: str) -> None:
    _policy(kube, namespace, {"mode": "Auto", "cooldown": "10m"})
    kube.create(f"/apis/apps/v1/namespaces/{namespace}/deployments", kit.deployment("web", replicas=2))
    pods = kit.running_pods(kube, namespace, "web", count=2)
    _kill(core_v1, namespace, pods[0])

    kit.wait_for(lambda: _template_resources(kube, namespace, "deployments", "web")["limits"]["memory"] == "384Mi",
                 timeout=30, what="the Deployment to get 384Mi")
    res = _template_resources(kube, namespace, "deployments", "web")
    assert res["requests"]["memory"] == "192Mi" and res["requests"]["cpu"] == "50m"

    def rolled_out() -> list[dict[str, Any]] | None:
        fresh = kube.list(f"/api/v1/namespaces/{namespace}/pods", query={"labelSelector": "app=web"})
        new = [p for p in fresh if p["spec"]["containers"][0]["resources"]["limits"]["memory"] == "384Mi"
               and (p.get("status") or {}).get("phase") == "Running" and not p["metadata"].get("deletionTimestamp")]
        return new if len(new) >= 2 else None

    new_pods = kit.wait_for(rolled_out, timeout=90, what="new pods with 384Mi to run")
    rec = kit.wait_recommendation(kube, namespace, "deployment-web", lambda r: r["status"].get("phase") == "Applied")
    assert rec["status"]["appliedAt"]
    kit.wait_for(lambda: kit.events_for(kube, namespace, reason="ResourcesPatched", name="web"), what="a ResourcesPatched event")

    # A second kill inside the cooldown is recorded, but does not patch again.
    _kill(core_v1, namespace, new_pods[0])
    kit.wait_recommendation(kube, namespace, "deployment-web", lambda r: _held_back(r, 2), what="the second kill, held back")
    time.sleep(2)
    assert _template_resources(kube, namespace, "deployments", "web")["limits"]["memory"] == "384Mi"
    assert len(kit.events_for(kube, namespace, reason="ResourcesPatched", name="web")) == 1


def test_approval_applies_once(kube: api.Client, core_v1: Any, operator: OperatorProcess, namespace: str) -> None:
    kube.create(f"/apis/apps/v1/namespaces/{namespace}/deployments", kit.deployment("web"))
    pod = kit.running_pods(kube, namespace, "web")[0]
    _kill(core_v1, namespace, pod)
    kit.wait_recommendation(kube, namespace, "deployment-web", lambda r: r["status"].get("totalKills") == 1)
    assert _template_resources(kube, namespace, "deployments", "web")["limits"]["memory"] == "256Mi"

    path = f"/apis/oomtuner.dev/v1alpha1/namespaces/{namespace}/oomrecommendations/deployment-web"
    kube.merge_patch(path, {"spec": {"approved": True}})
    rec = kit.wait_recommendation(kube, namespace, "deployment-web", lambda r: r["status"].get("phase") == "Applied")
    assert rec["status"]["appliedGeneration"] == rec["metadata"]["generation"]
    assert _template_resources(kube, namespace, "deployments", "web")["limits"]["memory"] == "384Mi"

    # A later kill is recorded and recomputed, but the earlier approval is spent.
    new_pod = kit.wait_for(
        lambda: [p for p in kube.list(f"/api/v1/namespaces/{namespace}/pods", query={"labelSelector": "app=web"})
                 if p["spec"]["containers"][0]["resources"]["limits"]["memory"] == "384Mi"
                 and (p.get("status") or {}).get("phase") == "Running"],
        timeout=90, what="the rolled-out pod")[0]
    _kill(core_v1, namespace, new_pod)
    rec = kit.wait_recommendation(kube, namespace, "deployment-web", lambda r: r["status"]["totalKills"] == 2)
    assert rec["status"]["phase"] == "Pending"
    assert _container_status(rec)["recommended"]["limit"] == "576Mi"
    time.sleep(2)
    assert _template_resources(kube, namespace, "deployments", "web")["limits"]["memory"] == "384Mi"


def test_statefulset_daemonset_cronjob_init_and_sidecar(kube: api.Client, core_v1: Any, operator: OperatorProcess, namespace: str) -> None:
    labels = {"app": "db"}
    kube.create(f"/apis/apps/v1/namespaces/{namespace}/statefulsets", {
        "apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "db"},
        "spec": {"serviceName": "db", "replicas": 1, "selector": {"matchLabels": labels}, "template": kit.pod_template(
            labels, [kit.container()],
            init=[kit.container("migrate", request="32Mi", limit="64Mi"),
                  {**kit.container("proxy", request="32Mi", limit="64Mi"), "restartPolicy": "Always"}])}})
    kube.create(f"/apis/apps/v1/namespaces/{namespace}/daemonsets", {
        "apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": "agent"},
        "spec": {"selector": {"matchLabels": {"app": "agent"}},
                 "template": kit.pod_template({"app": "agent"}, [kit.container()])}})
    cron = kube.create(f"/apis/batch/v1/namespaces/{namespace}/cronjobs", {
        "apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": "nightly"},
        "spec": {"schedule": "0 3 * * *", "jobTemplate": {"spec": {"template": {
            "metadata": {"labels": {"app": "nightly"}},
            "spec": {"restartPolicy": "Never", "containers": [kit.container()]},
        }}}}})
    kube.create(f"/apis/batch/v1/namespaces/{namespace}/jobs", {
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": "nightly-1", "ownerReferences": [{"apiVersion": "batch/v1", "kind": "CronJob", "name": "nightly",
                                                               "uid": cron["metadata"]["uid"], "controller": True}]},
        "spec": {"template": {**kit.pod_template({"app": "nightly"}, [kit.container()]),
                              "spec": {"restartPolicy": "Never", "containers": [kit.container()]}}}})

    db = kit.running_pods(kube, namespace, "db")[0]
    _kill(core_v1, namespace, db, "migrate", kind="init", at=kit.utc(20))
    _kill(core_v1, namespace, db, "proxy", kind="init", at=kit.utc(10))
    _kill(core_v1, namespace, db, "app")
    agent = kit.running_pods(kube, namespace, "agent")[0]
    _kill(core_v1, namespace, agent)
    # kwok completes Job pods at once; a kubelet would report the kill on the finished pod just the same.
    nightly = kit.wait_for(lambda: [p for p in kube.list(f"/api/v1/namespaces/{namespace}/pods", query={"labelSelector": "app=nightly"})
                                    if (p.get("status") or {}).get("containerStatuses")], timeout=60, what="the nightly pod")[0]
    _kill(core_v1, namespace, nightly)

    rec = kit.wait_recommendation(kube, namespace, "statefulset-db", lambda r: (r.get("status") or {}).get("totalKills") == 3)
    types_ = {c["name"]: c["type"] for c in rec["status"]["containers"]}
    assert types_ == {"migrate": "init", "proxy": "sidecar", "app": "container"}
    assert _container_status(rec, "migrate")["recommended"]["limit"] == "128Mi"  # 64Mi + minIncrease 64Mi
    assert _container_status(rec, "proxy")["recommended"]["limit"] == "128Mi"
    kit.wait_recommendation(kube, namespace, "daemonset-agent", lambda r: (r.get("status") or {}).get("totalKills") == 1)
    rec = kit.wait_recommendation(kube, namespace, "cronjob-nightly", lambda r: (r.get("status") or {}).get("totalKills") == 1)
    assert rec["spec"]["targetRef"] == {"apiVersion": "batch/v1", "kind": "CronJob", "name": "nightly"}


def test_node_oom_of_a_best_effort_container(kube: api.Client, core_v1: Any, operator: OperatorProcess, namespace: str) -> None:
    node_name = kit.dedicated_node(kube, f"{namespace}-node")
    try:
        _node_oom_scenario(kube, core_v1, namespace, node_name)
    finally:
        if node_name:
            kube.delete(f"/api/v1/nodes/{node_name}")


def _node_oom_scenario(kube: api.Client, core_v1: Any, namespace: str, node_name: str | None) -> None:
    kube.create(f"/apis/apps/v1/namespaces/{namespace}/deployments", kit.on_node(
        kit.deployment("batch", containers=[kit.container("worker", request=None, limit=None)]), node_name))
    pod = kit.running_pods(kube, namespace, "batch")[0]
    node = pod["spec"]["nodeName"]
    at = kit.utc()
    inject.system_oom(core_v1, node=node, process_name="worker", at=at)
    time.sleep(1)  # the operator sees the node's SystemOOM before the pod status
    _kill(core_v1, namespace, pod, "worker", at=at)

    rec = kit.wait_recommendation(kube, namespace, "deployment-batch", lambda r: (r.get("status") or {}).get("totalKills") == 1)
    kill = rec["status"]["kills"][0]
    assert kill["qosClass"] == "BestEffort" and kill["oomScoreAdj"] == 1000
    assert kill["classification"] == "Node"
    worker = _container_status(rec, "worker")
    assert worker["classification"] == "Node"
    assert worker["recommended"]["request"] is not None and worker["recommended"]["limit"] is not None
    # This operator has no Prometheus: no culprit is named, and the kill record says why.
    rec = kit.wait_recommendation(kube, namespace, "deployment-batch", lambda r: r["status"]["kills"][0].get("culprit"),
                                  what="the kill's culprit")
    assert rec["status"]["kills"][0]["culprit"] == {
        "reason": "no culprit named: no usage data: no Prometheus is configured (OOMTUNER_PROMETHEUS_URL)"}


@pytest.mark.writes_pod_status(False)
def test_policy_that_slips_past_the_schema_gets_an_invalid_condition(kube: api.Client, operator: OperatorProcess, namespace: str) -> None:
    kube.create(f"/apis/oomtuner.dev/v1alpha1/namespaces/{namespace}/oompolicies",
                {"apiVersion": "oomtuner.dev/v1alpha1", "kind": "OOMPolicy", "metadata": {"name": "zero"},
                 "spec": {"mode": "Auto", "memory": {"maxLimit": "0"}}})

    def invalid() -> dict[str, Any] | None:
        body = kube.get(f"/apis/oomtuner.dev/v1alpha1/namespaces/{namespace}/oompolicies/zero")
        conds = (body.get("status") or {}).get("conditions") or []
        return next((c for c in conds if c["type"] == "Valid" and c["status"] == "False"), None)

    cond = kit.wait_for(invalid, what="the Invalid condition")
    assert "spec.memory.maxLimit" in cond["message"] and f"{namespace}/zero" in cond["message"]
    kit.wait_for(lambda: kit.events_for(kube, namespace, reason="PolicyInvalid", name="zero"), what="a PolicyInvalid event")


def test_restart_does_not_count_a_kill_twice(kube: api.Client, core_v1: Any, operator: OperatorProcess, namespace: str) -> None:
    kube.create(f"/apis/apps/v1/namespaces/{namespace}/deployments", kit.deployment("web"))
    pod = kit.running_pods(kube, namespace, "web")[0]
    _kill(core_v1, namespace, pod, at=kit.utc(5))
    kit.wait_recommendation(kube, namespace, "deployment-web", lambda r: (r.get("status") or {}).get("totalKills") == 1)
    operator.stop()
    # A kill while the operator is down is picked up after the restart; the old one is not recounted.
    _kill(core_v1, namespace, pod, at=kit.utc())
    operator.start()
    rec = kit.wait_recommendation(kube, namespace, "deployment-web", lambda r: r["status"]["totalKills"] >= 2)
    time.sleep(3)
    rec = kit.recommendation(kube, namespace, "deployment-web")
    assert rec is not None and rec["status"]["totalKills"] == 2
    assert len({k["id"] for k in rec["status"]["kills"]}) == 2
    assert len(kit.events_for(kube, namespace, reason="OOMKillDetected", name="web")) == 2


def test_cap_gives_capped_and_a_warning(kube: api.Client, core_v1: Any, operator: OperatorProcess, namespace: str) -> None:
    _policy(kube, namespace, {"mode": "Auto", "memory": {"maxLimit": "300Mi"}})
    kube.create(f"/apis/apps/v1/namespaces/{namespace}/deployments", kit.deployment("web"))
    pod = kit.running_pods(kube, namespace, "web")[0]
    _kill(core_v1, namespace, pod)
    rec = kit.wait_recommendation(kube, namespace, "deployment-web", lambda r: (r.get("status") or {}).get("totalKills") == 1)
    app = _container_status(rec)
    assert app["recommended"]["limit"] == "300Mi" and app["phase"] == "Capped"
    assert "maxLimit" in (app.get("cappedBy") or "")
    warnings = kit.wait_for(lambda: kit.events_for(kube, namespace, reason="RecommendationCapped"), what="a RecommendationCapped event")
    assert warnings[0]["type"] == "Warning"
    # The capped value is still an improvement, so Auto applies it.
    kit.wait_for(lambda: _template_resources(kube, namespace, "deployments", "web")["limits"]["memory"] == "300Mi",
                 what="the capped limit to be applied")


def _quota(kube: api.Client, namespace: str, name: str, spec: dict[str, Any]) -> None:
    kube.create(f"/api/v1/namespaces/{namespace}/resourcequotas",
                {"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": name}, "spec": spec})


def _quota_used(kube: api.Client, namespace: str, name: str, resource: str) -> int | None:
    used = (kube.get(f"/api/v1/namespaces/{namespace}/resourcequotas/{name}").get("status") or {}).get("used") or {}
    return quantity.parse_bytes(used[resource]) if resource in used else None


def test_resource_quota_headroom_caps_the_recommendation(kube: api.Client, core_v1: Any, operator: OperatorProcess, namespace: str) -> None:
    _quota(kube, namespace, "memory", {"hard": {"limits.memory": "300Mi"}})
    # Charged only for pods with a deadline: the Deployment's pods are not, so its lack of room must not count.
    _quota(kube, namespace, "deadlines", {"hard": {"limits.memory": "1Mi"}, "scopes": ["Terminating"]})
    # The API server refuses pods until the resourcequota controller has synced the quotas.
    for name in ("memory", "deadlines"):
        kit.wait_for(lambda name=name: _quota_used(kube, namespace, name, "limits.memory") == 0, what=f"quota {name} synced")
    kube.create(f"/apis/apps/v1/namespaces/{namespace}/deployments", kit.deployment("web"))
    pod = kit.running_pods(kube, namespace, "web")[0]
    kit.wait_for(lambda: _quota_used(kube, namespace, "memory", "limits.memory") == 256 * MI,
                 what="the quota to count the pod's 256Mi")
    _kill(core_v1, namespace, pod)

    rec = kit.wait_recommendation(kube, namespace, "deployment-web", lambda r: (r.get("status") or {}).get("totalKills") == 1)
    app = _container_status(rec)
    # 256Mi × 1.5 = 384Mi does not fit: 300Mi − 256Mi leaves 44Mi for the one pod
    assert app["phase"] == "Capped" and rec["status"]["phase"] == "Capped"
    assert app["cappedBy"] == "ResourceQuota headroom 44Mi" and "capped by ResourceQuota headroom 44Mi" in app["reason"]
    assert app["recommended"]["limit"] == "300Mi" and app["recommended"]["request"] == "150Mi"  # KeepRatio
    capped = kit.wait_for(lambda: kit.events_for(kube, namespace, reason="RecommendationCapped", name="web"),
                          what="a RecommendationCapped event on the workload")
    assert "ResourceQuota headroom 44Mi" in capped[0]["message"]
    assert _template_resources(kube, namespace, "deployments", "web")["limits"]["memory"] == "256Mi"


def test_limit_range_max_caps_the_recommendation(kube: api.Client, core_v1: Any, operator: OperatorProcess, namespace: str) -> None:
    kube.create(f"/api/v1/namespaces/{namespace}/limitranges", {
        "apiVersion": "v1", "kind": "LimitRange", "metadata": {"name": "max"},
        "spec": {"limits": [{"type": "Container", "max": {"memory": "320Mi"}}]}})
    kube.create(f"/apis/apps/v1/namespaces/{namespace}/deployments", kit.deployment("web"))
    pod = kit.running_pods(kube, namespace, "web")[0]
    _kill(core_v1, namespace, pod)

    rec = kit.wait_recommendation(kube, namespace, "deployment-web", lambda r: (r.get("status") or {}).get("totalKills") == 1)
    app = _container_status(rec)
    # 256Mi × 1.5 = 384Mi would be refused at admission: the LimitRange allows 320Mi at most.
    assert app["phase"] == "Capped" and app["cappedBy"] == "LimitRange max 320Mi"
    assert app["recommended"]["limit"] == "320Mi"


def test_repeated_kills_at_raised_limits_give_suspected_leak(kube: api.Client, core_v1: Any, operator: OperatorProcess, namespace: str) -> None:
    _policy(kube, namespace, {"mode": "Auto", "cooldown": "1s"})
    kube.create(f"/apis/apps/v1/namespaces/{namespace}/deployments", kit.deployment("web"))
    limits = []
    for round_ in range(3):
        def current_pod() -> dict[str, Any] | None:
            want = limits[-1] if limits else "256Mi"
            pods = kit.running_pods(kube, namespace, "web")
            return next((p for p in pods if p["spec"]["containers"][0]["resources"]["limits"]["memory"] == want
                         and p["status"]["containerStatuses"][0]["restartCount"] == 0), None)

        pod = kit.wait_for(current_pod, timeout=90, what=f"a fresh pod for round {round_}")
        started = datetime.datetime.fromisoformat(
            pod["status"]["containerStatuses"][0]["state"]["running"]["startedAt"].replace("Z", "+00:00"))
        # Each instance dies after a similar, never shorter lifetime (14, 18 and 26 hours, written as
        # the kubelet would report it) at a higher limit, at different hours of the day: the shape of
        # a leak, not of a start-up peak or a daily one. The pause keeps the next pod's start, and so
        # its kill, in a later second than this one's.
        time.sleep(1.1)
        _kill(core_v1, namespace, pod, at=started + datetime.timedelta(hours=(14, 18, 26)[round_]))
        rec = kit.wait_recommendation(kube, namespace, "deployment-web",
                                      lambda r: (r.get("status") or {}).get("totalKills") == round_ + 1)
        if round_ < 2:
            want = _container_status(rec)["recommended"]["limit"]
            kit.wait_for(lambda: _template_resources(kube, namespace, "deployments", "web")["limits"]["memory"] == want,
                         timeout=30, what=f"round {round_} patch to {want}")
            limits.append(want)
    assert rec["status"]["phase"] == "SuspectedLeak"
    assert _container_status(rec)["phase"] == "SuspectedLeak"
    kit.wait_for(lambda: kit.events_for(kube, namespace, reason="SuspectedLeak", name="web"), what="a SuspectedLeak event on the workload")
    time.sleep(2)
    assert _template_resources(kube, namespace, "deployments", "web")["limits"]["memory"] == limits[-1]
    assert len(kit.events_for(kube, namespace, reason="ResourcesPatched", name="web")) == 2


def test_metrics_count_kills(kube: api.Client, core_v1: Any, operator: OperatorProcess, namespace: str) -> None:
    kube.create(f"/apis/apps/v1/namespaces/{namespace}/deployments", kit.deployment("web"))
    pod = kit.running_pods(kube, namespace, "web")[0]
    _kill(core_v1, namespace, pod)
    kit.wait_recommendation(kube, namespace, "deployment-web", lambda r: (r.get("status") or {}).get("totalKills") == 1)
    text = operator.metrics()
    line = next(line for line in text.splitlines() if line.startswith("oomtuner_oom_kills_total{")
                and f'namespace="{namespace}"' in line)
    assert 'classification="Limit"' in line and line.endswith(" 1.0")
    assert "oomtuner_detection_latency_seconds_count" in text
    import platform

    import oomtuner
    assert f'oomtuner_build_info{{python="{platform.python_version()}",version="{oomtuner.__version__}"}} 1.0' in text


def _patch_then_hold_back(kube: api.Client, core_v1: Any, namespace: str, *, cooldown: str) -> dict[str, Any]:
    """An Auto policy with `cooldown`; a kill of Deployment web patches it to 384Mi, then a pod of the
    new template dies inside the cooldown: recorded, held back. Returns the recommendation then."""
    _policy(kube, namespace, {"mode": "Auto", "cooldown": cooldown})
    kube.create(f"/apis/apps/v1/namespaces/{namespace}/deployments", kit.deployment("web", replicas=2))
    first = kit.running_pods(kube, namespace, "web", count=2)[0]
    _kill(core_v1, namespace, first)
    kit.wait_for(lambda: _template_resources(kube, namespace, "deployments", "web")["limits"]["memory"] == "384Mi",
                 what="the first patch")
    second = kit.wait_for(
        lambda: [p for p in kube.list(f"/api/v1/namespaces/{namespace}/pods", query={"labelSelector": "app=web"})
                 if p["spec"]["containers"][0]["resources"]["limits"]["memory"] == "384Mi"
                 and (p.get("status") or {}).get("phase") == "Running"], timeout=60, what="a rolled-out pod")[0]
    _kill(core_v1, namespace, second)
    return kit.wait_recommendation(kube, namespace, "deployment-web", lambda r: _held_back(r, 2),
                                   what="the second kill, held back")


def test_a_patch_held_back_by_the_cooldown_is_applied_when_it_ends(kube: api.Client, core_v1: Any, operator: OperatorProcess, namespace: str) -> None:
    _patch_then_hold_back(kube, core_v1, namespace, cooldown="8s")
    assert _template_resources(kube, namespace, "deployments", "web")["limits"]["memory"] == "384Mi"
    # No further kill: the held-back patch goes out once the cooldown has passed.
    kit.wait_for(lambda: _template_resources(kube, namespace, "deployments", "web")["limits"]["memory"] == "576Mi",
                 timeout=30, what="the held-back patch after the cooldown")
    # Events go out from their own threads: wait for the second one.
    patched = kit.wait_for(lambda: (found := kit.events_for(kube, namespace, reason="ResourcesPatched", name="web"))
                           and len(found) >= 2 and found, what="the second ResourcesPatched event")
    assert len(patched) == 2 and any("after the cooldown" in e["message"] for e in patched)


def test_a_patch_held_back_by_the_cooldown_survives_an_operator_restart(kube: api.Client, core_v1: Any, operator: OperatorProcess, namespace: str) -> None:
    cooldown = 15  # seconds: long enough that the operator is stopped before it ends
    held_back = _patch_then_hold_back(kube, core_v1, namespace, cooldown=f"{cooldown}s")
    first_patch = held_back["status"]["appliedAt"]

    # The schedule of the held-back patch was in the stopped process' memory only.
    operator.stop()
    assert _template_resources(kube, namespace, "deployments", "web")["limits"]["memory"] == "384Mi"
    operator.start()
    # No further kill: the restarted operator finds the held-back patch in the recommendation's status.
    kit.wait_for(lambda: _template_resources(kube, namespace, "deployments", "web")["limits"]["memory"] == "576Mi",
                 timeout=60, what="the held-back patch after the restart")
    rec = kit.wait_recommendation(kube, namespace, "deployment-web", lambda r: r["status"].get("phase") == "Applied"
                                  and r["status"]["appliedAt"] != first_patch)
    waited = (datetime.datetime.fromisoformat(rec["status"]["appliedAt"].replace("Z", "+00:00"))
              - datetime.datetime.fromisoformat(first_patch.replace("Z", "+00:00")))
    assert waited >= datetime.timedelta(seconds=cooldown), f"patched {waited} after the first patch, inside the cooldown"
    assert rec["status"]["totalKills"] == 2
    patched = kit.wait_for(lambda: (found := kit.events_for(kube, namespace, reason="ResourcesPatched", name="web"))
                           and len(found) >= 2 and found, what="the second ResourcesPatched event")
    assert len(patched) == 2 and any("after the cooldown" in e["message"] for e in patched)


def test_oomtuner_approve_command(kube: api.Client, core_v1: Any, kubeconfig: str, operator: OperatorProcess, namespace: str) -> None:
    from click.testing import CliRunner

    from oomtuner import cli

    kube.create(f"/apis/apps/v1/namespaces/{namespace}/deployments", kit.deployment("web"))
    _kill(core_v1, namespace, kit.running_pods(kube, namespace, "web")[0])
    kit.wait_recommendation(kube, namespace, "deployment-web", lambda r: (r.get("status") or {}).get("totalKills") == 1)
    result = CliRunner().invoke(cli.main, ["approve", f"{namespace}/deployment-web", "--kubeconfig", kubeconfig, "--timeout", "30"])
    assert result.exit_code == 0, result.output
    assert "approved" in result.output and "phase Applied" in result.output
    assert _template_resources(kube, namespace, "deployments", "web")["limits"]["memory"] == "384Mi"
    missing = CliRunner().invoke(cli.main, ["approve", f"{namespace}/nope", "--kubeconfig", kubeconfig])
    assert missing.exit_code == 1 and "not found" in missing.output  # an answer of the cluster: exit 1
    bad = CliRunner().invoke(cli.main, ["approve", "no-slash", "--kubeconfig", kubeconfig])
    assert bad.exit_code == 2 and "NAMESPACE/NAME" in bad.output


def test_a_system_oom_that_arrives_after_the_kill_reclassifies_it(kube: api.Client, core_v1: Any, operator: OperatorProcess, namespace: str) -> None:
    node_name = kit.dedicated_node(kube, f"{namespace}-late")
    if node_name is None:
        pytest.skip("needs a node of the test's own (the lab's kwok); a shared kind node would mix tests")
    try:
        kube.create(f"/apis/apps/v1/namespaces/{namespace}/deployments", kit.on_node(kit.deployment("web"), node_name))
        pod = kit.running_pods(kube, namespace, "web")[0]
        at = kit.utc()
        _kill(core_v1, namespace, pod, at=at)
        rec = kit.wait_recommendation(kube, namespace, "deployment-web", lambda r: (r.get("status") or {}).get("totalKills") == 1)
        assert rec["status"]["kills"][0]["classification"] == "Limit"
        inject.system_oom(core_v1, node=node_name, process_name="app", at=at)
        rec = kit.wait_recommendation(kube, namespace, "deployment-web",
                                      lambda r: r["status"]["kills"][0]["classification"] == "Node", what="the reclassification")
        assert "SystemOOM" in rec["status"]["kills"][0]["reason"]
        app = _container_status(rec)
        assert app["classification"] == "Node" and rec["status"]["totalKills"] == 1
        assert app["recommended"]["request"] != "128Mi"  # a Node kill raises the request
    finally:
        kube.delete(f"/api/v1/nodes/{node_name}")


def test_a_deleted_recommendation_comes_back_with_the_next_kill(kube: api.Client, core_v1: Any, operator: OperatorProcess, namespace: str) -> None:
    kube.create(f"/apis/apps/v1/namespaces/{namespace}/deployments", kit.deployment("web", replicas=2))
    first, second = kit.running_pods(kube, namespace, "web", count=2)[:2]
    _kill(core_v1, namespace, first)
    kit.wait_recommendation(kube, namespace, "deployment-web", lambda r: (r.get("status") or {}).get("totalKills") == 1)
    # The recommendation's memory is a series of the operator's /metrics, as long as it exists.
    limit = (f'oomtuner_recommendation_memory_bytes{{container="app",namespace="{namespace}",resource="limit",'
             'value="recommended",workload="Deployment/web"}')
    kit.wait_for(lambda: any(line.startswith(limit) and float(line.rsplit(" ", 1)[1]) == 384 * 1024 * 1024
                             for line in operator.metrics().splitlines()), what="the recommendation's memory series")
    kube.delete(f"/apis/oomtuner.dev/v1alpha1/namespaces/{namespace}/oomrecommendations/deployment-web")
    kit.wait_for(lambda: kit.recommendation(kube, namespace, "deployment-web") is None, what="the deletion")
    kit.wait_for(lambda: f'namespace="{namespace}"' not in "\n".join(
        line for line in operator.metrics().splitlines() if line.startswith("oomtuner_recommendation_memory_bytes{")),
        what="the deleted recommendation's series to go")
    _kill(core_v1, namespace, second)
    rec = kit.wait_recommendation(kube, namespace, "deployment-web", lambda r: (r.get("status") or {}).get("totalKills") == 1)
    assert rec["status"]["kills"][0]["pod"] == second["metadata"]["name"]
    assert rec["metadata"]["ownerReferences"][0]["name"] == "web"


def _requests(operator: OperatorProcess, verb: str) -> float:
    for line in operator.metrics().splitlines():
        if line.startswith("oomtuner_api_requests_total{") and f'verb="{verb}"' in line:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_a_burst_of_kills_in_many_replicas_counts_each_once(kube: api.Client, core_v1: Any, operator: OperatorProcess, namespace: str) -> None:
    import concurrent.futures

    replicas = 30
    kube.create(f"/apis/apps/v1/namespaces/{namespace}/deployments", kit.deployment("web", replicas=replicas))
    pods = kit.running_pods(kube, namespace, "web", count=replicas)
    puts = _requests(operator, "PUT")
    at = kit.utc()
    # Every replica is killed at once, as when a shared dependency makes them all grow together.
    with concurrent.futures.ThreadPoolExecutor(max_workers=replicas) as pool:
        list(pool.map(lambda pod: _kill(core_v1, namespace, pod, at=at), pods))
    rec = kit.wait_recommendation(kube, namespace, "deployment-web",
                                  lambda r: (r.get("status") or {}).get("totalKills", 0) >= replicas, timeout=60)
    time.sleep(2)  # a kill counted twice would show by now
    rec = kit.recommendation(kube, namespace, "deployment-web")
    assert rec is not None and rec["status"]["totalKills"] == replicas
    ids = [k["id"] for k in rec["status"]["kills"]]
    assert len(ids) == len(set(ids)) == 20  # the ledger keeps the newest 20, each once
    assert {k["pod"] for k in rec["status"]["kills"]} <= {p["metadata"]["name"] for p in pods}
    # One recommendation for all of them, written in batches rather than once per kill.
    assert _container_status(rec)["oomKills"] == replicas
    assert _requests(operator, "PUT") - puts < replicas
    # A second kill in some of the same pods counts again, once each.
    for pod in pods[:5]:
        _kill(core_v1, namespace, pod, at=kit.utc())
    kit.wait_recommendation(kube, namespace, "deployment-web", lambda r: r["status"]["totalKills"] >= replicas + 5)
    time.sleep(2)
    rec = kit.recommendation(kube, namespace, "deployment-web")
    assert rec is not None and rec["status"]["totalKills"] == replicas + 5
