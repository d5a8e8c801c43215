"""The README's dashboard screenshot (docs/dashboard.png), made on the lab the way a user would see it.

The real operator records three kills of a Deployment `cart` (Auto policy): a Limit kill four hours
ago at 256Mi (patched to 384Mi), a stale kill of the old pod two hours ago, and a child process
killed half an hour ago at 384Mi (the node agent's event). The lab exporter plays cAdvisor with a
working set that climbs to each kill, backfilled into a real Prometheus for the last six hours.
Headless Chromium then takes the workload page.

    OOMTUNER_LAB_DIR=... .venv/bin/python hack/dashboard_screenshot.py [--out docs/dashboard.png]
"""

from __future__ import annotations

import argparse
import os
import pathlib
import subprocess
import sys
import tempfile
import time
import uuid

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "hack" / "lab")]

import kubernetes  # noqa: E402
import yaml  # noqa: E402
from tests.dashboard import cdp, scenario  # noqa: E402
from tests.e2e import kit  # noqa: E402

from oomtuner.kube import client as kube_client  # noqa: E402
from oomtuner_lab import cluster, inject  # noqa: E402
from oomtuner_lab import exporter as lab_exporter  # noqa: E402
from oomtuner_lab import prometheus as lab_prometheus  # noqa: E402

MI = 1024 * 1024
HOUR = 3600.0


def life(pod_id: str, start: float, end: float | None, base: int, top: int) -> lab_exporter.Life:
    span = (end or time.time()) - start
    return lab_exporter.Life(id=pod_id, start=start, end=end, base=base, bytes_per_s=(top - base) / span, max=top)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default=str(ROOT / "docs" / "dashboard.png"))
    args = parser.parse_args()
    kubeconfig = os.environ.get("KUBECONFIG") or str(cluster.ensure_up())
    kube = kube_client.connect(kubeconfig=kubeconfig)
    for path in sorted((ROOT / "crds").glob("*.yaml")):
        body = yaml.safe_load(path.read_text())
        kube.apply(f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{body['metadata']['name']}", body,
                   field_manager="oomtuner-docs", force=True)
    configuration = kubernetes.client.Configuration()
    kubernetes.config.load_kube_config(config_file=kubeconfig, client_configuration=configuration)
    core_v1 = kubernetes.client.CoreV1Api(kubernetes.client.ApiClient(configuration))
    work = pathlib.Path(tempfile.mkdtemp(prefix="oomtuner-docs-"))
    env = {**os.environ, "KUBECONFIG": kubeconfig, "OOMTUNER_LOG_FORMAT": "text"}
    operator = subprocess.Popen([sys.executable, "-m", "oomtuner", "run", "--standalone", "--all-namespaces", "--metrics-port", "0",
                                 "--liveness-port", "0"], stdout=open(work / "operator.log", "wb"), stderr=subprocess.STDOUT,
                                cwd=ROOT, env=env)
    exporter = lab_exporter.Exporter().start()
    prometheus = lab_prometheus.Server(work / "prometheus", targets=[exporter.address])
    namespace = f"shop-{uuid.uuid4().hex[:4]}"
    web = browser = None
    try:
        time.sleep(5)
        kube.create("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})
        kit.wait_for(lambda: kube.get_or_none(f"/api/v1/namespaces/{namespace}/serviceaccounts/default"), timeout=30)
        kube.create(f"/apis/oomtuner.dev/v1alpha1/namespaces/{namespace}/oompolicies", {
            "apiVersion": "oomtuner.dev/v1alpha1", "kind": "OOMPolicy", "metadata": {"name": "default"},
            "spec": {"mode": "Auto", "cooldown": "1m", "memory": {"maxLimit": "2Gi"}}})
        kube.create(f"/apis/apps/v1/namespaces/{namespace}/deployments", kit.deployment("cart"))
        old = kit.running_pods(kube, namespace, "cart")[0]["metadata"]["name"]
        now = time.time()
        inject.oom_kill(core_v1, namespace=namespace, pod=old, container="app", at=kit.utc(4 * HOUR))
        kit.wait_recommendation(kube, namespace, "deployment-cart", lambda r: r["status"].get("phase") == "Applied", timeout=60)
        inject.oom_kill(core_v1, namespace=namespace, pod=old, container="app", at=kit.utc(2 * HOUR))
        new = kit.wait_for(lambda: [p for p in kit.running_pods(kube, namespace, "cart")
                                    if p["spec"]["containers"][0]["resources"]["limits"]["memory"] == "384Mi"], timeout=60)[0]
        event = scenario.child_kill_event(new, limit=384 * MI)
        stamp = kit.utc(HOUR / 2)
        event.update(firstTimestamp=stamp.strftime("%Y-%m-%dT%H:%M:%SZ"), lastTimestamp=stamp.strftime("%Y-%m-%dT%H:%M:%SZ"),
                     eventTime=stamp.strftime("%Y-%m-%dT%H:%M:%S.000000Z"))
        kube.create(f"/api/v1/namespaces/{namespace}/events", event)
        kit.wait_recommendation(kube, namespace, "deployment-cart", lambda r: r["status"].get("totalKills") == 3, timeout=60)
        traces = [
            lab_exporter.Trace(namespace=namespace, pod=old, container="app", lives=(
                life("/a/1", now - 6 * HOUR, now - 4 * HOUR, 110 * MI, 256 * MI),
                life("/a/2", now - 4 * HOUR, now - 2 * HOUR, 120 * MI, 256 * MI))),
            lab_exporter.Trace(namespace=namespace, pod=new["metadata"]["name"], container="app", lives=(
                life("/b/1", now - 1.5 * HOUR, now - HOUR / 2, 130 * MI, 384 * MI),
                life("/b/2", now - HOUR / 2, None, 190 * MI, 260 * MI))),
        ]
        for trace in traces:
            exporter.traces.set(trace)
        prometheus.reset(history=lab_exporter.openmetrics(traces, start=now - 6 * HOUR, end=time.time(), interval=60,
                                                          labels={"job": lab_prometheus.JOB, "instance": exporter.address}))
        port = free_port()
        web = subprocess.Popen([sys.executable, "-m", "oomtuner", "dashboard", "--port", str(port), "--refresh", "2",
                                f"--prometheus-url={prometheus.url}"], stdout=open(work / "dashboard.log", "wb"),
                               stderr=subprocess.STDOUT, cwd=ROOT, env=env)
        time.sleep(4)
        browser = cdp.Browser(profile=work / "chromium", log=work / "chromium.log")
        browser.open(f"http://127.0.0.1:{port}/namespaces/{namespace}/recommendations/deployment-cart?range=6h")
        browser.wait("document.body.getAttribute('data-charts')")
        browser.screenshot(pathlib.Path(args.out))
        print(f"wrote {args.out}; errors in the browser: {browser.settle()}")
    finally:
        if browser is not None:
            browser.close()
        for proc in (web, operator):
            if proc is not None:
                proc.terminate()
                proc.wait(timeout=20)
        prometheus.stop()
        exporter.stop()
        kube.delete(f"/api/v1/namespaces/{namespace}")
    return 0


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


if __name__ == "__main__":
    sys.exit(main())
