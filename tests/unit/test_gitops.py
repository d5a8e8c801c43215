"""`oomtuner patch`'s pure parts: the change of a recommendation as a kustomize patch, Helm values and
a kubectl command line, the restated change, references and kind names. Pure: no cluster
(tests/integration/test_gitops_cli.py runs the command against the lab's API server and feeds its
output to the real kubectl, kustomize and helm)."""

from __future__ import annotations

import json
import shlex

import pytest
import yaml

from oomtuner.api import kinds, recommendation, types
from oomtuner.cli import base
from oomtuner.domain import gitops, patch, recommend

MI = 1024 * 1024
APP = patch.MemoryChange(container="app", type=types.ContainerType.CONTAINER, request=192 * MI, limit=384 * MI)
SIDECAR = patch.MemoryChange(container="proxy", type=types.ContainerType.SIDECAR, request=None, limit=128 * MI)


def test_kustomize_patch_is_the_apply_body_with_a_note() -> None:
    text = gitops.kustomize(api_version="apps/v1", kind="Deployment", name="cart", namespace="shop",
                            changes=[APP, SIDECAR], note="from OOMRecommendation shop/deployment-cart\nphase Conflict")
    assert text.startswith("# from OOMRecommendation shop/deployment-cart\n# phase Conflict\n")
    assert yaml.safe_load(text) == patch.apply_body(api_version="apps/v1", kind="Deployment", name="cart",
                                                    namespace="shop", changes=[APP, SIDECAR])
    spec = yaml.safe_load(text)["spec"]["template"]["spec"]
    assert spec["containers"] == [{"name": "app", "resources": {"requests": {"memory": "192Mi"}, "limits": {"memory": "384Mi"}}}]
    assert spec["initContainers"] == [{"name": "proxy", "resources": {"limits": {"memory": "128Mi"}}}]


@pytest.mark.parametrize(("kind", "path"), [("CronJob", ["spec", "jobTemplate", "spec", "template", "spec"]),
                                            ("Job", ["spec", "template", "spec"]), ("Pod", ["spec"])])
def test_kustomize_patch_follows_the_kind_template_path(kind: str, path: list[str]) -> None:
    body = yaml.safe_load(gitops.kustomize(api_version="v1", kind=kind, name="x", namespace="ns", changes=[APP], note=""))
    for key in path:
        body = body[key]
    assert body["containers"][0]["name"] == "app"


def test_helm_values_at_the_values_path() -> None:
    paths = gitops.values_paths(["app.resources"], [APP])
    text = gitops.helm_values([APP], paths, note="n")
    assert yaml.safe_load(text) == {"app": {"resources": {"requests": {"memory": "192Mi"}, "limits": {"memory": "384Mi"}}}}
    both = gitops.values_paths(["app=app.resources", "proxy=mesh.proxy.resources"], [APP, SIDECAR])
    values = yaml.safe_load(gitops.helm_values([APP, SIDECAR], both, note=""))
    assert values["mesh"]["proxy"]["resources"] == {"limits": {"memory": "128Mi"}}


@pytest.mark.parametrize(("specs", "changes", "problem"), [
    (["resources"], [APP, SIDECAR], "2 containers change (app, proxy): give CONTAINER=PATH"),
    (["app=a.resources"], [APP, SIDECAR], "give the values path of container(s) proxy"),
    (["web=a.resources"], [APP], "no change for container(s) web"),
    (["app..resources"], [APP], "expected a dotted path"),
    (["app=a", "app=b"], [APP], "container app is given twice"),
])
def test_values_paths_say_what_is_wrong(specs: list[str], changes: list[patch.MemoryChange], problem: str) -> None:
    with pytest.raises(gitops.GitOpsError, match=problem.replace("(", r"\(").replace(")", r"\)")):
        gitops.values_paths(specs, changes)


def test_helm_values_refuse_paths_that_overlap() -> None:
    with pytest.raises(gitops.GitOpsError, match="runs through"):
        gitops.helm_values([APP, SIDECAR], {"app": ["a", "resources"], "proxy": ["a", "resources", "x"]}, note="")
    with pytest.raises(gitops.GitOpsError, match="share"):
        gitops.helm_values([APP, SIDECAR], {"app": ["a"], "proxy": ["a"]}, note="")


