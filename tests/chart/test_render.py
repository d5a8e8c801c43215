"""The chart as helm renders it, without a cluster.

Real: the helm binary (lint, template, and its JSON-schema check of values.schema.json), the
chart's files, the operator's and the agent's click command lines (the rendered args are parsed by
them), and the metric names the operator and the agent register with prometheus_client. Nothing is
faked; no API server is involved (tests/chart/test_lab.py sends the rendered objects to one).
"""

from __future__ import annotations

import json
import pathlib
import re
import tomllib
from typing import Any

import click
import prometheus_client
import pytest
import yaml

import oomtuner
from tests.chart.conftest import CHART, CI_FILES, CI_IDS, ROOT, container, env_of, find, helm, kube_version, one, render, template_text

pytestmark = pytest.mark.timeout(120)

DEFAULT = CHART / "ci" / "default-values.yaml"
STANDALONE = CHART / "ci" / "standalone-values.yaml"
ALL = CHART / "ci" / "all-features-values.yaml"
NAMESPACED = CHART / "ci" / "namespaced-values.yaml"


# ---- lint and schema -----------------------------------------------------------------------------


def test_lint_strict_with_default_values() -> None:
    done = helm("lint", "--strict", "--kube-version", kube_version(), str(CHART))
    assert "1 chart(s) linted, 0 chart(s) failed" in done.stdout


@pytest.mark.parametrize("values", CI_FILES, ids=CI_IDS)
def test_lint_strict_with_each_ci_values_file(values: pathlib.Path) -> None:
    done = helm("lint", "--strict", "--kube-version", kube_version(), str(CHART), "-f", str(values))
    assert "1 chart(s) linted, 0 chart(s) failed" in done.stdout


def test_there_are_ci_values_files_for_every_mode() -> None:
    assert set(CI_IDS) >= {"default", "ha", "standalone", "all-features", "namespaced", "web-dashboard"}


@pytest.mark.parametrize(("setting", "where", "key"), [
    ("bogus=1", "at ''", "'bogus'"),
    ("operator.namespace=shop", "at '/operator'", "'namespace'"),
    ("image.tags=latest", "at '/image'", "'tags'"),
    ("agent.serviceAccount.automount=true", "at '/agent/serviceAccount'", "'automount'"),
    ("prometheusRule.operatorDown.threshold=3", "at '/prometheusRule/operatorDown'", "'threshold'"),
    ("tolerations[0].keys=a", "at '/tolerations/0'", "'keys'"),
    ("securityContext.privilegd=true", "at '/securityContext'", "'privilegd'"),
    ("dashboard.web.enable=true", "at '/dashboard/web'", "'enable'"),
])
def test_schema_rejects_an_unknown_key(setting: str, where: str, key: str) -> None:
    done = template_text(sets=[setting], check=False)
    assert done.returncode != 0
    assert where in done.stderr and f"additional properties {key} not allowed" in done.stderr, done.stderr


@pytest.mark.parametrize(("flag", "setting", "where", "problem"), [
    ("--set", "replicaCount=two", "/replicaCount", "got string, want integer"),
    ("--set-string", "operator.inPlaceResize=yes", "/operator/inPlaceResize", "got string, want boolean"),
    ("--set", "operator.namespaces=shop", "/operator/namespaces", "got string, want array"),
    ("--set", "operator.defaultMode=Sometimes", "/operator/defaultMode", "value must be one of"),
    ("--set", "agent.metricsPort=70000", "/agent/metricsPort", "maximum"),
    ("--set", "operator.cooldown=soon", "/operator/cooldown", "does not match pattern"),
    ("--set", "replicaCount=0", "/replicaCount", "minimum"),
    ("--set", "image.pullPolicy=Sometimes", "/image/pullPolicy", "value must be one of"),
])
def test_schema_rejects_a_wrong_type_or_value(flag: str, setting: str, where: str, problem: str) -> None:
    args = ["template", "t", str(CHART), "--kube-version", kube_version(), flag, setting]
    done = helm(*args, check=False)
    assert done.returncode != 0
    assert f"at '{where}'" in done.stderr and problem in done.stderr, done.stderr


def _schema_node(schema: dict[str, Any], path: list[str]) -> dict[str, Any] | None:
    """The schema of a value, or None when the schema does not allow it. A `$ref` (a Kubernetes
    object such as resources or a security context) is returned as it is, not resolved."""
    node = schema
    for part in path:
        if "$ref" in node:
            node = schema["definitions"][node["$ref"].rsplit("/", 1)[1]]
        props = node.get("properties") or {}
        if part in props:
            node = props[part]
        elif isinstance(node.get("additionalProperties"), dict):
            node = node["additionalProperties"]
        else:
            return None
    return node


def _is_section(node: dict[str, Any]) -> bool:
    """A map of the chart's own keys (documented key by key), not a value that is a map."""
    return "$ref" not in node and node.get("type") == "object" and node.get("additionalProperties") is False


def test_every_value_is_documented_and_in_the_schema() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    lines = (CHART / "values.yaml").read_text().splitlines()
    stack: list[tuple[int, str]] = []
    inside_value = -1  # indent of a key whose value is a map documented as a whole
    seen: set[tuple[str, ...]] = set()
    for number, line in enumerate(lines):
        match = re.match(r"^( *)([A-Za-z_][\w]*):", line)
        if not match:
            continue
        indent, key = len(match.group(1)), match.group(2)
        while stack and stack[-1][0] >= indent:
            stack.pop()
        if inside_value >= 0 and indent > inside_value:
            continue
        inside_value = -1
        path = [k for _, k in stack] + [key]
        stack.append((indent, key))
        node = _schema_node(schema, path)
        assert node is not None, f"values.yaml line {number + 1}: {'.'.join(path)} is not in values.schema.json"
        seen.add(tuple(path))
        if _is_section(node):
            continue
        inside_value = indent
        above = lines[number - 1].strip() if number else ""
        assert above.startswith("#"), f"values.yaml line {number + 1}: {'.'.join(path)} has no comment above it"

    def sections(node: dict[str, Any], path: tuple[str, ...]) -> None:
        for key, sub in node["properties"].items():
            if path + (key,) == ("global",):
                continue
            assert path + (key,) in seen, f"values.schema.json has {'.'.join(path + (key,))}; values.yaml lacks it"
            if _is_section(sub):
                sections(sub, path + (key,))

    sections(schema, ())


# ---- versions and CRDs ---------------------------------------------------------------------------


