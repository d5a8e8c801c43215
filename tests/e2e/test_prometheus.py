"""Usage history from a real Prometheus, its failures, and the operator's own /metrics, end to end;
and `oomtuner report`'s ranking of the next victims by the working set it reads there.

Real: the lab's API server, controller-manager and scheduler; `oomtuner run` as a process with
`OOMTUNER_PROMETHEUS_URL`, and `oomtuner report` as a process; Debian's Prometheus 2.42 (`/usr/bin/prometheus`) with its TSDB, scraping
every second; PromQL. History older than the test is real TSDB data too: the exporter's traces are
written as OpenMetrics and turned into blocks by `promtool tsdb create-blocks-from openmetrics`
before Prometheus starts.
Played: cAdvisor and kube-state-metrics (`oomtuner_lab.exporter` serves the series from traces the
tests set, since kwok's pods use no memory), and the kubelet (kills written into pod status,
SystemOOM events on a node of the test's own).
"""

from __future__ import annotations

import datetime
import json
import math
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest

from oomtuner.domain import quantity
from oomtuner.kube import api
from oomtuner_lab import exporter as lab_exporter
from oomtuner_lab import inject
from oomtuner_lab import prometheus as lab_prometheus
from tests.e2e import kit
from tests.e2e.conftest import ROOT, OperatorProcess

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240), pytest.mark.writes_pod_status]

MI = 1024 * 1024
TIMEOUT_S = 3
BACKOFF_S = 6


