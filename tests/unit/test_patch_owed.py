"""No patch lost: a patch owed by a recommendation is applied, whatever happens between the status
write that records the kill and the patch itself.

Real: the operator's services (`oomtuner.app`), the domain and the store. Played: the API server
(`tests.fakes.FakeApi`), because the faults here are ones a real server cannot be made to show on
demand (a 503 or a refusal on one particular PATCH, a process that stops between two requests). The
same windows are exercised against the lab's real API server in tests/faults.
"""

from __future__ import annotations

import datetime
from typing import Any

import pytest

from oomtuner import app as app_mod
from oomtuner import config
from oomtuner.api import recommendation
from oomtuner.kube import api
from oomtuner.services import intake
from tests.fakes import FakeApi

UTC = datetime.timezone.utc
T0 = datetime.datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
NS = "shop"
DEPLOYMENT = f"/apis/apps/v1/namespaces/{NS}/deployments/web"
REPLICA_SET = f"/apis/apps/v1/namespaces/{NS}/replicasets/web-5d8f"
POD = f"/api/v1/namespaces/{NS}/pods/web-5d8f-abcde"
REC = f"/apis/oomtuner.dev/v1alpha1/namespaces/{NS}/oomrecommendations/deployment-web"
POLICY = f"/apis/oomtuner.dev/v1alpha1/namespaces/{NS}/oompolicies/policy"


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime.datetime:
        return self.now


def _cluster(*, policy: dict[str, Any] | None = None) -> FakeApi:
    template = {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [
        {"name": "app", "image": "app:1", "resources": {"requests": {"memory": "128Mi"}, "limits": {"memory": "256Mi"}}}]}}
    spec = {"mode": "Auto", "cooldown": "10m", **(policy or {})}
    return FakeApi({
        DEPLOYMENT: {"apiVersion": "apps/v1", "kind": "Deployment",
                     "metadata": {"name": "web", "namespace": NS, "uid": "dep-uid"},
                     "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "web"}}, "template": template}},
        REPLICA_SET: {"apiVersion": "apps/v1", "kind": "ReplicaSet",
                      "metadata": {"name": "web-5d8f", "namespace": NS, "uid": "rs-uid",
                                   "ownerReferences": [{"kind": "Deployment", "name": "web", "uid": "dep-uid", "controller": True}]}},
        POLICY: {"apiVersion": "oomtuner.dev/v1alpha1", "kind": "OOMPolicy",
                 "metadata": {"name": "policy", "namespace": NS, "generation": 1}, "spec": spec},
    })


def _killed_pod(at: datetime.datetime, *, limit: str = "256Mi") -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "web-5d8f-abcde", "namespace": NS, "uid": "pod-uid", "labels": {"app": "web"},
                         "ownerReferences": [{"kind": "ReplicaSet", "name": "web-5d8f", "uid": "rs-uid", "controller": True}]},
            "spec": {"nodeName": "n1", "containers": [
                {"name": "app", "resources": {"requests": {"memory": "128Mi"}, "limits": {"memory": limit}}}]},
            "status": {"phase": "Running", "qosClass": "Burstable", "containerStatuses": [{
                "name": "app", "restartCount": 1, "state": {"running": {"startedAt": at.isoformat()}},
                "lastState": {"terminated": {"reason": "OOMKilled", "exitCode": 137, "startedAt": (at - datetime.timedelta(hours=1)).isoformat(),
                                             "finishedAt": at.isoformat(), "containerID": "containerd://abc"}}}]}}


class Monotonic:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _app(client: FakeApi, clock: Clock, monotonic: Monotonic | None = None) -> app_mod.App:
    app = app_mod.App(client=client, settings=config.Settings(), clock=clock,  # type: ignore[arg-type]
                      monotonic=monotonic or Monotonic())
    app.announcer.poster.submit = lambda body: None  # type: ignore[method-assign]
    app.prime()
    return app


