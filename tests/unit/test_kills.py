"""OOM kills read from pod status: which terminations count, what each kill records, and its identity.

Pod bodies are written the way the kubelet reports them (state.terminated right after the kill, then
lastState.terminated while waiting in CrashLoopBackOff and after the restart) and parsed with
`core.parse_pod`. Pure; nothing is faked. hypothesis checks that every sighting of one kill has one
identity.
"""

from __future__ import annotations

import datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from oomtuner.api import core, types
from oomtuner.domain import kills

MI = 1024**2
GI = 1024**3
STARTED = "2024-05-01T10:00:00Z"
FINISHED = "2024-05-01T10:05:00Z"
UTC = datetime.timezone.utc


def terminated(
    reason: str = "OOMKilled",
    *,
    exit_code: int | None = 137,
    finished: str | None = FINISHED,
    started: str | None = STARTED,
    container_id: str | None = "containerd://dead",
) -> dict[str, Any]:
    body: dict[str, Any] = {"reason": reason}
    if exit_code is not None:
        body["exitCode"] = exit_code
    if finished is not None:
        body["finishedAt"] = finished
    if started is not None:
        body["startedAt"] = started
    if container_id is not None:
        body["containerID"] = container_id
    return {"terminated": body}


def status(name: str, *, state: dict[str, Any] | None = None, last: dict[str, Any] | None = None, restarts: int = 0, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"name": name, "restartCount": restarts, "containerID": "containerd://current", **extra}
    if state is not None:
        body["state"] = state
    if last is not None:
        body["lastState"] = last
    return body


def make_pod(
    *,
    statuses: list[dict[str, Any]] | None = None,
    init_statuses: list[dict[str, Any]] | None = None,
    ephemeral_statuses: list[dict[str, Any]] | None = None,
    pod_resources: dict[str, Any] | None = None,
    uid: str = "uid-1",
) -> core.Pod:
    limited = {"requests": {"memory": "128Mi", "cpu": "100m"}, "limits": {"memory": "256Mi"}}
    spec: dict[str, Any] = {
        "nodeName": "node-a",
        "containers": [{"name": "app", "resources": limited}, {"name": "free", "resources": {"requests": {"memory": "64Mi"}}}],
        "initContainers": [
            {"name": "setup", "resources": {"limits": {"memory": "32Mi"}}},
            {"name": "proxy", "restartPolicy": "Always", "resources": {"requests": {"memory": "16Mi"}, "limits": {"memory": "48Mi"}}},
        ],
        "ephemeralContainers": [{"name": "debug"}],
    }
    if pod_resources is not None:
        spec["resources"] = pod_resources
    return core.parse_pod(
        {
            "metadata": {"name": "web-0", "namespace": "shop", "uid": uid},
            "spec": spec,
            "status": {
                "containerStatuses": statuses or [],
                "initContainerStatuses": init_statuses or [],
                "ephemeralContainerStatuses": ephemeral_statuses or [],
            },
        }
    )


def test_a_kill_in_state_records_everything() -> None:
    pod = make_pod(statuses=[status("app", state=terminated())])
    (kill,) = kills.kills_from_pod(pod, node_memory_capacity=8 * GI)
    assert kill == kills.OOMKill(
        namespace="shop",
        pod="web-0",
        pod_uid="uid-1",
        container="app",
        container_type=types.ContainerType.CONTAINER,
        node="node-a",
        at=datetime.datetime(2024, 5, 1, 10, 5, tzinfo=UTC),
        started_at=datetime.datetime(2024, 5, 1, 10, 0, tzinfo=UTC),
        restart_count=0,
        exit_code=137,
        container_id="containerd://dead",
        request=128 * MI,
        limit_at_kill=256 * MI,
        qos_class=types.QOSClass.BURSTABLE,
        oom_score_adj=1000 - (1000 * 128 * MI) // (8 * GI),
        pod_memory_limit=None,
        instance=0,
    )


def test_the_same_kill_in_state_then_last_state_has_one_identity() -> None:
    just_killed = make_pod(statuses=[status("app", state=terminated(), restarts=0)])
    backing_off = make_pod(
        statuses=[status("app", state={"waiting": {"reason": "CrashLoopBackOff"}}, last=terminated(), restarts=0)]
    )
    restarted = make_pod(
        statuses=[status("app", state={"running": {"startedAt": "2024-05-01T10:05:10Z"}}, last=terminated(), restarts=1)]
    )
    sightings = [kills.kills_from_pod(p, node_memory_capacity=None) for p in (just_killed, backing_off, restarted)]
    assert all(len(found) == 1 for found in sightings)
    assert len({found[0].identity for found in sightings}) == 1
    assert [found[0].restart_count for found in sightings] == [0, 0, 1]
    assert sightings[2][0].container_id == "containerd://dead"  # the killed instance, not the new one


