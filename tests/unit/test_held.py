"""A patch held back by the cooldown: when it is due, judged from a recommendation's status alone
(pure, `domain.held`), and how the operator rebuilds its schedule from recommendation events after a
restart. Real: `reconcile.Operator` and the domain. Played: the API server (a small in-memory client).
"""

from __future__ import annotations

import datetime
from typing import Any

import pytest

from oomtuner import config, reconcile
from oomtuner.api import recommendation, types
from oomtuner.domain import held, workload
from oomtuner.kube import api

UTC = datetime.timezone.utc
NOW = datetime.datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
MINUTE = datetime.timedelta(minutes=1)
REC = "/apis/oomtuner.dev/v1alpha1/namespaces/shop/oomrecommendations/deployment-web"
POLICIES = "/apis/oomtuner.dev/v1alpha1/namespaces/shop/oompolicies"
DEPLOYMENT = "/apis/apps/v1/namespaces/shop/deployments/web"


def _status(*, phase: str = "Pending", reason: str | None = "CooldownActive", applied_ago: datetime.timedelta | None = MINUTE,
            current: tuple[str | None, str | None] = ("192Mi", "384Mi"),
            recommended: tuple[str | None, str | None] = ("288Mi", "576Mi"),
            policy: str | None = "policy", mode: str = "Auto") -> dict[str, Any]:
    conditions = [{"type": "Ready", "status": "True", "reason": "Computed"}]
    if reason is not None:
        conditions.append({"type": "Applied", "status": "True" if reason in ("Patched", "UpToDate") else "False",
                           "reason": reason, "message": ""})
    return {
        "phase": phase, "policy": policy, "mode": mode, "conditions": conditions,
        "appliedAt": (NOW - applied_ago).strftime("%Y-%m-%dT%H:%M:%SZ") if applied_ago is not None else None,
        "containers": [{"name": "app", "current": {"request": current[0], "limit": current[1]},
                        "recommended": {"request": recommended[0], "limit": recommended[1]}}],
    }


def _rec(**status: Any) -> dict[str, Any]:
    return {"apiVersion": "oomtuner.dev/v1alpha1", "kind": "OOMRecommendation",
            "metadata": {"name": "deployment-web", "namespace": "shop", "generation": 1, "resourceVersion": "7"},
            "spec": {"targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"}},
            "status": _status(**status)}


def _due(cooldown: datetime.timedelta | None = 10 * MINUTE, **status: Any) -> datetime.datetime | None:
    parsed = recommendation.OOMRecommendationStatus.model_validate(_status(**status))
    return held.due_at(parsed, cooldown=cooldown, now=NOW)


# ---- when a held patch is due (pure) -------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "cooldown", "due"),
    [
        # held back, the cooldown still running: due when it ends
        ({}, 10 * MINUTE, NOW + 9 * MINUTE),
        ({"phase": "Capped"}, 10 * MINUTE, NOW + 9 * MINUTE),
        # its cooldown ended while nobody was looking: due at once
        ({"applied_ago": 30 * MINUTE}, 10 * MINUTE, NOW),
        # a clock ahead never makes it wait longer than one cooldown
        ({"applied_ago": -60 * MINUTE}, 10 * MINUTE, NOW + 10 * MINUTE),
        # the policy is not known yet: due at once, the cooldown is judged again when it is applied
        ({}, None, NOW),
        # a newer recommendation after a patch, inside the cooldown, before CooldownActive was written
        ({"reason": "Patched"}, 10 * MINUTE, NOW + 9 * MINUTE),
        ({"reason": "UpToDate"}, 10 * MINUTE, NOW + 9 * MINUTE),
        # ... but after the cooldown that is not a held patch (the kill that raised it patches itself)
        ({"reason": "Patched", "applied_ago": 30 * MINUTE}, 10 * MINUTE, None),
        ({"reason": "Patched"}, None, None),
        # refusals are not retried by the schedule
        ({"reason": "Ignored"}, 10 * MINUTE, None),
        ({"reason": "NotPatchable"}, 10 * MINUTE, None),
        ({"reason": "Rejected"}, 10 * MINUTE, None),
        ({"reason": None}, 10 * MINUTE, None),
        # nothing left to apply, or a phase that is never auto-applied
        ({"recommended": ("192Mi", "384Mi")}, 10 * MINUTE, None),
        ({"recommended": ("100Mi", "200Mi")}, 10 * MINUTE, None),
        ({"phase": "Applied"}, 10 * MINUTE, None),
        ({"phase": "SuspectedLeak"}, 10 * MINUTE, None),
        ({"phase": "Conflict"}, 10 * MINUTE, None),
        # one raised value is enough; a missing limit is raised by any recommended one
        ({"recommended": ("192Mi", "385Mi")}, 10 * MINUTE, NOW + 9 * MINUTE),
        ({"current": ("192Mi", None), "recommended": ("192Mi", "384Mi")}, 10 * MINUTE, NOW + 9 * MINUTE),
        # the same value written another way is no change; an unreadable one is none either
        ({"recommended": ("192Mi", "0.375Gi")}, 10 * MINUTE, None),
        ({"recommended": ("lots", "lots")}, 10 * MINUTE, None),
        ({"current": ("lots", "lots")}, 10 * MINUTE, None),
    ],
)
def test_when_a_held_patch_is_due(status: dict[str, Any], cooldown: datetime.timedelta | None, due: datetime.datetime | None) -> None:
    assert _due(cooldown, **status) == due


