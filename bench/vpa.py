"""The real VPA recommender next to oomtuner, on the lab: reaction time to the same OOM kills.

What it does, in order:
1. builds (or finds cached) VPA's recommender with hack/vpa/build.sh and applies VPA's CRDs;
2. serves a fake metrics.k8s.io/v1beta1 from this process (HTTPS on 127.0.0.1, self-signed) and
   registers it as an APIService backed by an ExternalName Service (`localhost`): the lab's API
   server resolves ExternalName services to their host name, so the aggregation layer proxies
   to this process. Every container of the benchmark's pods reports `--usage-cpu` and
   `--usage-memory`, with a fresh timestamp on each request;
3. makes a namespace with one Deployment (`--replicas` kwok pods, request = limit = `--request`)
   and a VerticalPodAutoscaler on it (updateMode Off: the recommender only writes its status);
4. starts VPA's recommender (default `--recommender-interval` 1m unless `--interval`) and the
   operator (`oomtuner run --standalone --default-mode Recommend -n <namespace>`), and waits for
   VPA's first recommendation;
5. `--kills` times: waits a random 0–interval seconds (seeded, so the kill falls anywhere in
   VPA's loop), injects an OOM kill the way a kubelet reports it, and takes the time from the
   status write returning to (a) VPA's status.recommendation memory target for the container
   rising, polled every 0.2 s, and (b) the kill appearing in an OOMRecommendation (watch).
   Then, like VPA's updater in Recreate mode would, it rolls the Deployment out with the new
   target as request and limit, so the next kill happens at the raised request (VPA's OOM
   bump is relative to the request at the kill; a second kill at the same request would not
   raise its target within the same 24 h aggregation interval).

It prints JSON on stdout (and a short table on stderr). The APIService, namespace and
processes are removed at the end (VPA's CRDs are left installed).

    .venv/bin/python bench/vpa.py --kills 5
"""

from __future__ import annotations

import argparse
import datetime
import http.server
import json
import os
import pathlib
import random
import re
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any

import kubernetes
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "operator"))
sys.path.insert(0, str(ROOT / "hack" / "lab"))
sys.path.insert(0, str(ROOT / "bench"))

from oomtuner.kube import api
from reaction import Watcher, connect, free_port, inject, log, percentile, wait

GROUP = "metrics.k8s.io"
VERSION = "v1beta1"
APISERVICE = f"{VERSION}.{GROUP}"
MIB = 1024 * 1024


def parse_quantity(text: str) -> int:
    m = re.fullmatch(r"(\d+)(Ki|Mi|Gi)?", text)
    if not m:
        raise ValueError(f"unsupported quantity {text!r}")
    return int(m.group(1)) * {None: 1, "Ki": 1024, "Mi": MIB, "Gi": 1024 * MIB}[m.group(2)]


def mib(n: float) -> str:
    return f"{int(n // MIB)}Mi"


# --- the fake metrics.k8s.io -------------------------------------------------------------------

class MetricsState:
    """The pods (and nodes) the fake metrics API reports, refreshed from the API server."""

    def __init__(self, kube: api.Client, namespace: str, cpu: str, memory: str):
        self.kube, self.namespace, self.cpu, self.memory = kube, namespace, cpu, memory
        self.pods: list[dict[str, Any]] = []
        self.nodes: list[str] = []
        self.requests = 0
        self.paths: dict[str, int] = {}
        self.stopping = threading.Event()

    def refresh_forever(self) -> None:
        while not self.stopping.is_set():
            try:
                pods = self.kube.list(f"/api/v1/namespaces/{self.namespace}/pods")
                self.pods = [p for p in pods if (p.get("status") or {}).get("phase") == "Running"]
                self.nodes = sorted({p["spec"].get("nodeName") for p in self.pods if p["spec"].get("nodeName")})
            except Exception as exc:  # noqa: BLE001 - keep serving the last list
                log(f"metrics: refresh failed: {exc}")
            self.stopping.wait(2)

    def pod_metrics(self, namespace: str | None, name: str | None) -> list[dict[str, Any]]:
        now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        out = []
        for p in self.pods:
            md = p["metadata"]
            if namespace and md["namespace"] != namespace or name and md["name"] != name:
                continue
            out.append({
                "metadata": {"name": md["name"], "namespace": md["namespace"], "creationTimestamp": now,
                             "labels": md.get("labels") or {}},
                "timestamp": now, "window": "30s",
                "containers": [{"name": c["name"], "usage": {"cpu": self.cpu, "memory": self.memory}}
                               for c in p["spec"]["containers"]],
            })
        return out

    def node_metrics(self, name: str | None) -> list[dict[str, Any]]:
        now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        return [{"metadata": {"name": n, "creationTimestamp": now}, "timestamp": now, "window": "30s",
                 "usage": {"cpu": "100m", "memory": "1Gi"}} for n in self.nodes if not name or n == name]


