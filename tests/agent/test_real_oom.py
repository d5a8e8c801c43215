"""The node agent against real kernel OOM kills in real memory cgroups.

Real: the cgroup v1 memory hierarchy and the kernel's OOM killer. Each test makes a kubelet-shaped
tree (`kubepods/burstable/pod<uid>/<container id>`) with a 32 MiB container limit, moves a shell into
the container's cgroup (its "PID 1"), and has it start a Python child that allocates until the kernel
kills it; the shell lives on, so the container would not restart and Kubernetes would report nothing.
The agent's watcher, reporter, loop and event builder are the real code.
Faked: only the API server side. Pods come from an in-memory resolver and events are recorded in
memory (test_agent_lab.py posts them to a real API server). Skipped when the cgroup filesystem cannot
be written.
"""

from __future__ import annotations

import datetime
import threading
import time

import pytest

from oomtuner.agent import cgroups, loop, metrics, reporter, watcher
from oomtuner.api import core, types
from oomtuner.domain import child_kills, classify
from tests.agent import kernel

pytestmark = pytest.mark.timeout(120)

LIMIT = 32 * kernel.MIB


def now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def test_watcher_reports_exactly_one_real_kill_and_the_parent_lives_on(kubelet_cgroups: kernel.KubeletCgroups) -> None:
    uid, pod = kubelet_cgroups.pod(limit=2 * LIMIT)
    container_id, container = kubelet_cgroups.container(pod, limit=LIMIT)
    poller = watcher.Watcher(root=kubelet_cgroups.root)
    assert poller.poll(now=now()) == []
    assert poller.watched == 1  # the container cgroup, not the pod's nor the QoS class's

    parent = kubelet_cgroups.start_parent(container)
    started = time.monotonic()
    said = kernel.spawn_greedy_child(parent)
    killed_in = time.monotonic() - started
    increases = poller.poll(now=now())

    assert said == "child exit 137"  # 128 + SIGKILL: the kernel killed the child
    assert parent.poll() is None, "the container's main process must survive"
    assert kernel.cgroup_of(parent.pid) == kernel.relative_to_mount(container)
    assert len(increases) == 1, increases
    [rise] = increases
    assert (rise.cgroup.pod_uid, rise.cgroup.container_id) == (uid, container_id)
    assert rise.cgroup.qos_class == types.QOSClass.BURSTABLE
    assert rise.new_kills == 1
    assert rise.counters == cgroups.Counters(
        version=cgroups.Version.V1, oom_kill=1, oom_group_kill=0, limit_hits=rise.counters.limit_hits, limit=LIMIT)
    assert rise.hit_limit is True  # failcnt rose: the container hit its own 32 MiB
    assert poller.poll(now=now()) == []
    print(f"\nkernel OOM kill of the child took {killed_in:.2f}s")


def test_a_second_kill_is_a_second_report(kubelet_cgroups: kernel.KubeletCgroups) -> None:
    _, pod = kubelet_cgroups.pod()
    container_id, container = kubelet_cgroups.container(pod, limit=LIMIT)
    poller = watcher.Watcher(root=kubelet_cgroups.root)
    poller.poll(now=now())
    parent = kubelet_cgroups.start_parent(container)

    counts = []
    for _ in range(2):
        assert kernel.spawn_greedy_child(parent) == "child exit 137"
        counts.append([(i.cgroup.container_id, i.new_kills, i.counters.oom_kill) for i in poller.poll(now=now())])

    assert counts == [[(container_id, 1, 1)], [(container_id, 1, 2)]]


def test_two_kills_between_polls_are_one_report_of_two(kubelet_cgroups: kernel.KubeletCgroups) -> None:
    _, pod = kubelet_cgroups.pod()
    _, container = kubelet_cgroups.container(pod, limit=LIMIT)
    poller = watcher.Watcher(root=kubelet_cgroups.root)
    poller.poll(now=now())
    parent = kubelet_cgroups.start_parent(container)
    for _ in range(2):
        assert kernel.spawn_greedy_child(parent) == "child exit 137"

    assert [i.new_kills for i in poller.poll(now=now())] == [2]