def test_two_different_kills_in_state_and_last_state_count_twice() -> None:
    pod = make_pod(
        statuses=[
            status(
                "app",
                state=terminated(finished="2024-05-01T10:20:00Z", container_id="containerd://second"),
                last=terminated(),
                restarts=1,
            )
        ]
    )
    found = kills.kills_from_pod(pod, node_memory_capacity=None)
    assert [k.at for k in found] == [
        datetime.datetime(2024, 5, 1, 10, 5, tzinfo=UTC),
        datetime.datetime(2024, 5, 1, 10, 20, tzinfo=UTC),
    ]
    assert len({k.identity for k in found}) == 2


def test_an_identical_termination_in_both_places_counts_once() -> None:
    pod = make_pod(statuses=[status("app", state=terminated(), last=terminated())])
    assert len(kills.kills_from_pod(pod, node_memory_capacity=None)) == 1


def test_exit_code_137_without_oomkilled_is_not_an_oom_kill() -> None:
    pod = make_pod(
        statuses=[
            status("app", state=terminated("Error", exit_code=137)),
            status("free", state={"running": {}}, last=terminated("Error", exit_code=137), restarts=1),
        ],
        init_statuses=[status("setup", state=terminated("Completed", exit_code=0))],
    )
    assert kills.kills_from_pod(pod, node_memory_capacity=None) == []


def test_reason_must_be_exactly_oomkilled() -> None:
    pod = make_pod(statuses=[status("app", state=terminated("oomkilled")), status("free", state=terminated("OOMKilled "))])
    assert kills.kills_from_pod(pod, node_memory_capacity=None) == []


def test_container_types() -> None:
    pod = make_pod(
        statuses=[status("app", last=terminated(finished="2024-05-01T10:01:00Z"), restarts=1)],
        init_statuses=[
            status("setup", state=terminated(finished="2024-05-01T10:02:00Z")),
            status("proxy", last=terminated(finished="2024-05-01T10:03:00Z"), restarts=1),
        ],
        ephemeral_statuses=[status("debug", state=terminated(finished="2024-05-01T10:04:00Z"))],
    )
    found = kills.kills_from_pod(pod, node_memory_capacity=None)
    assert [(k.container, k.container_type, k.limit_at_kill) for k in found] == [
        ("app", types.ContainerType.CONTAINER, 256 * MI),
        ("setup", types.ContainerType.INIT, 32 * MI),
        ("proxy", types.ContainerType.SIDECAR, 48 * MI),
        ("debug", types.ContainerType.EPHEMERAL, None),
    ]


def test_missing_fields_never_raise() -> None:
    assert kills.kills_from_pod(core.parse_pod({}), node_memory_capacity=None) == []
    assert kills.kills_from_pod(core.parse_pod({"status": {"containerStatuses": [{"name": "x"}]}}), node_memory_capacity=None) == []
    bare = core.parse_pod({"status": {"containerStatuses": [{"name": "x", "state": {"terminated": {"reason": "OOMKilled"}}}]}})
    (kill,) = kills.kills_from_pod(bare, node_memory_capacity=None)
    assert (kill.at, kill.started_at, kill.exit_code, kill.node, kill.request, kill.limit_at_kill) == (None, None, 137, None, None, None)
    assert kill.container_type == types.ContainerType.CONTAINER
    assert kill.qos_class == types.QOSClass.BEST_EFFORT


def test_identity_falls_back_to_container_id_then_restart_count() -> None:
    by_id = make_pod(statuses=[status("app", last=terminated(finished=None), restarts=1)])
    (kill,) = kills.kills_from_pod(by_id, node_memory_capacity=None)
    assert kill.identity == "uid-1/app/containerd://dead"
    by_count = make_pod(statuses=[status("app", state=terminated(finished=None, container_id=None), restarts=3, containerID=None)])
    (kill,) = kills.kills_from_pod(by_count, node_memory_capacity=None)
    assert kill.identity == "uid-1/app/restart-3"


def test_identity_does_not_depend_on_how_the_time_is_written() -> None:
    utc = make_pod(statuses=[status("app", state=terminated(finished="2024-05-01T10:05:00Z"))])
    offset = make_pod(statuses=[status("app", state=terminated(finished="2024-05-01T12:05:00+02:00"))])
    first = kills.kills_from_pod(utc, node_memory_capacity=None)[0]
    second = kills.kills_from_pod(offset, node_memory_capacity=None)[0]
    assert first.identity == second.identity == "uid-1/app/2024-05-01T10:05:00+00:00"


def test_identity_differs_between_pods_of_a_workload() -> None:
    a = kills.kills_from_pod(make_pod(statuses=[status("app", state=terminated())], uid="a"), node_memory_capacity=None)
    b = kills.kills_from_pod(make_pod(statuses=[status("app", state=terminated())], uid="b"), node_memory_capacity=None)
    assert a[0].identity != b[0].identity


def test_limit_at_kill_follows_an_in_place_resize() -> None:
    resized = make_pod(
        statuses=[
            status(
                "app",
                state=terminated(),
                resources={"requests": {"memory": "200Mi"}, "limits": {"memory": "400Mi"}},
            )
        ]
    )
    (kill,) = kills.kills_from_pod(resized, node_memory_capacity=None)
    assert (kill.request, kill.limit_at_kill) == (200 * MI, 400 * MI)