def metrics_answer(state: MetricsState, path: str) -> dict[str, Any] | None:
    """The PodMetrics or NodeMetrics (a list, or one object) at `path`; {} for one that does not
    exist; None for a path that is neither."""
    prefix, gv = f"/apis/{GROUP}/{VERSION}", f"{GROUP}/{VERSION}"
    m = re.fullmatch(re.escape(prefix) + r"(?:/namespaces/([^/]+))?/pods(?:/([^/]+))?", path)
    if m:
        items, kind, one = state.pod_metrics(m.group(1), m.group(2)), "PodMetrics", m.group(2)
    elif m := re.fullmatch(re.escape(prefix) + r"/nodes(?:/([^/]+))?", path):
        items, kind, one = state.node_metrics(m.group(1)), "NodeMetrics", m.group(1)
    else:
        return None
    for item in items:
        item.update(kind=kind, apiVersion=gv)
    if one:
        return items[0] if items else {}
    return {"kind": f"{kind}List", "apiVersion": gv, "metadata": {}, "items": items}


def make_handler(state: MetricsState) -> type[http.server.BaseHTTPRequestHandler]:
    prefix = f"/apis/{GROUP}/{VERSION}"
    gv = f"{GROUP}/{VERSION}"

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:
            pass

        def send_json(self, code: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def not_found(self) -> None:
            self.send_json(404, {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound",
                                 "code": 404, "message": f"{self.path} not found"})

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0].rstrip("/")
            state.requests += 1
            state.paths[path] = state.paths.get(path, 0) + 1
            if path == f"/apis/{GROUP}":
                version = {"groupVersion": gv, "version": VERSION}
                return self.send_json(200, {"kind": "APIGroup", "apiVersion": "v1", "name": GROUP,
                                            "versions": [version], "preferredVersion": version})
            if path == prefix:
                verbs = ["get", "list"]
                return self.send_json(200, {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv,
                                            "resources": [
                                                {"name": "nodes", "singularName": "", "namespaced": False,
                                                 "kind": "NodeMetrics", "verbs": verbs},
                                                {"name": "pods", "singularName": "", "namespaced": True,
                                                 "kind": "PodMetrics", "verbs": verbs}]})
            answer = metrics_answer(state, path)
            if answer is not None:
                return self.send_json(200, answer) if answer else self.not_found()
            # /apis (aggregated discovery), /openapi/v2, /openapi/v3: the aggregator falls back.
            return self.not_found()

    return Handler


def serve_metrics(state: MetricsState, workdir: pathlib.Path) -> http.server.ThreadingHTTPServer:
    crt, key = workdir / "tls.crt", workdir / "tls.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1", "-keyout", str(key), "-out", str(crt)],
                   check=True, capture_output=True)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), make_handler(state))
    server.daemon_threads = True
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(str(crt), str(key))
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def register_apiservice(kube: api.Client, namespace: str, port: int) -> None:
    kube.create(f"/api/v1/namespaces/{namespace}/services", {
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": "fake-metrics"},
        "spec": {"type": "ExternalName", "externalName": "localhost", "ports": [{"name": "https", "port": port}]}})
    body = {"apiVersion": "apiregistration.k8s.io/v1", "kind": "APIService", "metadata": {"name": APISERVICE},
            "spec": {"group": GROUP, "version": VERSION, "groupPriorityMinimum": 100, "versionPriority": 100,
                     "insecureSkipTLSVerify": True,
                     "service": {"namespace": namespace, "name": "fake-metrics", "port": port}}}
    kube.apply(f"/apis/apiregistration.k8s.io/v1/apiservices/{APISERVICE}", body, field_manager="oomtuner-bench-vpa",
               force=True)


def apiservice_available(kube: api.Client) -> bool:
    obj = kube.get_or_none(f"/apis/apiregistration.k8s.io/v1/apiservices/{APISERVICE}") or {}
    conds = (obj.get("status") or {}).get("conditions") or []
    return any(c["type"] == "Available" and c["status"] == "True" for c in conds)


