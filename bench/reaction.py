"""Reaction time and scale of the operator on a real API server (the lab, or KUBECONFIG).

What it does, in order:
1. makes `--nodes` kwok nodes of its own (tainted, so only the benchmark's pods land there) and
   `--pods` running pods in Deployments of 100 replicas;
2. starts the operator (`oomtuner run --standalone`) as a separate process and waits until it is
   live and idle;
3. injects OOM kills the way a kubelet reports them (pod status: restartCount+1, lastState
   OOMKilled): `--spread-kills` spread evenly over `--spread-seconds`, then a burst of
   `--burst-kills` within one second;
4. watches the OOMRecommendations and takes, for each kill, the time from its status being written
   (the PATCH returning) to the recommendation carrying it (the watch event arriving).

It prints JSON on stdout (and a short table on stderr): latency p50/p95/p99/max per phase, kills
lost (never recorded) and counted twice (a ledger holding a kill more than once, or more kills in
the recommendations' totals than were injected), the operator's peak RSS and CPU seconds, and the
API requests it sent (its own `oomtuner_api_requests_total`, which leaves out kopf's watch streams).

    .venv/bin/python bench/reaction.py --pods 1000
    .venv/bin/python bench/reaction.py --pods 10000 --nodes 50 --keep
"""

from __future__ import annotations

import argparse
import concurrent.futures
import datetime
import json
import os
import pathlib
import re
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from typing import Any, Callable

import kubernetes
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "operator"))
sys.path.insert(0, str(ROOT / "hack" / "lab"))

from oomtuner.kube import api, client  # noqa: E402

KWOK = "kwok.x-k8s.io/node"
TAINT = "oomtuner.dev/bench"
REPLICAS = 100


