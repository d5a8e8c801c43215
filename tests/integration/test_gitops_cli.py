"""`oomtuner patch` against a real API server, its output fed to the tools a repository uses.

Real: the lab's API server (the workload, its OOMRecommendation with an owner reference, the status
written through the status subresource as the operator writes it), the lab's kubectl (which runs the
printed `kubectl patch` line, and builds the kustomize overlay with its built-in kustomize) and helm
(which renders a chart with the printed values). The operator is not running: the recommendation's
status is the one a Conflict leaves.
"""

from __future__ import annotations

import os
import pathlib
import subprocess
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from oomtuner import cli
from oomtuner.kube import api
from oomtuner_lab import binaries
from tests.e2e import kit

pytestmark = pytest.mark.integration

RECS = "/apis/oomtuner.dev/v1alpha1/namespaces/{ns}/oomrecommendations"


def _recommendation(kube: api.Client, namespace: str, deployment: dict[str, Any], *, owned: bool = True,
                    name: str = "deployment-cart") -> None:
    meta: dict[str, Any] = {"name": name}
    if owned:
        meta["ownerReferences"] = [{"apiVersion": "apps/v1", "kind": "Deployment", "name": "cart",
                                    "uid": deployment["metadata"]["uid"]}]
    body = kube.create(RECS.format(ns=namespace), {
        "apiVersion": "oomtuner.dev/v1alpha1", "kind": "OOMRecommendation", "metadata": meta,
        "spec": {"targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "cart"}}})
    body["status"] = {"phase": "Conflict", "target": "Deployment/cart", "totalKills": 2, "containers": [
        {"name": "app", "current": {"request": "128Mi", "limit": "256Mi"},
         "recommended": {"request": "192Mi", "limit": "384Mi"}, "phase": "Conflict", "oomKills": 2}]}
    kube.replace(f"{RECS.format(ns=namespace)}/{name}/status", body)


def _patch(kubeconfig: str, *args: str) -> Any:
    return CliRunner().invoke(cli.main, ["patch", *args, "--kubeconfig", kubeconfig])


def _tool(name: str) -> str:
    path = binaries.path(name)
    if not path.is_file():
        pytest.fail(f"{path} is missing: build the lab's binaries with `bash hack/lab/build.sh`")
    return str(path)


def _memory(resources: dict[str, Any]) -> tuple[str | None, str | None]:
    return (resources.get("requests") or {}).get("memory"), (resources.get("limits") or {}).get("memory")


def _template_memory(kube: api.Client, namespace: str) -> tuple[str | None, str | None]:
    dep = kube.get(f"/apis/apps/v1/namespaces/{namespace}/deployments/cart")
    return _memory(dep["spec"]["template"]["spec"]["containers"][0]["resources"])


def test_kubectl_line_kustomize_file_and_helm_values_set_the_recommended_memory(
        kube: api.Client, kubeconfig: str, namespace: str, tmp_path: pathlib.Path) -> None:
    manifest = kit.deployment("cart")
    deployment = kube.create(f"/apis/apps/v1/namespaces/{namespace}/deployments", manifest)
    _recommendation(kube, namespace, deployment)

    # kubectl: one line, run by a shell with the lab's kubectl; the template gets the memory.
    done = _patch(kubeconfig, f"{namespace}/deployment-cart", "-o", "kubectl")
    assert done.exit_code == 0, done.output
    assert done.stdout.count("\n") == 1 and done.stdout.startswith("kubectl patch deployment cart ")
    shell = subprocess.run(["sh", "-c", done.stdout], capture_output=True, text=True, timeout=60,
                           env={**os.environ, "KUBECONFIG": kubeconfig,
                                "PATH": f"{pathlib.Path(_tool('kubectl')).parent}:{os.environ['PATH']}"})
    assert shell.returncode == 0, shell.stderr
    assert _template_memory(kube, namespace) == ("192Mi", "384Mi")

    # kustomize, by workload with -n: the template has the memory now, the repository does not yet.
    done = _patch(kubeconfig, "-n", namespace, "deployment/cart", "-o", "kustomize")
    assert done.exit_code == 0, done.output
    assert done.stdout.startswith(f"# oomtuner patch: the memory OOMRecommendation {namespace}/deployment-cart (phase Conflict)")
    overlay = tmp_path / "overlay"
    overlay.mkdir()
    (overlay / "deployment.yaml").write_text(yaml.safe_dump({**manifest, "metadata": {**manifest["metadata"], "namespace": namespace}}))
    (overlay / "memory.yaml").write_text(done.stdout)
    (overlay / "kustomization.yaml").write_text(yaml.safe_dump({"resources": ["deployment.yaml"], "patches": [{"path": "memory.yaml"}]}))
    built = subprocess.run([_tool("kubectl"), "kustomize", str(overlay)], capture_output=True, text=True, timeout=60)
    assert built.returncode == 0, built.stderr
    [container] = yaml.safe_load(built.stdout)["spec"]["template"]["spec"]["containers"]
    assert _memory(container["resources"]) == ("192Mi", "384Mi")
    assert container["image"] == manifest["spec"]["template"]["spec"]["containers"][0]["image"], "the rest is kept"

    # helm-values at the chart's values path, rendered by a chart that reads it.
    done = _patch(kubeconfig, f"{namespace}/deployment/cart", "-o", "helm-values", "--values-path", "app.resources")
    assert done.exit_code == 0, done.output
    chart = tmp_path / "chart"
    (chart / "templates").mkdir(parents=True)
    (chart / "Chart.yaml").write_text("apiVersion: v2\nname: cart\nversion: 0.1.0\n")
    (chart / "values.yaml").write_text("app:\n  resources:\n    requests: {memory: 128Mi, cpu: 50m}\n")
    (chart / "templates" / "cm.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: cart}\ndata:\n  resources: {{ toJson .Values.app.resources | quote }}\n")
    (tmp_path / "values.yaml").write_text(done.stdout)
    rendered = subprocess.run([_tool("helm"), "template", "cart", str(chart), "-f", str(tmp_path / "values.yaml")],
                              capture_output=True, text=True, timeout=60)
    assert rendered.returncode == 0, rendered.stderr
    assert yaml.safe_load(yaml.safe_load(rendered.stdout)["data"]["resources"]) == {
        "requests": {"memory": "192Mi", "cpu": "50m"}, "limits": {"memory": "384Mi"}}


def test_patch_failures_are_one_line_with_their_exit_code(kube: api.Client, kubeconfig: str, namespace: str) -> None:
    deployment = kube.create(f"/apis/apps/v1/namespaces/{namespace}/deployments", kit.deployment("cart"))
    cases = [
        (["-n", namespace, "deployment-cart", "-o", "kubectl"], 1, f"OOMRecommendation {namespace}/deployment-cart not found"),
        ([f"{namespace}/deployment/cart", "-o", "kustomize"], 1, "has no OOMRecommendation of its own"),
        ([f"{namespace}/service/cart", "-o", "kustomize"], 2, "expected an OOMRecommendation's name, or KIND/NAME"),
        ([f"{namespace}/deployment-cart", "-o", "kustomize", "--values-path", "app.resources"], 2, "--values-path goes with"),
        (["deployment-cart", "-o", "kubectl"], 2, "expected NAMESPACE/NAME or -n NAMESPACE NAME"),
    ]
    for args, code, message in cases:
        done = _patch(kubeconfig, *args)
        assert done.exit_code == code and message in done.output and "Traceback" not in done.output, (args, done.output)
    # A recommendation someone else made under the workload's name is not used.
    _recommendation(kube, namespace, deployment, owned=False)
    done = _patch(kubeconfig, f"{namespace}/deployment-cart", "-o", "kubectl")
    assert done.exit_code == 1 and "is not Deployment" in done.output and "own" in done.output, done.output