def test_kubectl_command_is_one_shell_quoted_line() -> None:
    line = gitops.kubectl_command(kind="Deployment", name="cart", namespace="shop", changes=[APP])
    assert "\n" not in line
    words = shlex.split(line)
    assert words[:8] == ["kubectl", "patch", "deployment", "cart", "--namespace", "shop", "--type", "strategic"]
    assert json.loads(words[-1]) == patch.template_patch(kind="Deployment", changes=[APP])


def test_kubectl_command_refuses_a_job() -> None:
    with pytest.raises(gitops.GitOpsError, match="cannot be changed in place"):
        gitops.kubectl_command(kind="Job", name="once", namespace="shop", changes=[APP])


def _status(name: str, *, request: str | None, limit: str | None, settled: bool = False) -> recommendation.ContainerStatus:
    return recommendation.ContainerStatus(name=name, recommended=recommendation.Resources(request=request, limit=limit),
                                          settled=settled)


def _current(name: str, request: int | None, limit: int | None) -> recommend.ContainerResources:
    return recommend.ContainerResources(name=name, type=types.ContainerType.CONTAINER, request=request, limit=limit)


def test_restated_change_keeps_values_the_template_has_but_never_lowers() -> None:
    recommended = [_status("app", request="192Mi", limit="384Mi"), _status("web", request="64Mi", limit="128Mi")]
    current = [_current("app", 192 * MI, 384 * MI), _current("web", 100 * MI, 100 * MI)]
    assert patch.memory_changes(recommended, current) == [
        patch.MemoryChange(container="web", type=types.ContainerType.CONTAINER, request=None, limit=128 * MI)]
    restated = patch.memory_changes(recommended, current, restate=True)
    assert restated == [patch.MemoryChange(container="app", type=types.ContainerType.CONTAINER, request=192 * MI, limit=384 * MI),
                        patch.MemoryChange(container="web", type=types.ContainerType.CONTAINER, request=None, limit=128 * MI)]
    settled = [_status("app", request="128Mi", limit="256Mi", settled=True)]
    assert patch.memory_changes(settled, [_current("app", 128 * MI, 256 * MI)]) == []
    assert patch.memory_changes(settled, [_current("app", 128 * MI, 256 * MI)], restate=True)[0].limit == 256 * MI


@pytest.mark.parametrize(("word", "kind"), [("deployment", "Deployment"), ("Deployment", "Deployment"), ("deploy", "Deployment"),
                                            ("deployments.apps", "Deployment"), ("sts", "StatefulSet"), ("cj", "CronJob"),
                                            ("cronjobs.batch", "CronJob"), ("po", "Pod"), ("pods", "Pod"), ("rs", "ReplicaSet")])
def test_kinds_are_named_as_kubectl_names_them(word: str, kind: str) -> None:
    found = kinds.named(word)
    assert found is not None and found.kind == kind


@pytest.mark.parametrize("word", ["service", "deployments.batch", "pods.apps", ""])
def test_other_names_are_no_workload_kind(word: str) -> None:
    assert kinds.named(word) is None


@pytest.mark.parametrize(("ref", "namespace", "expected"), [
    ("shop/deployment-cart", None, ("shop", "deployment-cart")),
    ("shop/deployment/cart", None, ("shop", "deployment/cart")),
    ("deployment-cart", "shop", ("shop", "deployment-cart")),
    ("deployment/cart", "shop", ("shop", "deployment/cart")),
])
def test_references_as_kubectl_takes_them(ref: str, namespace: str | None, expected: tuple[str, str]) -> None:
    assert base.namespaced(ref, namespace, what="NAME") == expected


@pytest.mark.parametrize("ref", ["cart", "/cart", "shop/", ""])
def test_a_reference_without_namespace_is_a_usage_error(ref: str) -> None:
    with pytest.raises(base.Fail) as failed:
        base.namespaced(ref, None, what="NAME")
    assert failed.value.exit_code == 2 and "-n NAMESPACE NAME" in failed.value.message