# --- the recommender and the operator ---------------------------------------------------------

def build_recommender() -> tuple[pathlib.Path, str, str]:
    script = ROOT / "hack" / "vpa" / "build.sh"
    out = subprocess.run([str(script)], check=True, capture_output=True, text=True)
    log(out.stdout.strip())
    directory = pathlib.Path(subprocess.run([str(script), "--print-dir"], check=True, capture_output=True,
                                            text=True).stdout.strip())
    return directory / "bin" / "recommender", directory.name, (directory / "share" / "vpa-v1-crd-gen.yaml").read_text()


def install_vpa_crds(kube: api.Client, text: str) -> None:
    for body in yaml.safe_load_all(text):
        if body and body.get("kind") == "CustomResourceDefinition":
            kube.apply(f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{body['metadata']['name']}", body,
                       field_manager="oomtuner-bench-vpa", force=True)


class Process:
    def __init__(self, argv: list[str], log_path: pathlib.Path, env: dict[str, str] | None = None):
        self.log_path = log_path
        with open(log_path, "wb") as out:
            self.proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env or dict(os.environ),
                                         cwd=ROOT)

    def check(self, name: str) -> None:
        if self.proc.poll() is not None:
            tail = self.log_path.read_text(errors="replace")[-2000:]
            raise SystemExit(f"bench: {name} exited with {self.proc.returncode}:\n{tail}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def vpa_target(kube: api.Client, namespace: str, name: str, container: str) -> int | None:
    obj = kube.get_or_none(f"/apis/autoscaling.k8s.io/v1/namespaces/{namespace}/verticalpodautoscalers/{name}") or {}
    for rec in ((obj.get("status") or {}).get("recommendation") or {}).get("containerRecommendations") or []:
        if rec.get("containerName") == container and "memory" in (rec.get("target") or {}):
            return quantity_bytes(rec["target"]["memory"])
    return None


def quantity_bytes(text: str) -> int:
    m = re.fullmatch(r"([0-9.]+)(k|M|G|Ki|Mi|Gi)?", str(text))
    if not m:
        raise ValueError(f"unsupported quantity {text!r}")
    scale = {None: 1, "k": 1000, "M": 1000**2, "G": 1000**3, "Ki": 1024, "Mi": MIB, "Gi": 1024 * MIB}[m.group(2)]
    return int(float(m.group(1)) * scale)


# --- the run -------------------------------------------------------------------------------------

def interval_seconds(text: str) -> float:
    """VPA's --recommender-interval in seconds (`30s`, `1m`); its default, 1m, when not given."""
    m = re.fullmatch(r"(\d+(?:\.\d+)?)(s|m)", text)
    return float(m.group(1)) * (60 if m.group(2) == "m" else 1) if m else 60.0


def await_reactions(kube: api.Client, namespace: str, *, watcher: Watcher, processes: tuple[Process, Process],
                    kill_id: str, deadline: float, target: int) -> tuple[float | None, float | None, int]:
    """Until `deadline`: when oomtuner saw the kill, and when VPA's target rose above `target` (and
    to what). None for a reaction that did not come."""
    recommender, operator = processes
    vpa_at = ours_at = None
    new_target = target
    while time.monotonic() < deadline and (vpa_at is None or ours_at is None):
        now = time.monotonic()
        if ours_at is None and kill_id in watcher.seen:
            ours_at = watcher.seen[kill_id]
        if vpa_at is None:
            value = vpa_target(kube, namespace, "app", "app")
            if value is not None and value > target:
                vpa_at, new_target = now, value
        recommender.check("the VPA recommender")
        operator.check("the operator")
        time.sleep(0.2)
    return vpa_at, ours_at, new_target


def print_result(result: dict[str, Any]) -> None:
    """The JSON on stdout, a summary per kill on stderr."""
    print(json.dumps(result, indent=2))
    for k in result.get("kills", []):
        log(f"request {k['request_at_kill']:>7}: VPA {k['vpa_seconds'] or 'no raise '}s ({k['vpa_target_before']} -> "
            f"{k['vpa_target_after']}), oomtuner {k['oomtuner_seconds']}s")
    for key in ("vpa_reaction_seconds", "oomtuner_reaction_seconds"):
        log(f"{key}: {result[key]}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kills", type=int, default=5)
    parser.add_argument("--replicas", type=int, default=3)
    parser.add_argument("--request", default="128Mi", help="Initial memory request = limit of the container.")
    parser.add_argument("--usage-memory", default="100Mi", help="Working set the fake metrics API reports.")
    parser.add_argument("--usage-cpu", default="5m")
    parser.add_argument("--interval", default="", help="VPA --recommender-interval (default: VPA's own, 1m).")
    parser.add_argument("--timeout", type=float, default=240, help="Seconds to wait for each reaction.")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--no-rollout", action="store_true", help="Do not raise the request between kills.")
    parser.add_argument("--keep", action="store_true", help="Keep the namespace (the APIService is always removed).")
    args = parser.parse_args()
    rng = random.Random(args.seed)

    kubeconfig, kube, api_client = connect()
    core_v1 = kubernetes.client.CoreV1Api(api_client)

    t = time.monotonic()
    binary, vpa_version, crds = build_recommender()
    build_seconds = time.monotonic() - t
    install_vpa_crds(kube, crds)
    for crd in ("verticalpodautoscalers", "verticalpodautoscalercheckpoints"):
        wait(f"the {crd} CRD", lambda crd=crd: kube.get_or_none(
            f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{crd}.autoscaling.k8s.io"), timeout=30)

    existing = kube.get_or_none(f"/apis/apiregistration.k8s.io/v1/apiservices/{APISERVICE}")
    if existing and not (existing["metadata"].get("managedFields") and any(
            f.get("manager") == "oomtuner-bench-vpa" for f in existing["metadata"]["managedFields"])):
        raise SystemExit(f"bench: an APIService {APISERVICE} not made by this script exists; not touching it")

    namespace = f"vpa-bench-{int(time.time())}"
    workdir = pathlib.Path(tempfile.mkdtemp(prefix=f"{namespace}-"))
    kube.create("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})
    state = MetricsState(kube, namespace, args.usage_cpu, args.usage_memory)
    threading.Thread(target=state.refresh_forever, daemon=True).start()
    server = serve_metrics(state, workdir)
    port = server.server_address[1]
    processes: list[Process] = []
    result: dict[str, Any] = {}
    try:
        register_apiservice(kube, namespace, port)
        wait(f"APIService {APISERVICE} to be Available", lambda: apiservice_available(kube), timeout=60, interval=0.5)
        log(f"fake metrics.k8s.io on 127.0.0.1:{port} is Available through the aggregation layer")

        request = parse_quantity(args.request)
        labels = {"app": "vpa-bench"}
        deploy_path = f"/apis/apps/v1/namespaces/{namespace}/deployments"
        kube.create(deploy_path, {
            "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "app", "labels": labels},
            "spec": {"replicas": args.replicas, "selector": {"matchLabels": labels}, "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": "app", "image": "registry.k8s.io/pause:3.10",
                                         "resources": {"requests": {"memory": mib(request), "cpu": "10m"},
                                                       "limits": {"memory": mib(request)}}}]}}}})
        kube.create(f"/apis/autoscaling.k8s.io/v1/namespaces/{namespace}/verticalpodautoscalers", {
            "apiVersion": "autoscaling.k8s.io/v1", "kind": "VerticalPodAutoscaler", "metadata": {"name": "app"},
            "spec": {"targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "app"},
                     "updatePolicy": {"updateMode": "Off"}}})

        def pods_at(req: int) -> list[dict[str, Any]] | None:
            pods = [p for p in state.kube.list(f"/api/v1/namespaces/{namespace}/pods")
                    if (p.get("status") or {}).get("phase") == "Running" and (p["status"].get("containerStatuses"))
                    and not p["metadata"].get("deletionTimestamp")
                    and parse_quantity(p["spec"]["containers"][0]["resources"]["requests"]["memory"]) == req]
            return pods if len(pods) >= args.replicas else None

        wait("the pods to run", lambda: pods_at(request), timeout=120)

        # The sample source works end to end through the API server.
        wait("the fake metrics to list the pods", lambda: len(state.pods) >= args.replicas, timeout=30, interval=0.5)
        probe = kube.get(f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/pods")
        log(f"metrics.k8s.io via the API server: {len(probe.get('items') or [])} PodMetrics")

        env = dict(os.environ, KUBECONFIG=kubeconfig)
        rec_argv = [str(binary), f"--kubeconfig={kubeconfig}", f"--vpa-object-namespace={namespace}",
                    f"--address=127.0.0.1:{free_port()}", "--v=3"]
        if args.interval:
            rec_argv.append(f"--recommender-interval={args.interval}")
        recommender = Process(rec_argv, workdir / "recommender.log", env)
        processes.append(recommender)
        started = time.monotonic()
        op_env = dict(env, OOMTUNER_LOG_FORMAT="json", OOMTUNER_LOG_LEVEL="WARNING")
        operator = Process([sys.executable, "-m", "oomtuner", "run", "--standalone", "--default-mode", "Recommend",
                            "-n", namespace, "--metrics-port", "0", "--liveness-port", str(free_port())],
                           workdir / "operator.log", op_env)
        processes.append(operator)

        def first_target() -> int | None:
            recommender.check("the VPA recommender")
            operator.check("the operator")
            return vpa_target(kube, namespace, "app", "app")

        baseline = wait("VPA's first recommendation", first_target, timeout=300, interval=0.2)
        first_seconds = time.monotonic() - started
        log(f"VPA's first recommendation after {first_seconds:.1f}s: target memory {mib(baseline)}")
        watcher = Watcher(api_client, namespace)
        watcher.start()
        watcher.ready.wait(10)
        time.sleep(2)

        interval_s = interval_seconds(args.interval)
        kills = []
        target = baseline
        for i in range(args.kills):
            pods = wait("the pods to run", lambda req=request: pods_at(req), timeout=180)
            delay = rng.uniform(0, interval_s)
            log(f"kill {i + 1}/{args.kills}: in {delay:.1f}s, request {mib(request)}, VPA target {mib(target)}")
            time.sleep(delay)
            pod = pods[i % len(pods)]
            kill_id, written = inject(core_v1, namespace, pod)
            vpa_at, ours_at, new_target = await_reactions(
                kube, namespace, watcher=watcher, processes=(recommender, operator), kill_id=kill_id,
                deadline=written + args.timeout, target=target)
            kill = {
                "request_at_kill": mib(request), "vpa_target_before": mib(target), "vpa_target_after": mib(new_target),
                "vpa_seconds": None if vpa_at is None else round(vpa_at - written, 2),
                "oomtuner_seconds": None if ours_at is None else round(ours_at - written, 3),
            }
            kills.append(kill)
            log(f"  VPA {kill['vpa_seconds'] or 'no raise in ' + str(args.timeout)}s ({mib(target)} -> {mib(new_target)}), oomtuner {kill['oomtuner_seconds']}s")
            target = new_target
            if not args.no_rollout and new_target > request and i + 1 < args.kills:
                request = new_target // MIB * MIB
                kube.merge_patch(f"{deploy_path}/app", {"spec": {"template": {"spec": {"containers": [
                    {"name": "app", "image": "registry.k8s.io/pause:3.10",
                     "resources": {"requests": {"memory": mib(request), "cpu": "10m"},
                                                  "limits": {"memory": mib(request)}}}]}}}})

        vpa_lat = [k["vpa_seconds"] for k in kills if k["vpa_seconds"] is not None]
        our_lat = [k["oomtuner_seconds"] for k in kills if k["oomtuner_seconds"] is not None]

        def stats(values: list[float]) -> dict[str, Any]:
            return {"n": len(values), "min": min(values, default=None), "p50": percentile(values, 50),
                    "mean": round(statistics.fmean(values), 3) if values else None, "max": max(values, default=None)}

        result = {
            "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "machine": f"{os.cpu_count()} cores",
            "vpa": {"version": vpa_version, "recommender_interval": args.interval or "1m (default)",
                    "build_or_cache_seconds": round(build_seconds, 1),
                    "first_recommendation_seconds": round(first_seconds, 1), "baseline_target": mib(baseline)},
            "fake_metrics": {"port": port, "requests": state.requests, "paths": state.paths,
                             "usage": {"cpu": args.usage_cpu, "memory": args.usage_memory}},
            "kills": kills,
            "vpa_reaction_seconds": stats(vpa_lat),
            "oomtuner_reaction_seconds": stats(our_lat),
            "vpa_missed": len(kills) - len(vpa_lat), "oomtuner_missed": len(kills) - len(our_lat),
            "logs": str(workdir),
        }
        watcher.stopping.set()
    finally:
        for p in processes:
            p.stop()
        state.stopping.set()
        server.shutdown()
        try:
            kube.delete(f"/apis/apiregistration.k8s.io/v1/apiservices/{APISERVICE}")
        except Exception as exc:  # noqa: BLE001 - report, do not mask the run's error
            log(f"could not delete APIService {APISERVICE}: {exc}")
        if not args.keep:
            kube.delete(f"/api/v1/namespaces/{namespace}")
    print_result(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