# ---- fixtures --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def exporter() -> Iterator[lab_exporter.Exporter]:
    server = lab_exporter.Exporter().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def prometheus(exporter: lab_exporter.Exporter, tmp_path_factory: pytest.TempPathFactory) -> Iterator[lab_prometheus.Server]:
    try:
        lab_prometheus.find("prometheus")
        lab_prometheus.find("promtool")
    except lab_prometheus.LabError as exc:
        pytest.fail(str(exc))
    server = lab_prometheus.Server(tmp_path_factory.mktemp("prometheus"), targets=[exporter.address])
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def prom_operator(kubeconfig: str, crds: list[str], prometheus: lab_prometheus.Server,
                  tmp_path_factory: pytest.TempPathFactory) -> Iterator[OperatorProcess]:
    """This module's operator, with Prometheus (the other modules' operators live only as long as
    their module, so none of them reacts to these kills)."""
    proc = OperatorProcess(kubeconfig=kubeconfig, log_dir=tmp_path_factory.mktemp("prom-operator"), extra_env={
        "OOMTUNER_PROMETHEUS_URL": prometheus.url,
        "OOMTUNER_PROMETHEUS_TIMEOUT": f"{TIMEOUT_S}s",
        "OOMTUNER_PROMETHEUS_BACKOFF": f"{BACKOFF_S}s",
    })
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture(autouse=True)
def _print_logs_on_failure(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        for name in ("prom_operator", "prometheus"):
            if name not in request.fixturenames:
                continue
            value = request.getfixturevalue(name)
            if isinstance(value, OperatorProcess):
                print(f"---- operator log ----\n{value.log_tail()}")
            else:
                print(f"---- prometheus log ----\n{value.proc.log_tail(40)}")


# ---- helpers ---------------------------------------------------------------------------------------


def _policy(kube: api.Client, namespace: str, spec: dict[str, Any]) -> None:
    path = f"/apis/oomtuner.dev/v1alpha1/namespaces/{namespace}/oompolicies"
    kube.create(path, {"apiVersion": "oomtuner.dev/v1alpha1", "kind": "OOMPolicy", "metadata": {"name": "policy"}, "spec": spec})
    kit.wait_for(lambda: (kube.get(f"{path}/policy").get("status") or {}).get("conditions"), what="the policy's status")


def _pod(kube: api.Client, namespace: str, app: str) -> str:
    return str(kit.running_pods(kube, namespace, app)[0]["metadata"]["name"])


def _kill(core_v1: Any, namespace: str, pod: str, container: str = "app", *, at: datetime.datetime | None = None) -> None:
    inject.oom_kill(core_v1, namespace=namespace, pod=pod, container=container, at=at or kit.utc())


def _container(rec: dict[str, Any], name: str = "app") -> dict[str, Any]:
    return next(c for c in rec["status"]["containers"] if c["name"] == name)


def _condition(rec: dict[str, Any], type_: str = "UsageHistory") -> dict[str, Any]:
    return next(c for c in rec["status"].get("conditions") or [] if c["type"] == type_)


def _bytes(text: str) -> int:
    return quantity.parse_bytes(text)


def _history(prometheus: lab_prometheus.Server, exporter: lab_exporter.Exporter, traces: list[lab_exporter.Trace],
             *, start: float, end: float) -> None:
    """Serve the traces from now on, and backfill them from `start` to `end`; Prometheus restarts."""
    for trace in traces:
        exporter.traces.set(trace)
    history = lab_exporter.openmetrics(traces, start=start, end=end, interval=30,
                                       labels={"job": lab_prometheus.JOB, "instance": exporter.address})
    prometheus.reset(history=history)


def _metric(text: str, name: str, **labels: str) -> float:
    """The sum of the samples of `name` whose labels include `labels` (0 when there are none)."""
    total = 0.0
    for line in text.splitlines():
        match = re.match(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? (\S+)$", line)
        if not match or match.group(1) != name:
            continue
        found = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', match.group(2) or ""))
        if all(found.get(k) == v for k, v in labels.items()):
            total += float(match.group(3))
    return total


# ---- scenarios ---------------------------------------------------------------------------------------


def test_usage_history_sets_the_limit_the_request_and_the_node_request(
    kube: api.Client, core_v1: Any, prom_operator: OperatorProcess, prometheus: lab_prometheus.Server,
    exporter: lab_exporter.Exporter, namespace: str,
) -> None:
    _policy(kube, namespace, {"memory": {"requestPolicy": "FromUsage"}, "prometheus": {"lookback": "3h"}})
    node = kit.dedicated_node(kube, f"{namespace}-node")
    try:
        kube.create(f"/apis/apps/v1/namespaces/{namespace}/deployments", kit.deployment("web"))
        kube.create(f"/apis/apps/v1/namespaces/{namespace}/deployments", kit.on_node(
            kit.deployment("batch", containers=[kit.container("worker", request=None, limit=None)]), node))
        web, batch = _pod(kube, namespace, "web"), _pod(kube, namespace, "batch")
        now = float(int(time.time()))
        start = now - 2 * 3600
        # web: 200Mi for two hours but 4 minutes at 250Mi (under 5% of the time: above the p95).
        web_trace = lab_exporter.Trace(namespace, web, "app", (
            lab_exporter.Life("1", start, now - 3600, base=200 * MI),
            lab_exporter.Life("1", now - 3600, now - 3600 + 240, base=250 * MI),
            lab_exporter.Life("1", now - 3600 + 240, None, base=200 * MI),
        ))
        # batch: BestEffort, 300Mi with a 4-minute peak at 400Mi.
        batch_trace = lab_exporter.Trace(namespace, batch, "worker", (
            lab_exporter.Life("1", start, now - 1800, base=300 * MI),
            lab_exporter.Life("1", now - 1800, now - 1800 + 240, base=400 * MI),
            lab_exporter.Life("1", now - 1800 + 240, None, base=300 * MI),
        ))
        _history(prometheus, exporter, [web_trace, batch_trace], start=start, end=time.time())

        _kill(core_v1, namespace, web)
        at = kit.utc()
        inject.system_oom(core_v1, node=kube.get(f"/api/v1/namespaces/{namespace}/pods/{batch}")["spec"]["nodeName"],
                          process_name="worker", at=at)
        time.sleep(1)  # the operator sees the node's SystemOOM before the pod status
        _kill(core_v1, namespace, batch, "worker", at=at)

        rec = kit.wait_recommendation(kube, namespace, "deployment-web", lambda r: (r.get("status") or {}).get("totalKills") == 1)
        assert rec["status"]["dataSource"] == "prometheus (3h)"
        cond = _condition(rec)
        assert cond["status"] == "True" and cond["reason"] == "Prometheus", cond
        assert "peak 250Mi" in cond["message"] and "p95 200Mi" in cond["message"], cond["message"]
        app = _container(rec)
        # Limit kill: max(256Mi × 1.5, 256Mi + 64Mi, peak 250Mi × 1.15) = 384Mi; FromUsage: p95 200Mi × 1.15.
        assert _bytes(app["recommended"]["limit"]) == 384 * MI
        assert _bytes(app["recommended"]["request"]) == 230 * MI, app["reason"]
        assert "request from usage: p95 200Mi × 1.15 = 230Mi" in app["reason"]

        rec = kit.wait_recommendation(kube, namespace, "deployment-batch", lambda r: (r.get("status") or {}).get("totalKills") == 1)
        worker = _container(rec, "worker")
        assert worker["classification"] == "Node" and rec["status"]["dataSource"] == "prometheus (3h)"
        # The request is what the scheduler reserves: sustained use, p95 300Mi × (1 + margin).
        want = math.ceil(300 * 1.15) * MI
        assert _bytes(worker["recommended"]["request"]) == want, worker["reason"]
        # A limit for a container that had none: 2 × request, which also covers the peak 400Mi × 1.15.
        assert _bytes(worker["recommended"]["limit"]) == 2 * want
        assert "request from usage: p95 300Mi" in worker["reason"]
        assert "peak 400Mi" in _condition(rec)["message"]
    finally:
        if node:
            kube.delete(f"/api/v1/nodes/{node}")


def test_a_node_oom_names_the_likely_culprit_on_the_node(
    kube: api.Client, core_v1: Any, prom_operator: OperatorProcess, prometheus: lab_prometheus.Server,
    exporter: lab_exporter.Exporter, namespace: str,
) -> None:
    node = kit.dedicated_node(kube, f"{namespace}-node")
    if node is None:
        pytest.skip("needs a node of the test's own (the lab's kwok): other pods on a shared node could be the culprit")
    try:
        # Three pods on the node, each requesting 128Mi: `hog` uses 1Gi, the others 100Mi.
        for name in ("victim", "late", "hog"):
            kube.create(f"/apis/apps/v1/namespaces/{namespace}/deployments", kit.on_node(kit.deployment(name), node))
        victim, late, hog = (_pod(kube, namespace, name) for name in ("victim", "late", "hog"))
        start = time.time() - 60
        for pod, value in ((victim, 100 * MI), (late, 100 * MI), (hog, 1024 * MI)):
            exporter.traces.set(lab_exporter.Trace.constant(namespace=namespace, pod=pod, container="app", value=value, start=start))
        kit.wait_for(lambda: len(prometheus.query(f'container_memory_working_set_bytes{{namespace="{namespace}"}}')) == 3,
                     what="Prometheus to scrape the three traces")
        time.sleep(1.5)  # a scrape before the kill's second
        at = kit.utc()

        def culprit_named(rec: dict[str, Any]) -> bool:
            return bool((((rec.get("status") or {}).get("kills") or [{}])[0].get("culprit") or {}).get("pod"))

        # 1. `late` is killed before the node's SystemOOM is seen: Limit, no culprit. The SystemOOM
        #    reclassifies it Node, and its culprit is looked up then.
        _kill(core_v1, namespace, late, at=at)
        rec = kit.wait_recommendation(kube, namespace, "deployment-late", lambda r: (r.get("status") or {}).get("totalKills") == 1)
        assert rec["status"]["kills"][0]["classification"] == "Limit" and "culprit" not in rec["status"]["kills"][0]
        inject.system_oom(core_v1, node=node, process_name="app", at=at)
        rec = kit.wait_recommendation(kube, namespace, "deployment-late", culprit_named, what="late's culprit")
        kill = rec["status"]["kills"][0]
        assert kill["classification"] == "Node"
        assert {k: kill["culprit"].get(k) for k in ("namespace", "pod", "container", "usage", "request")} == {
            "namespace": namespace, "pod": hog, "container": "app", "usage": "1Gi", "request": "128Mi"}
        assert kill["culprit"]["reason"].startswith(f"likely culprit: {namespace}/{hog}/app uses 1Gi, 896Mi above its request (128Mi)")

        # 2. `victim` is killed after the SystemOOM was seen: Node at once, and its Warning event waits
        #    for the culprit and names it.
        time.sleep(1)
        _kill(core_v1, namespace, victim, at=at)
        rec = kit.wait_recommendation(kube, namespace, "deployment-victim", culprit_named, what="victim's culprit")
        kill = rec["status"]["kills"][0]
        assert kill["classification"] == "Node" and kill["culprit"]["pod"] == hog
        assert "peak working set over the 5m up to the kill, from Prometheus" in kill["culprit"]["reason"]
        (event,) = kit.wait_for(lambda: kit.events_for(kube, namespace, reason="OOMKillDetected", name="victim"),
                                what="victim's OOMKillDetected event")
        assert event["type"] == "Warning" and ": Node (node ran out of memory: SystemOOM" in event["message"]
        assert f"; likely culprit: {namespace}/{hog}/app uses 1Gi" in event["message"], event["message"]
    finally:
        kube.delete(f"/api/v1/nodes/{node}")


def test_a_leak_trace_gives_suspected_leak_and_a_step_does_not(
    kube: api.Client, core_v1: Any, prom_operator: OperatorProcess, prometheus: lab_prometheus.Server,
    exporter: lab_exporter.Exporter, namespace: str,
) -> None:
    _policy(kube, namespace, {"mode": "Auto", "cooldown": "1s", "prometheus": {"lookback": "4h"}})
    kube.create(f"/apis/apps/v1/namespaces/{namespace}/deployments", kit.deployment("leaky"))
    kube.create(f"/apis/apps/v1/namespaces/{namespace}/deployments", kit.deployment("steps"))
    leaky, steps = _pod(kube, namespace, "leaky"), _pod(kube, namespace, "steps")
    now = float(int(time.time()) + 12)  # the kill happens after Prometheus' restart
    life = 5400.0
    grow = (250 - 64) * MI / life
    # Every life of `leaky` starts at 64Mi and grows until the 256Mi limit kills it after 1h30m.
    leak = lab_exporter.Trace(namespace, leaky, "app", (
        lab_exporter.Life("1", now - 2 * life, now - life, base=64 * MI, bytes_per_s=grow),
        lab_exporter.Life("2", now - life, now, base=64 * MI, bytes_per_s=grow),
        lab_exporter.Life("3", now, None, base=64 * MI, bytes_per_s=grow),
    ))
    # `steps` jumped from 100Mi to 200Mi in the middle of its last life and stayed there: a positive
    # least-squares slope, but no leak. Its previous life was flat.
    step = lab_exporter.Trace(namespace, steps, "app", (
        lab_exporter.Life("1", now - 2 * life, now - life, base=100 * MI),
        lab_exporter.Life("2", now - life, now - life / 2, base=100 * MI),
        lab_exporter.Life("2", now - life / 2, now, base=200 * MI),
        lab_exporter.Life("3", now, None, base=100 * MI),
    ))
    _history(prometheus, exporter, [leak, step], start=now - 2 * life, end=time.time())
    time.sleep(max(0.0, now - time.time()))
    at = datetime.datetime.fromtimestamp(now, datetime.timezone.utc)
    _kill(core_v1, namespace, leaky, at=at)
    _kill(core_v1, namespace, steps, at=at)

    rec = kit.wait_recommendation(kube, namespace, "deployment-leaky", lambda r: (r.get("status") or {}).get("totalKills") == 1)
    assert rec["status"]["phase"] == "SuspectedLeak", rec["status"]
    assert rec["status"]["dataSource"] == "prometheus (4h)"
    reason = _container(rec)["reason"]
    assert "suspected leak: the working set grows" in reason and "the last 2 lives longer than 1h both grew" in reason, reason
    kit.wait_for(lambda: kit.events_for(kube, namespace, reason="SuspectedLeak", name="leaky"), what="a SuspectedLeak event")
    time.sleep(2)
    template = kube.get(f"/apis/apps/v1/namespaces/{namespace}/deployments/leaky")["spec"]["template"]["spec"]
    assert template["containers"][0]["resources"]["limits"]["memory"] == "256Mi"  # Auto does not bump a leak

    rec = kit.wait_recommendation(kube, namespace, "deployment-steps", lambda r: (r.get("status") or {}).get("totalKills") == 1)
    assert rec["status"]["dataSource"] == "prometheus (4h)"
    assert rec["status"]["phase"] in ("Pending", "Applied"), _container(rec)["reason"]
    assert "0 of 2 lives longer than 1h grew steadily" in _condition(rec)["message"], _condition(rec)["message"]
    assert "leak" not in _container(rec)["reason"]
    kit.wait_for(lambda: kube.get(f"/apis/apps/v1/namespaces/{namespace}/deployments/steps")["spec"]["template"]["spec"]
                 ["containers"][0]["resources"]["limits"]["memory"] == "384Mi", what="steps to be bumped to 384Mi")


def test_prometheus_without_data_hanging_down_and_back(
    kube: api.Client, core_v1: Any, prom_operator: OperatorProcess, prometheus: lab_prometheus.Server,
    exporter: lab_exporter.Exporter, namespace: str,
) -> None:
    kube.create(f"/apis/apps/v1/namespaces/{namespace}/deployments", kit.deployment("web"))
    kube.create(f"/apis/apps/v1/namespaces/{namespace}/deployments", kit.deployment("other"))
    web, other = _pod(kube, namespace, "web"), _pod(kube, namespace, "other")
    path = "deployment-web"
    failures = lambda: _metric(prom_operator.metrics(), "oomtuner_prometheus_query_failures_total")  # noqa: E731
    kills = 0

    def kill_and_wait(pod: str = web, name: str = path, expected: int | None = None) -> tuple[dict[str, Any], float]:
        nonlocal kills
        time.sleep(1.1)  # every kill in its own second: its own identity
        started = time.monotonic()
        _kill(core_v1, namespace, pod)
        want = expected if expected is not None else kills + 1
        rec = kit.wait_recommendation(kube, namespace, name, lambda r: (r.get("status") or {}).get("totalKills") == want,
                                      timeout=30)
        if name == path:
            kills = want
        return rec, time.monotonic() - started

    # 1. Prometheus runs but has no series for this workload: from the kills, and it says so.
    before = failures()
    rec, _ = kill_and_wait()
    assert rec["status"]["dataSource"] == "kills"
    cond = _condition(rec)
    assert (cond["status"], cond["reason"]) == ("False", "NoUsageData"), cond
    assert failures() == before  # an empty answer is not a failed query

    # 2. With a trace, the same workload gets Prometheus' data.
    exporter.traces.set(lab_exporter.Trace.constant(namespace=namespace, pod=web, container="app", value=150 * MI,
                                                    start=time.time()))
    kit.wait_for(lambda: prometheus.query(f'container_memory_working_set_bytes{{namespace="{namespace}"}}'),
                 what="Prometheus to scrape the trace")
    rec, _ = kill_and_wait()
    assert rec["status"]["dataSource"] == "prometheus (7d)"
    assert _condition(rec)["status"] == "True" and "peak 150Mi" in _condition(rec)["message"]

    # 3. Prometheus hangs (SIGSTOP): the query times out, the kill is handled from the kills alone.
    prometheus.pause()
    try:
        rec, took = kill_and_wait()
        cond = _condition(rec)
        assert (cond["status"], cond["reason"]) == ("False", "PrometheusUnavailable"), cond
        assert "timed out" in cond["message"] and rec["status"]["dataSource"] == "kills", cond
        assert took < TIMEOUT_S + 10
        assert failures() == before + 1
        # The breaker is open now: another workload's kill does not wait for a timeout.
        rec, took = kill_and_wait(other, "deployment-other", expected=1)
        assert took < TIMEOUT_S, f"the second kill waited {took:.1f}s"
        assert "not queried" in _condition(rec)["message"]
        assert failures() == before + 1
    finally:
        prometheus.resume()

    # 4. Prometheus is down: connection refused, after the back-off.
    prometheus.stop()
    time.sleep(BACKOFF_S + 0.5)
    rec, _ = kill_and_wait()
    cond = _condition(rec)
    assert cond["reason"] == "PrometheusUnavailable" and "Connection refused" in cond["message"], cond
    assert failures() == before + 2

    # 5. Back up: after the back-off, usage history is used again.
    prometheus.start()
    time.sleep(BACKOFF_S + 0.5)
    rec, _ = kill_and_wait()
    assert _condition(rec)["status"] == "True" and rec["status"]["dataSource"] == "prometheus (7d)", _condition(rec)
    assert failures() == before + 2
    assert prom_operator.proc is not None and prom_operator.proc.poll() is None  # nothing crashed


def test_metrics_endpoint_counters_move(
    kube: api.Client, core_v1: Any, prom_operator: OperatorProcess, prometheus: lab_prometheus.Server,
    exporter: lab_exporter.Exporter, namespace: str,
) -> None:
    _policy(kube, namespace, {"mode": "Auto", "cooldown": "1s"})
    kube.create(f"/apis/apps/v1/namespaces/{namespace}/deployments", kit.deployment("web"))
    web = _pod(kube, namespace, "web")
    exporter.traces.set(lab_exporter.Trace.constant(namespace=namespace, pod=web, container="app", value=200 * MI,
                                                    start=time.time()))
    before = prom_operator.metrics()
    _kill(core_v1, namespace, web)
    kit.wait_for(lambda: kube.get(f"/apis/apps/v1/namespaces/{namespace}/deployments/web")["spec"]["template"]["spec"]
                 ["containers"][0]["resources"]["limits"]["memory"] == "384Mi", what="the patch")

    def patch_counted() -> str | None:
        text = prom_operator.metrics()
        moved = _metric(text, "oomtuner_patches_total", result="applied") > _metric(before, "oomtuner_patches_total", result="applied")
        return text if moved else None

    after = kit.wait_for(patch_counted, what="the patch counter to move")

    kills = _metric(after, "oomtuner_oom_kills_total", namespace=namespace, workload="Deployment/web", container="app",
                    classification="Limit")
    assert kills == 1
    assert _metric(after, "oomtuner_detection_latency_seconds_count") > _metric(before, "oomtuner_detection_latency_seconds_count")
    assert _metric(after, "oomtuner_recommendations", phase="Applied") >= 1
    assert "oomtuner_prometheus_query_failures_total " in after
    assert "oomtuner_reconcile_errors_total" in after or "# HELP oomtuner_reconcile_errors_total" in after


@pytest.mark.writes_pod_status(False)
def test_report_ranks_the_next_victims_by_usage_with_prometheus_and_by_request_without(
    kube: api.Client, kubeconfig: str, prometheus: lab_prometheus.Server, exporter: lab_exporter.Exporter, namespace: str,
) -> None:
    node = kit.dedicated_node(kube, f"{namespace}-node")
    if node is None:
        pytest.skip("needs a node of the test's own (the lab's kwok): other pods on a shared node would be ranked too")
    try:
        # On the 16Gi node: `big` requests 4Gi and uses 100Mi, `greedy` requests 128Mi and uses 3Gi,
        # `quiet` requests 256Mi and has no series at all.
        for name, request in (("big", "4Gi"), ("greedy", "128Mi"), ("quiet", "256Mi")):
            kube.create(f"/apis/apps/v1/namespaces/{namespace}/deployments", kit.on_node(
                kit.deployment(name, containers=[kit.container(request=request, limit="8Gi")]), node))
        big, greedy, quiet = (_pod(kube, namespace, name) for name in ("big", "greedy", "quiet"))
        start = time.time() - 60
        for pod, value in ((big, 100 * MI), (greedy, 3 * 1024 * MI)):
            exporter.traces.set(lab_exporter.Trace.constant(namespace=namespace, pod=pod, container="app", value=value, start=start))
        kit.wait_for(lambda: len(prometheus.query(f'container_memory_working_set_bytes{{namespace="{namespace}"}}')) == 2,
                     what="Prometheus to scrape the two traces")
        env = {k: v for k, v in os.environ.items() if not k.startswith("OOMTUNER_PROMETHEUS_")}

        def report(*args: str, **extra_env: str) -> tuple[list[tuple[str, str, int]], dict[str, Any], str]:
            """`oomtuner report` as a user runs it: the node's ranking (pod, basis, memory), the
            ranking's summary, and stderr."""
            done = subprocess.run([sys.executable, "-m", "oomtuner", "report", "-n", namespace, "-o", "json",
                                   "--kubeconfig", kubeconfig, *args],
                                  capture_output=True, text=True, env={**env, **extra_env}, cwd=ROOT, timeout=60)
            assert done.returncode == 0, done.stderr
            out = json.loads(done.stdout)
            (mine,) = (n for n in out["nodes"] if n["name"] == node)
            return [(v["pod"], v["basis"], v["memory"]) for v in mine["nextVictims"]], out["ranking"], done.stderr

        # With Prometheus (the operator's variable is enough): the kernel's choice by what is used now.
        ranked, ranking, stderr = report(OOMTUNER_PROMETHEUS_URL=prometheus.url)
        assert ranked == [(greedy, "usage", 3 * 1024 * MI), (quiet, "request", 256 * MI), (big, "usage", 100 * MI)]
        assert ranking["basis"] == "usage" and ranking["prometheus"] == prometheus.url and stderr == ""
        assert ranking["message"].startswith(f"by working set now, from Prometheus at {prometheus.url}, for ")
        assert report("--prometheus-url", prometheus.url)[0] == ranked

        # Without it: by request, where `big` comes first, and one line on stderr says so.
        ranked, ranking, stderr = report()
        assert ranked == [(big, "request", 4 * 1024 * MI), (quiet, "request", 256 * MI), (greedy, "request", 128 * MI)]
        assert ranking["basis"] == "request" and ranking["prometheus"] is None
        assert stderr == ("oomtuner: warning: next victims ranked by memory request: "
                          "no Prometheus is configured (--prometheus-url or OOMTUNER_PROMETHEUS_URL)\n")

        # Prometheus hangs: one timeout, then the same ranking by request, and one line naming it.
        prometheus.pause()
        try:
            started = time.monotonic()
            failed, ranking, stderr = report("--prometheus-url", prometheus.url, "--prometheus-timeout", "1s")
        finally:
            prometheus.resume()
        assert time.monotonic() - started < 20
        assert failed == ranked and ranking["basis"] == "request"
        assert stderr.startswith(f"oomtuner: warning: next victims ranked by memory request: Prometheus at {prometheus.url}: "
                                 "query failed: ") and "timed out" in stderr
        assert stderr.count("\n") == 1 and "Traceback" not in stderr, stderr
    finally:
        kube.delete(f"/api/v1/nodes/{node}")
