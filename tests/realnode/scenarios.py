"""Workloads for the real node, and the Auto patch cycle with its timings (shared by the tests and
`bench/realnode.py`).

Times are `time.monotonic()` seconds, the kernel log's clock: the kill is the kernel's timestamp,
the rest is when a poll (every 50 ms) first saw the change in the API.
"""

from __future__ import annotations

import dataclasses
import pathlib
import time
from typing import Any

from oomtuner.kube import api
from oomtuner_lab import host, nodeconf
from tests.e2e import kit

POLL = 0.05


@dataclasses.dataclass(frozen=True)
class RealNode:
    """A node run by a real kubelet, and what a pod needs to land there."""

    name: str
    tolerations: tuple[dict[str, str], ...]
    kubepods: pathlib.Path | None  # its memory cgroup `kubepods`, when it is the lab's node

    def pin(self, pod_spec: dict[str, Any]) -> dict[str, Any]:
        """The pod spec, scheduled onto this node; a short grace period."""
        return {**pod_spec, "nodeSelector": {"kubernetes.io/hostname": self.name},
                "tolerations": list(self.tolerations), "terminationGracePeriodSeconds": 1}


def memhog(*args: str, request: str = "32Mi", limit: str = "64Mi", name: str = "app") -> dict[str, Any]:
    """A container running memhog (`--allocate 96Mi --rate 32Mi/s`, `--child`, `--after 10s`)."""
    return {"name": name, "image": nodeconf.MEMHOG_IMAGE, "imagePullPolicy": "Never", "args": list(args),
            "resources": {"requests": {"memory": request, "cpu": "10m"}, "limits": {"memory": limit}}}


def deployment(name: str, node: RealNode, containers: list[dict[str, Any]]) -> dict[str, Any]:
    body = kit.deployment(name, containers=containers)
    spec = body["spec"]["template"]["spec"]
    body["spec"]["template"]["spec"] = node.pin(spec)
    return body


def policy(kube: api.Client, namespace: str, spec: dict[str, Any], name: str = "policy") -> None:
    """An OOMPolicy, once the operator has read it (it writes its status)."""
    path = f"/apis/oomtuner.dev/v1alpha1/namespaces/{namespace}/oompolicies"
    kube.create(path, {"apiVersion": "oomtuner.dev/v1alpha1", "kind": "OOMPolicy", "metadata": {"name": name}, "spec": spec})
    kit.wait_for(lambda: (kube.get(f"{path}/{name}").get("status") or {}).get("conditions"), timeout=30,
                 what=f"policy {name} status")


def pods(kube: api.Client, namespace: str, app: str) -> list[dict[str, Any]]:
    found = kube.list(f"/api/v1/namespaces/{namespace}/pods", query={"labelSelector": f"app={app}"})
    return [p for p in found if not p["metadata"].get("deletionTimestamp")]


def container_status(pod: dict[str, Any], name: str = "app") -> dict[str, Any]:
    return next((s for s in (pod.get("status") or {}).get("containerStatuses") or [] if s["name"] == name), {})


def running_container(kube: api.Client, namespace: str, app: str, *, limit: str | None = None,
                      timeout: float = 60) -> tuple[dict[str, Any], str]:
    """The first pod of `app` (with that memory limit) whose container runs; with its container ID."""
    def check() -> tuple[dict[str, Any], str] | None:
        for pod in pods(kube, namespace, app):
            if limit and pod["spec"]["containers"][0]["resources"]["limits"]["memory"] != limit:
                continue
            status = container_status(pod)
            if "running" in (status.get("state") or {}) and status.get("containerID"):
                return pod, status["containerID"].partition("://")[2]
        return None

    return kit.wait_for(check, timeout=timeout, interval=POLL, what=f"a running container of {app}")


def oom_killed(pod: dict[str, Any]) -> bool:
    status = container_status(pod)
    return any(((status.get(k) or {}).get("terminated") or {}).get("reason") == "OOMKilled"
               for k in ("state", "lastState"))


