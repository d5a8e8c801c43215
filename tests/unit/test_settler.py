"""Settling the operator's own raises, as the operator wires it: which recommendations it looks at,
what it asks Prometheus, what it writes and applies, and what it leaves alone.

Real: the operator's services (`oomtuner.app`), `domain.settle` and the store. Played: the API server
(`tests.fakes.FakeApi`) and the usage source (answers what each test tells it), since a day of usage
since a raise cannot be waited for here; tests/e2e/test_settle.py settles on the lab's Prometheus.
"""

from __future__ import annotations

import datetime
import fractions
from typing import Any

import pytest

from oomtuner import app as app_mod
from oomtuner import config
from oomtuner.api import recommendation
from oomtuner.domain import settle
from oomtuner.prom import usage as prom_usage
from tests.fakes import FakeApi

UTC = datetime.timezone.utc
NOW = datetime.datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
RAISED = NOW - datetime.timedelta(hours=25)
MI = 1024 * 1024
NS = "shop"
DEPLOYMENT = f"/apis/apps/v1/namespaces/{NS}/deployments/web"
REC = f"/apis/oomtuner.dev/v1alpha1/namespaces/{NS}/oomrecommendations/deployment-web"
POLICY = f"/apis/oomtuner.dev/v1alpha1/namespaces/{NS}/oompolicies/policy"


def _stamp(at: datetime.datetime) -> str:
    return at.strftime("%Y-%m-%dT%H:%M:%SZ")


def _cluster(*, mode: str = "Auto", settle_spec: dict[str, Any] | None = None) -> FakeApi:
    memory = {"requests": {"memory": "192Mi"}, "limits": {"memory": "384Mi"}}
    return FakeApi({
        DEPLOYMENT: {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "namespace": NS, "uid": "dep-uid"},
                     "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "web"}},
                              "template": {"metadata": {"labels": {"app": "web"}},
                                           "spec": {"containers": [{"name": "app", "resources": memory}]}}}},
        POLICY: {"apiVersion": "oomtuner.dev/v1alpha1", "kind": "OOMPolicy", "metadata": {"name": "policy", "namespace": NS},
                 "spec": {"mode": mode, "cooldown": "10m", "memory": {"settle": settle_spec or {}}}},
        REC: {"apiVersion": "oomtuner.dev/v1alpha1", "kind": "OOMRecommendation",
              "metadata": {"name": "deployment-web", "namespace": NS,
                           "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": "web", "uid": "dep-uid"}]},
              "spec": {"targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"}},
              "status": {
                  "phase": "Applied", "policy": "policy", "mode": mode, "appliedAt": _stamp(RAISED), "totalKills": 1,
                  "containers": [{"name": "app", "current": {"request": "192Mi", "limit": "384Mi"},
                                  "recommended": {"request": "192Mi", "limit": "384Mi"}, "phase": "Applied",
                                  "classification": "Limit", "oomKills": 1}],
                  "kills": [{"id": "p/app/k1", "pod": "web-1", "podUID": "p", "container": "app", "classification": "Limit",
                             "at": _stamp(RAISED - datetime.timedelta(minutes=1)), "limitAtKill": "256Mi",
                             "requestAtKill": "128Mi"}],
                  "applied": [{"name": "app", "original": {"request": "128Mi", "limit": "256Mi"},
                               "applied": {"request": "192Mi", "limit": "384Mi"}, "at": _stamp(RAISED),
                               "raisedAt": _stamp(RAISED)}],
              }},
    })


class Source(prom_usage.Disabled):
    """Answers `since_raise` with the usage it is given; records the questions."""

    def __init__(self, found: settle.UsageSinceRaise | None) -> None:
        self.found = found
        self.asked: list[prom_usage.SinceQuery] = []

    def since_raise(self, query: prom_usage.SinceQuery) -> prom_usage.SinceRaise:
        self.asked.append(query)
        if self.found is None:
            return prom_usage.SinceRaise(outcome=prom_usage.Outcome.UNAVAILABLE, message="Prometheus at http://p: timed out")
        return prom_usage.SinceRaise(outcome=prom_usage.Outcome.USED, message="used", usage={"app": self.found})


QUIET = settle.UsageSinceRaise(peak=150 * MI, coverage=fractions.Fraction(1), growing=False, p95=140 * MI)


