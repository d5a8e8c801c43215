"""Node agent → operator: a child process killed by the kernel becomes an OOMRecommendation.

Real: the kernel OOM kill in a kubelet-shaped cgroup v1 tree, the agent process, the operator
process (`oomtuner run`), and the lab's API server that carries the agent's Event to the operator.
Played: the kubelet (kwok runs the pod; the test writes the container ID into the pod status, and
later the container's own restart, as a kubelet would report it).
"""

from __future__ import annotations

import pathlib

import pytest

from oomtuner.kube import api
from oomtuner_lab import inject
from tests.agent import kernel
from tests.agent.process import AgentProcess
from tests.agent.test_agent_lab import NODE, running_pod_with_cgroup
from tests.e2e import kit
from tests.e2e.conftest import OperatorProcess, core_v1, operator  # noqa: F401

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240), pytest.mark.writes_pod_status]


def test_child_process_kill_becomes_a_recommendation_counted_once(
    kubelet_cgroups: kernel.KubeletCgroups, kube: api.Client, core_v1: object, kubeconfig: str,  # noqa: F811
    operator: OperatorProcess, namespace: str, tmp_path: pathlib.Path,  # noqa: F811
) -> None:
    pods = api.namespaced(group="", version="v1", plural="pods", namespace=namespace)
    _, _, container = running_pod_with_cgroup(kube, kubelet_cgroups, namespace)

    agent = AgentProcess(kubeconfig=kubeconfig, cgroup_root=kubelet_cgroups.root, state_dir=tmp_path / "state",
                         log=tmp_path / "agent.log", node_name=NODE)
    agent.start()
    try:
        parent = kubelet_cgroups.start_parent(container)
        assert kernel.spawn_greedy_child(parent) == "child exit 137"
        rec = kit.wait_recommendation(kube, namespace, "pod-worker-0",
                                      lambda r: (r.get("status") or {}).get("totalKills") == 1, timeout=30)
        kill = rec["status"]["kills"][0]
        assert "/child/" in kill["id"] and kill["container"] == "app" and kill["limitAtKill"] == "32Mi"
        assert kill["classification"] == "Limit" and kill["node"] == "lab-node-small"
        app = next(c for c in rec["status"]["containers"] if c["name"] == "app")
        assert app["recommended"]["limit"] == "96Mi"  # 32Mi + minIncrease 64Mi
        assert parent.poll() is None  # the main process lives on: the pod status shows nothing

        # Now the container itself restarts after the same kill: the pod status reports it too.
        # The kubelet's finishedAt is within a poll interval of the agent's reading: take the agent's time.
        import datetime

        child_at = datetime.datetime.fromisoformat(kill["at"].replace("Z", "+00:00"))
        inject.oom_kill(core_v1, namespace=namespace, pod="worker-0", container="app",  # type: ignore[arg-type]
                        at=child_at + datetime.timedelta(seconds=1))
        kit.wait_for(lambda: "OOMKilled" in str(kube.get(f"{pods}/worker-0")["status"]), what="the status kill")
        import time

        time.sleep(3)
        rec = kit.recommendation(kube, namespace, "pod-worker-0")
        assert rec is not None and rec["status"]["totalKills"] == 1, rec["status"]["kills"]
    finally:
        agent.stop()
