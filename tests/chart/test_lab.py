"""The chart against the lab's real API server: dry runs, install and uninstall, and its RBAC in use.

Real: kube-apiserver (validation, defaulting, admission, RBAC authorization, the TokenRequest API),
etcd, kube-controller-manager (Deployment rollouts, garbage collection, the aggregation of the
`view`/`edit`/`admin` ClusterRoles), the scheduler, helm and kubectl, the chart's ServiceAccount
tokens, and the operator and the agent as local processes that talk to the API server with those
tokens only. Played: the kubelet (kwok runs the chart's pods without running the image, and an OOM
kill is written into a pod status as a kubelet writes it, with the admin's credentials); the
Prometheus Operator's CRDs (ServiceMonitor, PrometheusRule), which are stand-ins that accept any
spec; a node's cgroup tree for the agent (plain files shaped like cgroup v2).

The operator scenario needs the lab to itself: if another oomtuner operator watches the lab at the
same time (another engineer's test run), the two would race for the same kills and the test could
not tell whose writes it sees. It checks first with a canary kill and skips, saying so, in that case.
"""

from __future__ import annotations

import base64
import contextlib
import os
import pathlib
import re
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from oomtuner import crdgen
from oomtuner.kube import api
from oomtuner.kube import client as kube_client
from oomtuner_lab import inject
from tests.agent import trees
from tests.chart.conftest import CHART, CI_FILES, CI_IDS, ROOT, agent_node_values, helm, render, run, template_text, tool
from tests.e2e import kit
from tests.e2e.conftest import OperatorProcess, _free_port

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

FIELD_MANAGER = "oomtuner-chart-tests"
MONITORING_CRDS = {
    "servicemonitors.monitoring.coreos.com": ("ServiceMonitor", "servicemonitors"),
    "prometheusrules.monitoring.coreos.com": ("PrometheusRule", "prometheusrules"),
}
RELEASE_LABEL = "app.kubernetes.io/instance"


# ---- fixtures -----------------------------------------------------------------------------------


def _established(kube: api.Client, name: str) -> bool:
    body = kube.get_or_none(f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}") or {}
    return any(c.get("type") == "Established" and c.get("status") == "True"
               for c in (body.get("status") or {}).get("conditions") or [])


@pytest.fixture(scope="module")
def chart_crds(kube: api.Client, crds: list[str]) -> list[str]:
    """The chart's crds/ in the lab (the oomtuner CRDs come from the e2e fixture, the same files)."""
    names = list(crds)
    for path in sorted((CHART / "crds").glob("kopf.dev_*.yaml")):
        body = yaml.safe_load(path.read_text())
        kube.apply(f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{body['metadata']['name']}", body,
                   field_manager=FIELD_MANAGER, force=True)
        names.append(body["metadata"]["name"])
    for name in names:
        kit.wait_for(lambda: _established(kube, name), timeout=30, what=f"CRD {name} Established")
    return names


@pytest.fixture(scope="module")
def monitoring_crds(kube: api.Client) -> None:
    """Stand-ins for the Prometheus Operator's CRDs, unless real ones are installed: they accept any
    spec, so the dry run checks everything else in the objects (metadata, names, namespaces)."""
    for name, (kind, plural) in MONITORING_CRDS.items():
        if kube.get_or_none(f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}") is not None:
            continue
        body = {
            "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": {"name": name, "labels": {"oomtuner.dev/test-stand-in": "true"}},
            "spec": {"group": "monitoring.coreos.com", "scope": "Namespaced",
                     "names": {"kind": kind, "plural": plural, "singular": kind.lower(), "listKind": f"{kind}List"},
                     "versions": [{"name": "v1", "served": True, "storage": True, "schema": {"openAPIV3Schema": {
                         "type": "object", "properties": {"spec": {"type": "object",
                                                                   "x-kubernetes-preserve-unknown-fields": True}}}}}]},
        }
        kube.apply(f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}", body, field_manager=FIELD_MANAGER)
    for name in MONITORING_CRDS:
        kit.wait_for(lambda: _established(kube, name), timeout=30, what=f"CRD {name} Established")


