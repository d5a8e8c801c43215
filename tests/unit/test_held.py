"""A patch held back by the cooldown: when it is due, judged from a recommendation's status alone
(pure, `domain.held`), and how the operator rebuilds its schedule from recommendation events after a
restart. Real: the operator's services (`oomtuner.app`) and the domain. Played: the API server
(`tests.fakes.FakeApi`), and the patch itself (a recording stand-in for the patcher's apply).
"""

from __future__ import annotations

import datetime
from typing import Any

import pytest

from oomtuner import app as app_mod
from oomtuner import config
from oomtuner.api import recommendation, types
from oomtuner.domain import held, workload
from oomtuner.kube import api
from oomtuner.services import held as held_service
from oomtuner.services import patcher
from tests.fakes import FakeApi

UTC = datetime.timezone.utc
NOW = datetime.datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
MINUTE = datetime.timedelta(minutes=1)
REC = "/apis/oomtuner.dev/v1alpha1/namespaces/shop/oomrecommendations/deployment-web"
POLICIES = "/apis/oomtuner.dev/v1alpha1/namespaces/shop/oompolicies"
DEPLOYMENT = "/apis/apps/v1/namespaces/shop/deployments/web"


def _status(*, phase: str = "Pending", reason: str | None = "CooldownActive", applied_ago: datetime.timedelta | None = MINUTE,
            current: tuple[str | None, str | None] = ("192Mi", "384Mi"),
            recommended: tuple[str | None, str | None] = ("288Mi", "576Mi"),
            policy: str | None = "policy", mode: str = "Auto",
            next_attempt: datetime.datetime | None = None) -> dict[str, Any]:
    conditions = [{"type": "Ready", "status": "True", "reason": "Computed"}]
    if reason is not None:
        conditions.append({"type": "Applied", "status": "True" if reason in ("Patched", "UpToDate") else "False",
                           "reason": reason, "message": ""})
    return {
        "phase": phase, "policy": policy, "mode": mode, "conditions": conditions,
        "appliedAt": (NOW - applied_ago).strftime("%Y-%m-%dT%H:%M:%SZ") if applied_ago is not None else None,
        "nextAttemptAt": next_attempt.strftime("%Y-%m-%dT%H:%M:%SZ") if next_attempt is not None else None,
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
        ({"reason": "Conflict"}, 10 * MINUTE, None),
        ({"reason": "NotAdopted"}, 10 * MINUTE, None),
        # owed and not tried yet (the operator stopped between the status write and the patch): due
        # once the cooldown of the last patch ends, at once without one
        ({"reason": "Pending"}, 10 * MINUTE, NOW + 9 * MINUTE),
        ({"reason": None}, 10 * MINUTE, NOW + 9 * MINUTE),
        ({"reason": "Pending", "applied_ago": None}, 10 * MINUTE, NOW),
        ({"reason": "Pending"}, None, NOW),
        # a passing failure: due when the status says, never more than the retry cap away
        ({"reason": "Retrying", "next_attempt": NOW + 2 * MINUTE}, 10 * MINUTE, NOW + 2 * MINUTE),
        ({"reason": "Retrying", "next_attempt": NOW - 2 * MINUTE}, 10 * MINUTE, NOW),
        ({"reason": "Retrying", "next_attempt": NOW + 600 * MINUTE}, 10 * MINUTE, NOW + held.RETRY_CAP),
        ({"reason": "Retrying"}, 10 * MINUTE, NOW),
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


def _policy_body(name: str = "policy", mode: str = "Auto", cooldown: str = "10m", labels: dict[str, str] | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"mode": mode, "cooldown": cooldown}
    if labels:
        spec["selector"] = {"matchLabels": labels}
    return {"apiVersion": "oomtuner.dev/v1alpha1", "kind": "OOMPolicy",
            "metadata": {"name": name, "namespace": "shop", "generation": 1}, "spec": spec,
            # as the operator reported it before: reading it again writes nothing
            "status": {"observedGeneration": 1, "matchedWorkloads": 0,
                       "conditions": [{"type": "Valid", "status": "True", "message": "the policy is in effect"}]}}


def _app(client: FakeApi, **settings: Any) -> app_mod.App:
    return app_mod.App(client=client, settings=config.Settings(**settings), clock=lambda: NOW)  # type: ignore[arg-type]


def _learn(app: app_mod.App, body: dict[str, Any]) -> None:
    """The policy as the policy watch brings it (its status is current: nothing is written)."""
    app.on_policy(body)
    assert app.policies.known("shop", body["metadata"]["name"])


def _deployment() -> dict[str, Any]:
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "namespace": "shop", "uid": "u1"},
            "spec": {"replicas": 1, "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [
                {"name": "app", "resources": {"requests": {"memory": "192Mi"}, "limits": {"memory": "384Mi"}}}]}}}}


