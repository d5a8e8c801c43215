"""The control plane fails under the operator in the middle of a burst of kills.

Real: the lab's kube-apiserver and etcd, stopped (SIGTERM), hung (SIGSTOP) and started again as
`lab up` starts them; etcd's compaction; `oomtuner run` as a process. Played: the kubelet (kills
written into pod status, `tests.faults.truth`).

Each scenario: an Auto policy with a 1h cooldown on a paused Deployment of 30 replicas at 256Mi (paused,
so its pods stay while the operator patches the template: every kill of the scenario hits a pod at
256Mi). A burst kills every pod once, and the fault strikes as the operator handles its first third;
the rest comes after the fault. Then a second burst kills every pod again. Expected: each kill
counted once, one raise of the template (256Mi → 384Mi, from the first kills; the cooldown holds the
rest back), recovery — every kill so far counted — within 30 s of the fault's end.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable

import pytest

from tests.faults import lab
from tests.faults.scenario import RECOVERY_WAIT_S, Scenario

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

REPLICAS = 30
MI_256 = 256 * 1024 * 1024


HANG_S = 35.0  # longer than the operator's API request timeout (30 s): its requests in flight time out

APISERVER, ETCD = lab.Component("kube-apiserver"), lab.Component("etcd")

# scenario → (title, strike, how long it lasts, end, a note)
FAULTS: dict[str, tuple[str, Callable[[], None], float, Callable[[], object], str]] = {
    # SIGKILL rather than SIGTERM: a graceful stop serves what is in flight for seconds more.
    "apiserver-restart": ("kube-apiserver killed mid-burst (5 s down), restarted", APISERVER.kill, 5.0,
                          APISERVER.start, "kube-apiserver SIGKILLed, started again after 5 s"),
    "apiserver-hang": (f"kube-apiserver hung mid-burst (SIGSTOP {HANG_S:g} s), SIGCONT", APISERVER.pause, HANG_S,
                       APISERVER.resume, f"SIGSTOP for {HANG_S:g} s, longer than the operator's 30 s request timeout"),
    "etcd-restart": ("etcd stopped mid-burst (5 s down), restarted", ETCD.stop, 5.0, ETCD.start,
                     "etcd SIGTERMed, started again after 5 s (kube-apiserver stays up)"),
}


@pytest.mark.parametrize("name", list(FAULTS))
def test_a_control_plane_fault_mid_burst(faults: Scenario, name: str) -> None:
    """The first third of the burst reaches the operator while it is frozen (SIGSTOP): their watch
    events wait in its connections, and it handles them right as the fault strikes — so the fault
    always finds kills in flight. The rest of the burst comes once the fault has ended."""
    s = faults
    title, strike, lasts, end, note = FAULTS[name]
    op = s.operator()
    pods, watch, truth = s.auto_workload(REPLICAS)
    first = REPLICAS // 3
    assert op.proc is not None
    os.kill(op.proc.pid, signal.SIGSTOP)
    try:
        truth.burst(pods[:first], threads=4)
        time.sleep(0.5)  # the kills' watch events are in the operator's sockets
        strike()
    finally:
        os.kill(op.proc.pid, signal.SIGCONT)
    struck = time.monotonic()
    time.sleep(lasts)
    end()
    ended = time.monotonic()
    truth.burst(pods[first:], threads=4)
    recovery = s.recovery(truth, ended=ended)
    patched = s.wait_raised(watch, above=MI_256, timeout=max(1.0, ended + RECOVERY_WAIT_S - time.monotonic()))
    count = s.kill_again(truth, pods)
    result = s.report(
        name, title, truth=truth, total=count.total, records=count.records, watch=watch, patched=patched,
        patch_basis=f"the first kills' patch, within {RECOVERY_WAIT_S:g} s of the fault's end", recovery_s=recovery,
        recovery_basis="from the fault's end until every kill so far is counted",
        notes=[note, f"{first} kills reached the operator as the fault struck; the fault lasted {ended - struck:.1f}s"],
    )
    assert not result.failures, result.message()


def test_watch_410_gone_after_compaction_and_a_restart(faults: Scenario) -> None:
    """The operator is frozen (SIGSTOP); the API server restarts (the operator's connections go, with
    nothing of what follows in their buffers); kills happen; etcd is compacted past the operator's
    resourceVersions. Let go, its watches resume into 410 Gone and must list again: the kills of the
    gap reach it only through that listing."""
    s = faults
    op = s.operator()
    pods, watch, truth = s.auto_workload(REPLICAS)
    truth.burst(pods[:10], threads=4)
    s.wait_counted(10, timeout=30)
    pods_path = f"/api/v1/namespaces/{s.namespace}/pods"
    version = s.kube.get(pods_path, query={"limit": 1})["metadata"]["resourceVersion"]
    apiserver = lab.Component("kube-apiserver")
    assert op.proc is not None
    struck = time.monotonic()
    os.kill(op.proc.pid, signal.SIGSTOP)
    try:
        apiserver.stop()
        apiserver.start()
        truth.burst(pods[10:], threads=4)  # unseen: the operator is frozen, and its connections are gone
        compacted = lab.compact_etcd()
        gone = lab.watch_gone(pods_path, version)
    finally:
        os.kill(op.proc.pid, signal.SIGCONT)
    ended = time.monotonic()
    recovery = s.recovery(truth, ended=ended)
    count = s.kill_again(truth, pods)
    result = s.report(
        "watch-410", "watch 410 Gone: operator frozen, kube-apiserver restarted, kills, etcd compacted",
        truth=truth, total=count.total, records=count.records, watch=watch, patched=(watch.limit() or 0) > MI_256,
        patch_basis="by the end", recovery_s=recovery,
        recovery_basis="from SIGCONT of the operator until the kills of the gap are counted",
        notes=[f"operator frozen {ended - struck:.1f}s; etcd compacted to revision {compacted}; a watch from the "
               f"operator's last resourceVersion ({version}) now gets " + ("410 Gone" if gone else "no 410 (!)")],
        failures=[] if gone else ["the precondition failed: a watch from the old resourceVersion did not get 410"],
    )
    assert not result.failures, result.message()