def _ensure_namespace(kube: api.Client, name: str) -> bool:
    """Create the namespace if missing (after an earlier run's deletion ends); True when created here."""
    existing = kube.get_or_none(f"/api/v1/namespaces/{name}")
    if existing is not None and not existing["metadata"].get("deletionTimestamp"):
        return False
    if existing is not None:
        kit.wait_for(lambda: kube.get_or_none(f"/api/v1/namespaces/{name}") is None, timeout=60,
                     what=f"namespace {name} to finish terminating")
    with contextlib.suppress(api.Conflict):
        kube.create("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
        return True
    return False


@pytest.fixture(scope="module")
def ci_namespaces(kube: api.Client) -> Iterator[list[str]]:
    """The namespaces that ci/namespaced-values.yaml watches (they must exist before an install)."""
    names = yaml.safe_load((CHART / "ci" / "namespaced-values.yaml").read_text())["operator"]["namespaces"]
    created = [n for n in names if _ensure_namespace(kube, n)]
    yield names
    for name in created:
        with contextlib.suppress(api.ApiError):
            kube.delete(f"/api/v1/namespaces/{name}")


def _kubectl(*args: str, kubeconfig: str, input: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    return run([tool("kubectl"), "--kubeconfig", kubeconfig, *args], input=input, check=check)


# ---- server-side dry runs -----------------------------------------------------------------------


@pytest.mark.parametrize("values", CI_FILES, ids=CI_IDS)
def test_rendered_chart_passes_a_server_side_dry_run(values: pathlib.Path, kubeconfig: str, namespace: str,
                                                     chart_crds: list[str], monitoring_crds: None,
                                                     ci_namespaces: list[str]) -> None:
    text = template_text(values, namespace=namespace, release="dry", include_crds=True).stdout
    objects = [d for d in yaml.safe_load_all(text) if d]
    done = _kubectl("apply", "--server-side", "--dry-run=server", "--force-conflicts",
                    f"--field-manager={FIELD_MANAGER}", "-f", "-", kubeconfig=kubeconfig, input=text, check=False)
    assert done.returncode == 0, done.stderr
    applied = [line for line in done.stdout.splitlines() if line.endswith("(server dry run)")]
    assert len(applied) == len(objects), done.stdout
    kinds = {d["kind"] for d in objects}
    assert {"Deployment", "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Service",
            "CustomResourceDefinition"} <= kinds


def test_the_dry_run_does_reject_what_the_api_server_would(kubeconfig: str, namespace: str, chart_crds: list[str]) -> None:
    """A control: a label the schema lets through but Kubernetes refuses makes the dry run fail."""
    text = template_text(namespace=namespace, release="dry", sets=["podLabels.bad/key/name=x"]).stdout
    done = _kubectl("apply", "--server-side", "--dry-run=server", f"--field-manager={FIELD_MANAGER}", "-f", "-",
                    kubeconfig=kubeconfig, input=text, check=False)
    assert done.returncode != 0 and "bad/key/name" in done.stderr


# ---- install and uninstall ----------------------------------------------------------------------


def _listable_kinds(kubeconfig: str) -> list[str]:
    names = _kubectl("api-resources", "--verbs=list", "-o", "name", kubeconfig=kubeconfig).stdout.split()
    return [n for n in names if n not in ("events", "events.events.k8s.io")]


def _labelled(kubeconfig: str, release: str) -> list[str]:
    kinds = ",".join(_listable_kinds(kubeconfig))
    done = _kubectl("get", kinds, "--all-namespaces", "-l", f"{RELEASE_LABEL}={release}", "-o", "name",
                    kubeconfig=kubeconfig)
    return done.stdout.split()


@pytest.mark.parametrize("values", [CHART / "ci" / "all-features-values.yaml", CHART / "ci" / "namespaced-values.yaml"],
                         ids=["all-features", "namespaced"])
def test_install_runs_and_uninstall_leaves_only_the_crds(values: pathlib.Path, kube: api.Client, kubeconfig: str,
                                                         namespace: str, chart_crds: list[str], monitoring_crds: None,
                                                         ci_namespaces: list[str]) -> None:
    release = f"ci-{uuid.uuid4().hex[:6]}"
    rendered = render(values, namespace=namespace, release=release, sets=["crds.enabled=false"])
    agent_args, agent_nodes = agent_node_values(kube)
    # The CRDs are the e2e fixture's here (crds/, applied with kubectl's server-side apply), so the
    # release leaves them alone, as a second release in a cluster must.
    helm("install", release, str(CHART), "-n", namespace, "-f", str(values), "--set", "crds.enabled=false", *agent_args,
         "--wait", "--timeout", "3m", kubeconfig=kubeconfig, timeout=240)
    try:
        deployment = kube.get(f"/apis/apps/v1/namespaces/{namespace}/deployments/{release}-oomtuner")
        assert deployment["status"].get("readyReplicas") == deployment["spec"]["replicas"] == 2
        pods = kube.list(f"/api/v1/namespaces/{namespace}/pods",
                         query={"labelSelector": f"{RELEASE_LABEL}={release},app.kubernetes.io/component=operator"})
        assert len({p["spec"]["nodeName"] for p in pods}) == 2, "the anti-affinity spreads the replicas"
        assert all(p["spec"]["serviceAccountName"] == f"{release}-oomtuner" for p in pods)
        if any(d["kind"] == "DaemonSet" for d in rendered):
            def on_every_node() -> bool:  # other tests may add and remove (tainted) nodes meanwhile
                status = kube.get(f"/apis/apps/v1/namespaces/{namespace}/daemonsets/{release}-oomtuner-agent")["status"]
                selector = ",".join(f"{k}={v}" for k, v in agent_nodes.items()) or None
                nodes = kube.list("/api/v1/nodes", query={"labelSelector": selector})
                return status["desiredNumberScheduled"] == status.get("numberReady") == len(nodes)

            kit.wait_for(on_every_node, timeout=60, what="one ready agent on every node, tainted ones too")
        expected = {(d["kind"], d["metadata"].get("namespace"), d["metadata"]["name"]) for d in rendered
                    if "helm.sh/hook" not in (d["metadata"].get("annotations") or {})}  # hooks: `helm test` only
        present = _labelled(kubeconfig, release)
        for kind, ns, name in expected:
            assert any(p.split("/", 1)[1] == name and p.split("/", 1)[0].split(".")[0] == kind.lower() for p in present), \
                f"{kind} {ns}/{name} was not installed"
    finally:
        helm("uninstall", release, "-n", namespace, "--wait", "--timeout", "2m", kubeconfig=kubeconfig, timeout=180)

    # Pods go with their owners through the garbage collector; a pod on a node that another test
    # deleted meanwhile waits for the pod GC (about a minute).
    kit.wait_for(lambda: not _labelled(kubeconfig, release), timeout=150, interval=2,
                 what=f"every object of release {release} to be gone")
    assert _labelled(kubeconfig, release) == []
    for name in chart_crds:
        assert _established(kube, name), f"CRD {name} must stay after an uninstall"


# ---- CRDs that upgrade -----------------------------------------------------------------------------


def _chart_without_policy_field(tmp_path: pathlib.Path, field: str) -> pathlib.Path:
    """A copy of the chart whose OOMPolicy CRD lacks `spec.<field>`, as an older chart's would."""
    copy = tmp_path / "oomtuner"
    shutil.copytree(CHART, copy)
    name = "oomtuner.dev_oompolicies.yaml"
    body = yaml.safe_load((ROOT / "crds" / name).read_text())
    del body["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"][field]
    (copy / crdgen.CHART_TEMPLATES / name).write_text(crdgen.chart_template(crdgen.HEADER + yaml.safe_dump(body, sort_keys=False)))
    return copy


def _adopt_crds(kubeconfig: str, names: list[str], *, release: str | None, namespace: str) -> None:
    """README, "Upgrading the CRDs": CRDs applied before (by kubectl, or an older chart's crds/) are
    given to a release by Helm's ownership label and annotations; `release=None` takes them back."""
    for name in names:
        if release is None:
            _kubectl("label", "crd", name, "app.kubernetes.io/managed-by-", kubeconfig=kubeconfig)
            _kubectl("annotate", "crd", name, "meta.helm.sh/release-name-", "meta.helm.sh/release-namespace-",
                     "helm.sh/resource-policy-", kubeconfig=kubeconfig)
        else:
            _kubectl("label", "--overwrite", "crd", name, "app.kubernetes.io/managed-by=Helm", kubeconfig=kubeconfig)
            _kubectl("annotate", "--overwrite", "crd", name, f"meta.helm.sh/release-name={release}",
                     f"meta.helm.sh/release-namespace={namespace}", kubeconfig=kubeconfig)


def test_helm_upgrade_carries_a_crd_schema_change(kube: api.Client, kubeconfig: str, namespace: str,
                                                  chart_crds: list[str], tmp_path: pathlib.Path) -> None:
    """Install a chart whose OOMPolicy CRD lacks `spec.vpa`, upgrade to this chart, and the field is
    served: a policy using it is admitted with strict field validation, and `kubectl explain` describes
    it. The CRDs stay through `helm uninstall` (crds.keep), and `kubectl apply --server-side -f crds/`
    still applies them."""
    ours = [yaml.safe_load(p.read_text())["metadata"]["name"] for p in sorted((ROOT / "crds").glob("*.yaml"))]
    release = f"crd-{uuid.uuid4().hex[:6]}"
    policy = yaml.safe_dump({"apiVersion": "oomtuner.dev/v1alpha1", "kind": "OOMPolicy",
                             "metadata": {"name": "fleet", "namespace": namespace},
                             "spec": {"mode": "Auto", "vpa": "RaiseMinAllowed"}})
    _adopt_crds(kubeconfig, ours, release=release, namespace=namespace)
    try:
        helm("install", release, str(_chart_without_policy_field(tmp_path, "vpa")), "-n", namespace, "--set", "replicaCount=1",
             kubeconfig=kubeconfig)
        refused = _kubectl("create", "--validate=strict", "-f", "-", kubeconfig=kubeconfig, input=policy, check=False)
        assert refused.returncode != 0 and 'unknown field "spec.vpa"' in refused.stderr, refused.stderr

        helm("upgrade", release, str(CHART), "-n", namespace, "--reuse-values", kubeconfig=kubeconfig)
        kit.wait_for(lambda: "vpa" in kube.get(f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{ours[0]}")[
            "spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"], timeout=30,
            what="the upgraded CRD")
        kit.wait_for(lambda: _kubectl("create", "--validate=strict", "-f", "-", kubeconfig=kubeconfig, input=policy,
                                      check=False).returncode == 0, timeout=30, what="the policy with spec.vpa to be admitted")
        assert kube.get(f"/apis/oomtuner.dev/v1alpha1/namespaces/{namespace}/oompolicies/fleet")["spec"]["vpa"] == "RaiseMinAllowed"

        def explain(field: str) -> str:  # the API server publishes a CRD's OpenAPI a moment after it changes
            done = _kubectl("explain", field, f"--cache-dir={tmp_path / 'kubectl-cache'}", kubeconfig=kubeconfig, check=False)
            return " ".join(done.stdout.split())

        kit.wait_for(lambda: "RaiseMinAllowed raises the VPA's minAllowed.memory" in explain("oompolicy.spec.vpa"), timeout=60,
                     what="kubectl explain oompolicy.spec.vpa to describe the field")
        assert "When the container died" in explain("oomrecommendation.status.kills.at")
        crd = kube.get(f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{ours[0]}")
        assert crd["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    finally:
        helm("uninstall", release, "-n", namespace, "--wait", kubeconfig=kubeconfig, timeout=180, check=False)
    for name in ours:
        assert _established(kube, name), f"CRD {name} must stay after an uninstall (crds.keep)"
    assert kube.get_or_none(f"/apis/oomtuner.dev/v1alpha1/namespaces/{namespace}/oompolicies/fleet") is not None
    _adopt_crds(kubeconfig, ours, release=None, namespace=namespace)
    applied = _kubectl("apply", "--server-side", "--force-conflicts", "--field-manager=oomtuner-e2e", "-f", "crds/",
                       kubeconfig=kubeconfig)
    assert applied.stdout.count("serverside-applied") == len(ours), applied.stdout


# ---- helm test ----------------------------------------------------------------------------------


def _finish_like_a_kubelet(kube: api.Client, pod: dict[str, Any], *, args: list[str], url: str) -> int:
    """Run the test pod's command here, against `url` instead of the Service's name (the lab has no
    cluster DNS), and write its outcome into the pod's status as a kubelet would. kwok runs the pod
    but not its image, and never finishes a pod that no Job owns."""
    command = pod["spec"]["containers"][0]["command"]
    assert command[:2] == ["python", "-c"] and command[3].endswith("/healthz"), command
    done = subprocess.run([sys.executable, "-c", command[2], url, *args], capture_output=True, text=True, timeout=120)
    path = f"/api/v1/namespaces/{pod['metadata']['namespace']}/pods/{pod['metadata']['name']}/status"
    body = kube.get(path)
    terminated = {"exitCode": done.returncode, "reason": "Completed" if done.returncode == 0 else "Error",
                  "startedAt": kit.utc().strftime("%Y-%m-%dT%H:%M:%SZ"), "finishedAt": kit.utc().strftime("%Y-%m-%dT%H:%M:%SZ")}
    body["status"]["phase"] = "Succeeded" if done.returncode == 0 else "Failed"
    body["status"]["containerStatuses"] = [{**status, "ready": False, "state": {"terminated": terminated}}
                                          for status in body["status"].get("containerStatuses") or []]
    kube.replace(path, body)
    return done.returncode


def test_helm_test_asks_the_operators_healthz(kube: api.Client, kubeconfig: str, namespace: str, chart_crds: list[str],
                                              tmp_path: pathlib.Path) -> None:
    """`helm test` creates the test pod; its command (run here, as the pod would run it) gets 200 from
    a real operator's /healthz and the test passes, and fails against a port nobody answers."""
    release = f"t-{uuid.uuid4().hex[:6]}"
    helm("install", release, str(CHART), "-n", namespace, "--set", "crds.enabled=false", "--set", "replicaCount=1",
         "--set", "tests.timeoutSeconds=5", kubeconfig=kubeconfig)
    operator = OperatorProcess(kubeconfig=kubeconfig, log_dir=tmp_path)
    operator.start()
    pod_path = f"/api/v1/namespaces/{namespace}/pods/{release}-oomtuner-test-healthz"
    try:
        for url, code, passes in ((f"http://127.0.0.1:{operator.liveness_port}/healthz", 0, True),
                                  (f"http://127.0.0.1:{_free_port()}/healthz", 1, False)):
            env = {"KUBECONFIG": kubeconfig, "HELM_CACHE_HOME": str(ROOT / ".pytest_cache" / "helm" / "cache"),
                   "HELM_CONFIG_HOME": str(ROOT / ".pytest_cache" / "helm" / "config"),
                   "HELM_DATA_HOME": str(ROOT / ".pytest_cache" / "helm" / "data")}
            tester = subprocess.Popen([tool("helm"), "test", release, "-n", namespace, "--timeout", "2m"],
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env={**os.environ, **env})
            try:
                pod = kit.wait_for(lambda: (b := kube.get_or_none(pod_path)) and b.get("status", {}).get("phase") == "Running" and b,
                                   timeout=60, what="the test pod, Running")
                assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
                assert _finish_like_a_kubelet(kube, pod, args=pod["spec"]["containers"][0]["command"][4:], url=url) == code
                output, _ = tester.communicate(timeout=150)
            finally:
                if tester.poll() is None:
                    tester.kill()
            assert (tester.returncode == 0) == passes, output
            assert ("Phase:          Succeeded" if passes else "Phase:          Failed") in output, output
    finally:
        operator.stop()
        helm("uninstall", release, "-n", namespace, "--wait", kubeconfig=kubeconfig, timeout=180, check=False)


# ---- RBAC with the chart's own ServiceAccount token -----------------------------------------------


class Release:
    def __init__(self, *, name: str, namespace: str) -> None:
        self.name = name
        self.namespace = namespace
        self.fullname = f"{name}-oomtuner"
        self.operator_sa = self.fullname
        self.agent_sa = f"{self.fullname}-agent"
        self.dashboard_sa = f"{self.fullname}-dashboard"


@pytest.fixture(scope="module")
def release(kube: api.Client, kubeconfig: str, chart_crds: list[str]) -> Iterator[Release]:
    """The chart installed with its defaults (2 replicas, peering), the agent and the web dashboard on."""
    rel = Release(name=f"rbac-{uuid.uuid4().hex[:6]}", namespace=f"chart-{uuid.uuid4().hex[:6]}")
    kube.create("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": rel.namespace}})
    helm("install", rel.name, str(CHART), "-n", rel.namespace, "--set", "agent.enabled=true", "--set", "dashboard.web.enabled=true",
         *agent_node_values(kube)[0], "--set", "crds.enabled=false",
         "--wait", "--timeout", "3m", kubeconfig=kubeconfig, timeout=240)
    yield rel
    helm("uninstall", rel.name, "-n", rel.namespace, "--wait", kubeconfig=kubeconfig, timeout=180, check=False)
    with contextlib.suppress(api.ApiError):
        kube.delete(f"/api/v1/namespaces/{rel.namespace}")


def _token(kube: api.Client, *, namespace: str, service_account: str, pod: dict[str, Any] | None = None) -> str:
    """A token of the ServiceAccount from the TokenRequest API, as a kubelet would get it: bound to
    `pod` when given, so that it carries the pod's node (authentication.kubernetes.io/node-name)."""
    spec: dict[str, Any] = {"expirationSeconds": 3600}
    if pod is not None:
        spec["boundObjectRef"] = {"apiVersion": "v1", "kind": "Pod", "name": pod["metadata"]["name"],
                                  "uid": pod["metadata"]["uid"]}
    body = kube.create(f"/api/v1/namespaces/{namespace}/serviceaccounts/{service_account}/token", {
        "apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": spec})
    token = body["status"]["token"]
    assert token.count(".") == 2, "a JWT"
    return str(token)


AGENT_NODE = "lab-node-small"


def _agent_pod(kube: api.Client, release: Release, node: str) -> dict[str, Any]:
    """The release's agent pod on `node` (kwok runs the DaemonSet's pods)."""
    def found() -> dict[str, Any] | None:
        pods = kube.list(f"/api/v1/namespaces/{release.namespace}/pods",
                         query={"labelSelector": "app.kubernetes.io/component=agent", "fieldSelector": f"spec.nodeName={node}"})
        return pods[0] if pods else None
    return kit.wait_for(found, timeout=60, what=f"the agent pod on {node}")


def _token_kubeconfig(admin_kubeconfig: str, token: str, path: pathlib.Path) -> str:
    """The admin kubeconfig's cluster (server and CA), with the token as the only credential."""
    admin = yaml.safe_load(pathlib.Path(admin_kubeconfig).read_text())
    context = next(c for c in admin["contexts"] if c["name"] == admin["current-context"])["context"]
    cluster = dict(next(c for c in admin["clusters"] if c["name"] == context["cluster"])["cluster"])
    if "certificate-authority" in cluster:  # inline it: the file may be relative to the admin kubeconfig
        ca = (pathlib.Path(admin_kubeconfig).parent / cluster.pop("certificate-authority")).read_bytes()
        cluster["certificate-authority-data"] = base64.b64encode(ca).decode()
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "sa",
        "clusters": [{"name": "lab", "cluster": cluster}],
        "users": [{"name": "sa", "user": {"token": token}}],
        "contexts": [{"name": "sa", "context": {"cluster": "lab", "user": "sa"}}],
    }))
    return str(path)