def log(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def wait(what: str, predicate: Callable[[], Any], *, timeout: float, interval: float = 1.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise SystemExit(f"bench: timed out after {timeout:g}s waiting for {what}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[index]


def install_crds(kube: api.Client) -> None:
    for path in sorted((ROOT / "crds").glob("*.yaml")):
        body = yaml.safe_load(path.read_text())
        kube.apply(f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{body['metadata']['name']}", body,
                   field_manager="oomtuner-bench", force=True)


def make_nodes(kube: api.Client, count: int, prefix: str) -> list[str]:
    names = [f"{prefix}-{i:03d}" for i in range(count)]
    for name in names:
        if kube.get_or_none(f"/api/v1/nodes/{name}") is not None:
            continue
        kube.create("/api/v1/nodes", {
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "annotations": {KWOK: "fake"}, "labels": {"kubernetes.io/hostname": name, TAINT: "true"}},
            "spec": {"taints": [{"key": TAINT, "value": "true", "effect": "NoSchedule"}]},
            "status": {"capacity": {"cpu": "64", "memory": "256Gi", "pods": "300"},
                       "allocatable": {"cpu": "64", "memory": "256Gi", "pods": "300"}},
        })
    return names


def make_deployments(kube: api.Client, namespace: str, pods: int) -> list[str]:
    names = []
    for i in range((pods + REPLICAS - 1) // REPLICAS):
        name = f"svc-{i:03d}"
        replicas = min(REPLICAS, pods - i * REPLICAS)
        labels = {"app": name}
        kube.create(f"/apis/apps/v1/namespaces/{namespace}/deployments", {
            "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "labels": labels},
            "spec": {"replicas": replicas, "selector": {"matchLabels": labels}, "template": {
                "metadata": {"labels": labels},
                "spec": {"nodeSelector": {TAINT: "true"},
                         "tolerations": [{"key": TAINT, "operator": "Exists", "effect": "NoSchedule"}],
                         "containers": [{"name": "app", "image": "registry.k8s.io/pause:3.10",
                                         "resources": {"requests": {"memory": "128Mi", "cpu": "10m"},
                                                       "limits": {"memory": "256Mi"}}}]}}}})
        names.append(name)
    return names


def running_pods(kube: api.Client, namespace: str) -> list[dict[str, Any]]:
    pods = kube.list(f"/api/v1/namespaces/{namespace}/pods")
    return [p for p in pods if (p.get("status") or {}).get("phase") == "Running"
            and (p.get("status") or {}).get("containerStatuses")]


def connect(*, pool: int | None = None) -> tuple[str, api.Client, kubernetes.client.ApiClient]:
    """KUBECONFIG's cluster, or the lab (started if needed): the kubeconfig, the operator's thin
    client and a kubernetes ApiClient with `pool` connections (the default when None)."""
    kubeconfig = os.environ.get("KUBECONFIG")
    if not kubeconfig:
        from oomtuner_lab import cluster

        kubeconfig = str(cluster.ensure_up(echo=log))
    kube = client.connect(kubeconfig=kubeconfig, timeout=60)
    configuration = kubernetes.client.Configuration()
    kubernetes.config.load_kube_config(config_file=kubeconfig, client_configuration=configuration)
    if pool is not None:
        configuration.connection_pool_maxsize = pool
    return kubeconfig, kube, kubernetes.client.ApiClient(configuration)


class Operator:
    def __init__(self, kubeconfig: str, log_path: pathlib.Path):
        self.metrics_port, self.liveness_port = free_port(), free_port()
        env = {**os.environ, "KUBECONFIG": kubeconfig, "OOMTUNER_LOG_FORMAT": "text", "OOMTUNER_LOG_LEVEL": os.environ.get("OOMTUNER_LOG_LEVEL", "WARNING")}
        with open(log_path, "wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "oomtuner", "run", "--standalone", "--metrics-port", str(self.metrics_port),
                 "--liveness-port", str(self.liveness_port)],
                stdout=out, stderr=subprocess.STDOUT, env=env, cwd=ROOT)

    def live(self) -> bool:
        if self.proc.poll() is not None:
            raise SystemExit(f"bench: the operator exited with {self.proc.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.liveness_port}/healthz", timeout=1):
                return True
        except OSError:
            return False

    def cpu_seconds(self) -> float:
        fields = pathlib.Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks = os.sysconf("SC_CLK_TCK")
        return (int(fields[11]) + int(fields[12])) / ticks

    def peak_rss_mib(self) -> float:
        for line in pathlib.Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def rss_mib(self) -> float:
        for line in pathlib.Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def api_requests(self) -> dict[str, float]:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as r:
            text = r.read().decode()
        found = {}
        for m in re.finditer(r'^oomtuner_api_requests_total\{verb="(\w+)"\} ([0-9.e+]+)$', text, re.M):
            found[m.group(1)] = float(m.group(2))
        return found

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


class Watcher(threading.Thread):
    """Records when each kill id first appears in an OOMRecommendation's ledger.

    A plain streaming GET with `watch=1`, read line by line as the API server flushes each event, so
    the time taken is when the event arrived (the generated client's watch helper is not used).
    """

    def __init__(self, api_client: kubernetes.client.ApiClient, namespace: str):
        super().__init__(daemon=True)
        self.api_client = api_client
        self.path = f"/apis/oomtuner.dev/v1alpha1/namespaces/{namespace}/oomrecommendations"
        self.seen: dict[str, float] = {}
        self.duplicates: set[str] = set()
        self.totals: dict[str, int] = {}
        # Per recommendation: (arrival time, totalKills) each time the total rose.
        self.progress: dict[str, list[tuple[float, int]]] = {}
        self.stopping = threading.Event()
        self.ready = threading.Event()

    def recorded_at(self, rec: str, count: int) -> float | None:
        """When the recommendation first counted `count` kills."""
        return next((t for t, total in self.progress.get(rec, []) if total >= count), None)

    def _record(self, obj: dict[str, Any], now: float) -> None:
        status = obj.get("status") or {}
        ids = [k["id"] for k in status.get("kills") or []]
        if len(ids) != len(set(ids)):
            self.duplicates.update(i for i in ids if ids.count(i) > 1)
        for kill_id in ids:
            self.seen.setdefault(kill_id, now)
        name, total = obj["metadata"]["name"], int(status.get("totalKills") or 0)
        self.totals[name] = total
        steps = self.progress.setdefault(name, [])
        if not steps or total > steps[-1][1]:
            steps.append((now, total))

    def run(self) -> None:
        import urllib3

        version = ""
        while not self.stopping.is_set():
            try:
                query = [("watch", "1"), ("allowWatchBookmarks", "true"), ("timeoutSeconds", "60")]
                if version:
                    query.append(("resourceVersion", version))
                _, url, headers, _, _ = self.api_client.param_serialize(
                    method="GET", resource_path=self.path, query_params=query,
                    header_params={"Accept": "application/json"}, auth_settings=["BearerToken"])
                response = self.api_client.rest_client.pool_manager.request(
                    "GET", url, headers=headers, preload_content=False, timeout=urllib3.Timeout(connect=5, read=90))
                self.ready.set()
                buffer = b""
                for chunk in response.stream(4096, decode_content=True):
                    buffer += chunk
                    while b"\n" in buffer:
                        line, buffer = buffer.split(b"\n", 1)
                        if not line.strip():
                            continue
                        now = time.monotonic()
                        event = json.loads(line)
                        obj = event.get("object") or {}
                        version = (obj.get("metadata") or {}).get("resourceVersion") or version
                        if event.get("type") in ("ADDED", "MODIFIED"):
                            self._record(obj, now)
                        elif event.get("type") == "ERROR":
                            version = ""
                    if self.stopping.is_set():
                        break
                response.release_conn()
            except Exception as exc:  # a dropped watch is re-opened where it stopped
                log(f"watch restarted: {exc}")
                time.sleep(0.5)


def rec_of(pod: dict[str, Any]) -> str:
    return f"deployment-{pod['metadata']['labels']['app']}"


def inject(core_v1: kubernetes.client.CoreV1Api, namespace: str, pod: dict[str, Any]) -> tuple[str, float]:
    """Write an OOM kill into the pod's status; return (kill id, monotonic time the write returned)."""
    from oomtuner_lab import inject as lab_inject

    at = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
    lab_inject.oom_kill(core_v1, namespace=namespace, pod=pod["metadata"]["name"], container="app", at=at)
    written = time.monotonic()
    kill_id = f"{pod['metadata']['uid']}/app/{at.isoformat()}"
    return kill_id, written


def phase(name: str, pods: list[dict[str, Any]], *, seconds: float, core_v1: Any, namespace: str,
          workers: int) -> dict[str, tuple[float, str]]:
    log(f"{name}: {len(pods)} kills over {seconds:g}s")
    start = time.monotonic()
    injected: dict[str, tuple[float, str]] = {}
    with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
        futures = []
        for i, pod in enumerate(pods):
            due = start + (seconds * i / max(1, len(pods)))
            futures.append((pool.submit(_at, due, inject, core_v1, namespace, pod), rec_of(pod)))
        for f, rec in futures:
            kill_id, written = f.result()
            injected[kill_id] = (written, rec)
    log(f"{name}: injected in {time.monotonic() - start:.2f}s")
    return injected


def _at(due: float, fn: Callable[..., Any], *args: Any) -> Any:
    delay = due - time.monotonic()
    if delay > 0:
        time.sleep(delay)
    return fn(*args)


def latencies(order: list[tuple[str, float, str]], watcher: Watcher) -> dict[str, float | None]:
    """Each kill's latency: the i-th kill written into a workload's pods (in the order the writes
    returned) counts as recorded when that workload's recommendation first counted i kills.

    Counting by totalKills, not by the kill ledger, because one status write may record more kills
    than the ledger keeps."""
    seen_per_rec: dict[str, int] = {}
    result: dict[str, float | None] = {}
    for kill_id, written, rec in sorted(order, key=lambda item: item[1]):
        seen_per_rec[rec] = seen_per_rec.get(rec, 0) + 1
        at = watcher.recorded_at(rec, seen_per_rec[rec])
        result[kill_id] = None if at is None else max(0.0, at - written)
    return result


def summarize(kills: list[str], lat: dict[str, float | None]) -> dict[str, Any]:
    values = [v for k in kills if (v := lat.get(k)) is not None]
    return {
        "kills": len(kills),
        "recorded": len(values),
        "lost": len(kills) - len(values),
        "latency_seconds": {
            "p50": percentile(values, 50), "p95": percentile(values, 95), "p99": percentile(values, 99),
            "max": max(values) if values else None,
            "mean": statistics.fmean(values) if values else None,
        },
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pods", type=int, default=1000)
    parser.add_argument("--nodes", type=int, default=50)
    parser.add_argument("--spread-kills", type=int, default=100)
    parser.add_argument("--spread-seconds", type=float, default=60)
    parser.add_argument("--burst-kills", type=int, default=200)
    parser.add_argument("--workers", type=int, default=32, help="Threads injecting kills.")
    parser.add_argument("--keep", action="store_true", help="Keep the namespace and nodes afterwards.")
    args = parser.parse_args()
    if args.spread_kills + args.burst_kills >= args.pods:
        parser.error("need at least as many pods as kills (each kill hits its own pod)")

    kubeconfig, kube, api_client = connect(pool=args.workers + 4)
    core_v1 = kubernetes.client.CoreV1Api(api_client)

    install_crds(kube)
    # A previous run's namespace that is still being deleted (thousands of pods) loads the API server
    # and the operator under test: wait until it is gone.
    def earlier_gone() -> bool:
        left = [ns["metadata"]["name"] for ns in kube.list("/api/v1/namespaces")
                if ns["metadata"]["name"].startswith("bench-") and (ns.get("status") or {}).get("phase") == "Terminating"]
        if left:
            log(f"  waiting for {', '.join(left)} to be deleted")
        return not left

    wait("earlier benchmark namespaces to be deleted", earlier_gone, timeout=1800, interval=10)
    namespace = f"bench-{int(time.time())}"
    kube.create("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})
    nodes = make_nodes(kube, args.nodes, "bench-node")
    log(f"{len(nodes)} nodes; creating {args.pods} pods in {namespace}")
    t0 = time.monotonic()
    make_deployments(kube, namespace, args.pods)

    def all_running() -> list[dict[str, Any]] | None:
        pods = running_pods(kube, namespace)
        log(f"  {len(pods)}/{args.pods} pods running")
        return pods if len(pods) >= args.pods else None

    pods = wait("every pod to run", all_running, timeout=3600, interval=10)
    setup_seconds = time.monotonic() - t0
    log(f"{len(pods)} pods running after {setup_seconds:.0f}s")

    operator = Operator(kubeconfig, pathlib.Path(os.environ.get("TMPDIR", "/tmp")) / f"{namespace}-operator.log")
    result: dict[str, Any] = {}
    try:
        wait("the operator to be live", operator.live, timeout=120, interval=0.5)
        # Idle: its CPU time stops growing once the initial listing is handled.
        last = -1.0
        for _ in range(120):
            time.sleep(2)
            now = operator.cpu_seconds()
            if now - last < 0.05:
                break
            last = now
        cpu_idle = operator.cpu_seconds()
        rss_idle = operator.rss_mib()
        requests_before = operator.api_requests()
        log(f"operator idle: {cpu_idle:.1f} CPU s for start-up and the initial listing, RSS {rss_idle:.0f} MiB")

        watcher = Watcher(api_client, namespace)
        watcher.start()
        watcher.ready.wait(10)
        # Ready means the operator's watches deliver: one canary kill (not measured) must come back.
        canary, canary_written = inject(core_v1, namespace, pods[-1])
        t_canary = time.monotonic()
        wait("the canary kill to be recorded", lambda: canary in watcher.seen, timeout=600, interval=0.2)
        order: list[tuple[str, float, str]] = [(canary, canary_written, rec_of(pods[-1]))]
        log(f"canary kill recorded after {time.monotonic() - t_canary:.1f}s; measuring")
        victims = pods[: args.spread_kills + args.burst_kills]
        spread = phase("spread", victims[: args.spread_kills], seconds=args.spread_seconds, core_v1=core_v1,
                       namespace=namespace, workers=args.workers)
        order += [(k, t, rec) for k, (t, rec) in spread.items()]
        expected = lambda: {rec: sum(1 for _, _, r in order if r == rec) for _, _, rec in order}  # noqa: E731
        all_counted = lambda: all(watcher.totals.get(rec, 0) >= n for rec, n in expected().items())  # noqa: E731
        wait("the spread kills to be recorded", all_counted, timeout=300, interval=0.5)
        burst = phase("burst", victims[args.spread_kills:], seconds=1, core_v1=core_v1, namespace=namespace,
                      workers=args.workers)
        order += [(k, t, rec) for k, (t, rec) in burst.items()]
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and not all_counted():
            time.sleep(0.5)
        time.sleep(5)  # anything counted twice would show by now
        watcher.stopping.set()
        injected_total = len(order)
        recorded_total = sum(watcher.totals.values())
        lat = latencies(order, watcher)
        requests_after = operator.api_requests()
        result = {
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "machine": f"{os.cpu_count()} cores",
            "pods": len(pods), "nodes": len(nodes), "setup_seconds": round(setup_seconds, 1),
            "spread": summarize(list(spread), lat),
            "burst": summarize(list(burst), lat),
            "lost": max(0, injected_total - recorded_total),
            "counted_twice": len(watcher.duplicates) + max(0, recorded_total - injected_total),
            "kills_injected": injected_total,  # with the canary
            "recommendation_kill_totals": recorded_total,
            "operator": {
                "cpu_seconds_startup": round(cpu_idle, 2),
                "cpu_seconds_total": round(operator.cpu_seconds(), 2),
                "rss_mib_idle": round(rss_idle, 1),
                "rss_mib_peak": round(operator.peak_rss_mib(), 1),
                "api_requests_for_kills": {k: int(requests_after.get(k, 0) - requests_before.get(k, 0)) for k in requests_after},
                "api_requests_total": {k: int(v) for k, v in requests_after.items()},
            },
        }
    finally:
        operator.stop()
        if not args.keep:
            kube.delete(f"/api/v1/namespaces/{namespace}")
            for name in nodes:
                kube.delete(f"/api/v1/nodes/{name}")
    print(json.dumps(result, indent=2))
    for key in ("spread", "burst"):
        lat = result[key]["latency_seconds"]
        fmt = lambda v: "-" if v is None else f"{v:.3f}s"  # noqa: E731
        log(f"{key:>6}: {result[key]['recorded']}/{result[key]['kills']} recorded, lost {result[key]['lost']}; "
            f"p50 {fmt(lat['p50'])} p95 {fmt(lat['p95'])} p99 {fmt(lat['p99'])} max {fmt(lat['max'])}")
    op = result["operator"]
    log(f"lost {result['lost']}, counted twice {result['counted_twice']}; operator RSS peak {op['rss_mib_peak']} MiB, CPU {op['cpu_seconds_total']}s; "
        f"API requests for the kills {op['api_requests_for_kills']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
