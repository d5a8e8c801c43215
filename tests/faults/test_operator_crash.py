"""The operator itself fails: SIGKILLed in a precise window, restarted after a large burst, paused
past its peering lifetime while another replica waits, refused its patch by a busy API server.

Real: the lab's API server and etcd, `oomtuner run` as processes (through the fault proxy of
`tests.faults.proxy` where a window must be hit exactly), kopf peering between two replicas.
Played: the kubelet (kills written into pod status); the API server's 429 and 503 answers (the proxy).
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
import yaml

from tests.e2e.conftest import ROOT, OperatorProcess
from tests.faults import proxy as fault_proxy
from tests.faults import truth as truth_mod
from tests.faults.scenario import RECOVERY_WAIT_S, Scenario

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

MI = 1024 * 1024


def _through_proxy(s: Scenario) -> tuple[fault_proxy.FaultProxy, str]:
    proxy = s.proxy()
    return proxy, str(proxy.write_kubeconfig(s.log_dir / "proxy.kubeconfig"))


def _sigkill_when(op: OperatorProcess, done: threading.Event, ok: Any = lambda status: status < 300) -> Any:
    """A proxy callback: SIGKILL the operator once, when the matched request succeeded at the server,
    before the operator reads the answer."""
    def callback(_seen: fault_proxy.Seen, status: int) -> bool:
        if done.is_set() or not ok(status) or op.proc is None:
            return False
        os.kill(op.proc.pid, signal.SIGKILL)
        done.set()
        return True
    return callback


def _records_a_kill(seen: fault_proxy.Seen) -> bool:
    return bool(((seen.json() or {}).get("status") or {}).get("kills"))


# window → (what it follows, the rule that hits it with an action)
WINDOWS: dict[str, tuple[str, Callable[[fault_proxy.Action], fault_proxy.Rule]]] = {
    "after-create": ("the recommendation's create",
                     lambda act: fault_proxy.Rule("POST", r"/oomrecommendations$", act)),
    "after-status-write": ("the status write that records the kill",
                           lambda act: fault_proxy.Rule("PUT", r"/oomrecommendations/[^/]+/status$", act,
                                                        when=_records_a_kill)),
    "before-apply": ("the dry run of the patch (before the apply)",
                     lambda act: fault_proxy.Rule("PATCH", r"/deployments/web$", act, query={"dryRun": "All"})),
}


def _apply(action: fault_proxy.Action, *, times: int) -> fault_proxy.Rule:
    """A rule for the operator's applies of Deployment web (not its dry runs)."""
    return fault_proxy.Rule("PATCH", r"/deployments/web$", action, times=times,
                            when=lambda seen: "dryRun" not in seen.query)


@pytest.mark.parametrize("window", list(WINDOWS))
def test_operator_sigkilled_in_a_window(faults: Scenario, window: str) -> None:
    """One kill at 256Mi under an Auto policy; the operator is SIGKILLed the moment the API server has
    done the window's request, before it reads the answer; it is started again. Expected: the kill
    counted once and the patch to 384Mi applied."""
    s = faults
    what, rule = WINDOWS[window]
    proxy, kubeconfig = _through_proxy(s)
    op = s.operator(kubeconfig=kubeconfig)
    pods, watch, truth = s.auto_workload(3)
    killed = threading.Event()
    proxy.add(rule(fault_proxy.After(_sigkill_when(op, killed))))
    truth.kill(pods[0])
    reached = killed.wait(30)
    op.kill()
    proxy.clear()
    op.start()
    ended = time.monotonic()
    counted_at = s.wait_counted(1, timeout=RECOVERY_WAIT_S)
    patched = s.wait_raised(watch, above=256 * MI, timeout=RECOVERY_WAIT_S)
    patched_at = time.monotonic() if patched else None
    truth.kill(pods[1])  # the restarted operator counts on, from where it was
    s.wait_counted(2, timeout=30)
    s.quiet()
    count = s.counted()
    recovered = max(counted_at, patched_at) if counted_at and patched_at else None
    result = s.report(
        f"sigkill-{window}", f"operator SIGKILLed right after {what}, restarted", truth=truth, total=count.total,
        records=count.records, watch=watch, patched=patched, patch_basis=f"within {RECOVERY_WAIT_S:g} s of the restart",
        recovery_s=recovered - ended if recovered else None,
        recovery_basis="from the restarted operator's /healthz until the kill is counted and the patch applied",
        notes=[f"the proxy SIGKILLed the operator after {what}" if reached else f"the window ({what}) was never reached"],
        failures=[] if reached else [f"the window was never reached: no {what} within 30 s"],
    )
    assert not result.failures, result.message()