@pytest.fixture(scope="module")
def operator_kubeconfig(kube: api.Client, kubeconfig: str, release: Release,
                        tmp_path_factory: pytest.TempPathFactory) -> str:
    token = _token(kube, namespace=release.namespace, service_account=release.operator_sa)
    return _token_kubeconfig(kubeconfig, token, tmp_path_factory.mktemp("operator-token") / "kubeconfig")


@pytest.fixture(scope="module")
def agent_kubeconfig(kube: api.Client, kubeconfig: str, release: Release,
                     tmp_path_factory: pytest.TempPathFactory) -> str:
    """The token of the agent pod on AGENT_NODE, as the kubelet mounts it into that pod."""
    token = _token(kube, namespace=release.namespace, service_account=release.agent_sa,
                   pod=_agent_pod(kube, release, AGENT_NODE))
    return _token_kubeconfig(kubeconfig, token, tmp_path_factory.mktemp("agent-token") / "kubeconfig")


def _can(client: api.Client, *, verb: str, resource: str, group: str = "", namespace: str | None = None,
         subresource: str | None = None, name: str | None = None) -> bool:
    attributes = {k: v for k, v in {"verb": verb, "group": group, "resource": resource, "namespace": namespace,
                                     "subresource": subresource, "name": name}.items() if v is not None}
    review = client.create("/apis/authorization.k8s.io/v1/selfsubjectaccessreviews", {
        "apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
        "spec": {"resourceAttributes": attributes}})
    return bool(review["status"].get("allowed"))