def test_pod_level_limit_and_unknown_capacity() -> None:
    pod = make_pod(
        statuses=[status("free", state=terminated())],
        pod_resources={"requests": {"memory": "1Gi"}, "limits": {"memory": "2Gi"}},
    )
    (kill,) = kills.kills_from_pod(pod, node_memory_capacity=None)
    assert kill.pod_memory_limit == 2 * GI
    assert kill.limit_at_kill is None
    assert kill.oom_score_adj is None  # Burstable, and the node's capacity is unknown


def test_restart_transition_is_what_vpa_counts() -> None:
    running = {"running": {"startedAt": STARTED}}
    before = make_pod(statuses=[status("app", state=running, restarts=0), status("free", state=running, restarts=2)])
    after = make_pod(
        statuses=[
            status("app", state=running, last=terminated(), restarts=1),
            status("free", state=running, last=terminated("Error"), restarts=3),
        ]
    )
    found = kills.is_restart_transition(before, after)
    assert [k.container for k in found] == ["app"]
    assert kills.is_restart_transition(None, after) == []
    assert kills.is_restart_transition(after, after) == []
    # identity-based dedup counts the same kill without seeing the transition
    assert {k.identity for k in found} <= {k.identity for k in kills.kills_from_pod(after, node_memory_capacity=None)}


@given(
    restarts=st.integers(min_value=0, max_value=10_000),
    finished=st.datetimes(
        min_value=datetime.datetime(2000, 1, 1), max_value=datetime.datetime(2100, 1, 1), timezones=st.just(UTC)
    ),
)
def test_every_sighting_of_a_kill_has_the_same_identity(restarts: int, finished: datetime.datetime) -> None:
    when = finished.replace(microsecond=0).isoformat().replace("+00:00", "Z")
    sightings = [
        status("app", state=terminated(finished=when), restarts=restarts),
        status("app", state={"waiting": {"reason": "CrashLoopBackOff"}}, last=terminated(finished=when), restarts=restarts),
        status("app", state={"running": {}}, last=terminated(finished=when), restarts=restarts + 1),
    ]
    identities = {
        kills.kills_from_pod(make_pod(statuses=[s]), node_memory_capacity=None)[0].identity for s in sightings
    }
    assert len(identities) == 1


# ---- reading pod bodies (api.core) -------------------------------------------------------------


def test_pod_bodies_are_read_leniently() -> None:
    pod = core.parse_pod(
        {
            "metadata": {"name": "web-0", "labels": None, "creationTimestamp": "", "unknownField": 1},
            "spec": {"nodeName": None, "containers": [{"name": "a", "resources": {"requests": {"memory": 1073741824, "cpu": 0.5}}}]},
            "status": {"startTime": "2024-05-01T10:00:00", "containerStatuses": None},
        }
    )
    assert pod.metadata.labels == {}
    assert pod.metadata.creationTimestamp is None
    assert pod.spec.nodeName is None
    assert pod.spec.containers[0].resources.requests == {"memory": "1073741824", "cpu": "0.5"}
    assert pod.status.startTime == datetime.datetime(2024, 5, 1, 10, tzinfo=UTC)  # naive means UTC
    assert pod.status.containerStatuses == []


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            {"metadata": {"name": "web-0", "namespace": "shop"}, "spec": {"containers": [{"name": "a", "resources": {"limits": {"memory": True}}}]}},
            "Pod shop/web-0: spec.containers[0].resources.limits.memory: a quantity must be a string like 512Mi",
        ),
        (
            {"metadata": {"name": "web-0", "namespace": "shop"}, "status": {"containerStatuses": [{"name": "a", "restartCount": "lots"}]}},
            "Pod shop/web-0: status.containerStatuses[0].restartCount: Input should be a valid integer",
        ),
        (
            {"metadata": {"name": "web-0"}, "status": {"containerStatuses": [{"state": {"terminated": {"finishedAt": "yesterday"}}}]}},
            "Pod web-0: status.containerStatuses[0].state.terminated.finishedAt:",
        ),
    ],
)
def test_unreadable_pods_name_the_object_and_the_field(body: dict[str, Any], message: str) -> None:
    with pytest.raises(core.InvalidObject) as caught:
        core.parse_pod(body)
    assert str(caught.value).startswith(message)
    assert "\n" not in str(caught.value)  # one line, not a pydantic dump
    assert isinstance(caught.value, ValueError)


@pytest.mark.parametrize(("state", "restarts", "from_last_state", "instance"), [
    ({"running": {}}, 3, True, 2),  # restarted: lastState is the instance before the running one
    ({"terminated": {"reason": "OOMKilled"}}, 3, True, 2),
    ({"terminated": {"reason": "OOMKilled"}}, 3, False, 3),  # state is the newest instance
    ({"waiting": {"reason": "CrashLoopBackOff"}}, 3, True, 3),  # waiting: the newest died and sits in lastState
    ({"running": {}}, 0, True, 0),
])
def test_the_instance_a_termination_ended(state: dict[str, Any], restarts: int, from_last_state: bool, instance: int) -> None:
    status = core.ContainerStatus.model_validate({"name": "app", "restartCount": restarts, "state": state})
    assert kills.instance(status, from_last_state=from_last_state) == instance
