"""Settling the operator's own raises on the lab: a workload bumped after a kill whose usage then
stays well below the new limit is settled — Auto patches the Deployment down, Recommend shows it and
an approval applies it — a kill after settling bumps it again, and a workload whose working set still
grows is not settled.

Real: the lab's API server, controller-manager and scheduler; `oomtuner run` as a process with the
lab's Prometheus (Debian's, scraping every second); PromQL over its TSDB. Played: cAdvisor (the lab
exporter serves the working set the test sets) and the kubelet (kills written into pod status). The
policies settle after 90 seconds instead of a day, so the test waits minutes, not days; usage since
the raise must cover 90% of that time, which a one-second scrape does. The operator's range queries
step 2 seconds (OOMTUNER_PROMETHEUS_MIN_STEP) so that the half minute of usage after the raise has
enough points to judge a trend.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from oomtuner.kube import api
from oomtuner_lab import exporter as lab_exporter
from oomtuner_lab import inject
from oomtuner_lab import prometheus as lab_prometheus
from tests.e2e import kit
from tests.e2e.conftest import OperatorProcess
from tests.e2e.test_prometheus import exporter, prometheus  # noqa: F401 - this module's own

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(420), pytest.mark.writes_pod_status]

MI = 1024 * 1024
AFTER = 90  # seconds


@pytest.fixture(scope="module")
def prom_operator(kubeconfig: str, crds: list[str], prometheus: lab_prometheus.Server,  # noqa: F811
                  tmp_path_factory: pytest.TempPathFactory) -> Iterator[OperatorProcess]:
    """This module's operator, with Prometheus and a 2-second finest step."""
    proc = OperatorProcess(kubeconfig=kubeconfig, log_dir=tmp_path_factory.mktemp("settle-operator"), extra_env={
        "OOMTUNER_PROMETHEUS_URL": prometheus.url, "OOMTUNER_PROMETHEUS_MIN_STEP": "2s"})
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()


def _policy(kube: api.Client, namespace: str, mode: str) -> None:
    kube.create(f"/apis/oomtuner.dev/v1alpha1/namespaces/{namespace}/oompolicies", {
        "apiVersion": "oomtuner.dev/v1alpha1", "kind": "OOMPolicy", "metadata": {"name": "policy"},
        "spec": {"mode": mode, "cooldown": "1s", "memory": {"settle": {"after": f"{AFTER}s", "margin": 0.1}}}})
    kit.wait_for(lambda: ((kube.get(f"/apis/oomtuner.dev/v1alpha1/namespaces/{namespace}/oompolicies/policy")
                           .get("status") or {}).get("conditions")), what="the policy's status")


def _resources(kube: api.Client, namespace: str) -> dict[str, Any]:
    body = kube.get(f"/apis/apps/v1/namespaces/{namespace}/deployments/web")
    return dict(body["spec"]["template"]["spec"]["containers"][0]["resources"])


def _quiet_web(kube: api.Client, namespace: str, exporter: lab_exporter.Exporter,  # noqa: F811 - the fixture
               prometheus: lab_prometheus.Server) -> dict[str, Any]:  # noqa: F811
    """Deployment web (128Mi/256Mi) whose pod uses a steady 150Mi, scraped by Prometheus."""
    kube.create(f"/apis/apps/v1/namespaces/{namespace}/deployments", kit.deployment("web"))
    pod = kit.running_pods(kube, namespace, "web")[0]
    exporter.traces.set(lab_exporter.Trace.constant(namespace=namespace, pod=pod["metadata"]["name"], container="app",
                                                    value=150 * MI, start=time.time() - 60))
    kit.wait_for(lambda: prometheus.query(f'container_memory_working_set_bytes{{namespace="{namespace}"}}'),
                 what="Prometheus to scrape the pod's working set")
    return pod


def _raised_in_auto(kube: api.Client, core_v1: Any, namespace: str, exporter: lab_exporter.Exporter,  # noqa: F811
                    prometheus: lab_prometheus.Server) -> None:  # noqa: F811
    """An Auto policy that settles after AFTER seconds; web's quiet pod OOM-killed, and the raise to
    384Mi applied."""
    _policy(kube, namespace, "Auto")
    pod = _quiet_web(kube, namespace, exporter, prometheus)
    inject.oom_kill(core_v1, namespace=namespace, pod=pod["metadata"]["name"], container="app", at=kit.utc())
    kit.wait_for(lambda: _resources(kube, namespace)["limits"]["memory"] == "384Mi", what="the raise to 384Mi")


def _settle(rec: dict[str, Any]) -> dict[str, Any]:
    return next((c for c in (rec.get("status") or {}).get("conditions") or [] if c["type"] == "Settle"), {})