# (verb, group, resource, subresource, allowed) for the operator's token, in any namespace.
OPERATOR_ACCESS = [
    ("watch", "", "pods", None, True), ("list", "", "nodes", None, True), ("get", "", "nodes", None, True),
    ("watch", "", "events", None, True), ("create", "", "events", None, True),
    ("list", "", "limitranges", None, True), ("list", "", "resourcequotas", None, True),
    ("patch", "apps", "deployments", None, True), ("patch", "apps", "statefulsets", None, True),
    ("patch", "apps", "daemonsets", None, True), ("patch", "apps", "replicasets", None, True),
    ("patch", "batch", "cronjobs", None, True), ("get", "batch", "jobs", None, True),
    ("create", "oomtuner.dev", "oomrecommendations", None, True),
    ("update", "oomtuner.dev", "oomrecommendations", "status", True),
    ("patch", "oomtuner.dev", "oompolicies", "status", True),
    ("watch", "apiextensions.k8s.io", "customresourcedefinitions", None, True),
    ("list", "autoscaling", "horizontalpodautoscalers", None, True),
    ("patch", "autoscaling.k8s.io", "verticalpodautoscalers", None, True),
    # Not allowed: anything else.
    ("get", "", "secrets", None, False), ("list", "", "configmaps", None, False),
    ("patch", "", "pods", None, False), ("update", "", "pods", "status", False), ("delete", "", "pods", None, False),
    ("patch", "", "pods", "resize", False), ("create", "", "pods", "eviction", False),
    ("patch", "autoscaling", "horizontalpodautoscalers", None, False),
    ("update", "apps", "deployments", None, False), ("delete", "apps", "deployments", None, False),
    ("create", "apps", "deployments", None, False), ("patch", "apps", "deployments", "scale", False),
    ("patch", "batch", "jobs", None, False), ("patch", "", "nodes", None, False),
    ("patch", "", "events", None, False), ("delete", "", "events", None, False),
    ("create", "rbac.authorization.k8s.io", "clusterroles", None, False),
    ("create", "", "serviceaccounts", "token", False),
    ("patch", "apiextensions.k8s.io", "customresourcedefinitions", None, False),
]


