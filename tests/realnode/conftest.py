"""Fixtures of the real-node suite, where nothing is played.

Real: the kernel OOM-kills real processes in containers that runc started for containerd; a real
kubelet reports it in the pod status; the operator and the node agent react as they would in a
cluster. Nothing is written into a pod's status. The host's kernel log and /proc are read to check
what oomtuner recorded (`host`).

Where: the lab's `lab-node-real` (the tests skip, saying why, where the host cannot run it, and fail
where it can but the node does not run), or, with KUBECONFIG set, a schedulable node of that cluster
with a real kubelet (kind) that has the image `lab.oomtuner.dev/memhog:v1` (`hack/lab/build.sh
images`, then `kind load image-archive <cache>/images/memhog.tar`).

The operator is `oomtuner run` as a process (`OperatorProcess`), or with
OOMTUNER_E2E_OPERATOR=<namespace>/<deployment> the operator the chart installed in the cluster. The
node agent is `oomtuner agent` as a process reading the lab node's cgroups, or with
OOMTUNER_E2E_AGENT=in-cluster the chart's agent DaemonSet.
"""

from __future__ import annotations

import contextlib
import os
import pathlib
from collections.abc import Callable, Iterator
from typing import Any

import kubernetes
import pytest

from oomtuner.kube import api
from oomtuner_lab import cluster, host, nodeconf, nodehost, realnode
from oomtuner_lab.config import Paths
from tests.agent.process import AgentProcess
from tests.e2e.conftest import (  # noqa: F401 - fixtures
    OperatorProcess,
    core_v1,
    crds,
    kube,
    kubeconfig,
    namespace,
    pytest_runtest_makereport,
)
from tests.e2e.kit import wait_for
from tests.realnode.scenarios import RealNode

KWOK_ANNOTATION = "kwok.x-k8s.io/node"


def _ready(node: dict[str, Any]) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in (node.get("status") or {}).get("conditions") or [])


@pytest.fixture(scope="session")
def real_node(kube: api.Client) -> RealNode:  # noqa: F811
    if not os.environ.get("KUBECONFIG"):
        reason = realnode.unavailable()
        if reason is not None:
            pytest.skip(f"this host cannot run the lab's real node: {reason}")
        state = cluster.status().real_node
        if not state.running:
            pytest.fail(f"this host can run the lab's real node, but it does not run: {state.reason}")
        wait_for(lambda: _ready(kube.get(f"/api/v1/nodes/{nodeconf.NODE_NAME}")), timeout=60,
                 what=f"node {nodeconf.NODE_NAME} Ready")
        return RealNode(nodeconf.NODE_NAME, (nodeconf.TOLERATION,), nodehost.kubepods_cgroup(nodeconf.Layout(Paths())))
    nodes = kube.list("/api/v1/nodes")
    lab = [n for n in nodes if n["metadata"]["name"] == nodeconf.NODE_NAME and _ready(n)]
    if lab:  # KUBECONFIG points at a lab
        return RealNode(nodeconf.NODE_NAME, (nodeconf.TOLERATION,), None)
    real = [n for n in nodes if _ready(n) and not (n["metadata"].get("annotations") or {}).get(KWOK_ANNOTATION)
            and not n["spec"].get("unschedulable")
            and not any(t.get("effect") in ("NoSchedule", "NoExecute") for t in n["spec"].get("taints") or [])]
    if not real:
        pytest.skip("no schedulable Ready node with a real kubelet in this cluster")
    return RealNode(real[0]["metadata"]["name"], (), None)


@pytest.fixture
def kernel_log() -> Iterator[host.KernelLog]:
    """The host's kernel log from now on."""
    try:
        log = host.KernelLog()
    except PermissionError:
        pytest.fail("cannot read /dev/kmsg: run as root, or set kernel.dmesg_restrict=0")
    yield log
    log.close()


