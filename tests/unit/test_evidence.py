"""Which events may count as OOM evidence: the node agent's OOMKillChildProcess on the pod's node, the
kubelet's SystemOOM and node-problem-detector's OOMKilling about their own node, in `default`; and
at most MAX_KILLS_PER_EVENT kills from one event. Pure: events as the agent, the kubelet and a
forger write them."""

from __future__ import annotations

import datetime
import pathlib
from typing import Any

import pytest

from oomtuner.agent import cgroups, reporter, watcher
from oomtuner.api import core, types
from oomtuner.domain import child_kills, evidence

POD = core.parse_pod({
    "metadata": {"name": "web-0", "namespace": "shop", "uid": "uid-web-0"},
    "spec": {"nodeName": "node-a", "containers": [{"name": "app"}]},
    "status": {"containerStatuses": [{"name": "app", "containerID": "containerd://" + "ab" * 32,
                                      "state": {"running": {"startedAt": "2026-11-26T10:00:00Z"}}}]},
})
AT = datetime.datetime(2026, 11, 26, 10, 5, tzinfo=datetime.timezone.utc)


def agent_event(*, new_kills: int = 1, oom_kill: int = 1, node: str = "node-a") -> dict[str, Any]:
    """The event the real agent builds (reporter.build_event)."""
    cgroup = cgroups.ContainerCgroup(path=pathlib.Path("/x"), key="kubepods/burstable/poduid-web-0/c", pod_uid="uid-web-0",
                                     container_id="ab" * 32, qos_class=types.QOSClass.BURSTABLE, driver=cgroups.Driver.CGROUPFS)
    counters = cgroups.Counters(version=cgroups.Version.V1, oom_kill=oom_kill, oom_group_kill=0, limit_hits=1,
                                limit=256 * 1024 * 1024)
    increase = watcher.Increase(cgroup=cgroup, counters=counters, new_kills=new_kills, limit_hits=1, seen_at=AT, previous_at=None)
    ref = reporter.ContainerRef(namespace="shop", pod="web-0", pod_uid="uid-web-0", container="app",
                                container_type=types.ContainerType.CONTAINER)
    return reporter.build_event(ref=ref, increase=increase, node_name=node)


def changed(body: dict[str, Any], **paths: Any) -> core.Event:
    body = {**body, "source": dict(body.get("source") or {}), "metadata": dict(body["metadata"]),
            "involvedObject": dict(body["involvedObject"])}
    for path, value in paths.items():
        first, _, rest = path.partition("__")
        if rest:
            body[first][rest] = value
        else:
            body[first] = value
    return core.parse_event(body)


def test_the_agents_own_event_counts() -> None:
    assert evidence.child_kill_problem(core.parse_event(agent_event()), pod=POD) is None


@pytest.mark.parametrize(("paths", "why"), [
    ({"source__component": "kubelet"}, "not posted by oomtuner-agent (component 'kubelet')"),
    ({"source__component": None, "reportingComponent": None}, "not posted by oomtuner-agent"),
    ({"reportingComponent": "someone"}, "not posted by oomtuner-agent"),
    ({"source__host": "node-b", "reportingInstance": "node-b"}, "posted from node 'node-b', not from 'node-a'"),
    ({"reportingInstance": "node-b"}, "not from 'node-a'"),
    ({"source__host": None, "reportingInstance": None}, "posted from node None"),
    ({"source__host": None}, "posted from node None"),
    ({"involvedObject__uid": "uid-other"}, "names pod UID 'uid-other'"),
    ({"involvedObject__uid": None}, "names pod UID None"),
    ({"involvedObject__kind": "Node"}, "about a Node"),
    ({"metadata__namespace": "other"}, "sits in namespace 'other'"),
], ids=["kubelet", "no-component", "reporting-component", "other-node", "reporting-instance", "no-node", "no-source-host",
        "other-uid", "no-uid", "a-node", "other-namespace"])
def test_forged_child_kill_events_do_not_count(paths: dict[str, Any], why: str) -> None:
    problem = evidence.child_kill_problem(changed(agent_event(), **paths), pod=POD)
    assert problem is not None and why in problem


def test_a_pod_that_is_gone_or_not_scheduled_gives_no_evidence() -> None:
    assert evidence.child_kill_problem(core.parse_event(agent_event()), pod=None) == "the pod it names is gone or unknown"
    unscheduled = POD.model_copy(update={"spec": POD.spec.model_copy(update={"nodeName": None})})
    assert "the node is unknown" in (evidence.child_kill_problem(core.parse_event(agent_event()), pod=unscheduled) or "")


def test_one_event_stands_for_at_most_max_kills_per_event() -> None:
    found = child_kills.kills_from_event(agent_event(new_kills=20_000, oom_kill=20_000), pod=POD)
    assert len(found) == evidence.MAX_KILLS_PER_EVENT == 20
    assert [k.oom_kill_counter for k in found] == list(range(19_981, 20_001))  # the newest
    assert len(child_kills.kills_from_event(agent_event(new_kills=3, oom_kill=7), pod=POD)) == 3


def node_event(reason: str = "SystemOOM", *, node: str = "node-a", **overrides: Any) -> dict[str, Any]:
    component = "kubelet" if reason == "SystemOOM" else "kernel-monitor"
    body: dict[str, Any] = {
        "metadata": {"name": f"{node}.1", "namespace": "default"},
        "involvedObject": {"kind": "Node", "name": node, "uid": node},
        "reason": reason, "type": "Warning", "message": "System OOM encountered, victim process: java, pid: 1",
        "source": {"component": component, "host": node},
        "lastTimestamp": "2026-11-26T10:05:00Z",
    }
    if reason == "SystemOOM":
        body.update(reportingComponent="kubelet", reportingInstance=node)
    body.update(overrides)
    return body


@pytest.mark.parametrize("reason", ["SystemOOM", "OOMKilling"])
def test_the_kubelets_and_npds_own_node_events_count(reason: str) -> None:
    assert evidence.node_oom_problem(core.parse_event(node_event(reason))) is None


@pytest.mark.parametrize(("overrides", "why"), [
    ({"source": {"component": "kubelet", "host": "node-b"}}, "posted from node 'node-b', not from 'node-a'"),
    ({"source": {"component": "oomtuner-agent", "host": "node-a"}}, "not posted by kubelet"),
    ({"source": {}}, "not posted by kubelet"),
    ({"reportingInstance": "node-b"}, "not from 'node-a'"),
    ({"metadata": {"name": "x", "namespace": "tenant"}}, "sits in namespace 'tenant'"),
    ({"involvedObject": {"kind": "Pod", "name": "node-a"}}, "about a Pod"),
    ({"reason": "Started"}, "not a node OOM"),
], ids=["other-host", "other-component", "no-source", "reporting-instance", "tenant-namespace", "a-pod", "other-reason"])
def test_forged_system_ooms_do_not_count(overrides: dict[str, Any], why: str) -> None:
    problem = evidence.node_oom_problem(core.parse_event(node_event(**overrides)))
    assert problem is not None and why in problem


def test_node_problem_detector_must_be_its_kernel_monitor() -> None:
    forged = node_event("OOMKilling", source={"component": "kubelet", "host": "node-a"})
    assert "not posted by kernel-monitor" in (evidence.node_oom_problem(core.parse_event(forged)) or "")