def test_operator_token_has_exactly_the_reviewed_permissions(operator_kubeconfig: str, namespace: str,
                                                            release: Release) -> None:
    client = kube_client.connect(kubeconfig=operator_kubeconfig)
    wrong = [(verb, group, resource, sub, allowed) for verb, group, resource, sub, allowed in OPERATOR_ACCESS
             if _can(client, verb=verb, group=group, resource=resource, subresource=sub, namespace=namespace) != allowed]
    assert not wrong, f"the API server decides otherwise for: {wrong}"
    assert _can(client, verb="patch", group="kopf.dev", resource="clusterkopfpeerings", name=release.fullname)
    assert not _can(client, verb="patch", group="kopf.dev", resource="clusterkopfpeerings", name="someone-else")


def test_operator_token_is_refused_writes_it_should_not_make(kube: api.Client, operator_kubeconfig: str,
                                                            namespace: str) -> None:
    kube.create(f"/api/v1/namespaces/{namespace}/secrets",
                {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "db"}, "stringData": {"password": "x"}})
    kube.create(f"/apis/apps/v1/namespaces/{namespace}/deployments", kit.deployment("web"))
    client = kube_client.connect(kubeconfig=operator_kubeconfig)
    attempts = {
        "patch a Secret": lambda: client.merge_patch(f"/api/v1/namespaces/{namespace}/secrets/db",
                                                     {"stringData": {"password": "stolen"}}),
        "read a Secret": lambda: client.get(f"/api/v1/namespaces/{namespace}/secrets/db"),
        "create a ClusterRole": lambda: client.create("/apis/rbac.authorization.k8s.io/v1/clusterroles", {
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
            "metadata": {"name": f"escalate-{uuid.uuid4().hex[:6]}"},
            "rules": [{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}]}),
        "delete a Deployment": lambda: client.delete(f"/apis/apps/v1/namespaces/{namespace}/deployments/web"),
        "scale a Deployment": lambda: client.merge_patch(f"/apis/apps/v1/namespaces/{namespace}/deployments/web/scale",
                                                         {"spec": {"replicas": 5}}),
    }
    for what, attempt in attempts.items():
        with pytest.raises(api.ApiError) as refused:
            attempt()
        assert refused.value.status == 403, f"{what}: {refused.value}"
    assert kube.get(f"/api/v1/namespaces/{namespace}/secrets/db")["data"]["password"] == base64.b64encode(b"x").decode()
    assert kube.get(f"/apis/apps/v1/namespaces/{namespace}/deployments/web")["spec"]["replicas"] == 1


def test_in_place_resize_value_grants_pods_resize(kubeconfig: str, operator_kubeconfig: str, namespace: str,
                                                  release: Release) -> None:
    client = kube_client.connect(kubeconfig=operator_kubeconfig)
    assert not _can(client, verb="patch", resource="pods", subresource="resize", namespace=namespace)
    helm("upgrade", release.name, str(CHART), "-n", release.namespace, "--reuse-values",
         "--set", "operator.inPlaceResize=true", kubeconfig=kubeconfig)
    try:
        assert _can(client, verb="patch", resource="pods", subresource="resize", namespace=namespace)
        assert not _can(client, verb="patch", resource="pods", namespace=namespace)
    finally:
        helm("upgrade", release.name, str(CHART), "-n", release.namespace, "--reuse-values",
             "--set", "operator.inPlaceResize=false", kubeconfig=kubeconfig)
    assert not _can(client, verb="patch", resource="pods", subresource="resize", namespace=namespace)


def test_view_and_edit_roles_cover_the_custom_resources(kube: api.Client, namespace: str, release: Release) -> None:
    for user, role in (("alice", "view"), ("bob", "edit")):
        kube.create(f"/apis/rbac.authorization.k8s.io/v1/namespaces/{namespace}/rolebindings", {
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": {"name": user},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}]})

    def can(user: str, verb: str, resource: str, subresource: str | None = None) -> bool:
        attributes = {"verb": verb, "group": "oomtuner.dev", "resource": resource, "namespace": namespace}
        if subresource:
            attributes["subresource"] = subresource
        review = kube.create("/apis/authorization.k8s.io/v1/subjectaccessreviews", {
            "apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
            "spec": {"user": user, "groups": ["system:authenticated"], "resourceAttributes": attributes}})
        return bool(review["status"].get("allowed"))

    # The controller-manager aggregates the labelled ClusterRoles into view/edit/admin.
    kit.wait_for(lambda: can("alice", "list", "oomrecommendations") and can("bob", "patch", "oomrecommendations"),
                 timeout=30, what="the aggregated roles to reach view and edit")
    assert can("alice", "get", "oompolicies") and can("alice", "watch", "oomrecommendations")
    assert not can("alice", "patch", "oomrecommendations") and not can("alice", "create", "oompolicies")
    assert can("bob", "create", "oompolicies") and can("bob", "delete", "oomrecommendations")
    assert not can("bob", "update", "oomrecommendations", "status"), "the status is the operator's"


# ---- the operator, running with the chart's token ---------------------------------------------------


class TokenOperator(OperatorProcess):
    """`oomtuner run` with kopf peering (not --standalone), as the chart's replicas run it."""

    def __init__(self, *, args: list[str], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.args = args

    def start(self) -> None:
        self.metrics_port, self.liveness_port = _free_port(), _free_port()
        env = {**os.environ, "KUBECONFIG": self.kubeconfig, "OOMTUNER_LOG_FORMAT": "text", **self.extra_env}
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "oomtuner", "run", *self.args,
                 "--metrics-port", str(self.metrics_port), "--liveness-port", str(self.liveness_port)],
                stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
        self.starts += 1
        kit.wait_for(self._healthy, timeout=60, what="the operator's /healthz")


def _another_operator_is_watching(kube: api.Client, core_v1: Any) -> bool:
    """Kill a canary container with no operator of ours running: does a recommendation appear?"""
    canary = f"chart-canary-{uuid.uuid4().hex[:6]}"
    kube.create("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": canary}})
    try:
        kit.wait_for(lambda: kube.get_or_none(f"/api/v1/namespaces/{canary}/serviceaccounts/default"), timeout=30,
                     what="the canary namespace")
        kube.create(f"/apis/apps/v1/namespaces/{canary}/deployments", kit.deployment("canary"))
        pod = kit.running_pods(kube, canary, "canary")[0]
        inject.oom_kill(core_v1, namespace=canary, pod=pod["metadata"]["name"], container="app")
        deadline = time.monotonic() + 8
        while time.monotonic() < deadline:
            if kit.recommendation(kube, canary, "deployment-canary") is not None:
                return True
            time.sleep(0.5)
        return False
    finally:
        with contextlib.suppress(api.ApiError):
            kube.delete(f"/api/v1/namespaces/{canary}")


