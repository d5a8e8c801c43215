"""`make demo`: the whole story in one go, on the local lab.

1. start the lab (building its binaries the first time) and install the CRDs;
2. run the operator (`oomtuner run`) as a background process;
3. deploy a workload with an OOMPolicy in mode Auto and let it be OOM-killed;
4. show the OOMRecommendation and the Deployment the operator patched;
5. start `oomtuner dashboard` and end with its URL.

On the lab's real node (`lab-node-real`: a real kubelet, containerd and runc) the workload is
memhog, which grows past its 64Mi limit: the kernel kills it, the kubelet reports it, and the demo
ends with the patched pod running and holding its memory. Where the lab has no real node (the host
cannot run one, e.g. not root), it says why and writes the kill into the pod status of a kwok pod,
the way a kubelet reports it.

The lab and the dashboard keep running afterwards so you can look around (`eval "$(oomtuner lab
env)"`); `oomtuner lab down` stops both. Run with KUBECONFIG set to use another cluster instead of
the lab (its nodes' kubelets are real: load the memhog image there first, see tests/realnode/conftest.py).
"""

from __future__ import annotations

import os
import pathlib
import socket
import subprocess
import sys
import time
import urllib.request
from typing import Any, Callable

import kubernetes
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "hack" / "lab"))
NAMESPACE = "oomtuner-demo"


def step(text: str) -> None:
    print(f"\n\033[1m==> {text}\033[0m" if sys.stdout.isatty() else f"\n==> {text}", flush=True)


