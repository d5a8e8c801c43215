"""Counting under pressure that is no outage: a storm of conflicts on the status writes, kills of old
pods during a rollout, and nodes whose clocks are an hour off.

Real: the lab's API server, controller-manager (the rollout), `oomtuner run` as a process. Played: the
kubelet (kills written into pod status, stamped by a node clock that may be skewed), and the API
server's 409 answers (the fault proxy of `tests.faults.proxy`).
"""

from __future__ import annotations

import datetime
import time

import pytest

from tests.faults import proxy as fault_proxy
from tests.faults import truth as truth_mod
from tests.faults.scenario import RECOVERY_WAIT_S, Scenario

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

MI = 1024 * 1024


def test_a_storm_of_conflicts_on_the_status_writes(faults: Scenario) -> None:
    """For 10 s, every status write of the recommendation is answered 409 Conflict (by the fault
    proxy: as when other writers keep changing it), while a burst of kills comes in."""
    s = faults
    proxy = s.proxy()
    s.operator(kubeconfig=str(proxy.write_kubeconfig(s.log_dir / "proxy.kubeconfig")))
    pods, watch, truth = s.auto_workload(30)
    truth.kill(pods[0])
    s.wait_counted(1, timeout=30)
    storm = proxy.add(fault_proxy.Rule("PUT", r"/oomrecommendations/deployment-web/status$", fault_proxy.Fail(409)))
    started = time.monotonic()
    truth.burst(pods[1:15], threads=2)
    time.sleep(2)
    truth.burst(pods[15:], threads=2)
    time.sleep(max(0.0, 10 - (time.monotonic() - started)))
    proxy.clear()
    ended = time.monotonic()
    recovery = s.recovery(truth, ended=ended)
    s.quiet()
    count = s.counted()
    result = s.report(
        "conflict-storm", "409 storm: every status write answered 409 Conflict for 10 s during a burst",
        truth=truth, total=count.total, records=count.records, watch=watch,
        patched=(watch.limit() or 0) > 256 * MI, patch_basis="by the end",
        recovery_s=recovery, recovery_basis="from the storm's end until every kill is counted",
        notes=[f"{storm.matched} status writes answered 409 in {ended - started:.1f}s"],
    )
    assert not result.failures, result.message()


def test_stale_kills_during_a_rollout_raise_nothing(faults: Scenario) -> None:
    """A paused rollout: the operator patches 256Mi → 384Mi, but the old pods keep running at 256Mi
    and keep being killed. Those kills are recorded and raise nothing (the fix is on its way). Once
    the rollout goes on, a kill of a new pod at 384Mi raises the limit again."""
    s = faults
    s.operator()
    pods, watch, truth = s.auto_workload(4, cooldown="2s")
    truth.kill(pods[0])
    first = s.wait_raised(watch, above=256 * MI, timeout=30)
    time.sleep(3)  # past the cooldown
    truth.kill(pods[1])
    time.sleep(1.5)
    truth.kill(pods[2])
    truth.kill(pods[1])  # again: the same old pod, killed at 256Mi once more
    s.wait_counted(4, timeout=30)
    time.sleep(8)  # past the cooldown and a look of the deferred patches (every 5 s): a raise shows by now
    stale_raises = len(watch.raises()) - 1
    s.kube.merge_patch(f"/apis/apps/v1/namespaces/{s.namespace}/deployments/web", {"spec": {"paused": False}})
    target = watch.limit() or 0
    fresh = s.wait(lambda: s.pods(limit=target), timeout=60)
    new_pod = s.pods(limit=target)[0] if fresh else None
    kill = truth.kill(new_pod) if new_pod else None
    raised = s.wait_raised(watch, above=target, timeout=RECOVERY_WAIT_S) if kill else False
    s.quiet()
    count = s.counted()
    result = s.report(
        "stale-rollout", "stale kills: old pods at 256Mi killed after the template got 384Mi (paused rollout)",
        truth=truth, total=count.total, records=count.records, watch=watch,
        patched=first and raised, patch_basis="the first kill's raise, and the raise of a kill at the new limit",
        recovery_s=watch.raises()[-1].seen - kill.written if raised and kill else None,
        recovery_basis="from the kill of a new pod at the new limit until its raise",
        notes=[f"raises while only old pods at 256Mi were killed: {stale_raises}",
               f"the first raise {'came' if first else 'never came'}; the new pods run at {truth_mod.show(target)}"],
    )
    assert not result.failures, result.message()


def test_clock_skew_of_an_hour_between_nodes(faults: Scenario) -> None:
    """The lab's three nodes: one an hour behind, one an hour ahead, one right. Every pod is killed
    twice (its node's clock stamps finishedAt), the operator restarts, and one more kill follows."""
    s = faults
    op = s.operator()
    s.policy(mode="Recommend")
    pods = s.deployment(replicas=30)
    nodes = sorted({p["spec"]["nodeName"] for p in pods})
    skews = [datetime.timedelta(hours=-1), datetime.timedelta(hours=1), datetime.timedelta(0)]
    skew_of = {node: skews[i % len(skews)] for i, node in enumerate(nodes)}
    truth = s.truth()
    for _ in range(2):
        for node in nodes:
            truth.burst([p for p in pods if p["spec"]["nodeName"] == node], threads=4, skew=skew_of[node])
        s.wait_counted(len(truth.kills), timeout=15)
        time.sleep(1.1)  # the second kill of a container is in a later second
    s.quiet()
    before = s.counted().total
    op.restart()
    ended = time.monotonic()
    behind = next(p for p in pods if skew_of[p["spec"]["nodeName"]] < datetime.timedelta(0))
    canary = truth.kill(behind, skew=skew_of[behind["spec"]["nodeName"]])
    recovery = s.recovery(truth, ended=ended)
    s.quiet(still=5)
    count = s.counted()
    result = s.report(
        "clock-skew", "clock skew ±1 h: kills stamped an hour behind and ahead, twice per pod, then a restart",
        truth=truth, total=count.total, records=count.records,
        recovery_s=recovery if canary else None,
        recovery_basis="from the restarted operator's /healthz until a new kill (an hour behind) is counted",
        notes=["nodes: " + ", ".join(f"{n} {'+' if skew_of[n] >= datetime.timedelta(0) else ''}"
                                      f"{skew_of[n].total_seconds() / 3600:g}h" for n in nodes),
               f"counted before the restart: {before}"],
    )
    assert not result.failures, result.message()
