"""Real OOM kills on a real node, end to end, with no status written by the test.

Real: the kernel's kills (read back from /dev/kmsg), runc and containerd, the kubelet that reports
them, the API server, the operator and the node agent. What oomtuner recorded is compared with what
the kernel logged and with /proc of the real container.
"""

from __future__ import annotations

import time
from typing import Any, Callable

import pytest

from oomtuner.domain import child_kills
from oomtuner.kube import api
from oomtuner_lab import host
from tests.e2e import kit
from tests.e2e.conftest import OperatorProcess
from tests.realnode import scenarios
from tests.realnode.scenarios import RealNode

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]


def test_auto_policy_patches_a_deployment_the_kernel_killed_and_the_new_pod_lives(
    kube: api.Client, operator: OperatorProcess, namespace: str, real_node: RealNode, kernel_log: host.KernelLog,
) -> None:
    cycle = scenarios.patch_cycle(kube, namespace, real_node, kernel_log)
    first = cycle.first_pod
    kill = next(k for k in cycle.recommendation["status"]["kills"] if k["pod"] == first["metadata"]["name"])
    assert kill["classification"] == "Limit", kill
    assert kill["limitAtKill"] == "64Mi" and kill["qosClass"] == "Burstable" and kill["node"] == real_node.name
    # The oom_score_adj oomtuner computed is the one the kubelet gave the real container (998 on a
    # 24 GiB node: 1000 - 1000 × 64Mi / capacity), and the one the kernel logged with the kill.
    assert kill["oomScoreAdj"] == cycle.proc_oom_score_adj == cycle.kill.oom_score_adj, (kill, cycle.kill)
    assert cycle.kill.task == "memhog" and cycle.kill.container_id() in (first["status"]["containerStatuses"][0]
                                                                          .get("containerID") or "")
    assert cycle.patched["limits"]["memory"] == "128Mi"  # 64Mi + minIncrease 64Mi
    assert cycle.patched["requests"]["memory"] == "128Mi"  # KeepRatio (64Mi of 64Mi)
    print(f"\nreal node {real_node.name}: {cycle.timings()}")

    # The patched pod holds its 96Mi under 128Mi for a minute, without a restart or a kernel kill.
    new = cycle.new_pod
    path = f"/api/v1/namespaces/{namespace}/pods/{new['metadata']['name']}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        status = scenarios.container_status(kube.get(path))
        assert status.get("restartCount") == 0 and "running" in status["state"], status
        assert kernel_log.kills_of_pod(new["metadata"]["uid"]) == []
        time.sleep(5)
    assert (kit.recommendation(kube, namespace, "deployment-hog") or {})["status"]["phase"] == "Applied"


def _counts(kube: api.Client, namespace: str, kernel_log: host.KernelLog, pod: dict[str, Any]) -> tuple[int, int, int]:
    """(kernel kills, restart count, counted kills) now."""
    kernel = len(kernel_log.kills_of_pod(pod["metadata"]["uid"]))
    status = scenarios.container_status(kube.get(f"/api/v1/namespaces/{namespace}/pods/{pod['metadata']['name']}"))
    rec = kit.recommendation(kube, namespace, "deployment-loop") or {}
    return kernel, status.get("restartCount") or 0, (rec.get("status") or {}).get("totalKills") or 0