def _app(client: FakeApi, source: Any) -> tuple[app_mod.App, list[dict[str, Any]]]:
    app = app_mod.App(client=client, settings=config.Settings(), clock=lambda: NOW, usage=source)  # type: ignore[arg-type]
    posted: list[dict[str, Any]] = []
    app.announcer.poster.submit = posted.append  # type: ignore[method-assign]
    app.prime()
    return app, posted


def _status(client: FakeApi) -> recommendation.OOMRecommendationStatus:
    return recommendation.parse(client.body(REC)).status


def _template(client: FakeApi) -> dict[str, Any]:
    return client.body(DEPLOYMENT)["spec"]["template"]["spec"]["containers"][0]["resources"]


def test_a_raise_with_quiet_usage_since_is_settled_and_applied() -> None:
    client, source = _cluster(), Source(QUIET)
    app, posted = _app(client, source)
    assert app.settler.scheduled() == {f"{NS}/deployment-web": NOW}  # from the status alone
    app.tick()
    (asked,) = source.asked
    assert (asked.workload_kind, asked.workload_name, asked.containers, asked.since) == ("Deployment", "web", ("app",), RAISED)
    # max(256Mi × 1.09, 150Mi × 1.09, 256Mi) = 279.04Mi → 280Mi; the request keeps its ratio: 192 × 280/384 = 140Mi.
    assert _template(client) == {"requests": {"memory": "140Mi"}, "limits": {"memory": "280Mi"}}
    st = _status(client)
    settled = next(c for c in st.conditions if c.type == "Settle")
    assert settled.status == "True" and "limit at the last kill 256Mi × 1.09 = 280Mi" in settled.message
    assert [(c.kind, c.before.limit, c.after.limit) for c in st.changes] == [("Settle", "384Mi", "280Mi")]
    assert st.applied[0].settledAt == _stamp(NOW) and st.applied[0].original.limit == "256Mi"
    assert st.phase is not None and st.phase.value == "Applied"
    reasons = [e["reason"] for e in posted]
    assert reasons.count("ResourcesSettled") == 2  # on the recommendation, and on the workload when applied
    # Settled once: the same raise is not settled again.
    app.settler.track(recommendation.parse(client.body(REC)))
    assert app.settler.scheduled() == {}


def test_a_growing_working_set_is_not_settled_and_asked_again_later() -> None:
    client = _cluster()
    growing = settle.UsageSinceRaise(peak=200 * MI, coverage=fractions.Fraction(1), growing=True)
    app, _ = _app(client, Source(growing))
    app.tick()
    assert _template(client)["limits"] == {"memory": "384Mi"}
    cond = next(c for c in _status(client).conditions if c.type == "Settle")
    assert cond.status == "False" and cond.reason == "WorkingSetGrowing" and "still growing" in cond.message
    assert app.settler.scheduled() == {f"{NS}/deployment-web": NOW + datetime.timedelta(hours=6)}


def test_without_usage_nothing_is_settled_and_the_condition_says_why() -> None:
    client = _cluster()
    app, _ = _app(client, prom_usage.Disabled())
    app.tick()
    assert _template(client)["limits"] == {"memory": "384Mi"}
    cond = next(c for c in _status(client).conditions if c.type == "Settle")
    assert cond.reason == "NoUsageData" and "no Prometheus is configured" in cond.message


def test_recommend_mode_shows_the_settle_and_an_approval_applies_it() -> None:
    client = _cluster(mode="Recommend")
    app, _ = _app(client, Source(QUIET))
    app.tick()
    assert _template(client)["limits"] == {"memory": "384Mi"}  # shown, not applied
    app_status = _status(client).containers[0]
    assert app_status.settled and app_status.recommended.limit == "280Mi" and app_status.phase.value == "Pending"
    body = client.body(REC)
    body["spec"]["approved"] = True
    body["metadata"]["generation"] = 2
    client.put(REC, body)
    assert app.on_recommendation(client.body(REC)) is True
    assert _template(client)["limits"] == {"memory": "280Mi"}


@pytest.mark.parametrize(("settle_spec", "verdict"), [({"enabled": False}, None), ({"after": "48h"}, None)])
def test_settle_off_or_too_soon_asks_nothing(settle_spec: dict[str, Any], verdict: Any) -> None:
    client, source = _cluster(settle_spec=settle_spec), Source(QUIET)
    app, _ = _app(client, source)
    app.tick()
    assert source.asked == [] and _template(client)["limits"] == {"memory": "384Mi"}
    expected = {} if settle_spec.get("enabled") is False else {f"{NS}/deployment-web": RAISED + datetime.timedelta(hours=48)}
    assert app.settler.scheduled() == expected