def _limit(client: FakeApi) -> str:
    return str(client.body(DEPLOYMENT)["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["memory"])


def _applied(client: FakeApi) -> Any:
    status = recommendation.parse(client.body(REC)).status
    return next(c for c in status.conditions if c.type == "Applied"), status


def test_a_passing_failure_is_retried_with_back_off_until_the_patch_goes_through() -> None:
    client, clock, monotonic = _cluster(), Clock(), Monotonic()
    app = _app(client, clock, monotonic)
    unavailable = api.ApiError(status=503, reason="Service Unavailable", body=None, method="PATCH", path=DEPLOYMENT)
    client.fail[DEPLOYMENT] = lambda method, path: unavailable if method == "PATCH" else None
    assert app.on_pod(_killed_pod(T0)) == 1
    cond, status = _applied(client)
    assert cond.reason == "Retrying" and status.attempts == 1 and "503" in cond.message
    assert app.held.scheduled() == {f"{NS}/deployment-web": T0 + datetime.timedelta(seconds=1)}
    # The second attempt fails too: the wait doubles.
    clock.now = T0 + datetime.timedelta(seconds=1)
    assert app.apply_due() == 1
    cond, status = _applied(client)
    assert status.attempts == 2 and app.held.scheduled() == {f"{NS}/deployment-web": clock.now + datetime.timedelta(seconds=2)}
    assert _limit(client) == "256Mi"
    # The server answers again: the patch goes through, and the status says so.
    del client.fail[DEPLOYMENT]
    clock.now += datetime.timedelta(seconds=2)
    assert app.apply_due() == 1
    assert _limit(client) == "384Mi"
    cond, status = _applied(client)
    assert cond.reason == "Patched" and status.phase.value == "Applied" and status.attempts is None
    (applied,) = status.applied
    assert (applied.original.limit, applied.applied.limit) == ("256Mi", "384Mi")


def test_a_permanent_refusal_is_rejected_and_not_retried() -> None:
    client, clock = _cluster(), Clock()
    app = _app(client, clock)
    invalid = api.ApiError(status=422, reason="Invalid", body={"message": "admission webhook denied it"},
                           method="PATCH", path=DEPLOYMENT)
    client.fail[DEPLOYMENT] = lambda method, path: invalid if method == "PATCH" else None
    app.on_pod(_killed_pod(T0))
    cond, status = _applied(client)
    assert cond.reason == "Rejected" and "admission webhook denied it" in cond.message
    assert status.patch and app.held.scheduled() == {}


def test_a_patch_owed_when_the_operator_stopped_is_applied_after_the_restart() -> None:
    """The operator stopped after the status write that recorded the kill, before any patch."""
    client, clock = _cluster(), Clock()
    first = _app(client, clock)
    first.patcher.apply = lambda *args, **kwargs: None  # type: ignore[method-assign]  # it stopped here
    first.on_pod(_killed_pod(T0))
    cond, _ = _applied(client)
    assert cond.reason == "Pending" and _limit(client) == "256Mi"

    restarted = _app(client, clock)
    assert restarted.held.scheduled() == {f"{NS}/deployment-web": T0}
    assert restarted.apply_due() == 1
    assert _limit(client) == "384Mi" and _applied(client)[0].reason == "Patched"
    # The pod's status is replayed after the restart: nothing new is counted, nothing raised again.
    assert restarted.on_pod(_killed_pod(T0)) == 0
    assert recommendation.parse(client.body(REC)).status.totalKills == 1


def test_a_patch_whose_outcome_was_never_written_is_recorded_as_applied() -> None:
    """The patch went through, and the operator stopped before writing that it had."""
    client, clock = _cluster(), Clock()
    first = _app(client, clock)
    first.patcher.apply = lambda *args, **kwargs: None  # type: ignore[method-assign]
    first.on_pod(_killed_pod(T0))
    body = client.body(DEPLOYMENT)
    body["spec"]["template"]["spec"]["containers"][0]["resources"] = {"requests": {"memory": "192Mi"}, "limits": {"memory": "384Mi"}}
    client.put(DEPLOYMENT, body)

    restarted = _app(client, clock)
    assert restarted.apply_due() == 1
    cond, status = _applied(client)
    assert cond.reason == "Patched" and "an earlier attempt went through" in cond.message
    assert status.appliedAt and status.applied[0].applied.limit == "384Mi"
    assert client.count(f"PATCH {DEPLOYMENT}") == 0  # nothing was sent again


def test_kills_replayed_at_start_up_are_judged_with_the_policy() -> None:
    """The start-up listing reads the policy before any pod: its maxLimit caps the first kill."""
    client, clock = _cluster(policy={"memory": {"maxLimit": "300Mi"}}), Clock()
    app = _app(client, clock)
    app.on_pod(_killed_pod(T0))
    status = recommendation.parse(client.body(REC)).status
    assert status.policy == "policy" and status.mode is not None and status.mode.value == "Auto"
    app_status = status.containers[0]
    assert app_status.recommended.limit == "300Mi" and app_status.phase.value == "Capped"
    assert app_status.cappedBy == "policy maxLimit 300Mi"
    assert _limit(client) == "300Mi"


@pytest.mark.parametrize("skew", [-3600, 3600])
def test_a_kill_stamped_an_hour_off_is_counted_once(skew: int) -> None:
    client, clock = _cluster(), Clock()
    app = _app(client, clock)
    stamped = T0 + datetime.timedelta(seconds=skew)
    assert app.on_pod(_killed_pod(stamped)) == 1
    assert _app(client, clock).on_pod(_killed_pod(stamped)) == 0
    assert recommendation.parse(client.body(REC)).status.totalKills == 1


def test_a_kill_whose_write_fails_for_a_passing_reason_is_written_again_without_a_new_event() -> None:
    """The API server is out of reach when the kill comes: the pod may never send another event, so
    the operator writes it again by itself."""
    client, clock, monotonic = _cluster(), Clock(), Monotonic()
    app = _app(client, clock, monotonic)
    unavailable = api.ApiError(status=503, reason="Service Unavailable", body=None, method="POST", path=REC)
    client.fail["/apis/oomtuner.dev/v1alpha1/namespaces/shop/oomrecommendations"] = unavailable
    with pytest.raises(api.ApiError):
        app.on_pod(_killed_pod(T0))
    assert app.intake.waiting() == 1
    del client.fail["/apis/oomtuner.dev/v1alpha1/namespaces/shop/oomrecommendations"]
    app.tick()
    assert app.intake.waiting() == 1  # not yet: the wait is not over
    monotonic.now += intake.RETRY_AFTER
    app.tick()
    assert app.intake.waiting() == 0
    assert recommendation.parse(client.body(REC)).status.totalKills == 1


def test_a_kill_refused_for_good_is_not_retried() -> None:
    client, clock = _cluster(), Clock()
    app = _app(client, clock)
    terminating = api.ApiError(status=403, reason="Forbidden", body={"message": "namespace shop is being terminated"},
                               method="POST", path=REC)
    client.fail["/apis/oomtuner.dev/v1alpha1/namespaces/shop/oomrecommendations"] = terminating
    with pytest.raises(api.ApiError):
        app.on_pod(_killed_pod(T0))
    assert app.intake.waiting() == 0


def test_a_pod_whose_owner_cannot_be_read_yet_is_handled_again_and_counted_for_its_workload() -> None:
    """The API server restarts as the kill comes: the ReplicaSet cannot be read, so the pod's kills
    cannot be queued for any workload yet. They are neither lost nor given to the pod itself."""
    client, clock, monotonic = _cluster(), Clock(), Monotonic()
    app = _app(client, clock, monotonic)
    refused = api.Unreachable(why="connection refused", method="GET", path=REPLICA_SET, server="https://127.0.0.1:6443")
    client.fail[REPLICA_SET] = refused
    with pytest.raises(api.ApiError):
        app.on_pod(_killed_pod(T0))
    assert app.intake.waiting() == 1 and REC not in client.objects
    del client.fail[REPLICA_SET]
    monotonic.now += intake.RETRY_AFTER
    app.tick()
    assert app.intake.waiting() == 0
    assert recommendation.parse(client.body(REC)).status.totalKills == 1
    assert not [path for path in client.objects if "oomrecommendations/pod-" in path]


def test_status_writes_that_conflict_every_time_keep_the_kills_for_the_next_try() -> None:
    client, clock, monotonic = _cluster(), Clock(), Monotonic()
    app = _app(client, clock, monotonic)
    assert app.on_pod(_killed_pod(T0)) == 1
    conflict = api.Conflict(status=409, reason="Conflict", body=None, method="PUT", path=f"{REC}/status")
    client.fail[f"{REC}/status"] = lambda method, path: conflict if method == "PUT" else None
    later = T0 + datetime.timedelta(minutes=1)
    second = _killed_pod(later)
    second["status"]["containerStatuses"][0]["lastState"]["terminated"]["containerID"] = "containerd://def"
    second["status"]["containerStatuses"][0]["restartCount"] = 2
    with pytest.raises(api.Conflict):
        app.on_pod(second)
    assert app.intake.waiting() == 1
    del client.fail[f"{REC}/status"]
    monotonic.now += intake.RETRY_AFTER
    app.tick()
    assert app.intake.waiting() == 0 and recommendation.parse(client.body(REC)).status.totalKills == 2