def test_app_version_is_the_package_version_and_the_default_image_tag() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert chart["appVersion"] == project["version"] == oomtuner.__version__
    docs = render()
    assert container(docs, "Deployment")["image"] == f"oomtuner:{project['version']}"
    # The Dockerfile installs that same version.
    assert re.search(rf"^ARG VERSION={re.escape(project['version'])}$", (ROOT / "Dockerfile").read_text(), re.M)


def _rendered_crds(*sets: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in render(sets=list(sets)) if d["kind"] == "CustomResourceDefinition"}


def test_chart_templates_render_exactly_the_repository_crds() -> None:
    """oomtuner's CRDs are templates (so `helm upgrade` carries a schema change), rendered from the
    same YAML as crds/ plus cert-manager's `helm.sh/resource-policy: keep`."""
    top = {body["metadata"]["name"]: body for body in (yaml.safe_load(p.read_text()) for p in (ROOT / "crds").glob("*.yaml"))}
    assert top, "crds/ is empty"
    rendered = _rendered_crds()
    assert sorted(rendered) == sorted(top)
    for name, body in rendered.items():
        assert body["metadata"].pop("annotations") == {"helm.sh/resource-policy": "keep"}, name
        assert body == top[name], f"the chart's template of {name} differs from crds/: run `make crds`"
    assert all("annotations" not in b["metadata"] for b in _rendered_crds("crds.keep=false").values())
    assert _rendered_crds("crds.enabled=false") == {}


def test_chart_crds_folder_holds_only_kopf_peering() -> None:
    """kopf's peering CRDs stay in the chart's crds/: Helm installs that folder before it checks the
    templates, one of which is a ClusterKopfPeering (a template CRD would not be known by then)."""
    extra = {p.name: yaml.safe_load(p.read_text()) for p in (CHART / "crds").glob("*.yaml")}
    assert sorted(extra) == ["kopf.dev_clusterkopfpeerings.yaml", "kopf.dev_kopfpeerings.yaml"]
    scopes = {body["metadata"]["name"]: (body["spec"]["group"], body["spec"]["scope"], body["spec"]["names"]["kind"])
              for body in extra.values()}
    assert scopes == {"clusterkopfpeerings.kopf.dev": ("kopf.dev", "Cluster", "ClusterKopfPeering"),
                      "kopfpeerings.kopf.dev": ("kopf.dev", "Namespaced", "KopfPeering")}
    assert find(render(), "ClusterKopfPeering"), "the default install needs them before its templates"


# ---- the operator Deployment ---------------------------------------------------------------------