def test_a_status_without_containers_or_conditions_holds_nothing() -> None:
    assert held.due_at(recommendation.OOMRecommendationStatus(), cooldown=MINUTE, now=NOW) is None
    empty = recommendation.OOMRecommendationStatus(phase=types.Phase.PENDING, containers=[])
    assert held.due_at(empty, cooldown=MINUTE, now=NOW) is None


# ---- the operator rebuilds its schedule from recommendation events --------------------------------


class NoCalls:
    """A client that fails the test on any request: recommendation events must cost none."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"unexpected API call: {name}")


def _policy_body(name: str = "policy", mode: str = "Auto", cooldown: str = "10m", labels: dict[str, str] | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"mode": mode, "cooldown": cooldown}
    if labels:
        spec["selector"] = {"matchLabels": labels}
    return {"apiVersion": "oomtuner.dev/v1alpha1", "kind": "OOMPolicy",
            "metadata": {"name": name, "namespace": "shop", "generation": 1}, "spec": spec,
            # as the operator reported it before: reading it again writes nothing
            "status": {"observedGeneration": 1, "matchedWorkloads": 0,
                       "conditions": [{"type": "Valid", "status": "True", "message": "the policy is in effect"}]}}


def _operator(client: Any, **settings: Any) -> reconcile.Operator:
    return reconcile.Operator(client=client, settings=config.Settings(**settings), clock=lambda: NOW)  # type: ignore[arg-type]


def _learn(op: reconcile.Operator, body: dict[str, Any]) -> None:
    parsed, problem = reconcile._read_policy(body, namespace="shop", name=body["metadata"]["name"])
    assert parsed is not None and problem is None
    op.policies["shop"][parsed.metadata.name] = parsed


@pytest.mark.parametrize(
    ("policy_body", "status", "expected"),
    [
        # the policy is known: its cooldown (10m, applied 1m ago)
        (_policy_body(), {}, NOW + 9 * MINUTE),
        (_policy_body(cooldown="2m"), {}, NOW + MINUTE),
        (_policy_body(cooldown="30s"), {}, NOW),
        # the policy now says Recommend: nothing is scheduled
        (_policy_body(mode="Recommend"), {}, None),
        # the policy is not known yet (its watch comes later at start-up): the mode the status
        # recorded, and due at once so that the cooldown is judged with the policy
        (None, {}, NOW),
        (None, {"mode": "Recommend"}, None),
        # no policy governs: the operator-wide default mode (Recommend) and cooldown
        (None, {"policy": None}, None),
        # not held
        (_policy_body(), {"phase": "Applied"}, None),
        (_policy_body(), {"reason": "Ignored"}, None),
    ],
)
def test_a_recommendation_event_schedules_its_held_patch_without_an_api_call(
    policy_body: dict[str, Any] | None, status: dict[str, Any], expected: datetime.datetime | None
) -> None:
    op = _operator(NoCalls())
    if policy_body is not None:
        _learn(op, policy_body)
    assert op.on_recommendation(_rec(**status)) is False
    assert op._deferred.get("shop/deployment-web") == expected


def test_without_a_policy_the_default_mode_and_cooldown_decide() -> None:
    op = _operator(NoCalls(), default_mode=types.Mode.AUTO, cooldown="5m")
    op.on_recommendation(_rec(policy=None))
    assert op._deferred == {"shop/deployment-web": NOW + 4 * MINUTE}


def test_a_schedule_already_made_stands() -> None:
    op = _operator(NoCalls())
    _learn(op, _policy_body())
    op._deferred["shop/deployment-web"] = NOW + 3 * MINUTE  # as `_apply` judged it
    op.on_recommendation(_rec())
    assert op._deferred == {"shop/deployment-web": NOW + 3 * MINUTE}


def test_an_unreadable_recommendation_schedules_nothing(caplog: pytest.LogCaptureFixture) -> None:
    op = _operator(NoCalls())
    assert op.on_recommendation({"metadata": {"name": "x"}, "spec": {}}) is False
    assert op._deferred == {}
    assert "unreadable OOMRecommendation" in caplog.text


class Cluster:
    """The recommendation, the Deployment and the namespace's policies, read by path."""

    def __init__(self, *, rec: dict[str, Any], policies: list[dict[str, Any]], deployment: bool = True,
                 fail: Exception | None = None):
        self.bodies: dict[str, dict[str, Any]] = {REC: rec}
        if deployment:
            self.bodies[DEPLOYMENT] = {
                "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "namespace": "shop", "uid": "u1"},
                "spec": {"replicas": 1, "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [
                    {"name": "app", "resources": {"requests": {"memory": "192Mi"}, "limits": {"memory": "384Mi"}}}]}}},
            }
        self.policies = policies
        self.fail = fail
        self.calls: list[str] = []

    def get_or_none(self, path: str) -> dict[str, Any] | None:
        self.calls.append(f"get {path}")
        if self.fail is not None:
            raise self.fail
        return self.bodies.get(path)

    def list(self, path: str, *, query: Any = None) -> list[dict[str, Any]]:
        self.calls.append(f"list {path}")
        assert path == POLICIES
        return self.policies