def test_auto_settles_its_raise_and_a_kill_after_settling_bumps_again(
        kube: api.Client, core_v1: Any, prom_operator: OperatorProcess, prometheus: lab_prometheus.Server,  # noqa: F811
        exporter: lab_exporter.Exporter, namespace: str) -> None:  # noqa: F811
    _raised_in_auto(kube, core_v1, namespace, exporter, prometheus)

    # No kill for AFTER seconds and usage well below: max(256Mi × 1.1, 150Mi × 1.1, 256Mi) = 282Mi, and
    # the request keeps its ratio (192Mi × 282/384 = 141Mi).
    kit.wait_for(lambda: _resources(kube, namespace)["limits"]["memory"] == "282Mi", timeout=AFTER + 120,
                 interval=2, what="the settle to 282Mi")
    assert _resources(kube, namespace)["requests"]["memory"] == "141Mi"
    rec = kit.wait_recommendation(kube, namespace, "deployment-web", lambda r: r["status"].get("phase") == "Applied")
    cond = _settle(rec)
    assert cond["status"] == "True" and "limit at the last kill 256Mi × 1.1 = 282Mi" in cond["message"], cond
    assert [(c["kind"], c["after"]["limit"]) for c in rec["status"]["changes"]] == [("Raise", "384Mi"), ("Settle", "282Mi")]
    settled = kit.wait_for(lambda: kit.events_for(kube, namespace, reason="ResourcesSettled"), what="ResourcesSettled events")
    assert {e["involvedObject"]["kind"] for e in settled} >= {"OOMRecommendation"}
    assert "oomtuner_settles_total" in prom_operator.metrics()

    # A kill at the settled limit is bumped like any other: 282Mi × 1.5 = 423Mi.
    new = kit.wait_for(lambda: [p for p in kube.list(f"/api/v1/namespaces/{namespace}/pods", query={"labelSelector": "app=web"})
                                if p["spec"]["containers"][0]["resources"]["limits"]["memory"] == "282Mi"
                                and (p.get("status") or {}).get("phase") == "Running"], timeout=60, what="a settled pod")[0]
    inject.oom_kill(core_v1, namespace=namespace, pod=new["metadata"]["name"], container="app", at=kit.utc())
    kit.wait_for(lambda: _resources(kube, namespace)["limits"]["memory"] == "423Mi", what="the bump after settling")


def test_recommend_shows_the_settle_and_an_approval_applies_it(
        kube: api.Client, core_v1: Any, prom_operator: OperatorProcess, prometheus: lab_prometheus.Server,  # noqa: F811
        exporter: lab_exporter.Exporter, namespace: str) -> None:  # noqa: F811
    _policy(kube, namespace, "Recommend")
    pod = _quiet_web(kube, namespace, exporter, prometheus)
    inject.oom_kill(core_v1, namespace=namespace, pod=pod["metadata"]["name"], container="app", at=kit.utc())
    kit.wait_recommendation(kube, namespace, "deployment-web", lambda r: (r.get("status") or {}).get("totalKills") == 1)
    path = f"/apis/oomtuner.dev/v1alpha1/namespaces/{namespace}/oomrecommendations/deployment-web"
    kube.merge_patch(path, {"spec": {"approved": True}})
    kit.wait_for(lambda: _resources(kube, namespace)["limits"]["memory"] == "384Mi", what="the approved raise")

    rec = kit.wait_recommendation(kube, namespace, "deployment-web",
                                  lambda r: any(c.get("settled") for c in r["status"]["containers"]),
                                  timeout=AFTER + 120, what="the settle shown")
    app = rec["status"]["containers"][0]
    assert app["recommended"] == {"request": "141Mi", "limit": "282Mi"} and rec["status"]["phase"] == "Pending"
    assert _resources(kube, namespace)["limits"]["memory"] == "384Mi"  # shown, not applied
    kube.merge_patch(path, {"spec": {"approved": False}})
    kube.merge_patch(path, {"spec": {"approved": True}})
    kit.wait_for(lambda: _resources(kube, namespace)["limits"]["memory"] == "282Mi", what="the approved settle")


def test_a_working_set_still_growing_after_the_raise_is_not_settled(
        kube: api.Client, core_v1: Any, prom_operator: OperatorProcess, prometheus: lab_prometheus.Server,  # noqa: F811
        exporter: lab_exporter.Exporter, namespace: str) -> None:  # noqa: F811
    _raised_in_auto(kube, core_v1, namespace, exporter, prometheus)
    new = kit.wait_for(lambda: [p for p in kube.list(f"/api/v1/namespaces/{namespace}/pods", query={"labelSelector": "app=web"})
                                if p["spec"]["containers"][0]["resources"]["limits"]["memory"] == "384Mi"], what="the new pod")[0]
    # The new pod's working set climbs 1Mi a second from 150Mi: at most about 250Mi when the raise is
    # AFTER seconds old, so the peak alone would allow the same settle to 282Mi as above.
    exporter.traces.set(lab_exporter.Trace(namespace, new["metadata"]["name"], "app", (
        lab_exporter.Life(id="1", start=time.time(), base=150 * MI, bytes_per_s=MI),)))
    rec = kit.wait_recommendation(kube, namespace, "deployment-web", lambda r: _settle(r).get("reason") == "WorkingSetGrowing",
                                  timeout=AFTER + 120, what="the settle held back by the growth")
    assert _settle(rec)["status"] == "False" and "still growing" in _settle(rec)["message"], _settle(rec)
    assert _resources(kube, namespace)["limits"]["memory"] == "384Mi"
    assert not any(c.get("settled") for c in rec["status"]["containers"])
    assert [c["kind"] for c in rec["status"]["changes"]] == ["Raise"]