def _template_limit(kube: api.Client, namespace: str) -> str | None:
    dep = kube.get(f"/apis/apps/v1/namespaces/{namespace}/deployments/web")
    return dep["spec"]["template"]["spec"]["containers"][0]["resources"].get("limits", {}).get("memory")


@pytest.mark.timeout(360)
@pytest.mark.writes_pod_status
def test_operator_with_the_chart_token_passes_the_auto_scenario(
    kube: api.Client, core_v1: Any, release: Release, operator_kubeconfig: str, namespace: str,
    tmp_path: pathlib.Path,
) -> None:
    if _another_operator_is_watching(kube, core_v1):
        pytest.skip("another oomtuner operator is watching the lab (a concurrent test run): "
                    "whose writes this scenario sees could not be told")
    manager = "oomtuner-chart-token"
    identity = f"chart-test-{uuid.uuid4().hex[:6]}"
    operator = TokenOperator(
        kubeconfig=operator_kubeconfig, log_dir=tmp_path,
        args=["--all-namespaces", "--priority", "100"],
        extra_env={"OOMTUNER_PEERING_NAME": release.fullname, "OOMTUNER_FIELD_MANAGER": manager, "POD_ID": identity,
                   "OOMTUNER_COOLDOWN": "10m"},
    )
    operator.start()
    try:
        peering = kit.wait_for(
            lambda: (kube.get(f"/apis/kopf.dev/v1/clusterkopfpeerings/{release.fullname}").get("status") or {}).get(identity),
            timeout=30, what="the operator's keep-alive in the release's ClusterKopfPeering")
        assert peering["priority"] == 100

        kube.create(f"/apis/oomtuner.dev/v1alpha1/namespaces/{namespace}/oompolicies", {
            "apiVersion": "oomtuner.dev/v1alpha1", "kind": "OOMPolicy", "metadata": {"name": "auto"},
            "spec": {"mode": "Auto", "cooldown": "10m"}})
        policy = kit.wait_for(lambda: (kube.get(f"/apis/oomtuner.dev/v1alpha1/namespaces/{namespace}/oompolicies/auto")
                                       .get("status") or {}).get("conditions"), timeout=30, what="the policy's status")
        assert policy[0]["type"] == "Valid" and policy[0]["status"] == "True"

        kube.create(f"/apis/apps/v1/namespaces/{namespace}/deployments", kit.deployment("web", replicas=2))
        pods = kit.running_pods(kube, namespace, "web", count=2)
        inject.oom_kill(core_v1, namespace=namespace, pod=pods[0]["metadata"]["name"], container="app", at=kit.utc())

        kit.wait_for(lambda: _template_limit(kube, namespace) == "384Mi", timeout=60, what="the Deployment to get 384Mi")
        dep = kube.get(f"/apis/apps/v1/namespaces/{namespace}/deployments/web")
        owners = {m["manager"]: m for m in dep["metadata"]["managedFields"]}
        assert manager in owners and owners[manager]["operation"] == "Apply", \
            f"the patch must come from the operator with the chart's token, managers: {sorted(owners)}"
        assert dep["spec"]["template"]["spec"]["containers"][0]["resources"]["requests"]["memory"] == "192Mi"

        def rolled_out() -> list[dict[str, Any]] | None:
            fresh = kube.list(f"/api/v1/namespaces/{namespace}/pods", query={"labelSelector": "app=web"})
            new = [p for p in fresh if p["spec"]["containers"][0]["resources"]["limits"]["memory"] == "384Mi"
                   and (p.get("status") or {}).get("phase") == "Running" and not p["metadata"].get("deletionTimestamp")]
            return new if len(new) >= 2 else None

        new_pods = kit.wait_for(rolled_out, timeout=90, what="the rollout to 384Mi")
        rec = kit.wait_recommendation(kube, namespace, "deployment-web", lambda r: r["status"].get("phase") == "Applied")
        assert rec["status"]["appliedAt"] and rec["status"]["totalKills"] == 1
        kit.wait_for(lambda: kit.events_for(kube, namespace, reason="OOMKillDetected", name="web"), what="OOMKillDetected")
        kit.wait_for(lambda: kit.events_for(kube, namespace, reason="ResourcesPatched", name="web"), what="ResourcesPatched")
        assert len(kit.events_for(kube, namespace, reason="ResourcesPatched", name="web")) == 1

        # A second kill inside the cooldown is recorded but not patched again.
        inject.oom_kill(core_v1, namespace=namespace, pod=new_pods[0]["metadata"]["name"], container="app", at=kit.utc())
        rec = kit.wait_recommendation(kube, namespace, "deployment-web", lambda r: r["status"]["totalKills"] == 2)
        applied = next(c for c in rec["status"]["conditions"] if c["type"] == "Applied")
        assert applied["reason"] == "CooldownActive"
        assert _template_limit(kube, namespace) == "384Mi"
    except BaseException:
        print("---- operator log ----\n" + operator.log_tail())
        raise
    finally:
        operator.stop()
    assert not _rbac_denials(operator.log_path), "the operator was refused something it needs:\n" + \
        "\n".join(_rbac_denials(operator.log_path)[:20])


