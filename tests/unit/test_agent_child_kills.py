"""OOMKillChildProcess events as OOM kills, and telling them apart from pod-status kills
(oomtuner.domain.child_kills). Pure domain logic.

Real: the message format the agent writes and the operator reads, the event → kill conversion, the
`same_kill` rule, and (in the last tests) the pod-status kills of `domain.kills` and the agent's real
event builder. Faked: nothing; bodies are written the way the API server returns them.
"""

from __future__ import annotations

import dataclasses
import datetime
from typing import Any

import pytest

from oomtuner.api import core, types
from oomtuner.domain import child_kills, classify, kills

MIB = 1 << 20
CID = "3f" * 32
UID = "0b9a3c52-1d2e-4f5a-8b6c-7d8e9f0a1b2c"
AT = datetime.datetime(2025, 3, 1, 12, 0, 0, 250000, tzinfo=datetime.timezone.utc)

FACTS = child_kills.ChildKillFacts(
    container="app",
    container_id=CID,
    oom_kill=3,
    new_kills=1,
    limit=256 * MIB,
    hit_limit=True,
    qos_class=types.QOSClass.BURSTABLE,
)


def event(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": f"web-0.{CID[:12]}.3", "namespace": "shop"},
        "involvedObject": {"apiVersion": "v1", "kind": "Pod", "name": "web-0", "namespace": "shop", "uid": UID,
                           "fieldPath": "spec.containers{app}"},
        "reason": "OOMKillChildProcess",
        "type": "Warning",
        "message": child_kills.format_message(FACTS),
        "source": {"component": "oomtuner-agent", "host": "node-a"},
        "eventTime": "2025-03-01T12:00:00.250000Z",
        "firstTimestamp": "2025-03-01T12:00:00Z",
        "lastTimestamp": "2025-03-01T12:00:00Z",
    }
    body.update(overrides)
    return body


def pod(**status: Any) -> core.Pod:
    return core.parse_pod({
        "metadata": {"name": "web-0", "namespace": "shop", "uid": UID},
        "spec": {
            "nodeName": "node-a",
            "containers": [{"name": "app", "resources": {"requests": {"memory": "128Mi"}, "limits": {"memory": "512Mi"}}}],
            "initContainers": [{"name": "proxy", "restartPolicy": "Always",
                                "resources": {"requests": {"memory": "64Mi"}, "limits": {"memory": "64Mi"}}}],
        },
        "status": {
            "qosClass": "Burstable",
            "containerStatuses": [{"name": "app", "restartCount": 2, "containerID": f"containerd://{CID}",
                                   "state": {"running": {"startedAt": "2025-03-01T11:00:00Z"}}}],
            **status,
        },
    })


# ---- the message ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "facts",
    [
        FACTS,
        dataclasses.replace(FACTS, new_kills=3, oom_kill=3, limit=None, hit_limit=None, qos_class=types.QOSClass.BEST_EFFORT),
        dataclasses.replace(FACTS, container="worker-2", hit_limit=False, qos_class=types.QOSClass.GUARANTEED),
    ],
)
def test_message_round_trip(facts: child_kills.ChildKillFacts) -> None:
    assert child_kills.parse_message(child_kills.format_message(facts)) == facts


def test_message_reads_for_people() -> None:
    message = child_kills.format_message(FACTS)

    assert message.startswith(
        "Kernel OOM-killed 1 process in container app (memory limit 256Mi); unless the main process was "
        "among them, the container keeps running and its status does not show it. | "
    )
    assert f"containerID={CID} oomKill=3 newKills=1 limitBytes=268435456 hitLimit=true qos=Burstable" in message


@pytest.mark.parametrize(
    "message",
    [
        None,
        "",
        "System OOM encountered, victim process: python, pid: 1234",
        "no fields | ",
        f"x | container=app containerID={CID} oomKill=3 newKills=0 limitBytes=none qos=Burstable",
        f"x | container=app containerID={CID} oomKill=1 newKills=2 limitBytes=none qos=Burstable",
        f"x | container=app containerID={CID} oomKill=three newKills=1 limitBytes=none qos=Burstable",
        f"x | container=app containerID={CID} oomKill=3 newKills=1 limitBytes=none qos=Platinum",
        f"x | container=app containerID={CID} oomKill=3 newKills=1 limitBytes=-5 qos=Burstable",
        f"x | container=app containerID={CID} oomKill=3 newKills=1 limitBytes=none hitLimit=maybe qos=Burstable",
        "x | container=app containerID=not-hex oomKill=3 newKills=1 limitBytes=none qos=Burstable",
        f"x | containerID={CID} oomKill=3 newKills=1 limitBytes=none qos=Burstable",
        f"x | container=app containerID={CID} oomKill=3 newKills=1 limitBytes=none qos=Burstable stray",
    ],
)
def test_messages_that_are_not_ours(message: str | None) -> None:
    assert child_kills.parse_message(message) is None


