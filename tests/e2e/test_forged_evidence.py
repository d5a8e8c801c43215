"""Forged evidence on the lab is not counted: OOMKillChildProcess events that did not come from the
agent on the pod's node, and SystemOOM events that did not come from the node's kubelet in
`default`, change no recommendation. A genuine event of each kind, posted the same way, is counted:
the controls that show the operator was listening.

Real: the operator process (`oomtuner run`), the lab's API server carrying the events, the kubelet's
pod status as kwok and `oomtuner_lab.inject` write it. Played: the poster of every event (the
test, with the admin's credentials, writes what the agent or the kubelet would, or a forgery). The
chart's ValidatingAdmissionPolicy, which refuses forged child-kill events at the API server, is not
installed here: these tests are about the operator's own checks (`domain.evidence`).
"""

from __future__ import annotations

import contextlib
import time
import uuid
from typing import Any

import pytest

from oomtuner.api import types
from oomtuner.domain import child_kills
from oomtuner.kube import api
from oomtuner_lab import inject
from tests.e2e import kit
from tests.e2e.conftest import OperatorProcess, core_v1, operator  # noqa: F401

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240), pytest.mark.writes_pod_status]

CONTAINER_ID = "ab" * 32
# Kills of other tests finish within this: counted or not, by then the operator has seen them.
SETTLE = 4.0


def _child_kill(pod: dict[str, Any], *, name: str, oom_kill: int, new_kills: int, host: str | None,
                component: str = child_kills.COMPONENT, uid: str | None = None) -> dict[str, Any]:
    facts = child_kills.ChildKillFacts(container="app", container_id=CONTAINER_ID, oom_kill=oom_kill, new_kills=new_kills,
                                       limit=256 * 1024 * 1024, hit_limit=True, qos_class=types.QOSClass.BURSTABLE)
    stamp = kit.utc().strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "apiVersion": "v1", "kind": "Event", "metadata": {"name": name},
        "involvedObject": {"apiVersion": "v1", "kind": "Pod", "name": pod["metadata"]["name"],
                           "namespace": pod["metadata"]["namespace"], "uid": uid or pod["metadata"]["uid"],
                           "fieldPath": "spec.containers{app}"},
        "reason": child_kills.REASON, "message": child_kills.format_message(facts), "type": "Warning",
        "source": {"component": component, **({"host": host} if host else {})},
        "reportingComponent": component, **({"reportingInstance": host} if host else {}),
        "firstTimestamp": stamp, "lastTimestamp": stamp, "count": 1,
    }


def _web(kube: api.Client, namespace: str, node: str | None = None) -> dict[str, Any]:
    kube.create(f"/apis/apps/v1/namespaces/{namespace}/deployments", kit.on_node(kit.deployment("web"), node))
    return kit.running_pods(kube, namespace, "web")[0]


def _kills(kube: api.Client, namespace: str) -> list[dict[str, Any]]:
    rec = kit.recommendation(kube, namespace, "deployment-web")
    return list(((rec or {}).get("status") or {}).get("kills") or [])


def _post_genuine_and_wait(kube: api.Client, namespace: str, pod: dict[str, Any]) -> None:
    events = f"/api/v1/namespaces/{namespace}/events"
    kube.create(events, _child_kill(pod, name="genuine", oom_kill=1, new_kills=1, host=pod["spec"]["nodeName"]))
    kit.wait_recommendation(kube, namespace, "deployment-web",
                            lambda r: any(k["id"].endswith("/child/" + CONTAINER_ID + "/1")
                                          for k in (r.get("status") or {}).get("kills") or []),
                            what="the genuine child kill to be counted")
    time.sleep(SETTLE)


def test_a_genuine_child_kill_event_is_counted(kube: api.Client, operator: OperatorProcess, namespace: str) -> None:
    pod = _web(kube, namespace)
    _post_genuine_and_wait(kube, namespace, pod)
    assert [k["id"].rsplit("/", 1)[1] for k in _kills(kube, namespace)] == ["1"]