def wait(what: str, predicate: Callable[[], Any], timeout: float = 90) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.3)
    raise SystemExit(f"demo: timed out waiting for {what}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def real_node(kube: Any, *, on_lab: bool) -> tuple[str | None, str]:
    """The node with a real kubelet the demo uses, or None and why there is none."""
    from oomtuner_lab import cluster, nodeconf

    if on_lab:
        state = cluster.status().real_node
        return (nodeconf.NODE_NAME, "") if state.running else (None, state.reason or "it does not run")
    nodes = kube.list("/api/v1/nodes")
    if any((n["metadata"].get("annotations") or {}).get("kwok.x-k8s.io/node") == "fake" for n in nodes):
        return None, "this cluster's pods are run by kwok"
    workers = [n["metadata"]["name"] for n in nodes if not n["spec"].get("taints") and not n["spec"].get("unschedulable")]
    return (workers[0], "") if workers else (None, "no schedulable node")


def workload(node: str | None) -> dict[str, Any]:
    """shop-cart: memhog growing to 96Mi under a 64Mi limit on the real node; else a kwok pod."""
    from oomtuner_lab import nodeconf

    if node is None:
        container = {"name": "cart", "image": "registry.example/shop/cart:1.4",
                     "resources": {"requests": {"memory": "128Mi", "cpu": "100m"}, "limits": {"memory": "256Mi"}}}
        return {"replicas": 2, "spec": {"containers": [container]}}
    container = {"name": "cart", "image": nodeconf.MEMHOG_IMAGE, "imagePullPolicy": "Never",
                 "args": ["--after", "5s", "--allocate", "96Mi", "--rate", "32Mi/s"],
                 "resources": {"requests": {"memory": "32Mi", "cpu": "10m"}, "limits": {"memory": "64Mi"}}}
    tolerations = [nodeconf.TOLERATION] if node == nodeconf.NODE_NAME else []
    return {"replicas": 1, "spec": {"containers": [container], "nodeSelector": {"kubernetes.io/hostname": node},
                                    "tolerations": tolerations, "terminationGracePeriodSeconds": 1}}


def container_state(pod: dict[str, Any], key: str) -> Any:
    """A field of the pod's first container status ({} when missing)."""
    statuses = (pod.get("status") or {}).get("containerStatuses") or [{}]
    return statuses[0].get(key, {})


def real_kill(kube: Any, pod: dict[str, Any], kernel_log: Any) -> None:
    """Wait for the kernel's kill of memhog and the kubelet's report of it; show both."""
    name = pod["metadata"]["name"]
    step(f"memhog in {name} grows past 64Mi: the kernel OOM-kills it, the kubelet reports it")
    if kernel_log is not None:
        kill = wait("the kernel's OOM kill", lambda: kernel_log.kills_of_pod(pod["metadata"]["uid"]), timeout=60)[0]
        print(f"  kernel: killed process {kill.pid} ({kill.task}), oom_score_adj {kill.oom_score_adj}, in cgroup {kill.memcg}")
    terminated = wait("the kubelet's OOMKilled", lambda: container_state(
        kube.get(f"/api/v1/namespaces/{NAMESPACE}/pods/{name}"), "lastState").get("terminated"), timeout=60)
    print(f"  kubelet: lastState.terminated reason {terminated['reason']}, exit code {terminated['exitCode']}, "
          f"finished at {terminated['finishedAt']}")


def written_kill(kubeconfig: str, pod: dict[str, Any]) -> None:
    """Write an OOM kill into the kwok pod's status, as a kubelet reports one."""
    from oomtuner_lab import inject

    step(f"The kernel OOM-kills container cart in {pod['metadata']['name']} (written as the kubelet reports it)")
    configuration = kubernetes.client.Configuration()
    kubernetes.config.load_kube_config(config_file=kubeconfig, client_configuration=configuration)
    core_v1 = kubernetes.client.CoreV1Api(kubernetes.client.ApiClient(configuration))
    inject.oom_kill(core_v1, namespace=NAMESPACE, pod=pod["metadata"]["name"], container="cart")


def patched_pod_runs(kube: Any, kubectl: str, node: str, dep: dict[str, Any],
                     running: Callable[[], list[dict[str, Any]]]) -> None:
    """Wait for the pod with the patched limit to run, then show it holding its memory."""
    new_limit = dep["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["memory"]
    step(f"The patched pod runs on {node} with {new_limit}")

    def patched_running() -> dict[str, Any] | None:
        return next((p for p in running() if p["spec"]["containers"][0]["resources"]["limits"]["memory"] == new_limit
                     and "running" in container_state(p, "state")), None)

    new = wait("the patched pod to run", patched_running, timeout=90)
    time.sleep(10)  # memhog allocates its 96Mi 5 s after it starts
    fresh = kube.get(f"/api/v1/namespaces/{NAMESPACE}/pods/{new['metadata']['name']}")
    restarts = container_state(fresh, "restartCount")
    print(f"  {new['metadata']['name']} Running, {restarts} restarts, holding the 96Mi that was killed at 64Mi")
    subprocess.run([kubectl, "logs", "-n", NAMESPACE, new["metadata"]["name"], "--tail", "3"], check=False)


def main() -> int:
    from oomtuner.kube import api, client
    from oomtuner_lab import binaries, cluster, host

    step("Starting the local lab (the first run builds Kubernetes from Go modules: slow once)")
    on_lab = not os.environ.get("KUBECONFIG")
    kubeconfig = os.environ.get("KUBECONFIG") or str(cluster.ensure_up(echo=print))
    os.environ["KUBECONFIG"] = kubeconfig
    kube = client.connect(kubeconfig=kubeconfig)
    kubectl = str(binaries.path("kubectl")) if binaries.path("kubectl").exists() else "kubectl"
    node, why_not = real_node(kube, on_lab=on_lab)
    if node is not None:
        print(f"  the demo runs on {node}: a real kubelet, containerd and runc; the kernel does the killing")
    else:
        print(f"  no real node ({why_not}): the demo runs on kwok nodes and writes the kill into the pod status "
              "as a kubelet would")

    step("Installing the CRDs from crds/")
    for path in sorted((ROOT / "crds").glob("*.yaml")):
        body = yaml.safe_load(path.read_text())
        kube.apply(f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{body['metadata']['name']}", body,
                   field_manager="oomtuner-demo", force=True)
        print(f"  {body['metadata']['name']}")

    step("Running the operator: oomtuner run --standalone")
    log_path = pathlib.Path(os.environ.get("TMPDIR", "/tmp")) / "oomtuner-demo-operator.log"
    metrics_port, liveness_port = free_port(), free_port()
    operator = subprocess.Popen(
        [sys.executable, "-m", "oomtuner", "run", "--standalone", "--log-format", "text",
         "--metrics-port", str(metrics_port), "--liveness-port", str(liveness_port)],
        stdout=open(log_path, "wb"), stderr=subprocess.STDOUT, cwd=ROOT,
    )

    def healthy() -> bool:
        if operator.poll() is not None:
            raise SystemExit(f"demo: the operator exited; see {log_path}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{liveness_port}/healthz", timeout=1):
                return True
        except OSError:
            return False

    try:
        wait("the operator to be live", healthy, timeout=60)
        print(f"  live; log in {log_path}")

        shape = workload(node)
        limit = shape["spec"]["containers"][0]["resources"]["limits"]["memory"]
        what = f"memhog growing to 96Mi, on {node}" if node else "on kwok nodes"
        step(f"Deploying shop-cart (limit {limit}, {what}) with an OOMPolicy in mode Auto, in namespace {NAMESPACE}")
        try:
            kube.create("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}})
        except api.Conflict:
            pass
        ns = f"/api/v1/namespaces/{NAMESPACE}"
        kube.apply(f"/apis/oomtuner.dev/v1alpha1/namespaces/{NAMESPACE}/oompolicies/default", {
            "apiVersion": "oomtuner.dev/v1alpha1", "kind": "OOMPolicy", "metadata": {"name": "default", "namespace": NAMESPACE},
            "spec": {"mode": "Auto", "cooldown": "1m", "memory": {"maxLimit": "2Gi"}}}, field_manager="demo-user", force=True)
        labels = {"app": "shop-cart"}
        dep_path = f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments"
        kube.delete(f"{dep_path}/shop-cart")  # a re-run starts from the original limit
        kube.delete(f"/apis/oomtuner.dev/v1alpha1/namespaces/{NAMESPACE}/oomrecommendations/deployment-shop-cart")
        wait("an earlier shop-cart to be gone", lambda: kube.get_or_none(f"{dep_path}/shop-cart") is None)
        kube.request("POST", dep_path, query={"fieldManager": "demo-user"}, body={
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "shop-cart", "namespace": NAMESPACE, "labels": labels},
            "spec": {"replicas": shape["replicas"], "selector": {"matchLabels": labels},
                     "template": {"metadata": {"labels": labels}, "spec": shape["spec"]}}})

        def running() -> list[dict[str, Any]]:
            pods = kube.list(f"{ns}/pods", query={"labelSelector": "app=shop-cart"})
            return [p for p in pods if (p.get("status") or {}).get("phase") == "Running"
                    and (p.get("status") or {}).get("containerStatuses") and not p["metadata"].get("deletionTimestamp")]

        try:
            kernel_log: Any = host.KernelLog()
        except OSError:
            kernel_log = None  # not root on this machine: the kubelet's report is shown alone
        pod = wait("shop-cart pods to run", running)[0]
        print(f"  {pod['metadata']['name']} is Running on {pod['spec']['nodeName']}")

        if node is not None:
            real_kill(kube, pod, kernel_log)
        else:
            written_kill(kubeconfig, pod)

        rec_path = f"/apis/oomtuner.dev/v1alpha1/namespaces/{NAMESPACE}/oomrecommendations/deployment-shop-cart"
        wait("the recommendation to be applied",
             lambda: ((kube.get_or_none(rec_path) or {}).get("status") or {}).get("phase") in ("Applied", "Conflict", "Capped"))

        step("kubectl get oomrecommendations -n " + NAMESPACE)
        subprocess.run([kubectl, "get", "oomrecommendations", "-n", NAMESPACE, "-o", "wide"], check=False)
        step("What the operator recorded (status)")
        rec = kube.get(rec_path)
        print(yaml.safe_dump({"status": {k: rec["status"][k] for k in ("phase", "containers", "kills") if k in rec["status"]}},
                             sort_keys=False, allow_unicode=True))
        step("The Deployment, patched by field manager oomtuner")
        dep = kube.get(f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments/shop-cart")
        print(yaml.safe_dump(dep["spec"]["template"]["spec"]["containers"][0]["resources"], sort_keys=False, allow_unicode=True))
        step("Events")
        subprocess.run([kubectl, "get", "events", "-n", NAMESPACE, "--field-selector", "source=oomtuner",
                        "-o", "custom-columns=TYPE:.type,REASON:.reason,OBJECT:.involvedObject.name,MESSAGE:.message"], check=False)
        if node is not None:
            patched_pod_runs(kube, kubectl, node, dep, running)
    finally:
        operator.terminate()
        operator.wait(timeout=20)
    step("The dashboard: kills, memory against limits, who dies next (oomtuner dashboard)")
    from oomtuner_lab import dashboard

    url, log = dashboard.start(kubeconfig=kubeconfig)
    print(f"  log in {log}")
    print(f"\nThe lab keeps running: eval \"$({sys.executable} -m oomtuner lab env)\"; stop it with `oomtuner lab down`.")
    print(f"The dashboard keeps running with it: {url}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