def test_newer_agents_may_add_fields() -> None:
    message = child_kills.format_message(FACTS) + " cgroupVersion=v2"

    assert child_kills.parse_message(message) == FACTS


@pytest.mark.parametrize(
    ("kind", "path", "read_back"),
    [
        (types.ContainerType.CONTAINER, "spec.containers{app}", types.ContainerType.CONTAINER),
        (types.ContainerType.INIT, "spec.initContainers{app}", types.ContainerType.INIT),
        (types.ContainerType.SIDECAR, "spec.initContainers{app}", types.ContainerType.INIT),
        (types.ContainerType.EPHEMERAL, "spec.ephemeralContainers{app}", types.ContainerType.EPHEMERAL),
    ],
)
def test_field_path(kind: types.ContainerType, path: str, read_back: types.ContainerType) -> None:
    assert child_kills.field_path(kind, "app") == path
    assert child_kills.parse_field_path(path) == (read_back, "app")


@pytest.mark.parametrize("path", [None, "", "spec.containers", "spec.volumes{data}", "spec.containers{}"])
def test_field_paths_that_name_no_container(path: str | None) -> None:
    assert child_kills.parse_field_path(path) is None


# ---- event → kill ------------------------------------------------------------------------------


def test_kill_from_event_with_its_pod() -> None:
    kill = child_kills.kill_from_event(event(), pod=pod(), node_memory_capacity=16 * 1024 * MIB)

    assert kill == child_kills.ChildOOMKill(
        namespace="shop",
        pod="web-0",
        pod_uid=UID,
        container="app",
        container_type=types.ContainerType.CONTAINER,
        node="node-a",
        at=AT,
        started_at=datetime.datetime(2025, 3, 1, 11, tzinfo=datetime.timezone.utc),
        restart_count=2,
        exit_code=137,
        container_id=CID,
        request=128 * MIB,
        limit_at_kill=256 * MIB,  # what the cgroup enforced, not the spec's 512Mi
        qos_class=types.QOSClass.BURSTABLE,
        oom_score_adj=1000 - (1000 * 128 * MIB) // (16 * 1024 * MIB),
        pod_memory_limit=None,
        oom_kill_counter=3,
        hit_own_limit=True,
    )
    assert kill.identity == f"{UID}/app/child/{CID}/3"


def test_kill_from_event_without_pod() -> None:
    body = event(message=child_kills.format_message(
        dataclasses.replace(FACTS, limit=None, qos_class=types.QOSClass.GUARANTEED)))

    kill = child_kills.kill_from_event(body, pod=None)

    assert kill is not None
    assert (kill.namespace, kill.pod, kill.pod_uid, kill.container, kill.node) == ("shop", "web-0", UID, "app", "node-a")
    assert (kill.qos_class, kill.oom_score_adj, kill.limit_at_kill, kill.request) == (
        types.QOSClass.GUARANTEED, -997, None, None)


def test_limit_falls_back_to_the_spec_and_sidecars_are_recognised() -> None:
    facts = dataclasses.replace(FACTS, container="proxy", limit=None)
    body = event(message=child_kills.format_message(facts),
                 involvedObject={**event()["involvedObject"], "fieldPath": "spec.initContainers{proxy}"})

    kill = child_kills.kill_from_event(body, pod=pod())

    assert kill is not None
    assert (kill.container, kill.container_type, kill.limit_at_kill) == ("proxy", types.ContainerType.SIDECAR, 64 * MIB)


def test_a_recreated_pod_of_the_same_name_is_not_used() -> None:
    other = pod().model_copy(update={"metadata": pod().metadata.model_copy(update={"uid": "another-uid"})})

    kill = child_kills.kill_from_event(event(), pod=other)

    assert kill is not None and kill.pod_uid == UID and kill.request is None and kill.restart_count == 0


def test_one_event_for_several_kills() -> None:
    body = event(message=child_kills.format_message(dataclasses.replace(FACTS, oom_kill=5, new_kills=3)))

    found = child_kills.kills_from_event(body, pod=None)

    assert [k.oom_kill_counter for k in found] == [3, 4, 5]
    assert len({k.identity for k in found}) == 3
    assert child_kills.kill_from_event(body, pod=None) == found[-1]


def test_parsed_event_model_is_accepted() -> None:
    assert child_kills.kill_from_event(core.parse_event(event()), pod=None) == child_kills.kill_from_event(event(), pod=None)