def counted(kube: api.Client, namespace: str, name: str, kills: int) -> dict[str, Any] | None:
    """The recommendation, once it counts at least `kills` kills."""
    rec = kit.recommendation(kube, namespace, name)
    return rec if rec is not None and ((rec.get("status") or {}).get("totalKills") or 0) >= kills else None


@dataclasses.dataclass
class PatchCycle:
    """What one Auto patch cycle showed."""

    first_pod: dict[str, Any]
    proc_oom_score_adj: int  # /proc/<pid>/oom_score_adj of the container before its kill
    kill: host.KernelKill
    status_at: float  # the kubelet's OOMKilled first seen
    recommendation: dict[str, Any]  # as first seen counting the kill
    recommendation_at: float
    patched: dict[str, Any]  # the Deployment's container resources after the patch
    new_pod: dict[str, Any]
    running_at: float  # the patched pod Running, its container running

    def timings(self) -> dict[str, float]:
        return {"kill_to_status_s": round(self.status_at - self.kill.at, 3),
                "kill_to_recommendation_s": round(self.recommendation_at - self.kill.at, 3),
                "kill_to_patched_pod_running_s": round(self.running_at - self.kill.at, 3)}


def patch_cycle(kube: api.Client, namespace: str, node: RealNode, kernel_log: host.KernelLog,
                *, name: str = "hog") -> PatchCycle:
    """A Deployment whose container (request and limit 64Mi, Burstable: it requests CPU without a
    limit) grows to 96Mi after 5 s, under an Auto OOMPolicy: the kernel kills it, the kubelet
    reports it, the operator records it and patches the Deployment (128Mi), and the new pod runs.
    The request is a visible share of a node's memory, so its oom_score_adj is not the 999 of any
    small request. Raises (fails the test) when a step does not come."""
    policy(kube, namespace, {"mode": "Auto", "cooldown": "10m"})
    hog = memhog("--after", "5s", "--allocate", "96Mi", "--rate", "32Mi/s", request="64Mi", limit="64Mi")
    kube.create(f"/apis/apps/v1/namespaces/{namespace}/deployments", deployment(name, node, [hog]))
    first, container_id = running_container(kube, namespace, name)
    uid = first["metadata"]["uid"]
    pids = host.wait_pids(container_id)
    assert pids, f"no process of container {container_id} is visible in this machine's /proc"
    adj = host.oom_score_adj(pids[0])

    [kill] = kit.wait_for(lambda: kernel_log.kills_of_pod(uid), timeout=30, interval=POLL,
                          what=f"the kernel to OOM-kill a process of pod {first['metadata']['name']}")
    pod_path = f"/api/v1/namespaces/{namespace}/pods/{first['metadata']['name']}"
    kit.wait_for(lambda: oom_killed(kube.get(pod_path)), timeout=30, interval=POLL, what="the kubelet's OOMKilled")
    status_at = time.monotonic()
    rec = kit.wait_for(lambda: counted(kube, namespace, f"deployment-{name}", 1), timeout=30, interval=POLL,
                       what="the OOMRecommendation to count the kill")
    recommendation_at = time.monotonic()
    dep_path = f"/apis/apps/v1/namespaces/{namespace}/deployments/{name}"

    def patched() -> dict[str, Any] | None:
        resources = kube.get(dep_path)["spec"]["template"]["spec"]["containers"][0]["resources"]
        return resources if resources["limits"]["memory"] != "64Mi" else None

    resources = kit.wait_for(patched, timeout=30, interval=POLL, what=f"the operator to patch Deployment {name}")
    new_pod, _ = running_container(kube, namespace, name, limit=resources["limits"]["memory"], timeout=60)
    running_at = time.monotonic()
    return PatchCycle(first, adj, kill, status_at, rec, recommendation_at, resources, new_pod, running_at)