def _applying(op: reconcile.Operator) -> list[tuple[str, str | None]]:
    """Record what `_apply` is asked to do instead of patching."""
    done: list[tuple[str, str | None]] = []

    def apply(rec: recommendation.OOMRecommendation, *, target: workload.Workload, chosen: Any, trigger: str) -> None:
        done.append((target.display, chosen.metadata.name if chosen else None))

    op._apply = apply  # type: ignore[method-assign]
    return done


def test_a_held_patch_due_before_the_policy_watch_reads_the_policies_first() -> None:
    cluster = Cluster(rec=_rec(applied_ago=30 * MINUTE), policies=[_policy_body(), _policy_body("other", mode="Recommend", labels={"app": "api"})])
    op = _operator(cluster)
    done = _applying(op)
    op.on_recommendation(cluster.bodies[REC])
    assert op._deferred == {"shop/deployment-web": NOW}
    assert op.apply_due() == 1
    assert done == [("Deployment/web", "policy")]
    assert f"list {POLICIES}" in cluster.calls
    assert set(op.policies["shop"]) == {"policy", "other"}
    assert op._deferred == {}


def test_a_held_patch_whose_policy_is_gone_is_not_applied_in_another_mode() -> None:
    cluster = Cluster(rec=_rec(applied_ago=30 * MINUTE), policies=[])
    op = _operator(cluster)
    done = _applying(op)
    op.on_recommendation(cluster.bodies[REC])
    assert op.apply_due() == 1
    assert done == [] and op._deferred == {}


def test_a_held_patch_of_a_deleted_workload_is_dropped() -> None:
    cluster = Cluster(rec=_rec(applied_ago=30 * MINUTE), policies=[_policy_body()], deployment=False)
    op = _operator(cluster)
    _learn(op, _policy_body())
    done = _applying(op)
    op.on_recommendation(cluster.bodies[REC])
    assert op.apply_due() == 1
    assert done == [] and op._deferred == {}
    assert not any(call.startswith("list") for call in cluster.calls)  # the policy was known


def test_a_held_patch_that_cannot_be_read_is_tried_again_later(caplog: pytest.LogCaptureFixture) -> None:
    error = api.ApiError(status=503, reason="Service Unavailable", body=None, method="GET", path=REC)
    cluster = Cluster(rec=_rec(applied_ago=30 * MINUTE), policies=[], fail=error)
    op = _operator(cluster)
    _learn(op, _policy_body())
    op.on_recommendation(cluster.bodies[REC])
    assert op.apply_due() == 1
    assert op._deferred == {"shop/deployment-web": NOW + reconcile.DEFERRED_RETRY}
    assert "tried again in 30s" in caplog.text and "503" in caplog.text