@pytest.mark.parametrize(
    "body",
    [
        event(reason="OOMKilling"),
        event(involvedObject={"kind": "Node", "name": "node-a"}),
        event(message="Killed process 1234 (python)"),
        event(involvedObject={"kind": "Pod", "name": "web-0", "namespace": "shop"}),  # no uid, no pod
        event(eventTime=None, firstTimestamp=None, lastTimestamp=None),
        event(count="many"),  # does not parse
    ],
)
def test_events_that_are_not_child_kills(body: dict[str, Any]) -> None:
    assert child_kills.kills_from_event(body, pod=None) == []
    assert child_kills.kill_from_event(body, pod=None) is None


def test_child_kills_classify_like_other_kills() -> None:
    """The operator feeds them through the same classification: a limit makes a Limit kill."""
    kill = child_kills.kill_from_event(event(), pod=pod())
    assert kill is not None

    classification, reason = classify.classify(kill, node_ooms=[])

    assert classification == types.Classification.LIMIT
    assert "256Mi" in reason


# ---- same_kill -------------------------------------------------------------------------------------


def status_kill(*, at: datetime.datetime | None, container: str = "app", uid: str = UID,
                container_id: str | None = f"containerd://{CID}") -> kills.OOMKill:
    return kills.OOMKill(
        namespace="shop", pod="web-0", pod_uid=uid, container=container,
        container_type=types.ContainerType.CONTAINER, node="node-a", at=at, started_at=None,
        restart_count=3, exit_code=137, container_id=container_id, request=128 * MIB, limit_at_kill=256 * MIB,
        qos_class=types.QOSClass.BURSTABLE, oom_score_adj=None, pod_memory_limit=None,
    )


CHILD = child_kills.kill_from_event(event(), pod=None)
FINISHED = datetime.datetime(2025, 3, 1, 11, 59, 58, tzinfo=datetime.timezone.utc)  # 2.25s before AT


@pytest.mark.parametrize(
    ("other", "same"),
    [
        (status_kill(at=FINISHED), True),
        (status_kill(at=FINISHED, container_id=CID), True),  # with or without the runtime scheme
        (status_kill(at=FINISHED, container_id=None), True),  # no ID to compare: times decide
        (status_kill(at=AT + datetime.timedelta(seconds=5)), True),
        (status_kill(at=AT + datetime.timedelta(seconds=5, microseconds=1)), False),
        (status_kill(at=AT - datetime.timedelta(seconds=6)), False),
        (status_kill(at=FINISHED, container="proxy"), False),
        (status_kill(at=FINISHED, uid="another"), False),
        (status_kill(at=FINISHED, container_id="containerd://" + "ab" * 32), False),  # another instance
        (status_kill(at=None), False),
    ],
)
def test_same_kill(other: kills.OOMKill, same: bool) -> None:
    assert CHILD is not None
    assert child_kills.same_kill(CHILD, other) is same


def test_same_kill_tolerance_is_a_parameter() -> None:
    assert CHILD is not None
    assert child_kills.same_kill(CHILD, status_kill(at=FINISHED), tolerance=datetime.timedelta(seconds=1)) is False


def test_identities_never_collide_with_status_kills() -> None:
    assert CHILD is not None
    assert CHILD.identity != status_kill(at=CHILD.at).identity


def test_a_restarted_container_seen_by_both() -> None:
    """The main process was killed: the pod status reports OOMKilled (finishedAt at second precision)
    and the agent read the risen counter of the same instance 1.4s later. One kill."""
    restarted = core.parse_pod({
        "metadata": {"name": "web-0", "namespace": "shop", "uid": UID},
        "spec": {"nodeName": "node-a", "containers": [{"name": "app", "resources": {"limits": {"memory": "256Mi"}}}]},
        "status": {"containerStatuses": [{
            "name": "app", "restartCount": 1, "containerID": "containerd://" + "cd" * 32,
            "state": {"running": {"startedAt": "2025-03-01T12:00:01Z"}},
            "lastState": {"terminated": {"reason": "OOMKilled", "exitCode": 137, "containerID": f"containerd://{CID}",
                                         "startedAt": "2025-03-01T11:00:00Z", "finishedAt": "2025-03-01T11:59:59Z"}},
        }]},
    })
    [from_status] = kills.kills_from_pod(restarted, node_memory_capacity=None)
    child = child_kills.kill_from_event(event(), pod=restarted)

    assert child is not None
    assert child.started_at is None  # the event's instance is not the running one
    assert child_kills.same_kill(child, from_status)
    assert child.identity != from_status.identity
