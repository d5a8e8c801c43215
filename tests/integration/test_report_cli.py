"""`oomtuner report` against a real API server: workloads with kills, and the next victims per node.

Real: the lab's API server, controller-manager and scheduler; kwok runs the pods. The kill is
written into the pod status as a kubelet reports it. The operator is not running: `report` reads
the cluster itself.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from click.testing import CliRunner

from oomtuner import cli
from oomtuner.kube import api
from oomtuner_lab import inject
from tests.e2e import kit
from tests.e2e.conftest import core_v1  # noqa: F401

pytestmark = pytest.mark.integration


@pytest.mark.writes_pod_status
def test_report_lists_killed_workloads_and_ranks_victims(kube: api.Client, core_v1: Any, kubeconfig: str, namespace: str) -> None:  # noqa: F811
    kube.create(f"/apis/apps/v1/namespaces/{namespace}/deployments", kit.deployment("web", replicas=2))
    kube.create(f"/apis/apps/v1/namespaces/{namespace}/deployments",
                kit.deployment("greedy", containers=[kit.container("hog", request=None, limit=None)]))
    pod = kit.running_pods(kube, namespace, "web", count=2)[0]
    kit.running_pods(kube, namespace, "greedy")
    inject.oom_kill(core_v1, namespace=namespace, pod=pod["metadata"]["name"], container="app", at=kit.utc())

    result = CliRunner().invoke(cli.main, ["report", "-n", namespace, "-o", "json", "--kubeconfig", kubeconfig, "--top", "50",
                                           "--prometheus-url="])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)  # stderr says the ranking is by request (no Prometheus here)
    [entry] = out["workloads"]
    assert entry["workload"] == "Deployment/web" and entry["namespace"] == namespace
    [app] = entry["containers"]
    assert app["kills"] == 1 and app["classifications"] == ["Limit"] and app["qosClass"] == "Burstable"
    assert app["limit"] == 256 * 1024 * 1024
    # The BestEffort container is ranked with oom_score_adj 1000, above every Guaranteed one, and the
    # ranking runs from the most likely victim down.
    greedy = next(p for p in kube.list(f"/api/v1/namespaces/{namespace}/pods", query={"labelSelector": "app=greedy"}))
    node = next(n for n in out["nodes"] if n["name"] == greedy["spec"]["nodeName"])
    victims = node["nextVictims"]
    scores = [v["score"] for v in victims]
    assert scores == sorted(scores, reverse=True)
    hog = next(v for v in victims if v["pod"] == greedy["metadata"]["name"])
    assert hog["qosClass"] == "BestEffort" and hog["oomScoreAdj"] == 1000 and hog["basis"] == "request"
    assert all(hog["score"] > v["score"] for v in victims if v["qosClass"] == "Guaranteed")

    table = CliRunner().invoke(cli.main, ["report", "-n", namespace, "--kubeconfig", kubeconfig])
    assert table.exit_code == 0 and "Deployment/web" in table.output and "next to be killed" in table.output


def test_report_without_a_cluster_is_one_line(tmp_path: Any) -> None:
    missing = tmp_path / "nope.yaml"
    result = CliRunner().invoke(cli.main, ["report", "--kubeconfig", str(missing)])
    assert result.exit_code == 2
    assert "kubeconfig" in result.output and "Traceback" not in result.output


def test_kubectl_oomtuner_report_sets_the_recommendations_count_beside_the_pods(
        kube: api.Client, core_v1: Any, kubeconfig: str, namespace: str) -> None:  # noqa: F811
    """Through kubectl's plugin mechanism (the package's `kubectl-oomtuner` on PATH): a workload whose
    OOMRecommendation recorded 16 kills while its pod shows one."""
    import os
    import pathlib
    import subprocess
    import sys

    from oomtuner_lab import binaries

    dep = kube.create(f"/apis/apps/v1/namespaces/{namespace}/deployments", kit.deployment("web"))
    pod = kit.running_pods(kube, namespace, "web")[0]
    inject.oom_kill(core_v1, namespace=namespace, pod=pod["metadata"]["name"], container="app", at=kit.utc())
    recs = f"/apis/oomtuner.dev/v1alpha1/namespaces/{namespace}/oomrecommendations"
    rec = kube.create(recs, {
        "apiVersion": "oomtuner.dev/v1alpha1", "kind": "OOMRecommendation",
        "metadata": {"name": "deployment-web", "ownerReferences": [
            {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web", "uid": dep["metadata"]["uid"]}]},
        "spec": {"targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"}}})
    rec["status"] = {"phase": "Applied", "totalKills": 16, "containers": [{"name": "app", "oomKills": 16}]}
    kube.replace(f"{recs}/deployment-web/status", rec)

    kubectl = binaries.path("kubectl")
    env = {**os.environ, "KUBECONFIG": kubeconfig, "PATH": f"{pathlib.Path(sys.executable).parent}:{os.environ['PATH']}"}
    done = subprocess.run([str(kubectl), "oomtuner", "report", "-n", namespace, "-o", "json", "--prometheus-url="],
                          capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    [entry] = json.loads(done.stdout)["workloads"]
    assert entry["recommendation"] == {"name": "deployment-web", "phase": "Applied", "totalKills": 16}
    [app] = entry["containers"]
    assert (app["kills"], app["recordedKills"]) == (1, 16)
    table = subprocess.run([str(kubectl), "oomtuner", "report", "-n", namespace, "--prometheus-url="],
                           capture_output=True, text=True, env=env, timeout=60)
    row = next(line for line in table.stdout.splitlines() if "Deployment/web" in line)
    assert row.split()[3:5] == ["16", "1"] and "RECORDED: kills counted in the workload's OOMRecommendation" in table.stdout
    usage = subprocess.run([str(kubectl), "oomtuner", "approve"], capture_output=True, text=True, env=env, timeout=60)
    assert usage.returncode == 2 and "kubectl oomtuner approve" in usage.stderr