def test_a_patch_refused_for_a_while_is_applied(faults: Scenario) -> None:
    """The API server answers the apply with 503, 503, then 429 (Retry-After: 1): transient refusals,
    which must be retried, not recorded as Rejected for good."""
    s = faults
    proxy, kubeconfig = _through_proxy(s)
    s.operator(kubeconfig=kubeconfig)
    pods, watch, truth = s.auto_workload(3)
    proxy.add(_apply(fault_proxy.Fail(503), times=2))
    proxy.add(_apply(fault_proxy.Fail(429, retry_after=1), times=1))
    kill = truth.kill(pods[0])
    assert kill is not None
    patched = s.wait_raised(watch, above=256 * MI, timeout=RECOVERY_WAIT_S)
    s.quiet()
    count = s.counted()
    rec = truth_mod.recommendation(s.kube, s.namespace, "deployment-web") or {}
    applied: dict[str, Any] = next((c for c in (rec.get("status") or {}).get("conditions") or [] if c.get("type") == "Applied"), {})
    result = s.report(
        "patch-refused-transiently", "the apply answered 503, 503, 429 (Retry-After 1 s), then accepted",
        truth=truth, total=count.total, records=count.records, watch=watch, patched=patched,
        patch_basis=f"within {RECOVERY_WAIT_S:g} s of the kill",
        recovery_s=watch.raises()[0].seen - kill.written if patched else None,
        recovery_basis="from the kill until the patch is applied, through the three refusals",
        notes=[f"refusals answered: {sum(r.matched for r in proxy.rules)}; Applied condition: "
               f"{applied.get('reason')}: {applied.get('message')}"],
    )
    assert not result.failures, result.message()


def test_a_burst_of_1000_kills_then_a_restart(faults: Scenario) -> None:
    """100 replicas of 10 containers, each container killed once (1,000 kills in a few seconds), then the
    operator restarts and lists them all again: none may count twice."""
    s = faults
    op = s.operator()
    containers = [f"c{i}" for i in range(10)]
    pods, watch, truth = s.auto_workload(100, containers=containers, request="8Mi", limit="64Mi", cpu="5m", timeout=180)
    started = time.monotonic()
    truth.burst(pods, containers=containers, threads=16)
    burst_s = time.monotonic() - started
    first = s.wait_counted(len(truth.kills), timeout=90)
    s.quiet(still=3)
    before = s.counted().total
    op.restart()
    ended = time.monotonic()
    canary = truth.kill(pods[0], "c0")
    recovered = s.wait_counted(before + 1, timeout=RECOVERY_WAIT_S)
    s.quiet(still=5)
    count = s.counted()
    result = s.report(
        "burst-1000-restart", "1,000 kills in one Deployment within seconds, then an operator restart",
        truth=truth, total=count.total, records=count.records, watch=watch,
        patched=(watch.limit("c0") or 0) > 64 * MI, patch_basis="by the end",
        recovery_s=recovered - ended if recovered and canary else None,
        recovery_basis="from the restarted operator's /healthz until a new kill is counted",
        notes=[f"burst written in {burst_s:.1f}s; all counted {first - started:.1f}s after it began"
               if first else f"burst written in {burst_s:.1f}s; not all counted within 90 s",
               f"counted before the restart: {before}"],
    )
    assert not result.failures, result.message()


