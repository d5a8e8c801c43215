"""Shared helpers of the chart tests: the chart, the real helm and kubectl binaries, rendering.

helm and kubectl are the lab's binaries (`hack/lab/build.sh`, cached in ~/.cache/oomtuner), the
same ones `make test` builds; a test fails, not skips, when they are missing. The lab fixtures
(kubeconfig, kube, crds, namespace) are the e2e suite's.
"""

from __future__ import annotations

import os
import pathlib
import subprocess
from typing import Any

import pytest
import yaml

from oomtuner_lab import binaries
from tests.e2e.conftest import core_v1, crds, kube, kubeconfig, namespace, pytest_runtest_makereport  # noqa: F401

ROOT = pathlib.Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy" / "helm" / "oomtuner"
CI_FILES = sorted((CHART / "ci").glob("*-values.yaml"))
CI_IDS = [p.name.removesuffix("-values.yaml") for p in CI_FILES]


def agent_node_values(kube: Any) -> tuple[list[str], dict[str, str]]:
    """Helm `--set` arguments that keep the agent DaemonSet where the chart's image can run, and
    the node labels that selects. On the lab, kwok runs any image but the real node (a real
    kubelet and containerd, `lab-node-real`) has only the images the lab built, not oomtuner's:
    the agent goes to the kwok nodes (`type=kwok`) there. Elsewhere: every node, no arguments."""
    nodes = kube.list("/api/v1/nodes")
    kwok = [n for n in nodes if (n["metadata"].get("annotations") or {}).get("kwok.x-k8s.io/node") == "fake"]
    if not kwok or len(kwok) == len(nodes):
        return [], {}
    return ["--set", "agent.nodeSelector.type=kwok"], {"type": "kwok"}


def kube_version() -> str:
    """The lab's Kubernetes version without the v (helm's --kube-version)."""
    return binaries.k8s_version().lstrip("v")


def tool(name: str) -> str:
    path = binaries.path(name)
    if not path.is_file():
        pytest.fail(f"{path} is missing: build the lab's binaries with `bash hack/lab/build.sh` (or `make lab-build`)")
    return str(path)


def run(args: list[str], *, input: str | None = None, env: dict[str, str] | None = None,
        check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run a command; on an unexpected exit code, fail with its output."""
    done = subprocess.run(args, input=input, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})}, cwd=ROOT)
    if check and done.returncode != 0:
        pytest.fail(f"{' '.join(args[:4])} ... exited {done.returncode}:\n{done.stdout}\n{done.stderr}")
    return done


def helm(*args: str, check: bool = True, kubeconfig: str | None = None, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    env = {"HELM_CACHE_HOME": str(ROOT / ".pytest_cache" / "helm" / "cache"),
           "HELM_CONFIG_HOME": str(ROOT / ".pytest_cache" / "helm" / "config"),
           "HELM_DATA_HOME": str(ROOT / ".pytest_cache" / "helm" / "data")}
    if kubeconfig:
        env["KUBECONFIG"] = kubeconfig
    return run([tool("helm"), *args], env=env, check=check, timeout=timeout)


def template_text(*values: pathlib.Path, sets: list[str] | None = None, namespace: str = "oomtuner-system",
                  release: str = "oomtuner", include_crds: bool = False, check: bool = True) -> subprocess.CompletedProcess[str]:
    args = ["template", release, str(CHART), "--namespace", namespace, "--kube-version", kube_version()]
    for path in values:
        args += ["-f", str(path)]
    for item in sets or []:
        args += ["--set", item]
    if include_crds:
        args.append("--include-crds")
    return helm(*args, check=check)


def render(*values: pathlib.Path, sets: list[str] | None = None, namespace: str = "oomtuner-system",
           release: str = "oomtuner") -> list[dict[str, Any]]:
    """The objects `helm template` renders (no CRDs), parsed."""
    text = template_text(*values, sets=sets, namespace=namespace, release=release).stdout
    return [doc for doc in yaml.safe_load_all(text) if doc]


def find(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]


def one(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = find(docs, kind, name)
    assert len(found) == 1, f"expected one {kind} {name or ''}, got {[d['metadata']['name'] for d in found]}"
    return found[0]


def container(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    """The first container of the one `kind` that is not the web dashboard's (`dashboard.web`)."""
    mine = [d for d in docs if (d["metadata"].get("labels") or {}).get("app.kubernetes.io/component") != "dashboard"]
    return one(mine, kind)["spec"]["template"]["spec"]["containers"][0]


def env_of(c: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in c.get("env") or []}