class InClusterOperator:
    """The operator the chart installed: its Deployment `<namespace>/<name>`, stopped by scaling to 0."""

    def __init__(self, kube: api.Client, core_v1: kubernetes.client.CoreV1Api, target: str) -> None:  # noqa: F811
        self.kube, self.core_v1 = kube, core_v1
        self.namespace, _, self.name = target.partition("/")
        self.path = f"/apis/apps/v1/namespaces/{self.namespace}/deployments/{self.name}"
        self.replicas = int(self.kube.get(self.path)["spec"].get("replicas") or 1)

    def _pods(self) -> list[dict[str, Any]]:
        selector = self.kube.get(self.path)["spec"]["selector"]["matchLabels"]
        query = {"labelSelector": ",".join(f"{k}={v}" for k, v in selector.items())}
        return self.kube.list(f"/api/v1/namespaces/{self.namespace}/pods", query=query)

    def stop(self) -> None:
        self.kube.merge_patch(self.path, {"spec": {"replicas": 0}})
        wait_for(lambda: not self._pods(), timeout=120, what=f"the operator's pods in {self.namespace} to go")

    def start(self) -> None:
        self.kube.merge_patch(self.path, {"spec": {"replicas": self.replicas}})
        wait_for(lambda: (self.kube.get(self.path).get("status") or {}).get("readyReplicas") == self.replicas,
                 timeout=180, what=f"the operator {self.namespace}/{self.name} to be ready")

    def restart(self) -> None:
        self.stop()
        self.start()

    def log_tail(self, lines: int = 150) -> str:
        out = []
        for pod in self._pods():
            with contextlib.suppress(Exception):
                out.append(self.core_v1.read_namespaced_pod_log(pod["metadata"]["name"], self.namespace,
                                                                tail_lines=lines, all_containers=True))
        return "\n".join(out) or "(no operator log)"


@pytest.fixture(scope="module")
def operator(kube: api.Client, core_v1: kubernetes.client.CoreV1Api, kubeconfig: str, crds: list[str],  # noqa: F811
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[OperatorProcess | InClusterOperator]:
    target = os.environ.get("OOMTUNER_E2E_OPERATOR")
    if target:
        yield InClusterOperator(kube, core_v1, target)
        return
    proc = OperatorProcess(kubeconfig=kubeconfig, log_dir=tmp_path_factory.mktemp("operator"))
    proc.start()
    yield proc
    proc.stop()


@pytest.fixture
def start_agent(real_node: RealNode, kube: api.Client, kubeconfig: str,  # noqa: F811
                tmp_path: pathlib.Path) -> Iterator[Callable[[], None]]:
    """Starts the node agent for the real node: a process reading the lab node's cgroups, or (with
    OOMTUNER_E2E_AGENT=in-cluster) the chart's DaemonSet, which must have a Ready pod there. Start
    it before the workload: a kill in a cgroup the agent first sees with its counter already up is
    not new to it."""
    agents: list[AgentProcess] = []

    def start() -> None:
        if os.environ.get("OOMTUNER_E2E_AGENT") == "in-cluster":
            def ready_agent() -> bool:
                pods = kube.list("/api/v1/pods", query={"labelSelector": "app.kubernetes.io/component=agent",
                                                         "fieldSelector": f"spec.nodeName={real_node.name}"})
                return any(c.get("type") == "Ready" and c.get("status") == "True"
                           for p in pods for c in (p.get("status") or {}).get("conditions") or [])
            wait_for(ready_agent, timeout=60, what=f"a Ready agent pod of the chart on {real_node.name}")
            return
        if real_node.kubepods is None:
            pytest.skip("no node agent for this node: install the chart with agent.enabled=true and set "
                        "OOMTUNER_E2E_AGENT=in-cluster")
        agent = AgentProcess(kubeconfig=kubeconfig, cgroup_root=real_node.kubepods, state_dir=tmp_path / "agent-state",
                             log=tmp_path / "agent.log", node_name=real_node.name)
        agents.append(agent)
        agent.start(watching=0)

    yield start
    for agent in agents:
        agent.stop()