def test_observe_mode_counts_nothing_again_after_a_restart(faults: Scenario) -> None:
    """Observe mode writes no recommendation: its count is the metric and the OOMKillDetected events.
    A restarted operator must neither count the old kills in `oomtuner_oom_kills_total` nor post
    their events again."""
    s = faults
    op = s.operator()
    s.policy(mode="Observe")
    pods = s.deployment(replicas=5)
    truth = s.truth()
    truth.burst(pods, threads=5)
    s.wait(lambda: truth_mod.metric_kills(op.metrics(), s.namespace) >= 5, timeout=30)
    s.wait(lambda: truth_mod.event_kills(s.kube, s.namespace, "web") >= 5, timeout=30)
    first_metric = truth_mod.metric_kills(op.metrics(), s.namespace)
    op.restart()
    ended = time.monotonic()
    canary = truth.kill(pods[0])
    recovered = s.wait(lambda: truth_mod.metric_kills(op.metrics(), s.namespace) >= 1, timeout=RECOVERY_WAIT_S)
    time.sleep(5)  # the pods are listed, and events go out from threads of their own: a re-count shows by now
    second_metric = truth_mod.metric_kills(op.metrics(), s.namespace)
    events = truth_mod.event_kills(s.kube, s.namespace, "web")
    problems = []
    if events != len(truth.kills):
        problems.append(f"OOMKillDetected events name {events} kill(s) for {len(truth.kills)} injected")
    result = s.report(
        "observe-restart", "Observe mode: 5 kills, an operator restart, one more kill", truth=truth,
        total=first_metric + second_metric, recovery_s=recovered - ended if recovered and canary else None,
        recovery_basis="from the restarted operator's /healthz until a new kill is in its metric",
        notes=[f"oomtuner_oom_kills_total: {first_metric} before the restart, {second_metric} after it "
               f"(1 new kill); kills named by OOMKillDetected events: {events}"],
        failures=problems,
    )
    assert not result.failures, result.message()


LIFETIME = 10  # seconds of kopf peering lifetime (kopf's default is 60): see tests/faults/short_peering.py


def test_two_replicas_one_paused_past_the_peering_lifetime(faults: Scenario) -> None:
    """Two replicas with kopf peering; the active one (higher priority) is SIGSTOPped for longer than
    its peering lifetime, so the other takes over; then it is let go, and for a moment both may act."""
    s = faults
    peering = f"faults-{s.namespace}"
    crd = yaml.safe_load((ROOT / "deploy/helm/oomtuner/crds/kopf.dev_kopfpeerings.yaml").read_text())
    s.kube.apply(f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{crd['metadata']['name']}", crd,
                 field_manager="oomtuner-faults", force=True)
    s.wait(lambda: s.kube.get_or_none(f"/apis/kopf.dev/v1/namespaces/{s.namespace}/kopfpeerings") is not None, timeout=30)
    s.kube.create(f"/apis/kopf.dev/v1/namespaces/{s.namespace}/kopfpeerings",
                  {"apiVersion": "kopf.dev/v1", "kind": "KopfPeering", "metadata": {"name": peering}})
    env = {"OOMTUNER_PEERING_NAME": peering, "FAULTS_PEERING_LIFETIME": str(LIFETIME)}

    def replica(name: str, priority: int) -> OperatorProcess:
        return s.operator(name=name, env=env, command=(
            "-m", "tests.faults.short_peering", "run", "--namespace", s.namespace, "--priority", str(priority)))

    active = replica("replica-a", 200)
    replica("replica-b", 100)  # the standby
    s.wait(lambda: len((s.kube.get(f"/apis/kopf.dev/v1/namespaces/{s.namespace}/kopfpeerings/{peering}")
                        .get("status") or {})) >= 2, timeout=30)
    pods, watch, truth = s.auto_workload(30)
    truth.burst(pods[:10], threads=4)
    s.wait_counted(10, timeout=30)
    assert active.proc is not None
    struck = time.monotonic()
    os.kill(active.proc.pid, signal.SIGSTOP)
    try:
        time.sleep(2)
        truth.burst(pods[10:20], threads=4)  # while the standby still waits for the lifetime to pass
        taken_over = s.wait_counted(20, timeout=LIFETIME + 20)
        time.sleep(1)
    finally:
        os.kill(active.proc.pid, signal.SIGCONT)
    ended = time.monotonic()
    truth.burst(pods[20:], threads=4)  # while both replicas may think they are the one
    recovery = s.recovery(truth, ended=ended)
    count = s.kill_again(truth, pods)
    result = s.report(
        "peering-pause", f"two replicas, the active one SIGSTOPped past its peering lifetime ({LIFETIME} s), resumed",
        truth=truth, total=count.total, records=count.records, watch=watch,
        patched=(watch.limit() or 0) > 256 * MI, patch_basis="by the end",
        recovery_s=recovery, recovery_basis="from SIGCONT of the paused replica until every kill so far is counted",
        notes=[f"the standby counted the kills of the pause {taken_over - struck:.1f}s after it began"
               if taken_over else "the standby never counted the kills of the pause",
               f"kopf peering lifetime {LIFETIME} s (a wrapper setting; kopf's default is 60 s)"],
        failures=[] if taken_over else ["no takeover: the kills during the pause were not counted before SIGCONT"],
    )
    assert not result.failures, result.message()
