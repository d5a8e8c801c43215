"""`oomtuner agent` as a process, real kernel OOM kills, and a real API server.

Real: the kernel's OOM killer in a kubelet-shaped cgroup v1 tree (see `kernel`), the agent process
(`python -m oomtuner.agent`, the command the DaemonSet runs), and the lab's kube-apiserver, which
stores the pod and validates and stores the agent's Event. Its state file on disk across a restart.
Played: the kubelet. kwok runs the pod on a fake node but writes no container ID, so the test writes
the container's ID into the pod status (pods/status, as a kubelet would), the ID of the cgroup it
made. The operator is not part of this test.
"""

from __future__ import annotations

import pathlib
import time
from typing import Any

import pytest

from oomtuner.api import core
from oomtuner.domain import child_kills
from oomtuner.kube import api
from tests.agent import kernel
from tests.agent.process import AgentProcess
from tests.e2e.kit import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240), pytest.mark.writes_pod_status]

NODE = "lab-node-small"
LIMIT = 32 * kernel.MIB


def _pod_body() -> dict[str, Any]:
    return {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "worker-0"},
        "spec": {"nodeName": NODE, "containers": [{
            "name": "app", "image": "registry.k8s.io/pause:3.10",
            "resources": {"requests": {"memory": "16Mi"}, "limits": {"memory": "32Mi"}},
        }]},
    }


def running_pod_with_cgroup(kube: api.Client, kubelet_cgroups: kernel.KubeletCgroups,
                            namespace: str) -> tuple[str, str, pathlib.Path]:
    """Pod worker-0 running under kwok, with a kubelet-shaped cgroup of its own whose container ID
    the pod status carries, as a kubelet would write it. Returns (pod UID, container ID, cgroup)."""
    pods = api.namespaced(group="", version="v1", plural="pods", namespace=namespace)
    kube.create(pods, _pod_body())
    running = wait_for(lambda: (b := kube.get(f"{pods}/worker-0")).get("status", {}).get("phase") == "Running" and b,
                       timeout=60, what="kwok to run the pod")
    uid = running["metadata"]["uid"]
    _, pod_dir = kubelet_cgroups.pod(uid=uid, limit=2 * LIMIT)
    container_id, container = kubelet_cgroups.container(pod_dir, limit=LIMIT)
    statuses = running["status"]["containerStatuses"]
    statuses[0]["containerID"] = f"containerd://{container_id}"
    kube.merge_patch(f"{pods}/worker-0/status", {"status": {"containerStatuses": statuses}})
    return uid, container_id, container


def _child_events(kube: api.Client, namespace: str, uid: str) -> list[dict[str, Any]]:
    return kube.list(f"/api/v1/namespaces/{namespace}/events",
                     query={"fieldSelector": f"involvedObject.uid={uid},reason={child_kills.REASON}"})


def test_agent_posts_the_event_and_resumes_from_its_state(
    kubelet_cgroups: kernel.KubeletCgroups, kube: api.Client, kubeconfig: str, namespace: str,
    tmp_path: pathlib.Path,
) -> None:
    pods = api.namespaced(group="", version="v1", plural="pods", namespace=namespace)
    uid, container_id, container = running_pod_with_cgroup(kube, kubelet_cgroups, namespace)

    agent = AgentProcess(kubeconfig=kubeconfig, cgroup_root=kubelet_cgroups.root, state_dir=tmp_path / "state",
                         log=tmp_path / "agent.log", node_name=NODE)
    try:
        agent.start()
        parent = kubelet_cgroups.start_parent(container)
        assert kernel.spawn_greedy_child(parent) == "child exit 137"
        killed = time.monotonic()
        [first] = wait_for(lambda: _child_events(kube, namespace, uid), timeout=30, what="the agent's event")
        print(f"\nevent stored by the API server {time.monotonic() - killed:.2f}s after the kill")
        time.sleep(1)  # five more polls: still one event
        assert len(_child_events(kube, namespace, uid)) == 1
        assert (f'oomtuner_agent_oom_kills_total{{container="app",namespace="{namespace}",pod="worker-0"}} 1.0'
                in agent.metrics())
        assert agent.stop() == 0

        # While the agent is down, another worker dies. The restarted agent reads its saved counter.
        assert kernel.spawn_greedy_child(parent) == "child exit 137"
        agent.start()
        both = wait_for(lambda: (found := _child_events(kube, namespace, uid)) and len(found) >= 2 and found,
                        timeout=30, what="the restarted agent's event")
        time.sleep(1)
        assert len(_child_events(kube, namespace, uid)) == 2
        assert agent.stop() == 0
    except BaseException:
        print("---- agent log ----\n" + (tmp_path / "agent.log").read_text(errors="replace"))
        raise

    assert parent.poll() is None, "the container's main process must survive both kills"
    assert first["involvedObject"] == {"apiVersion": "v1", "kind": "Pod", "name": "worker-0", "namespace": namespace,
                                       "uid": uid, "fieldPath": "spec.containers{app}"}
    assert (first["type"], first["source"]) == ("Warning", {"component": "oomtuner-agent", "host": NODE})
    assert first["metadata"]["name"] == f"worker-0.{container_id[:12]}.1"
    pod = core.parse_pod(kube.get(f"{pods}/worker-0"))
    found = [k for event in both for k in child_kills.kills_from_event(event, pod=pod)]
    assert sorted((k.oom_kill_counter, k.container, k.container_id, k.limit_at_kill, k.node) for k in found) == [
        (1, "app", container_id, LIMIT, NODE), (2, "app", container_id, LIMIT, NODE)]
    assert len({k.identity for k in found}) == 2
    assert "stopped" in (tmp_path / "agent.log").read_text()