def test_crash_looping_workload_counts_each_kernel_kill_once_across_an_operator_restart(
    kube: api.Client, operator: OperatorProcess, namespace: str, real_node: RealNode, kernel_log: host.KernelLog,
) -> None:
    scenarios.policy(kube, namespace, {"mode": "Recommend"})
    # Each life: 4 s of waiting, 1.5 s of allocation, the kill, 5 s of CrashLoopBackOff.
    kube.create(f"/apis/apps/v1/namespaces/{namespace}/deployments", scenarios.deployment(
        "loop", real_node, [scenarios.memhog("--after", "4s", "--allocate", "96Mi", "--rate", "64Mi/s")]))
    pod, _ = scenarios.running_container(kube, namespace, "loop")
    uid = pod["metadata"]["uid"]

    def kernel_kills(n: int) -> Callable[[], bool]:
        return lambda: len(kernel_log.kills_of_pod(uid)) >= n

    kit.wait_for(lambda: scenarios.counted(kube, namespace, "deployment-loop", 2), timeout=90,
                 what="the operator to count 2 kills")
    operator.stop()
    down_at = host.wall_clock(time.monotonic())
    down_from = len(kernel_log.kills_of_pod(uid))
    kit.wait_for(kernel_kills(down_from + 2), timeout=90, what="2 more kernel kills while the operator is down")
    # ... and the container runs again: its status shows only the last of them now (lastState).
    kit.wait_for(lambda: _counts(kube, namespace, kernel_log, pod)[1] >= down_from + 2, timeout=30,
                 what="the kubelet to restart the container after the last kill")
    operator.start()
    up_at = host.wall_clock(time.monotonic())
    kit.wait_for(kernel_kills(down_from + 4), timeout=90, what="2 more kernel kills after the restart")

    # The kubelet counts a restart when it starts the container again, 5 s after the kill; while
    # the new life waits its 4 s the kernel's count, the kubelet's and the operator's must meet.
    seen: list[tuple[int, int, int]] = []
    deadline = time.monotonic() + 60
    while not seen or len(set(seen[-1])) != 1:
        if time.monotonic() > deadline:
            rec = kit.recommendation(kube, namespace, "deployment-loop") or {}
            counted_at = sorted(k["at"] for k in (rec.get("status") or {}).get("kills") or [])
            killed_at = [host.wall_clock(k.at) for k in kernel_log.kills_of_pod(uid)]
            pytest.fail(f"(kernel kills, restartCount, totalKills) never met; the last readings: {seen[-5:]}; the "
                        f"operator stopped at {down_at} and was back at {up_at}; the kernel killed at {killed_at}; "
                        f"the operator's ledger has kills at {counted_at}")
        seen.append(_counts(kube, namespace, kernel_log, pod))
        time.sleep(0.2)
    kernel, restarts, counted = seen[-1]
    assert kernel >= 6
    rec = kit.recommendation(kube, namespace, "deployment-loop")
    assert rec is not None
    ids = [k["id"] for k in rec["status"]["kills"]]
    assert len(ids) == len(set(ids)) == min(counted, 20)
    assert {k["classification"] for k in rec["status"]["kills"]} == {"Limit"}
    print(f"\n{kernel} kernel kills, restartCount {restarts}, totalKills {counted}")


def test_child_process_killed_while_the_container_lives_is_reported_by_the_agent_and_counted(
    kube: api.Client, operator: OperatorProcess, namespace: str, real_node: RealNode, kernel_log: host.KernelLog,
    start_agent: Callable[[], None],
) -> None:
    scenarios.policy(kube, namespace, {"mode": "Recommend"})
    start_agent()
    kube.create(f"/apis/apps/v1/namespaces/{namespace}/deployments", scenarios.deployment(
        "worker", real_node, [scenarios.memhog("--child", "--after", "5s", "--allocate", "96Mi", "--rate", "32Mi/s")]))
    pod, container_id = scenarios.running_container(kube, namespace, "worker")
    uid = pod["metadata"]["uid"]

    [kill] = kit.wait_for(lambda: kernel_log.kills_of_pod(uid), timeout=30, what="the kernel to kill the child")
    assert kill.container_id() == container_id
    events = kit.wait_for(
        lambda: kube.list(f"/api/v1/namespaces/{namespace}/events",
                          query={"fieldSelector": f"involvedObject.uid={uid},reason={child_kills.REASON}"}),
        timeout=30, what="the agent's OOMKillChildProcess event")
    rec = kit.wait_for(lambda: scenarios.counted(kube, namespace, "deployment-worker", 1), timeout=30,
                       what="the operator to count the child's kill")
    [recorded] = rec["status"]["kills"]
    assert "/child/" in recorded["id"] and recorded["container"] == "app" and recorded["node"] == real_node.name
    assert recorded["classification"] == "Limit" and recorded["limitAtKill"] == "64Mi"

    time.sleep(5)  # the main process lives on: no restart, nothing more counted
    status = scenarios.container_status(kube.get(f"/api/v1/namespaces/{namespace}/pods/{pod['metadata']['name']}"))
    assert status.get("restartCount") == 0 and "running" in status["state"], status
    assert host.container_pids(container_id), "the container's main process must live on"
    assert len(kernel_log.kills_of_pod(uid)) == 1 and len(events) == 1
    assert (kit.recommendation(kube, namespace, "deployment-worker") or {})["status"]["totalKills"] == 1
