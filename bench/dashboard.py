"""How fast `oomtuner dashboard` serves a page of many workloads, on the lab (issue 17).

It creates `--workloads` OOMRecommendations in one namespace, shaped as the operator writes them
(one container, `--kills` kills in the ledger over the last days, Applied or Pending), starts
`oomtuner dashboard` as its own process against the lab, waits for its first list, and then asks
for the workloads page of that namespace (every row) `--requests` times from `--clients` threads.
Time to first byte runs from sending the request to the status line and headers (the page is
rendered whole before its first byte); total until the last byte. Prints JSON; a summary on stderr.

    .venv/bin/python bench/dashboard.py --workloads 1000
"""

from __future__ import annotations

import argparse
import concurrent.futures
import datetime
import http.client
import json
import os
import pathlib
import statistics
import subprocess
import sys
import time
import urllib.request
import uuid

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "operator"), str(ROOT / "hack" / "lab")]

from oomtuner.kube import api  # noqa: E402
from oomtuner.kube import client as kube_client  # noqa: E402

MI = 1024 * 1024


def recommendation(i: int, *, kills: int, now: datetime.datetime) -> tuple[dict, dict]:
    name = f"svc-{i:04d}"
    limit = 256 + 64 * (i % 8)
    ledger = []
    for k in range(kills):
        at = (now - datetime.timedelta(hours=7 * k + i % 5)).strftime("%Y-%m-%dT%H:%M:%SZ")
        ledger.append({"id": f"uid-{name}-{k}/app/{at}", "pod": f"{name}-7d9f8b6c5d-x{k % 10}b4c", "podUID": f"uid-{name}-{k}",
                       "container": "app", "node": f"lab-node-{('small', 'medium', 'large')[k % 3]}", "at": at,
                       "limitAtKill": f"{limit}Mi", "requestAtKill": f"{limit // 2}Mi", "qosClass": "Burstable",
                       "oomScoreAdj": 990, "classification": "Node" if k % 4 == 3 else "Limit",
                       "reason": f"container app hit its {limit}Mi limit"})
    body = {"apiVersion": "oomtuner.dev/v1alpha1", "kind": "OOMRecommendation",
            "metadata": {"name": f"deployment-{name}"},
            "spec": {"targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name}}}
    status = {"phase": "Pending" if i % 3 else "Applied", "target": f"Deployment/{name}", "totalKills": kills,
              "mode": "Auto" if i % 2 else "Recommend", "policy": "default" if i % 2 else None, "dataSource": "kills",
              "kills": ledger,
              "containers": [{"name": "app", "type": "container", "current": {"request": f"{limit // 2}Mi", "limit": f"{limit}Mi"},
                              "recommended": {"request": f"{limit * 3 // 4}Mi", "limit": f"{limit * 3 // 2}Mi"},
                              "classification": "Limit", "phase": "Pending", "oomKills": kills,
                              "reason": f"OOM-killed {kills}× at limit {limit}Mi (Limit)"}]}
    return body, status


def populate(kube: api.Client, namespace: str, *, workloads: int, kills: int) -> None:
    kube.create("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})
    path = f"/apis/oomtuner.dev/v1alpha1/namespaces/{namespace}/oomrecommendations"
    now = datetime.datetime.now(datetime.timezone.utc)

    def one(i: int) -> None:
        body, status = recommendation(i, kills=kills, now=now)
        created = kube.create(path, body)
        kube.replace(f"{path}/{body['metadata']['name']}/status", {**created, "status": status})

    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        list(pool.map(one, range(workloads)))


def fetch(port: int, path: str) -> tuple[float, float, int]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    started = time.perf_counter()
    connection.request("GET", path)
    response = connection.getresponse()
    first = time.perf_counter() - started
    size = len(response.read())
    total = time.perf_counter() - started
    connection.close()
    if response.status != 200:
        raise RuntimeError(f"GET {path}: {response.status}")
    return first, total, size


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def measure(port: int, path: str, *, requests: int, clients: int) -> dict:
    fetch(port, path)  # warm: templates compiled, listings fresh
    with concurrent.futures.ThreadPoolExecutor(clients) as pool:
        results = list(pool.map(lambda _: fetch(port, path), range(requests)))
    firsts, totals = [r[0] for r in results], [r[1] for r in results]
    return {"path": path, "requests": requests, "clients": clients, "bytes": results[0][2],
            "ttfb_s": {"p50": round(statistics.median(firsts), 4), "p95": round(percentile(firsts, 0.95), 4),
                       "max": round(max(firsts), 4)},
            "total_s": {"p50": round(statistics.median(totals), 4), "p95": round(percentile(totals, 0.95), 4)}}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workloads", type=int, default=1000)
    parser.add_argument("--kills", type=int, default=5, help="kills in each recommendation's ledger")
    parser.add_argument("--requests", type=int, default=100)
    parser.add_argument("--clients", type=int, default=1)
    args = parser.parse_args()

    kubeconfig = os.environ.get("KUBECONFIG")
    if not kubeconfig:
        from oomtuner_lab import cluster

        kubeconfig = str(cluster.ensure_up(echo=lambda line: print(line, file=sys.stderr)))
    kube = kube_client.connect(kubeconfig=kubeconfig)
    for path in sorted((ROOT / "crds").glob("*.yaml")):
        import yaml

        body = yaml.safe_load(path.read_text())
        kube.apply(f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{body['metadata']['name']}", body,
                   field_manager="oomtuner-bench", force=True)
    namespace = f"bench-dash-{uuid.uuid4().hex[:6]}"
    t0 = time.monotonic()
    populate(kube, namespace, workloads=args.workloads, kills=args.kills)
    print(f"{args.workloads} recommendations in {time.monotonic() - t0:.1f}s", file=sys.stderr)
    sock = __import__("socket").socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    log = open(pathlib.Path(os.environ.get("TMPDIR", "/tmp")) / "oomtuner-bench-dashboard.log", "wb")
    web = subprocess.Popen([sys.executable, "-m", "oomtuner", "dashboard", "--port", str(port), "--refresh", "10"],
                           stdout=log, stderr=subprocess.STDOUT, cwd=ROOT,
                           env={**os.environ, "KUBECONFIG": kubeconfig, "OOMTUNER_PROMETHEUS_URL": ""})
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or web.poll() is not None:
                    raise SystemExit("the dashboard did not start; see " + log.name) from None
                time.sleep(0.2)
        t1 = time.perf_counter()
        first_list = fetch(port, f"/workloads?namespace={namespace}")
        results = {
            "workloads": args.workloads, "kills_per_workload": args.kills,
            "first_page_s": round(time.perf_counter() - t1, 3), "first_page_ttfb_s": round(first_list[0], 3),
            "pages": [measure(port, f"/workloads?namespace={namespace}", requests=args.requests, clients=args.clients),
                      measure(port, f"/workloads?namespace={namespace}&sort=workload&q=svc-09", requests=args.requests,
                              clients=args.clients),
                      measure(port, "/", requests=args.requests, clients=args.clients),
                      measure(port, f"/namespaces/{namespace}/recommendations/deployment-svc-0500", requests=args.requests,
                              clients=args.clients)],
        }
    finally:
        web.terminate()
        web.wait(timeout=20)
        kube.delete(f"/api/v1/namespaces/{namespace}")
    print(json.dumps(results, indent=2))
    for page in results["pages"]:
        print(f"{page['path']}: {page['bytes']} bytes, TTFB p50 {page['ttfb_s']['p50']}s p95 {page['ttfb_s']['p95']}s, "
              f"total p95 {page['total_s']['p95']}s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