def test_default_is_two_replicas_with_kopf_peering() -> None:
    docs = render(release="oomtuner")
    deployment = one(docs, "Deployment")
    assert deployment["spec"]["replicas"] == 2
    c = container(docs, "Deployment")
    assert c["args"][0] == "run" and "--priority-from-pod-name" in c["args"] and "--standalone" not in c["args"]
    assert "--all-namespaces" in c["args"]
    env = env_of(c)
    assert env["POD_NAME"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert env["POD_ID"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    peering = one(docs, "ClusterKopfPeering")
    assert env["OOMTUNER_PEERING_NAME"] == peering["metadata"]["name"] == "oomtuner"
    assert peering["apiVersion"] == "kopf.dev/v1"
    role = one(docs, "ClusterRole", "oomtuner")
    assert {"apiGroups": ["kopf.dev"], "resources": ["clusterkopfpeerings"], "resourceNames": ["oomtuner"],
            "verbs": ["get", "patch"]} in role["rules"]
    pdb = one(docs, "PodDisruptionBudget")
    assert pdb["spec"]["maxUnavailable"] == 1
    assert pdb["spec"]["selector"]["matchLabels"] == deployment["spec"]["selector"]["matchLabels"]


def test_one_replica_runs_standalone_without_peering_objects() -> None:
    docs = render(STANDALONE)
    assert one(docs, "Deployment")["spec"]["replicas"] == 1
    c = container(docs, "Deployment")
    assert "--standalone" in c["args"] and "--priority-from-pod-name" not in c["args"]
    assert "OOMTUNER_PEERING_NAME" not in env_of(c)
    assert not find(docs, "ClusterKopfPeering") and not find(docs, "KopfPeering")
    rules = one(docs, "ClusterRole", "oomtuner")["rules"]
    assert not [r for r in rules if "kopf.dev" in r["apiGroups"]]
    assert c["image"] == "registry.example.com/platform/oomtuner@sha256:" + "0" * 64
    assert not find(docs, "PodDisruptionBudget")
    assert "--log-format=text" in c["args"]


def test_two_releases_do_not_share_cluster_scoped_names() -> None:
    """Two releases in one cluster: the second with `crds.enabled=false` (only one release may own the CRDs)."""
    names = [{(d["kind"], d["metadata"]["name"]) for d in render(ALL, release=r, sets=sets) if "namespace" not in d["metadata"]}
             for r, sets in (("first", []), ("second", ["crds.enabled=false"]))]
    assert names[0] and not names[0] & names[1]
    assert {kind for kind, _ in names[0] - names[1]} >= {"CustomResourceDefinition"}


def test_operator_settings_become_flags_and_environment() -> None:
    docs = render(ALL)
    c = container(docs, "Deployment")
    assert c["args"][:2] == ["run", "--all-namespaces"]
    assert "--default-mode=Auto" in c["args"]
    assert "--prometheus-url=http://prometheus-operated.monitoring.svc:9090" in c["args"]
    assert c["args"][-1] == "--verbose"  # extraArgs last
    env = env_of(c)
    assert env["OOMTUNER_COOLDOWN"] == "30m" and env["OOMTUNER_NODE_OOM_WINDOW"] == "5m"
    assert env["OOMTUNER_RESPECTED_MANAGERS"] == "argocd-controller,flux"
    assert env["OOMTUNER_EXTRA"] == "1"
    assert c["image"] == "oomtuner:0.1.0-test" and c["imagePullPolicy"] == "Always"
    pod = one(docs, "Deployment")["spec"]["template"]
    assert pod["metadata"]["labels"]["team"] == "platform"
    assert pod["metadata"]["annotations"] == {"example.com/scrape": "true"}
    spec = pod["spec"]
    assert spec["nodeSelector"] == {"kubernetes.io/os": "linux"}
    assert spec["tolerations"][0]["key"] == "dedicated"
    assert "nodeAffinity" in spec["affinity"] and "podAntiAffinity" not in spec["affinity"]
    assert spec["priorityClassName"] == "system-cluster-critical"
    assert spec["imagePullSecrets"] == [{"name": "regcred"}]
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports == {"metrics": 8080, "liveness": 8081}
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "liveness"}
    service = one(docs, "Service", "oomtuner-metrics")
    assert service["spec"]["ports"][0]["targetPort"] == "metrics"
    assert service["spec"]["selector"] == one(docs, "Deployment")["spec"]["selector"]["matchLabels"]


def test_default_affinity_spreads_replicas_over_nodes() -> None:
    spec = one(render(), "Deployment")["spec"]["template"]["spec"]
    term = spec["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"][0]["podAffinityTerm"]
    assert term["topologyKey"] == "kubernetes.io/hostname"


def _pod_templates(docs: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    return [(f"{d['kind']}/{d['metadata']['name']}", d["spec"]["template"]["spec"])
            for d in docs if d["kind"] in ("Deployment", "DaemonSet", "StatefulSet", "Job")]


@pytest.mark.parametrize("values", CI_FILES, ids=CI_IDS)
def test_every_pod_runs_with_a_restricted_security_context(values: pathlib.Path) -> None:
    docs = render(values)
    templates = _pod_templates(docs)
    assert templates
    for where, spec in templates:
        pod = spec["securityContext"]
        assert pod["runAsNonRoot"] is True and pod["seccompProfile"] == {"type": "RuntimeDefault"}, where
        assert not spec.get("hostNetwork") and not spec.get("hostPID") and not spec.get("hostIPC"), where
        for c in spec["containers"] + spec.get("initContainers", []):
            sc = c["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False, where
            assert sc["capabilities"] == {"drop": ["ALL"]}, where
            assert sc["readOnlyRootFilesystem"] is True, where
            assert sc.get("privileged", False) is False, where
            mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
            volumes = {v["name"]: v for v in spec["volumes"]}
            assert "emptyDir" in volumes[mounts["/tmp"]["name"]], f"{where}: /tmp must be an emptyDir"
            for mount in c["volumeMounts"]:
                volume = volumes[mount["name"]]
                if "hostPath" in volume and volume["hostPath"]["path"] == "/sys/fs/cgroup":
                    assert mount.get("readOnly") is True, f"{where}: the host's cgroups must be read-only"


# ---- RBAC ----------------------------------------------------------------------------------------


def _grants(rules: list[dict[str, Any]]) -> set[tuple[str, str, str]]:
    return {(group, resource, verb) for r in rules for group in r["apiGroups"] for resource in r["resources"]
            for verb in r["verbs"] if not r.get("resourceNames")}


READ = ("get", "list", "watch")
EXPECTED_NAMESPACED = (
    {("", res, v) for res in ("pods", "events", "limitranges", "resourcequotas") for v in READ}
    | {("", "events", "create")}
    | {("apps", res, v) for res in ("deployments", "statefulsets", "daemonsets", "replicasets") for v in (*READ, "patch")}
    | {("batch", "jobs", v) for v in READ}
    | {("batch", "cronjobs", v) for v in (*READ, "patch")}
    | {("autoscaling", "horizontalpodautoscalers", v) for v in ("get", "list")}
    | {("autoscaling.k8s.io", "verticalpodautoscalers", v) for v in ("get", "list", "patch")}
    | {("oomtuner.dev", res, v) for res in ("oompolicies", "oomrecommendations")
       for v in (*READ, "create", "update", "patch", "delete")}
    | {("oomtuner.dev", f"{res}/status", v) for res in ("oompolicies", "oomrecommendations") for v in ("get", "update", "patch")}
)
EXPECTED_CLUSTER = ({("", "nodes", v) for v in READ} | {("apiextensions.k8s.io", "customresourcedefinitions", v) for v in READ}
                    | {("oomtuner.dev", "clusteroompolicies", v) for v in READ}
                    | {("oomtuner.dev", "clusteroompolicies/status", v) for v in ("get", "update", "patch")})


def test_operator_clusterrole_is_the_reviewed_least_privilege_list() -> None:
    docs = render()
    rules = one(docs, "ClusterRole", "oomtuner")["rules"]
    assert not any("*" in r["apiGroups"] + r["resources"] + r["verbs"] for r in rules), "no wildcards"
    peering = {("kopf.dev", "clusterkopfpeerings", v) for v in ("list", "watch")}
    namespaces = {("", "namespaces", v) for v in ("get", "list")}
    assert _grants(rules) == EXPECTED_NAMESPACED | EXPECTED_CLUSTER | peering | namespaces
    named = [r for r in rules if r.get("resourceNames")]
    assert named == [{"apiGroups": ["kopf.dev"], "resources": ["clusterkopfpeerings"], "resourceNames": ["oomtuner"],
                      "verbs": ["get", "patch"]}]
    binding = one(docs, "ClusterRoleBinding", "oomtuner")
    assert binding["roleRef"]["name"] == "oomtuner"
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "oomtuner", "namespace": "oomtuner-system"}]
    assert one(docs, "ServiceAccount", "oomtuner")
    assert one(docs, "Deployment")["spec"]["template"]["spec"]["serviceAccountName"] == "oomtuner"


def test_pods_resize_only_with_in_place_resize() -> None:
    without = _grants(one(render(), "ClusterRole", "oomtuner")["rules"])
    with_resize = _grants(one(render(sets=["operator.inPlaceResize=true"]), "ClusterRole", "oomtuner")["rules"])
    assert ("", "pods/resize", "patch") not in without
    assert with_resize - without == {("", "pods/resize", "patch")}


def test_namespaced_mode_keeps_namespaced_permissions_in_roles() -> None:
    docs = render(NAMESPACED)
    namespaces = ["oomtuner-ci-team-a", "oomtuner-ci-team-b"]
    cluster = one(docs, "ClusterRole", "oomtuner")["rules"]
    assert _grants(cluster) == EXPECTED_CLUSTER | {("", "namespaces", v) for v in READ}
    roles = find(docs, "Role")
    assert sorted(r["metadata"]["namespace"] for r in roles) == namespaces
    for role in roles:
        peering = {("kopf.dev", "kopfpeerings", v) for v in ("list", "watch")}
        assert _grants(role["rules"]) == EXPECTED_NAMESPACED | peering
    bindings = find(docs, "RoleBinding")
    assert sorted(b["metadata"]["namespace"] for b in bindings) == namespaces
    assert all(b["subjects"][0]["namespace"] == "oomtuner-system" for b in bindings)
    assert sorted(p["metadata"]["namespace"] for p in find(docs, "KopfPeering")) == namespaces
    assert not find(docs, "ClusterKopfPeering")
    args = container(docs, "Deployment")["args"]
    assert [a for a in args if a.startswith("--namespace")] == [f"--namespace={n}" for n in namespaces]
    assert "--all-namespaces" not in args


def test_aggregated_roles_extend_view_edit_and_admin() -> None:
    docs = render()
    view = one(docs, "ClusterRole", "oomtuner-view")
    edit = one(docs, "ClusterRole", "oomtuner-edit")
    label = "rbac.authorization.k8s.io/aggregate-to-"
    assert {k for k, v in view["metadata"]["labels"].items() if k.startswith(label) and v == "true"} == \
        {label + "view", label + "edit", label + "admin"}
    assert {k for k, v in edit["metadata"]["labels"].items() if k.startswith(label) and v == "true"} == \
        {label + "edit", label + "admin"}
    assert _grants(view["rules"]) == {("oomtuner.dev", r, v) for r in ("oompolicies", "oomrecommendations") for v in READ}
    assert all("status" not in res for _, res, _ in _grants(edit["rules"]))
    assert not find(render(STANDALONE), "ClusterRole", "oomtuner-view")


# ---- the node agent ------------------------------------------------------------------------------


def test_agent_is_off_by_default() -> None:
    docs = render()
    assert not find(docs, "DaemonSet")
    assert not [d for d in docs if d["metadata"]["name"].endswith("-agent")]


def test_agent_daemonset_reads_cgroups_read_only_and_runs_everywhere() -> None:
    docs = render(sets=["agent.enabled=true"])
    daemonset = one(docs, "DaemonSet")
    spec = daemonset["spec"]["template"]["spec"]
    c = spec["containers"][0]
    assert c["args"][0] == "agent"
    assert c["image"] == container(docs, "Deployment")["image"]
    volumes = {v["name"]: v for v in spec["volumes"]}
    cgroup_mount = next(m for m in c["volumeMounts"] if volumes[m["name"]].get("hostPath", {}).get("path") == "/sys/fs/cgroup")
    assert cgroup_mount["readOnly"] is True
    assert f"--cgroup-root={cgroup_mount['mountPath']}" in c["args"]
    host_paths = [v["hostPath"]["path"] for v in volumes.values() if "hostPath" in v]
    assert host_paths == ["/sys/fs/cgroup"], "by default the only host path is the cgroup tree"
    state = next(m for m in c["volumeMounts"] if m["name"] == "state")
    assert f"--state-dir={state['mountPath']}" in c["args"] and "emptyDir" in volumes["state"]
    assert c["securityContext"]["privileged"] is False
    assert spec["tolerations"] == [{"operator": "Exists", "effect": "NoSchedule"}]
    assert env_of(c)["NODE_NAME"] == {"fieldRef": {"fieldPath": "spec.nodeName"}}
    assert {p["name"]: p["containerPort"] for p in c["ports"]} == {"metrics": 9102}
    assert daemonset["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"] == "agent"
    operator_selector = one(docs, "Deployment")["spec"]["selector"]["matchLabels"]
    assert not all(daemonset["spec"]["template"]["metadata"]["labels"].get(k) == v for k, v in operator_selector.items()), \
        "the operator's Service and PDB must not select agent pods"


def test_agent_has_its_own_service_account_allowed_only_to_list_pods_and_create_events() -> None:
    docs = render(sets=["agent.enabled=true"])
    spec = one(docs, "DaemonSet")["spec"]["template"]["spec"]
    assert spec["serviceAccountName"] == "oomtuner-agent"
    assert one(docs, "ServiceAccount", "oomtuner-agent")
    role = one(docs, "ClusterRole", "oomtuner-agent")
    assert _grants(role["rules"]) == {("", "pods", "list"), ("", "events", "create")}
    binding = one(docs, "ClusterRoleBinding", "oomtuner-agent")
    assert binding["roleRef"]["name"] == "oomtuner-agent"
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "oomtuner-agent", "namespace": "oomtuner-system"}]