def _rbac_denials(log: pathlib.Path) -> list[str]:
    """Log lines about an authorization denial (not other 403s, such as a namespace being deleted)."""
    pattern = re.compile(r'cannot [a-z]+ resource "|Not enough permissions')
    return [line for line in log.read_text(errors="replace").splitlines() if pattern.search(line)]


# ---- the agent, running with its token ----------------------------------------------------------


@pytest.mark.writes_pod_status
def test_agent_with_its_token_posts_the_child_kill_event(
    kube: api.Client, kubeconfig: str, agent_kubeconfig: str, release: Release, namespace: str,
    tmp_path: pathlib.Path,
) -> None:
    node = AGENT_NODE
    pods = f"/api/v1/namespaces/{namespace}/pods"
    kube.create(pods, {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "worker"},
                       "spec": {"nodeName": node, "containers": [{
                           "name": "app", "image": kit.IMAGE,
                           "resources": {"requests": {"memory": "16Mi"}, "limits": {"memory": "32Mi"}}}]}})
    running = kit.wait_for(lambda: (b := kube.get(f"{pods}/worker")).get("status", {}).get("phase") == "Running" and b,
                           timeout=60, what="kwok to run the pod")
    uid = running["metadata"]["uid"]
    container_id = trees.new_container_id()
    statuses = running["status"]["containerStatuses"]
    statuses[0]["containerID"] = f"containerd://{container_id}"
    kube.merge_patch(f"{pods}/worker/status", {"status": {"containerStatuses": statuses}})

    # The agent's command line as the chart renders it; only the paths and the port are local.
    daemonset = next(d for d in render(sets=["agent.enabled=true"]) if d["kind"] == "DaemonSet")
    chart_args = daemonset["spec"]["template"]["spec"]["containers"][0]["args"]
    root = tmp_path / "cgroup"
    kubepods = trees.kubepods_dir(trees.hierarchy(root, "v2"), "cgroupfs")
    kubepods.mkdir(parents=True)
    port = _free_port()
    log_path = tmp_path / "agent.log"
    with open(log_path, "wb") as log:
        agent = subprocess.Popen(
            [sys.executable, "-m", "oomtuner", *chart_args, f"--cgroup-root={root}", f"--state-dir={tmp_path / 'state'}",
             f"--metrics-port={port}", "--interval=0.2", "--log-format=text", "--kubeconfig", agent_kubeconfig],
            stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, env={**os.environ, "NODE_NAME": node})
    try:
        import urllib.request

        def polled() -> bool:
            assert agent.poll() is None, log_path.read_text()
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as response:
                    text = response.read().decode()
            except OSError:
                return False
            return any(line.startswith("oomtuner_agent_last_poll_timestamp_seconds ") and not line.endswith(" 0.0")
                       for line in text.splitlines())

        kit.wait_for(polled, timeout=60, what="the agent's first poll")
        pod_dir = trees.pod_dir(kubepods, driver="cgroupfs", qos="burstable", uid=uid)
        trees.write_container(trees.container_dir(pod_dir, driver="cgroupfs", container_id=container_id),
                              version="v2", oom_kill=1, limit_hits=1, limit=32 * 1024 * 1024)
        events = kit.wait_for(lambda: [e for e in kube.list(f"/api/v1/namespaces/{namespace}/events")
                                       if e.get("reason") == "OOMKillChildProcess"
                                       and e["involvedObject"].get("uid") == uid],
                              timeout=30, what="the agent's OOMKillChildProcess event")
        assert events[0]["involvedObject"]["name"] == "worker" and "app" in events[0]["involvedObject"]["fieldPath"]
    except BaseException:
        print("---- agent log ----\n" + log_path.read_text(errors="replace"))
        raise
    finally:
        agent.terminate()
        agent.wait(timeout=20)
    assert not _rbac_denials(log_path), log_path.read_text(errors="replace")
    # Its token can do nothing else.
    client = kube_client.connect(kubeconfig=agent_kubeconfig)
    assert _can(client, verb="list", resource="pods") and _can(client, verb="create", resource="events", namespace=namespace)
    for verb, resource, sub in (("get", "secrets", None), ("patch", "pods", None), ("update", "pods", "status"),
                                ("patch", "events", None), ("list", "nodes", None), ("watch", "pods", None),
                                ("get", "pods", None), ("update", "events", None), ("delete", "events", None)):
        assert not _can(client, verb=verb, resource=resource, subresource=sub, namespace=namespace), (verb, resource, sub)


# ---- who may post the agent's evidence: the chart's ValidatingAdmissionPolicy ---------------------


def _child_kill_event(*, namespace: str, node: str, name: str, events_api: bool = False) -> tuple[str, dict[str, Any]]:
    """(path, body) of an OOMKillChildProcess event about a pod `victim`, claiming to come from `node`."""
    message = ("Kernel OOM-killed 20000 processes in container app (memory limit 32Mi). | container=app "
               f"containerID={'ab' * 32} oomKill=20000 newKills=20000 limitBytes=33554432 hitLimit=true qos=Burstable")
    if events_api:
        return f"/apis/events.k8s.io/v1/namespaces/{namespace}/events", {
            "apiVersion": "events.k8s.io/v1", "kind": "Event", "metadata": {"name": name},
            "regarding": {"apiVersion": "v1", "kind": "Pod", "name": "victim", "namespace": namespace, "uid": "uid-victim"},
            "reason": "OOMKillChildProcess", "note": message, "type": "Warning", "action": "OOMKill",
            "eventTime": "2026-11-26T10:05:00.000000Z", "reportingController": "oomtuner-agent", "reportingInstance": node}
    return f"/api/v1/namespaces/{namespace}/events", {
        "apiVersion": "v1", "kind": "Event", "metadata": {"name": name},
        "involvedObject": {"apiVersion": "v1", "kind": "Pod", "name": "victim", "namespace": namespace, "uid": "uid-victim",
                           "fieldPath": "spec.containers{app}"},
        "reason": "OOMKillChildProcess", "message": message, "type": "Warning",
        "source": {"component": "oomtuner-agent", "host": node}, "reportingComponent": "oomtuner-agent",
        "reportingInstance": node, "firstTimestamp": "2026-11-26T10:05:00Z", "lastTimestamp": "2026-11-26T10:05:00Z",
        "count": 1}


def _refused(attempt: Any) -> str:
    with pytest.raises(api.ApiError) as refused:
        attempt()
    assert refused.value.status in (403, 422), refused.value
    return refused.value.message


