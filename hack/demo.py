"""`make demo`: the whole story in one go, on the local lab.

1. start the lab (building its binaries the first time) and install the CRDs;
2. run the operator (`oomtuner run`) as a background process;
3. deploy a workload with an OOMPolicy in mode Auto, and OOM-kill its container the way a kubelet
   reports it;
4. show the OOMRecommendation and the Deployment the operator patched;
5. start `oomtuner dashboard` and end with its URL.

The lab and the dashboard keep running afterwards so you can look around (`eval "$(oomtuner lab
env)"`); `oomtuner lab down` stops both. Run with KUBECONFIG set to use another cluster instead of the lab.
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


def main() -> int:
    from oomtuner.kube import api, client
    from oomtuner_lab import binaries, cluster, inject

    step("Starting the local lab (the first run builds Kubernetes from Go modules: slow once)")
    kubeconfig = os.environ.get("KUBECONFIG") or str(cluster.ensure_up(echo=print))
    os.environ["KUBECONFIG"] = kubeconfig
    kube = client.connect(kubeconfig=kubeconfig)
    kubectl = str(binaries.path("kubectl")) if binaries.path("kubectl").exists() else "kubectl"

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

        step(f"Deploying shop-cart (limit 256Mi) with an OOMPolicy in mode Auto, in namespace {NAMESPACE}")
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
        kube.delete(f"{dep_path}/shop-cart")  # a re-run starts from the original 256Mi
        kube.delete(f"/apis/oomtuner.dev/v1alpha1/namespaces/{NAMESPACE}/oomrecommendations/deployment-shop-cart")
        wait("an earlier shop-cart to be gone", lambda: kube.get_or_none(f"{dep_path}/shop-cart") is None)
        kube.request("POST", dep_path, query={"fieldManager": "demo-user"}, body={
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "shop-cart", "namespace": NAMESPACE, "labels": labels},
            "spec": {"replicas": 2, "selector": {"matchLabels": labels},
                     "template": {"metadata": {"labels": labels}, "spec": {"containers": [{
                         "name": "cart", "image": "registry.example/shop/cart:1.4",
                         "resources": {"requests": {"memory": "128Mi", "cpu": "100m"}, "limits": {"memory": "256Mi"}}}]}}}})

        def running() -> list[dict[str, Any]]:
            pods = kube.list(f"{ns}/pods", query={"labelSelector": "app=shop-cart"})
            return [p for p in pods if (p.get("status") or {}).get("phase") == "Running"
                    and (p.get("status") or {}).get("containerStatuses") and not p["metadata"].get("deletionTimestamp")]

        pod = wait("shop-cart pods to run", running)[0]
        print(f"  {pod['metadata']['name']} is Running on {pod['spec']['nodeName']}")

        step(f"The kernel OOM-kills container cart in {pod['metadata']['name']} (written as the kubelet reports it)")
        configuration = kubernetes.client.Configuration()
        kubernetes.config.load_kube_config(config_file=kubeconfig, client_configuration=configuration)
        core_v1 = kubernetes.client.CoreV1Api(kubernetes.client.ApiClient(configuration))
        inject.oom_kill(core_v1, namespace=NAMESPACE, pod=pod["metadata"]["name"], container="cart")

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