def test_agent_loop_posts_one_event_for_a_container_born_after_it_started(kubelet_cgroups: kernel.KubeletCgroups) -> None:
    """The whole agent but the API server: the loop polls, the container cgroup appears, a worker is
    killed, exactly one event comes out, and the operator's parser reads it back as a Limit kill."""
    uid, pod_path = kubelet_cgroups.pod(limit=2 * LIMIT)
    labels = {"namespace": "shop", "pod": "web-0", "container": "app"}
    counted_before = metrics.REGISTRY.get_sample_value("oomtuner_agent_oom_kills_total", labels) or 0.0
    sink = reporter.RecordedEvents()
    pods: list[core.Pod] = []
    sender = reporter.Reporter(resolver=_Pods(pods), sink=sink, node_name="node-a")
    stop = threading.Event()
    interval = 0.1
    thread = threading.Thread(target=loop.run, kwargs={
        "poller": watcher.Watcher(root=kubelet_cgroups.root), "sender": sender, "interval": interval, "stop": stop})
    thread.start()
    try:
        time.sleep(3 * interval)  # the agent has looked: what appears now is new
        container_id, container = kubelet_cgroups.container(pod_path, limit=LIMIT)
        pod = _pod(uid=uid, container_id=container_id)
        pods.append(pod)
        parent = kubelet_cgroups.start_parent(container)
        killed = time.monotonic()
        assert kernel.spawn_greedy_child(parent) == "child exit 137"
        while not sink.bodies and time.monotonic() - killed < 10:
            time.sleep(0.01)
        reported_in = time.monotonic() - killed
        time.sleep(5 * interval)  # more polls: nothing more to report
    finally:
        stop.set()
        thread.join(timeout=10)

    assert parent.poll() is None
    assert len(sink.bodies) == 1, sink.bodies
    body = sink.bodies[0]
    assert body["reason"] == "OOMKillChildProcess" and body["type"] == "Warning"
    assert body["involvedObject"]["uid"] == uid and body["involvedObject"]["fieldPath"] == "spec.containers{app}"
    assert body["source"] == {"component": "oomtuner-agent", "host": "node-a"}
    kill = child_kills.kill_from_event(body, pod=pod)
    assert kill is not None
    assert (kill.pod_uid, kill.container, kill.container_id, kill.limit_at_kill) == (uid, "app", container_id, LIMIT)
    assert classify.classify(kill, node_ooms=[])[0] == types.Classification.LIMIT
    assert metrics.REGISTRY.get_sample_value("oomtuner_agent_oom_kills_total", labels) == counted_before + 1
    print(f"\nevent recorded {reported_in:.2f}s after the kill (poll interval {interval}s)")


class _Pods:
    """An in-memory resolver over a list the test fills once the container exists."""

    def __init__(self, pods: list[core.Pod]) -> None:
        self.pods = pods
        self.index: dict[str, reporter.ContainerRef] = {}

    def lookup(self, container_id: str) -> reporter.ContainerRef | None:
        return self.index.get(container_id)

    def refresh(self) -> None:
        self.index = reporter.index_pods(self.pods)


def _pod(*, uid: str, container_id: str) -> core.Pod:
    return core.parse_pod({
        "metadata": {"name": "web-0", "namespace": "shop", "uid": uid},
        "spec": {"nodeName": "node-a", "containers": [
            {"name": "app", "resources": {"requests": {"memory": "16Mi"}, "limits": {"memory": "32Mi"}}}]},
        "status": {"qosClass": "Burstable", "containerStatuses": [
            {"name": "app", "containerID": f"containerd://{container_id}", "state": {"running": {}}}]},
    })
