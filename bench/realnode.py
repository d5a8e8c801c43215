"""Reaction to a real kernel OOM kill on the lab's real node, end to end.

    .venv/bin/python bench/realnode.py --runs 5     # JSON on stdout, progress on stderr

Each run is the Auto patch cycle of tests/realnode (`scenarios.patch_cycle`) in a namespace of its
own: a Deployment whose container (limit 64Mi) grows to 96Mi, under an Auto OOMPolicy, on
`lab-node-real`. Measured from the kernel's timestamp of the kill (/dev/kmsg, on CLOCK_MONOTONIC)
to when a poll (every 50 ms) first saw: the kubelet's `OOMKilled` in the pod status, the
OOMRecommendation counting the kill, and the patched pod Running. One `oomtuner run --standalone`
process serves every run. Starts the lab if KUBECONFIG is not set; needs root (the real node and
/dev/kmsg).
"""

from __future__ import annotations

import argparse
import json
import pathlib
import statistics
import subprocess
import sys
import tempfile
import uuid

import yaml

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "hack" / "lab")]

from tests.e2e.conftest import OperatorProcess  # noqa: E402
from tests.realnode import scenarios  # noqa: E402

from oomtuner.kube import api, client  # noqa: E402
from oomtuner_lab import cluster, host, nodeconf  # noqa: E402

FIGURES = ("kill_to_status_s", "kill_to_recommendation_s", "kill_to_patched_pod_running_s")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    options = parser.parse_args(argv)

    kubeconfig = str(cluster.ensure_up(echo=lambda line: print(line, file=sys.stderr)))
    state = cluster.status().real_node
    if not state.running:
        print(f"bench/realnode.py: the lab has no real node: {state.reason}", file=sys.stderr)
        return 2
    kube = client.connect(kubeconfig=kubeconfig)
    for path in sorted((ROOT / "crds").glob("*.yaml")):
        body = yaml.safe_load(path.read_text())
        kube.apply(f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{body['metadata']['name']}", body,
                   field_manager="oomtuner-bench", force=True)
    node = scenarios.RealNode(nodeconf.NODE_NAME, (nodeconf.TOLERATION,), None)
    operator = OperatorProcess(kubeconfig=kubeconfig, log_dir=pathlib.Path(tempfile.mkdtemp(prefix="bench-realnode-")))
    operator.start()
    runs = []
    try:
        for i in range(options.runs):
            namespace = f"bench-realnode-{uuid.uuid4().hex[:6]}"
            kube.create("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})
            account = f"/api/v1/namespaces/{namespace}/serviceaccounts/default"
            scenarios.kit.wait_for(lambda path=account: kube.get_or_none(path), timeout=30, what="the default ServiceAccount")
            kernel_log = host.KernelLog()
            try:
                cycle = scenarios.patch_cycle(kube, namespace, node, kernel_log)
            finally:
                kernel_log.close()
                kube.delete(f"/api/v1/namespaces/{namespace}")
            runs.append(cycle.timings())
            print(f"run {i + 1}/{options.runs}: {runs[-1]}", file=sys.stderr)
    finally:
        operator.stop()
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    summary = {f: {"min": min(r[f] for r in runs), "median": round(statistics.median(r[f] for r in runs), 3),
                   "max": max(r[f] for r in runs)} for f in FIGURES}
    print(json.dumps({"node": nodeconf.NODE_NAME, "commit": commit, "runs": runs, "summary": summary}, indent=2))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except api.ApiError as exc:
        print(f"bench/realnode.py: {exc}", file=sys.stderr)
        sys.exit(1)