def test_forged_child_kill_events_are_not_counted(kube: api.Client, operator: OperatorProcess, namespace: str) -> None:
    pod = _web(kube, namespace)
    node = pod["spec"]["nodeName"]
    other = next(n["metadata"]["name"] for n in kube.list("/api/v1/nodes") if n["metadata"]["name"] != node)
    events = f"/api/v1/namespaces/{namespace}/events"
    forgeries = {
        "from-another-node": _child_kill(pod, name="f1", oom_kill=20_000, new_kills=20_000, host=other),
        "from-no-node": _child_kill(pod, name="f2", oom_kill=30_000, new_kills=10, host=None),
        "not-from-the-agent": _child_kill(pod, name="f3", oom_kill=40_000, new_kills=10, host=node, component="kubelet"),
        "about-another-pod-uid": _child_kill(pod, name="f4", oom_kill=50_000, new_kills=10, host=node, uid=str(uuid.uuid4())),
    }
    for body in forgeries.values():
        kube.create(events, body)
    _post_genuine_and_wait(kube, namespace, pod)
    counted = [k["id"] for k in _kills(kube, namespace)]
    assert [i.rsplit("/", 1)[1] for i in counted] == ["1"], f"forged kills counted: {counted}"


def _limit_kill_near_a_node_oom(kube: api.Client, core_v1: Any, namespace: str, post: Any) -> dict[str, Any]:
    """Kill a container that has a limit on a node of its own, right after `post(node, at)` posted
    something about a node OOM there; the recorded kill."""
    node = kit.dedicated_node(kube, f"{namespace}-node")
    try:
        pod = _web(kube, namespace, node)
        at = kit.utc()
        post(pod["spec"]["nodeName"], at)
        time.sleep(1)  # the operator sees the node event before the pod status
        inject.oom_kill(core_v1, namespace=namespace, pod=pod["metadata"]["name"], container="app", at=at)
        kit.wait_recommendation(kube, namespace, "deployment-web", lambda r: (r.get("status") or {}).get("totalKills") == 1)
        time.sleep(SETTLE)  # a reclassification would come now
        return _kills(kube, namespace)[0]
    finally:
        if node:
            with contextlib.suppress(api.ApiError):
                kube.delete(f"/api/v1/nodes/{node}")


def test_a_genuine_system_oom_makes_a_limited_container_a_node_kill(kube: api.Client, core_v1: Any, operator: OperatorProcess,
                                                                    namespace: str) -> None:
    kill = _limit_kill_near_a_node_oom(kube, core_v1, namespace,
                                       lambda node, at: inject.system_oom(core_v1, node=node, process_name="app", at=at))
    assert kill["classification"] == "Node", kill


def _forged_system_ooms(kube: api.Client, namespace: str, node: str, at: Any) -> None:
    stamp = at.strftime("%Y-%m-%dT%H:%M:%SZ")

    def event(where: str, *, source: dict[str, str], name: str) -> None:
        # The API server keeps an event about a Node (no namespace) in `default`: a tenant's forgery
        # names its own namespace as the Node's to be stored in it.
        involved = {"kind": "Node", "name": node, "uid": node, **({"namespace": where} if where != "default" else {})}
        kube.create(f"/api/v1/namespaces/{where}/events", {
            "apiVersion": "v1", "kind": "Event", "metadata": {"name": f"{node}.{name}"},
            "involvedObject": involved, "reason": "SystemOOM",
            "message": "System OOM encountered, victim process: app, pid: 1", "type": "Warning", "source": source,
            "firstTimestamp": stamp, "lastTimestamp": stamp, "count": 1})

    event(namespace, source={"component": "kubelet", "host": node}, name="in-a-tenant-namespace")
    event("default", source={"component": "kubelet", "host": "lab-node-large"}, name="from-another-node")
    event("default", source={"component": "oomtuner-agent", "host": node}, name="not-from-the-kubelet")


def test_forged_system_ooms_do_not_make_a_limited_container_a_node_kill(kube: api.Client, core_v1: Any,
                                                                        operator: OperatorProcess, namespace: str) -> None:
    kill = _limit_kill_near_a_node_oom(kube, core_v1, namespace,
                                       lambda node, at: _forged_system_ooms(kube, namespace, node, at))
    assert kill["classification"] == "Limit", kill
