"""The recommendations the dashboard's browser tests look at, made by the real operator on the lab.

In one namespace, on a node of its own:
- `cart` (Auto policy, 2 replicas, limit 256Mi): a Limit kill, the patch to 384Mi, then a kill of a
  child process in a new pod (the node agent's own event body) at 384Mi;
- `api` (no policy: the operator's default mode, Recommend): paused, its template raised by hand
  to 768Mi, then its old pod killed at 512Mi: a stale kill;
- `batch` (no memory limit): a kill beside a SystemOOM on the node, whose victim process name is
  tenant input with `<script>` in it: a Node kill.
The `api` recommendation also gets an annotation with `<script>` in it.
"""

from __future__ import annotations

import dataclasses
import datetime
import pathlib
import time
from typing import Any

from oomtuner.agent import cgroups, reporter, watcher
from oomtuner.api import types
from oomtuner.kube import api
from oomtuner_lab import exporter as lab_exporter
from oomtuner_lab import inject
from tests.e2e import kit

MI = 1024 * 1024
SCRIPT = '<script>document.title="owned"</script><img src=x onerror=alert(1)>'
RECS = "/apis/oomtuner.dev/v1alpha1/namespaces/{ns}/oomrecommendations"


@dataclasses.dataclass(frozen=True)
class Made:
    namespace: str
    node: str
    names: tuple[str, ...] = ("deployment-api", "deployment-batch", "deployment-cart")


def _working_set(exporter: lab_exporter.Exporter, namespace: str, pod: str, *, base: int, per_s: float) -> None:
    now = time.time()
    exporter.traces.set(lab_exporter.Trace(namespace=namespace, pod=pod, container="app", lives=(
        lab_exporter.Life(id=f"/kubepods/{pod}/app", start=now - 5, base=base, bytes_per_s=per_s, max=base * 2),)))


def child_kill_event(pod: dict[str, Any], *, limit: int) -> dict[str, Any]:
    """What the node agent posts when a child process of `app` in `pod` is OOM-killed."""
    uid, node = pod["metadata"]["uid"], pod["spec"]["nodeName"]
    container_id = uid.replace("-", "")[:32] + "0" * 32
    ref = reporter.ContainerRef(namespace=pod["metadata"]["namespace"], pod=pod["metadata"]["name"], pod_uid=uid,
                                container="app", container_type=types.ContainerType.CONTAINER)
    cgroup = cgroups.ContainerCgroup(path=pathlib.Path("/sys/fs/cgroup/kubepods"), key="kubepods/x", pod_uid=uid,
                                     container_id=container_id, qos_class=types.QOSClass.BURSTABLE,
                                     driver=cgroups.Driver.CGROUPFS)
    counters = cgroups.Counters(version=cgroups.Version.V2, oom_kill=1, oom_group_kill=0, limit_hits=1, limit=limit)
    increase = watcher.Increase(cgroup=cgroup, counters=counters, new_kills=1, limit_hits=1,
                                seen_at=datetime.datetime.now(datetime.timezone.utc), previous_at=None)
    return reporter.build_event(ref=ref, increase=increase, node_name=node)


def _rec(kube: api.Client, namespace: str, name: str, check: Any, what: str) -> dict[str, Any]:
    return kit.wait_recommendation(kube, namespace, name, lambda r: bool(check(r.get("status") or {})), timeout=60, what=what)


def make(kube: api.Client, core_v1: Any, *, namespace: str, exporter: lab_exporter.Exporter) -> Made:
    node = kit.dedicated_node(kube, f"dash-{namespace[-6:]}")
    assert node is not None, "the dashboard's browser tests need the lab (kwok nodes)"
    deployments = f"/apis/apps/v1/namespaces/{namespace}/deployments"
    kube.create(f"/apis/oomtuner.dev/v1alpha1/namespaces/{namespace}/oompolicies", {
        "apiVersion": "oomtuner.dev/v1alpha1", "kind": "OOMPolicy", "metadata": {"name": "cart-auto"},
        "spec": {"selector": {"matchLabels": {"app": "cart"}}, "mode": "Auto", "cooldown": "10m"}})
    kube.create(deployments, kit.deployment("cart", replicas=2))
    kube.create(deployments, kit.deployment("api", containers=[kit.container(request="256Mi", limit="512Mi")]))
    kube.create(deployments, kit.on_node(kit.deployment("batch", containers=[kit.container(request="64Mi", limit=None)]), node))
    for app, base in (("cart", 200 * MI), ("api", 300 * MI), ("batch", 900 * MI)):
        for pod in kit.running_pods(kube, namespace, app, count=2 if app == "cart" else 1):
            _working_set(exporter, namespace, pod["metadata"]["name"], base=base, per_s=MI)

    # cart: a Limit kill, the patch, then a child process killed in a pod of the new template.
    cart = kit.running_pods(kube, namespace, "cart", count=2)
    inject.oom_kill(core_v1, namespace=namespace, pod=cart[0]["metadata"]["name"], container="app", at=kit.utc(30))
    _rec(kube, namespace, "deployment-cart", lambda s: s.get("phase") == "Applied", "cart patched to 384Mi")

    def rolled_out() -> list[dict[str, Any]] | None:
        pods = kit.running_pods(kube, namespace, "cart", count=1)
        new = [p for p in pods if p["spec"]["containers"][0]["resources"]["limits"]["memory"] == "384Mi"]
        return new or None

    new_pod = kit.wait_for(rolled_out, timeout=60, what="a cart pod with 384Mi")[0]
    _working_set(exporter, namespace, new_pod["metadata"]["name"], base=300 * MI, per_s=MI)
    kube.create(f"/api/v1/namespaces/{namespace}/events", child_kill_event(new_pod, limit=384 * MI))

    # api: raised by hand while paused, then its old pod dies at the old limit: stale.
    api_pod = kit.running_pods(kube, namespace, "api")[0]
    kube.request("PATCH", f"{deployments}/api", content_type="application/strategic-merge-patch+json", body={
        "spec": {"paused": True, "template": {"spec": {"containers": [
            {"name": "app", "resources": {"limits": {"memory": "768Mi"}}}]}}}})
    inject.oom_kill(core_v1, namespace=namespace, pod=api_pod["metadata"]["name"], container="app", at=kit.utc(20))

    # batch: no limit, and the kubelet's SystemOOM on its node.
    batch_pod = kit.running_pods(kube, namespace, "batch")[0]
    inject.system_oom(core_v1, node=node, process_name=SCRIPT, at=kit.utc(12))
    inject.oom_kill(core_v1, namespace=namespace, pod=batch_pod["metadata"]["name"], container="app", at=kit.utc(10))

    _rec(kube, namespace, "deployment-cart", lambda s: s.get("totalKills") == 2 and any("/child/" in k["id"] for k in s["kills"]),
         "cart's child-process kill counted")
    _rec(kube, namespace, "deployment-api", lambda s: any(k.get("stale") for k in s.get("kills", [])), "api's stale kill")
    _rec(kube, namespace, "deployment-batch",
         lambda s: s.get("kills") and s["kills"][0]["classification"] == "Node" and s["kills"][0].get("culprit"),
         "batch's Node kill with its culprit")
    kube.merge_patch(f"{RECS.format(ns=namespace)}/deployment-api",
                     {"metadata": {"annotations": {"example.com/owner": SCRIPT}}})
    return Made(namespace=namespace, node=node)