def _cluster(*, rec: dict[str, Any] | None = None, policies: list[dict[str, Any]] = (), deployment: bool = True) -> FakeApi:  # type: ignore[assignment]
    objects: dict[str, dict[str, Any]] = {}
    if rec is not None:
        objects[REC] = rec
    if deployment:
        objects[DEPLOYMENT] = _deployment()
    for body in policies:
        objects[f"{POLICIES}/{body['metadata']['name']}"] = body
    return FakeApi(objects)


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
    client = _cluster(deployment=False)
    app = _app(client)
    if policy_body is not None:
        _learn(app, policy_body)
    client.calls.clear()
    assert app.on_recommendation(_rec(**status)) is False
    assert app.held.scheduled().get("shop/deployment-web") == expected
    assert client.calls == []


def test_without_a_policy_the_default_mode_and_cooldown_decide() -> None:
    client = _cluster(deployment=False)
    app = _app(client, default_mode=types.Mode.AUTO, cooldown="5m")
    app.on_recommendation(_rec(policy=None))
    assert app.held.scheduled() == {"shop/deployment-web": NOW + 4 * MINUTE}
    assert client.calls == []


def test_a_schedule_already_made_stands() -> None:
    app = _app(_cluster(deployment=False))
    _learn(app, _policy_body())
    app.held.schedule("shop/deployment-web", NOW + 3 * MINUTE)  # as the patcher judged it
    app.on_recommendation(_rec())
    assert app.held.scheduled() == {"shop/deployment-web": NOW + 3 * MINUTE}


def test_an_unreadable_recommendation_schedules_nothing(caplog: pytest.LogCaptureFixture) -> None:
    app = _app(_cluster(deployment=False))
    assert app.on_recommendation({"metadata": {"name": "x"}, "spec": {}}) is False
    assert app.held.scheduled() == {}
    assert "unreadable OOMRecommendation" in caplog.text


def _applying(app: app_mod.App, monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str | None, patcher.Trigger]]:
    """Record what the patcher is asked to do instead of patching."""
    done: list[tuple[str, str | None, patcher.Trigger]] = []

    def apply(rec: recommendation.OOMRecommendation, *, target: workload.Workload, chosen: Any,
              trigger: patcher.Trigger) -> None:
        done.append((target.display, chosen.metadata.name if chosen else None, trigger))

    monkeypatch.setattr(app.patcher, "apply", apply)
    return done


def test_a_held_patch_due_before_the_policy_watch_reads_the_policies_first(monkeypatch: pytest.MonkeyPatch) -> None:
    client = _cluster(rec=_rec(applied_ago=30 * MINUTE),
                      policies=[_policy_body(), _policy_body("other", mode="Recommend", labels={"app": "api"})])
    app = _app(client)
    done = _applying(app, monkeypatch)
    app.on_recommendation(client.body(REC))
    assert app.held.scheduled() == {"shop/deployment-web": NOW}
    assert app.apply_due() == 1
    assert done == [("Deployment/web", "policy", patcher.Trigger.AFTER_COOLDOWN)]
    assert client.count(f"LIST {POLICIES}") == 1
    assert app.policies.known("shop", "policy") and app.policies.known("shop", "other")
    assert app.held.scheduled() == {}


def test_a_held_patch_whose_policy_is_gone_is_not_applied_in_another_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    client = _cluster(rec=_rec(applied_ago=30 * MINUTE))
    app = _app(client)
    done = _applying(app, monkeypatch)
    app.on_recommendation(client.body(REC))
    assert app.apply_due() == 1
    assert done == [] and app.held.scheduled() == {}


def test_a_held_patch_of_a_deleted_workload_is_dropped(monkeypatch: pytest.MonkeyPatch) -> None:
    client = _cluster(rec=_rec(applied_ago=30 * MINUTE), policies=[_policy_body()], deployment=False)
    app = _app(client)
    _learn(app, _policy_body())
    client.calls.clear()
    done = _applying(app, monkeypatch)
    app.on_recommendation(client.body(REC))
    assert app.apply_due() == 1
    assert done == [] and app.held.scheduled() == {}
    assert client.count("LIST") == 0  # the policy was known


def test_a_held_patch_that_cannot_be_read_is_tried_again_later(caplog: pytest.LogCaptureFixture) -> None:
    client = _cluster(rec=_rec(applied_ago=30 * MINUTE))
    app = _app(client)
    _learn(app, _policy_body())
    app.on_recommendation(client.body(REC))
    client.fail[REC] = api.ApiError(status=503, reason="Service Unavailable", body=None, method="GET", path=REC)
    assert app.apply_due() == 1
    assert app.held.scheduled() == {"shop/deployment-web": NOW + held_service.RETRY}
    assert "tried again in 30s" in caplog.text and "503" in caplog.text