def test_agent_state_on_a_host_path_when_asked() -> None:
    docs = render(ALL)
    spec = one(docs, "DaemonSet")["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert volumes["state"]["hostPath"] == {"path": "/var/lib/oomtuner-agent", "type": "DirectoryOrCreate"}
    assert spec["priorityClassName"] == "system-node-critical"
    assert "--interval=1" in spec["containers"][0]["args"]


# ---- the rendered command lines are the real CLI's ----------------------------------------------


def _parse(args: list[str], monkeypatch: pytest.MonkeyPatch) -> click.Context:
    from oomtuner import cli

    monkeypatch.setenv("NODE_NAME", "node-1")
    command = cli.main.get_command(click.Context(cli.main), args[0])
    assert command is not None, f"oomtuner has no command {args[0]!r}"
    try:
        return command.make_context(args[0], list(args[1:]))
    except click.UsageError as exc:
        pytest.fail(f"`oomtuner {' '.join(args)}` is rejected by the CLI: {exc.format_message()}")


@pytest.mark.parametrize("values", CI_FILES, ids=CI_IDS)
def test_rendered_args_are_accepted_by_the_cli(values: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    docs = render(values, sets=["agent.enabled=true"])
    operator_ctx = _parse(container(docs, "Deployment")["args"], monkeypatch)
    assert operator_ctx.params["default_mode"] in ("Observe", "Recommend", "Auto")
    agent_ctx = _parse(container(docs, "DaemonSet")["args"], monkeypatch)
    assert str(agent_ctx.params["cgroup_root"]) == "/host/sys/fs/cgroup"


# ---- monitoring ----------------------------------------------------------------------------------


def test_monitoring_objects_are_off_by_default_and_on_when_enabled() -> None:
    default = render()
    assert not find(default, "ServiceMonitor") and not find(default, "PrometheusRule")
    assert not find(default, "ConfigMap")
    docs = render(ALL)
    monitors = {m["metadata"]["name"]: m for m in find(docs, "ServiceMonitor")}
    assert set(monitors) == {"oomtuner", "oomtuner-agent"}
    for monitor in monitors.values():
        assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
        endpoint = monitor["spec"]["endpoints"][0]
        assert endpoint["port"] == "metrics" and endpoint["honorLabels"] is True
        assert endpoint["interval"] == "15s" and endpoint["scrapeTimeout"] == "10s"
    operator_service = one(docs, "Service", "oomtuner-metrics")
    assert monitors["oomtuner"]["spec"]["selector"]["matchLabels"].items() <= operator_service["metadata"]["labels"].items()
    agent_service = one(docs, "Service", "oomtuner-agent-metrics")
    assert monitors["oomtuner-agent"]["spec"]["selector"]["matchLabels"].items() <= agent_service["metadata"]["labels"].items()
    dashboard = one(docs, "ConfigMap", "oomtuner-dashboard")
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert dashboard["metadata"]["annotations"] == {"grafana_folder": "Kubernetes"}


def _exported_metric_names() -> set[str]:
    import oomtuner.agent.metrics
    import oomtuner.prom.metrics  # noqa: F401  (registers the operator's metrics in the default registry)

    names = set()
    families = [*prometheus_client.REGISTRY.collect(), *oomtuner.agent.metrics.REGISTRY.collect()]
    for family in families:
        names.add(family.name)
        names.update(sample.name for sample in family.samples)
        if family.type == "counter":
            names.add(family.name + "_total")
        if family.type == "histogram":
            names.update(family.name + suffix for suffix in ("_bucket", "_count", "_sum"))
    return {n for n in names if n.startswith("oomtuner_")}


def _dashboard() -> dict[str, Any]:
    docs = render(ALL)
    board = json.loads(one(docs, "ConfigMap", "oomtuner-dashboard")["data"]["oomtuner.json"])
    assert board == json.loads((CHART / "files" / "dashboard.json").read_text()), "the ConfigMap carries the file as it is"
    return board


VARIABLES = {"datasource", "job", "namespace", "workload"}


def test_dashboard_panels_query_the_metrics_the_operator_exports() -> None:
    board = _dashboard()
    exported = _exported_metric_names()
    exprs = [t["expr"] for p in board["panels"] for t in p["targets"]]
    assert len(board["panels"]) >= 6 and all(p["targets"] for p in board["panels"])
    used = {m for e in exprs for m in re.findall(r"\boomtuner_[a-z_]+", e)}
    assert used <= exported, f"the dashboard queries metrics nobody exports: {used - exported}"
    for required in ("oomtuner_oom_kills_total", "oomtuner_recommendations", "oomtuner_patches_total",
                     "oomtuner_detection_latency_seconds_bucket", "oomtuner_recommendation_memory_bytes"):
        assert required in used, required
    assert {v["name"] for v in board["templating"]["list"]} == VARIABLES
    assert len({p["id"] for p in board["panels"]}) == len(board["panels"])
    titles = [p["title"] for p in board["panels"]]
    assert "Memory limit: current vs recommended" in titles and "Memory request: current vs recommended" in titles


def test_every_dashboard_variable_is_used_and_every_panel_uses_the_data_source() -> None:
    board = _dashboard()
    text = json.dumps([p["targets"] for p in board["panels"]] + [v.get("query") for v in board["templating"]["list"]])
    for name in VARIABLES - {"datasource"}:
        assert f"${name}" in text, f"variable {name} is used nowhere"
    for p in board["panels"]:
        assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, p["title"]
        assert all(t["datasource"] == p["datasource"] for t in p["targets"]), p["title"]
    # Panels of the operator's kills follow the namespace and workload chosen.
    for p in board["panels"]:
        for t in p["targets"]:
            if "oomtuner_oom_kills_total" in t["expr"] or "oomtuner_recommendation_memory_bytes" in t["expr"]:
                assert 'namespace=~"$namespace"' in t["expr"] and 'workload=~"$workload"' in t["expr"], p["title"]
    # No two panels overlap on Grafana's 24-column grid.
    cells = [(x, y) for p in board["panels"] for x in range(p["gridPos"]["x"], p["gridPos"]["x"] + p["gridPos"]["w"])
             for y in range(p["gridPos"]["y"], p["gridPos"]["y"] + p["gridPos"]["h"])]
    assert len(cells) == len(set(cells)) and max(x for x, _ in cells) < 24


def _promtool() -> str:
    import shutil

    path = shutil.which("promtool")
    if path is None:
        pytest.skip("promtool is not installed (Debian package `prometheus`): the PromQL checks need it")
    return path


# Grafana's variables as Grafana substitutes them before it sends a query.
GRAFANA = {"$__rate_interval": "2m", "$__interval": "1m", "$__range": "1h", "$job": ".*", "$namespace": ".*", "$workload": ".*"}


def _grafana(expr: str) -> str:
    for name, value in sorted(GRAFANA.items(), key=lambda item: -len(item[0])):
        expr = expr.replace(name, value)
    assert "$" not in expr, f"a variable the test does not substitute: {expr}"
    return expr


def test_dashboard_queries_are_valid_promql(tmp_path: pathlib.Path) -> None:
    """promtool parses every panel's query and every variable's selector (label_values' first argument)."""
    import subprocess

    promtool = _promtool()
    board = _dashboard()
    exprs = [t["expr"] for p in board["panels"] for t in p["targets"]]
    for variable in board["templating"]["list"]:
        if variable["type"] == "query":
            found = re.fullmatch(r"label_values\((.+), (\w+)\)", variable["definition"])
            assert found and variable["query"]["query"] == variable["definition"], variable["name"]
            exprs.append(found.group(1))
    rules = [{"record": f"dashboard:query{i}", "expr": _grafana(e)} for i, e in enumerate(exprs)]
    path = tmp_path / "dashboard-rules.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    done = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(rules)} rules found" in done.stdout


def test_dashboard_kill_counts_include_a_new_series_first_kill(tmp_path: pathlib.Path) -> None:
    """promtool evaluates the dashboard's kill counts over made-up series: `cart` is born at its first
    kill (no sample before it, as prometheus_client exposes a counter child at its first inc()), `web`
    existed before. increase() alone misses cart's first kill; the dashboard's queries count it."""
    import subprocess

    promtool = _promtool()
    panels = {p["title"]: p for p in _dashboard()["panels"]}
    in_range = _grafana(panels["OOM kills in range"]["targets"][0]["expr"])
    per_step = _grafana(panels["OOM kills by workload"]["targets"][0]["expr"])
    kills = 'oomtuner_oom_kills_total{job="oomtuner-metrics",namespace="shop",workload="Deployment/%s",container="app",classification="Limit"}'

    def labels(**extra: str) -> str:
        return "{" + ", ".join(f'{k}="{v}"' for k, v in {"namespace": "shop", "container": "app",
                                                           "classification": "Limit", **extra}.items()) + "}"

    (tmp_path / "none.yaml").write_text(yaml.safe_dump({"groups": []}))
    tests = {"rule_files": ["none.yaml"], "evaluation_interval": "1m", "tests": [{
        "interval": "1m",
        "input_series": [{"series": kills % "cart", "values": "_x60 1 1 1 2 2"},
                         {"series": kills % "web", "values": "5x60 6 6 6 6 6"}],
        "promql_expr_test": [
            {"expr": 'round(sum(increase(oomtuner_oom_kills_total[1h])))', "eval_time": "64m", "exp_samples": [{"value": 2}]},
            {"expr": in_range, "eval_time": "64m", "exp_samples": [{"value": 3}]},
            {"expr": per_step, "eval_time": "60m", "exp_samples": [
                {"labels": labels(workload="Deployment/cart"), "value": 1},
                {"labels": labels(workload="Deployment/web"), "value": 0}]},
            {"expr": per_step, "eval_time": "63m", "exp_samples": [
                {"labels": labels(workload="Deployment/cart"), "value": 1},
                {"labels": labels(workload="Deployment/web"), "value": 0}]},
        ],
    }]}
    (tmp_path / "tests.yaml").write_text(yaml.safe_dump(tests))
    done = subprocess.run([promtool, "test", "rules", "tests.yaml"], capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr


def _rule_groups(values: pathlib.Path | None = None, sets: list[str] | None = None) -> list[dict[str, Any]]:
    docs = render(*([values] if values else []), sets=["prometheusRule.enabled=true", *(sets or [])])
    return one(docs, "PrometheusRule")["spec"]["groups"]


def test_prometheus_rules_pass_promtool_check(tmp_path: pathlib.Path) -> None:
    import subprocess

    promtool = _promtool()
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump({"groups": _rule_groups(ALL)}))
    done = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS: 4 rules found" in done.stdout


def test_alerts_fire_when_they_should_and_only_then(tmp_path: pathlib.Path) -> None:
    """promtool evaluates the rendered alert rules over made-up series, minute by minute."""
    import subprocess

    promtool = _promtool()
    groups = _rule_groups()
    names = {r["alert"] for g in groups for r in g["rules"]}
    assert names == {"OOMTunerRepeatedOOMKills", "OOMTunerSuspectedLeak", "OOMTunerOperatorDown"}
    for group in groups:  # promtool compares annotations too; their templates are checked above
        for rule in group["rules"]:
            rule.pop("annotations", None)
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump({"groups": groups}))
    job = 'job="oomtuner-metrics"'
    kills = 'oomtuner_oom_kills_total{%s,namespace="shop",workload="Deployment/%s",container="app",classification="Limit"}'
    leak = 'oomtuner_recommendations{%s,instance="%s",phase="SuspectedLeak"}'
    up = 'up{%s,namespace="oomtuner-system",instance="%s"}'
    repeated = {"severity": "warning", "namespace": "shop", "container": "app"}
    tests = {
        "rule_files": ["rules.yaml"],
        "evaluation_interval": "1m",
        "tests": [
            {   # A new series (its first kill has no earlier sample) and an old one that keeps killing.
                "interval": "1m",
                "input_series": [
                    {"series": kills % (job, "cart"), "values": "_x100 1 2 3"},
                    {"series": kills % (job, "web"), "values": "5x100 6 7 8"},
                    {"series": kills % (job, "once"), "values": "_x100 1 1 1"},
                    {"series": kills % (job, "slow"), "values": "1x100 2x60 3x60 4"},
                ],
                "alert_rule_test": [
                    {"eval_time": "101m", "alertname": "OOMTunerRepeatedOOMKills", "exp_alerts": []},
                    {"eval_time": "103m", "alertname": "OOMTunerRepeatedOOMKills", "exp_alerts": [
                        {"exp_labels": {**repeated, "workload": "Deployment/cart"}},
                        {"exp_labels": {**repeated, "workload": "Deployment/web"}},
                    ]},
                ],
            },
            {   # One replica reports the leak, the standby reports 0; the alert waits for `for`.
                "interval": "1m",
                "input_series": [
                    {"series": leak % (job, "a"), "values": "0x10 1x20"},
                    {"series": leak % (job, "b"), "values": "0x30"},
                ],
                "alert_rule_test": [
                    {"eval_time": "10m", "alertname": "OOMTunerSuspectedLeak", "exp_alerts": []},
                    {"eval_time": "13m", "alertname": "OOMTunerSuspectedLeak", "exp_alerts": []},
                    {"eval_time": "16m", "alertname": "OOMTunerSuspectedLeak",
                     "exp_alerts": [{"exp_labels": {"severity": "warning"}}]},
                ],
            },
            {   # One replica down, the other up: fine. Both down (or gone) for 10m: fire.
                "interval": "1m",
                "input_series": [
                    {"series": up % (job, "a"), "values": "1x10 0x30"},
                    {"series": up % (job, "b"), "values": "1x20 0x20"},
                    {"series": up % ('job="someone-else"', "c"), "values": "0x40"},
                ],
                "alert_rule_test": [
                    {"eval_time": "19m", "alertname": "OOMTunerOperatorDown", "exp_alerts": []},
                    {"eval_time": "25m", "alertname": "OOMTunerOperatorDown", "exp_alerts": []},
                    {"eval_time": "32m", "alertname": "OOMTunerOperatorDown",
                     "exp_alerts": [{"exp_labels": {"severity": "critical"}}]},
                ],
            },
            {   # Never scraped at all (no ServiceMonitor target): fire as well.
                "interval": "1m",
                "input_series": [{"series": up % ('job="someone-else"', "c"), "values": "1x20"}],
                "alert_rule_test": [
                    {"eval_time": "5m", "alertname": "OOMTunerOperatorDown", "exp_alerts": []},
                    {"eval_time": "11m", "alertname": "OOMTunerOperatorDown",
                     "exp_alerts": [{"exp_labels": {"severity": "critical"}}]},
                ],
            },
        ],
    }
    (tmp_path / "tests.yaml").write_text(yaml.safe_dump(tests))
    done = subprocess.run([promtool, "test", "rules", "tests.yaml"], capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr


def test_alert_thresholds_and_switches_come_from_values() -> None:
    groups = _rule_groups(sets=["prometheusRule.repeatedOOMKills.threshold=5", "prometheusRule.repeatedOOMKills.window=6h",
                                "prometheusRule.suspectedLeak.enabled=false", "prometheusRule.operatorDown.for=3m"])
    rules = {r["alert"]: r for r in groups[0]["rules"]}
    assert set(rules) == {"OOMTunerRepeatedOOMKills", "OOMTunerOperatorDown"}
    assert "[6h]" in rules["OOMTunerRepeatedOOMKills"]["expr"] and ">= 5" in rules["OOMTunerRepeatedOOMKills"]["expr"]
    assert rules["OOMTunerOperatorDown"]["for"] == "3m"



# ---- network access and tenancy -----------------------------------------------------------------


def test_no_network_policy_unless_asked() -> None:
    assert not find(render(sets=["agent.enabled=true"]), "NetworkPolicy")


def test_the_network_policy_lets_only_the_given_peers_reach_metrics() -> None:
    peer = "networkPolicy.metricsFrom[0].namespaceSelector.matchLabels.kubernetes\\.io/metadata\\.name=monitoring"
    docs = render(sets=["networkPolicy.enabled=true", peer, "agent.enabled=true"])
    operator, agent = one(docs, "NetworkPolicy", "oomtuner"), one(docs, "NetworkPolicy", "oomtuner-agent")
    for policy, component in ((operator, "operator"), (agent, "agent")):
        assert policy["spec"]["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == component
        assert policy["spec"]["policyTypes"] == ["Ingress"]
        rule, *test = policy["spec"]["ingress"]
        assert rule["ports"] == [{"port": "metrics", "protocol": "TCP"}]
        assert rule["from"] == [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}]
        # The operator also admits the release's `helm test` pod, on the liveness port only.
        assert [r["ports"] for r in test] == ([[{"port": "liveness", "protocol": "TCP"}]] if component == "operator" else [])
    closed = one(render(sets=["networkPolicy.enabled=true"]), "NetworkPolicy", "oomtuner")
    assert [r["ports"] for r in closed["spec"]["ingress"]] == [[{"port": "liveness", "protocol": "TCP"}]]
    assert one(render(sets=["networkPolicy.enabled=true", "agent.enabled=true"]), "NetworkPolicy", "oomtuner-agent")["spec"]["ingress"] == []


def test_listeners_and_culprit_names_reach_the_command_line() -> None:
    args = one(render(sets=["operator.metricsAddress=::", "operator.culpritNames=all", "agent.enabled=true",
                            "agent.metricsAddress=10.0.0.1"]), "Deployment")["spec"]["template"]["spec"]["containers"][0]["args"]
    assert {"--metrics-address=::", "--liveness-address=0.0.0.0", "--culprit-names=all"} <= set(args)
    default = one(render(), "Deployment")["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--culprit-names=same-namespace" in default
    agent_args = one(render(sets=["agent.enabled=true", "agent.metricsAddress=10.0.0.1"]), "DaemonSet")["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--metrics-address=10.0.0.1" in agent_args


# ---- the web dashboard ---------------------------------------------------------------------------


def _dashboard_objects(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [d for d in docs if d["metadata"].get("labels", {}).get("app.kubernetes.io/component") == "dashboard"]


def test_web_dashboard_is_off_by_default_and_apart_from_the_grafana_one() -> None:
    assert not _dashboard_objects(render())
    grafana_only = render(sets=["dashboard.enabled=true"])
    assert not _dashboard_objects(grafana_only) and one(grafana_only, "ConfigMap", "oomtuner-dashboard")
    web_only = render(sets=["dashboard.web.enabled=true"])
    assert not find(web_only, "ConfigMap")
    assert {d["kind"] for d in _dashboard_objects(web_only)} == {
        "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Service", "Deployment"}


def test_web_dashboard_reads_only_unless_approvals_are_allowed() -> None:
    docs = render(sets=["dashboard.web.enabled=true", "operator.prometheusUrl=http://prometheus:9090"])
    role = one(docs, "ClusterRole", "oomtuner-dashboard")
    assert _grants(role["rules"]) == {("oomtuner.dev", "oomrecommendations", "get"), ("oomtuner.dev", "oomrecommendations", "list"),
                                      ("", "pods", "list"), ("", "nodes", "list"), ("", "events", "list")}
    binding = one(docs, "ClusterRoleBinding", "oomtuner-dashboard")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "oomtuner-dashboard", "namespace": "oomtuner-system"}]
    deployment = one(docs, "Deployment", "oomtuner-dashboard")
    spec = deployment["spec"]["template"]["spec"]
    assert spec["serviceAccountName"] == "oomtuner-dashboard"
    c = spec["containers"][0]
    assert c["args"][0] == "dashboard" and "--allow-approve" not in c["args"]
    assert "--prometheus-url=http://prometheus:9090" in c["args"] and "--address=0.0.0.0" in c["args"]
    assert c["image"] == container(docs, "Deployment")["image"]
    service = one(docs, "Service", "oomtuner-dashboard")
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    assert service["spec"]["selector"]["app.kubernetes.io/component"] == "dashboard"
    assert service["spec"]["ports"][0]["targetPort"] == "http"
    operator = one(docs, "Deployment", "oomtuner")["spec"]["selector"]["matchLabels"]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert not all(labels.get(k) == v for k, v in operator.items()), "the operator's Service and PDB must not select it"
    approving = render(sets=["dashboard.web.enabled=true", "dashboard.web.allowApprove=true"])
    assert _grants(one(approving, "ClusterRole", "oomtuner-dashboard")["rules"]) - _grants(role["rules"]) == {
        ("oomtuner.dev", "oomrecommendations", "patch")}
    assert "--allow-approve" in one(approving, "Deployment", "oomtuner-dashboard")["spec"]["template"]["spec"]["containers"][0]["args"]


def test_web_dashboard_args_are_accepted_by_the_cli(monkeypatch: pytest.MonkeyPatch) -> None:
    docs = render(CHART / "ci" / "web-dashboard-values.yaml")
    c = one(docs, "Deployment", "oomtuner-dashboard")["spec"]["template"]["spec"]["containers"][0]
    ctx = _parse(c["args"], monkeypatch)
    assert ctx.params["allow_approve"] is True and ctx.params["refresh"] == 5 and ctx.params["top"] == 10
    assert ctx.params["port"] == c["ports"][0]["containerPort"] and ctx.params["root_path"] == "/oomtuner"


# ---- chart habits ----------------------------------------------------------------------------------


def test_image_registry_prefixes_every_image() -> None:
    docs = render(ALL, sets=["image.registry=registry.example.com:5000/platform", "dashboard.web.enabled=true"])
    images = {c["image"] for d in docs if d["kind"] in ("Deployment", "DaemonSet", "Pod")
              for c in (d["spec"]["template"]["spec"] if d["kind"] != "Pod" else d["spec"])["containers"]}
    assert images == {"registry.example.com:5000/platform/oomtuner:0.1.0-test"}
    digest = "sha256:" + "a" * 64
    assert container(render(sets=["image.registry=ghcr.io/acme", f"image.digest={digest}"]), "Deployment")["image"] == \
        f"ghcr.io/acme/oomtuner@{digest}"
    done = template_text(sets=["image.registry=ghcr.io/acme/"], check=False)
    assert done.returncode != 0 and "/image/registry" in done.stderr


def test_every_pod_runs_on_linux_nodes_by_default() -> None:
    docs = render(sets=["agent.enabled=true", "dashboard.web.enabled=true"])
    for d in docs:
        if d["kind"] in ("Deployment", "DaemonSet"):
            assert d["spec"]["template"]["spec"]["nodeSelector"] == {"kubernetes.io/os": "linux"}, d["metadata"]["name"]
    assert one(docs, "Pod")["spec"]["nodeSelector"] == {"kubernetes.io/os": "linux"}


def test_topology_spread_constraints_get_the_pods_own_selector() -> None:
    spread = ["maxSkew=1", "topologyKey=topology.kubernetes.io/zone", "whenUnsatisfiable=ScheduleAnyway"]
    sets = [f"topologySpreadConstraints[0].{s}" for s in spread] + [f"dashboard.web.topologySpreadConstraints[0].{s}" for s in spread]
    sets += ["topologySpreadConstraints[1].maxSkew=2", "topologySpreadConstraints[1].topologyKey=kubernetes.io/hostname",
             "topologySpreadConstraints[1].whenUnsatisfiable=DoNotSchedule",
             "topologySpreadConstraints[1].labelSelector.matchLabels.team=platform", "dashboard.web.enabled=true"]
    docs = render(sets=sets, release="spread")
    operator, web = (one(docs, "Deployment", name) for name in ("spread-oomtuner", "spread-oomtuner-dashboard"))
    zone, host = operator["spec"]["template"]["spec"]["topologySpreadConstraints"]
    assert zone["labelSelector"]["matchLabels"] == operator["spec"]["selector"]["matchLabels"]
    assert (zone["maxSkew"], zone["topologyKey"], zone["whenUnsatisfiable"]) == (1, "topology.kubernetes.io/zone", "ScheduleAnyway")
    assert host["labelSelector"] == {"matchLabels": {"team": "platform"}}
    [web_zone] = web["spec"]["template"]["spec"]["topologySpreadConstraints"]
    assert web_zone["labelSelector"]["matchLabels"] == web["spec"]["selector"]["matchLabels"]
    assert "topologySpreadConstraints" not in container(render(), "Deployment")
    assert "topologySpreadConstraints" not in one(render(), "Deployment")["spec"]["template"]["spec"]


def test_helm_test_pod_asks_healthz_through_the_service() -> None:
    docs = render(release="oomtuner")
    pod = one(docs, "Pod", "oomtuner-test-healthz")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    assert pod["spec"]["restartPolicy"] == "Never" and pod["spec"]["automountServiceAccountToken"] is False
    [c] = pod["spec"]["containers"]
    assert c["command"][3] == "http://oomtuner-metrics.oomtuner-system.svc:8081/healthz" and c["command"][4] == "60"
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    service = one(docs, "Service", "oomtuner-metrics")
    assert {"name": "healthz", "port": 8081, "targetPort": "liveness", "protocol": "TCP"} in service["spec"]["ports"]
    assert not find(render(sets=["tests.enabled=false"]), "Pod")
    policy = one(render(sets=["networkPolicy.enabled=true"]), "NetworkPolicy", "oomtuner")
    assert {"from": [{"podSelector": {"matchLabels": {"app.kubernetes.io/instance": "oomtuner", "app.kubernetes.io/component": "test"}}}],
            "ports": [{"port": "liveness", "protocol": "TCP"}]} in policy["spec"]["ingress"]


def test_chart_metadata_for_artifact_hub() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["home"].startswith("https://") and chart["sources"] and all(s.startswith("https://") for s in chart["sources"])
    assert chart["maintainers"] and all(m["name"] for m in chart["maintainers"])
    notes = chart["annotations"]
    crds = {c["kind"]: c for c in yaml.safe_load(notes["artifacthub.io/crds"])}
    rendered = {d["spec"]["names"]["kind"]: d for d in render() if d["kind"] == "CustomResourceDefinition"}
    assert set(crds) == set(rendered)
    for kind, entry in crds.items():
        assert entry["name"] == rendered[kind]["metadata"]["name"] and entry["version"] == rendered[kind]["spec"]["versions"][0]["name"]
    examples = yaml.safe_load(notes["artifacthub.io/crdsExamples"])
    assert {e["kind"] for e in examples} == set(rendered)
    from oomtuner.api import policy, recommendation

    for example in examples:  # the examples are valid objects
        parse = {"OOMPolicy": policy.parse, "ClusterOOMPolicy": policy.parse_cluster}.get(example["kind"], recommendation.parse)
        parse(example)
    [image] = yaml.safe_load(notes["artifacthub.io/images"])
    assert image["image"] == f"oomtuner:{chart['appVersion']}"
    assert notes["artifacthub.io/operator"] == "true" and notes["artifacthub.io/license"] == "Apache-2.0"


def _notes(tmp_path: pathlib.Path, *sets: str) -> str:
    """NOTES.txt as helm renders it: `helm template` skips it, so a copy of the chart renders its text
    into a ConfigMap through a named template."""
    import shutil

    copy = tmp_path / "oomtuner"
    shutil.copytree(CHART, copy)
    text = (copy / "templates" / "NOTES.txt").read_text()
    (copy / "templates" / "_notes-under-test.tpl").write_text('{{- define "test.notes" -}}\n' + text + "{{- end }}\n")
    (copy / "templates" / "notes-under-test.yaml").write_text(
        'apiVersion: v1\nkind: ConfigMap\nmetadata: {name: notes}\ndata:\n  notes: {{ include "test.notes" . | quote }}\n')
    args = ["template", "rel", str(copy), "--namespace", "ops", "--show-only", "templates/notes-under-test.yaml"]
    for item in sets:
        args += ["--set", item]
    return str(yaml.safe_load(helm(*args).stdout)["data"]["notes"])


def test_notes_point_at_commands_not_repository_paths(tmp_path: pathlib.Path) -> None:
    for sets in ((), ("crds.keep=false",), ("crds.enabled=false",), ("dashboard.web.enabled=true",)):
        notes = _notes(tmp_path / "-".join(sets or ("default",)), *sets)
        assert not re.search(r"deploy/|crds/|hack/|\.yaml|\.py", notes), notes
        assert "helm test rel --namespace ops" in notes and "kubectl get oomrecommendations -A" in notes
    assert "DELETES them" in _notes(tmp_path / "nokeep", "crds.keep=false")
    assert "helm.sh/resource-policy: keep" in _notes(tmp_path / "keep")