def test_only_the_agent_on_its_own_node_may_post_child_kill_events(
    kube: api.Client, kubeconfig: str, agent_kubeconfig: str, release: Release, namespace: str,
) -> None:
    agent = kube_client.connect(kubeconfig=agent_kubeconfig)
    # The agent's token, about its own node: admitted (a server-side dry run, then for real).
    path, body = _child_kill_event(namespace=namespace, node=AGENT_NODE, name="own-node")
    agent.create(path, body, dry_run=True)
    agent.create(path, body)
    # The agent's token, claiming another node: refused by the policy.
    path, body = _child_kill_event(namespace=namespace, node="lab-node-large", name="other-node")
    message = _refused(lambda: agent.create(path, body, dry_run=True))
    assert f"agent on node {AGENT_NODE} must name that node" in message, message
    # Through events.k8s.io the agent may create nothing at all (its role names the core group only).
    path, body = _child_kill_event(namespace=namespace, node=AGENT_NODE, name="events-api", events_api=True)
    assert 'cannot create resource "events" in API group "events.k8s.io"' in _refused(lambda: agent.create(path, body))
    # Anyone else, even the cluster's admin, even about the right node, in either API: refused.
    for events_api in (False, True):
        path, body = _child_kill_event(namespace=namespace, node=AGENT_NODE, name=f"by-admin-{int(events_api)}",
                                       events_api=events_api)
        assert "only the oomtuner agent" in _refused(lambda: kube.create(path, body))
    # The agent's ServiceAccount with a token bound to no pod carries no node: refused.
    unbound = kube_client.connect(kubeconfig=_token_kubeconfig(
        kubeconfig, _token(kube, namespace=release.namespace, service_account=release.agent_sa),
        pathlib.Path(agent_kubeconfig).parent / "unbound"))
    path, body = _child_kill_event(namespace=namespace, node=AGENT_NODE, name="unbound")
    assert "names no node" in _refused(lambda: unbound.create(path, body, dry_run=True))
    # Turning an ordinary event into a child kill is an update, refused as well.
    ordinary = kube.create(f"/api/v1/namespaces/{namespace}/events", {
        "apiVersion": "v1", "kind": "Event", "metadata": {"name": "ordinary"}, "reason": "Started", "message": "x",
        "involvedObject": {"apiVersion": "v1", "kind": "Pod", "name": "victim", "namespace": namespace}})
    assert "only the oomtuner agent" in _refused(lambda: kube.replace(
        f"/api/v1/namespaces/{namespace}/events/ordinary", {**ordinary, "reason": "OOMKillChildProcess"}))
    # Other events are none of the policy's business.
    kube.create(f"/api/v1/namespaces/{namespace}/events", {
        "apiVersion": "v1", "kind": "Event", "metadata": {"name": "unrelated"}, "reason": "SystemOOM", "message": "x",
        "involvedObject": {"apiVersion": "v1", "kind": "Pod", "name": "victim", "namespace": namespace}})
    assert [e["metadata"]["name"] for e in kube.list(f"/api/v1/namespaces/{namespace}/events")
            if e.get("reason") == "OOMKillChildProcess"] == ["own-node"]


def test_the_admission_policy_can_be_turned_off_and_needs_1_30(release: Release) -> None:
    def policies(*sets: str, kube_version: str | None = None) -> list[str]:
        docs = render(sets=["agent.enabled=true", *sets]) if kube_version is None else [
            d for d in yaml.safe_load_all(helm("template", "x", str(CHART), "--set", "agent.enabled=true", *[
                a for s in sets for a in ("--set", s)], "--kube-version", kube_version).stdout) if d]
        return [d["kind"] for d in docs if d["kind"].startswith("ValidatingAdmissionPolicy")]

    assert policies() == ["ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"]
    assert policies("agent.admissionPolicy.enabled=false") == []
    assert policies(kube_version="1.29.0") == []


# ---- the web dashboard, running with its token ---------------------------------------------------


def test_dashboard_with_its_token_serves_every_page_and_can_only_read(
    kube: api.Client, kubeconfig: str, release: Release, namespace: str, tmp_path: pathlib.Path,
) -> None:
    token = _token(kube, namespace=release.namespace, service_account=release.dashboard_sa)
    client = kube_client.connect(kubeconfig=_token_kubeconfig(kubeconfig, token, tmp_path / "kubeconfig"))
    for verb, group, resource in (("list", "oomtuner.dev", "oomrecommendations"), ("get", "oomtuner.dev", "oomrecommendations"),
                                  ("list", "", "pods"), ("list", "", "nodes"), ("list", "", "events")):
        assert _can(client, verb=verb, group=group, resource=resource, namespace=namespace), (verb, resource)
    for verb, group, resource, sub in (("patch", "oomtuner.dev", "oomrecommendations", None), ("get", "", "secrets", None),
                                       ("list", "", "configmaps", None), ("patch", "apps", "deployments", None),
                                       ("create", "", "events", None), ("update", "oomtuner.dev", "oomrecommendations", "status")):
        assert not _can(client, verb=verb, group=group, resource=resource, subresource=sub, namespace=namespace), (verb, resource)

    # The dashboard's command line as the chart renders it; only the port is local.
    deployment = next(d for d in render(sets=["dashboard.web.enabled=true"])
                      if d["kind"] == "Deployment" and d["metadata"]["name"].endswith("-dashboard"))
    args = [a for a in deployment["spec"]["template"]["spec"]["containers"][0]["args"] if not a.startswith(("--port", "--address"))]
    port = _free_port()
    log_path = tmp_path / "dashboard.log"
    with open(log_path, "wb") as log:
        web = subprocess.Popen([sys.executable, "-m", "oomtuner", *args, f"--port={port}", "--address=127.0.0.1",
                                "--kubeconfig", str(tmp_path / "kubeconfig")],
                               stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, env={**os.environ, "OOMTUNER_PROMETHEUS_URL": ""})
    try:
        import urllib.request

        def page(path: str) -> str | None:
            assert web.poll() is None, log_path.read_text()
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as response:
                    return str(response.read().decode())
            except OSError:
                return None

        kit.wait_for(lambda: page("/healthz"), timeout=30, what="the dashboard's /healthz")
        for path in ("/", "/workloads", "/nodes"):
            html = page(path)
            assert html is not None and "Could not refresh" not in html, f"{path}:\n{html}"
        assert f'data-node="{kube.list("/api/v1/nodes")[0]["metadata"]["name"]}"' in (page("/nodes") or "")
    except BaseException:
        print("---- dashboard log ----\n" + log_path.read_text(errors="replace"))
        raise
    finally:
        web.terminate()
        web.wait(timeout=20)
    assert "403" not in log_path.read_text(errors="replace")
