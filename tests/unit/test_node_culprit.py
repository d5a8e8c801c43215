"""The likely culprit of a node OOM, as the operator wires it: the pods on the node from the API, their
usage from the usage source, the finding in the Node kill's event and kill record, and nothing of it
for other kills. Real: the operator's services (`oomtuner.app`), the domain, the store's status writes.
Played: the API server (`tests.fakes.FakeApi`) and the usage source (answers what each test tells it).
"""

from __future__ import annotations

import datetime
from typing import Any

from oomtuner import app as app_mod
from oomtuner import config
from oomtuner.api import recommendation, types
from oomtuner.domain import kills, ledger, workload
from oomtuner.kube import api
from oomtuner.prom import usage
from tests.fakes import FakeApi

MI = 1024 * 1024
GI = 1024 * MI
NOW = datetime.datetime(2026, 1, 5, 12, 0, tzinfo=datetime.timezone.utc)
REC = "/apis/oomtuner.dev/v1alpha1/namespaces/shop/oomrecommendations/deployment-victim"


def _pod(name: str, request: str, namespace: str = "shop") -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": namespace, "uid": f"uid-{name}"},
            "spec": {"nodeName": "n1", "containers": [{"name": "app", "resources": {"requests": {"memory": request}}}]}}


def _cluster() -> FakeApi:
    """Pods on node n1 (two in shop, one in ops), the node, and the victim's recommendation."""
    objects: dict[str, dict[str, Any]] = {
        "/api/v1/nodes/n1": {"metadata": {"name": "n1"}, "status": {"capacity": {"memory": "16Gi"}, "allocatable": {"memory": "15Gi"}}},
        REC: {
            "apiVersion": "oomtuner.dev/v1alpha1", "kind": "OOMRecommendation",
            "metadata": {"name": "deployment-victim", "namespace": "shop"},
            "spec": {"targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "victim"}},
            "status": {"kills": [
                {"id": "k-node", "pod": "victim-1", "container": "app", "node": "n1", "at": "2026-01-05T12:00:00Z",
                 "classification": "Node"},
                {"id": "k-limit", "pod": "victim-1", "container": "app", "node": "n1", "at": "2026-01-05T11:00:00Z",
                 "classification": "Limit"},
            ]},
        },
    }
    for pod in (_pod("victim-1", "128Mi"), _pod("hog-1", "128Mi"), _pod("agent-1", "64Mi", "ops")):
        objects[f"/api/v1/namespaces/{pod['metadata']['namespace']}/pods/{pod['metadata']['name']}"] = pod
    return FakeApi(objects)


class Source:
    def __init__(self, answer: usage.NodeUsage | Exception):
        self.answer = answer
        self.asked: list[usage.NodeQuery] = []

    def history(self, query: usage.Query) -> usage.History:
        return usage.NOT_CONFIGURED

    def node_usage(self, query: usage.NodeQuery) -> usage.NodeUsage:
        self.asked.append(query)
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


MEASURED = usage.NodeUsage(outcome=usage.Outcome.USED, message="peak working set over the 5m up to the kill, from Prometheus",
                           usage={("shop", "victim-1", "app"): 100 * MI, ("shop", "hog-1", "app"): GI,
                                  ("ops", "agent-1", "app"): 32 * MI})


def _app(source: Any, client: FakeApi | None = None, **settings: Any) -> tuple[app_mod.App, list[dict[str, Any]]]:
    app = app_mod.App(client=client or _cluster(), settings=config.Settings(**settings),  # type: ignore[arg-type]
                      usage=source, clock=lambda: NOW)
    posted: list[dict[str, Any]] = []
    app.announcer.poster.submit = posted.append  # type: ignore[method-assign]
    return app, posted


def _kill(classification: types.Classification) -> ledger.Classified:
    k = kills.OOMKill(namespace="shop", pod="victim-1", pod_uid="uid-victim-1", container="app",
                      container_type=types.ContainerType.CONTAINER, node="n1", at=NOW, started_at=None, restart_count=1,
                      exit_code=137, container_id=None, request=128 * MI, limit_at_kill=256 * MI,
                      qos_class=types.QOSClass.BURSTABLE, oom_score_adj=992, pod_memory_limit=None)
    return ledger.Classified(kill=k, classification=classification, reason="node ran out of memory")


TARGET = workload.from_body({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "victim", "namespace": "shop"},
                             "spec": {"template": {"spec": {"containers": [{"name": "app"}]}}}})


def _lists(client: FakeApi) -> list[str]:
    return [c.split(" ", 1)[1] for c in client.calls if c.startswith("LIST ")]


def test_the_culprit_comes_from_the_pods_on_the_node_and_their_usage_at_the_kill() -> None:
    client = _cluster()
    source = Source(MEASURED)
    found = _app(source, client)[0].culprits.culprit("n1", NOW)
    assert found.culprit is not None and found.culprit.pod == "hog-1"
    assert found.reason.startswith("likely culprit: shop/hog-1/app uses 1Gi, 896Mi above its request (128Mi); peak working set")
    (asked,) = source.asked
    assert asked.at == NOW and asked.node == "n1"
    assert set(asked.pods) == {("shop", "victim-1"), ("shop", "hog-1"), ("ops", "agent-1")}
    assert _lists(client) == ["/api/v1/pods"]
    # An operator that watches some namespaces lists the node's pods in those only.
    client = _cluster()
    _app(Source(MEASURED), client, namespaces=["shop"])[0].culprits.culprit("n1", NOW)
    assert _lists(client) == ["/api/v1/namespaces/shop/pods"]


def test_without_usage_no_culprit_is_named_and_the_reason_says_why() -> None:
    client = _cluster()
    disabled = _app(usage.Disabled(), client)[0].culprits.culprit("n1", NOW)
    assert disabled.culprit is None and disabled.reason == (
        "no culprit named: no usage data: no Prometheus is configured (OOMTUNER_PROMETHEUS_URL)")
    assert _lists(client) == []  # nothing to measure: the node's pods are not read
    down = usage.NodeUsage(outcome=usage.Outcome.UNAVAILABLE, message="Prometheus at http://p: query failed: timed out")
    assert _app(Source(down))[0].culprits.culprit("n1", NOW).reason == \
        "no culprit named: no usage data: Prometheus at http://p: query failed: timed out"
    broken = _app(Source(RuntimeError("boom")))[0].culprits.culprit("n1", None)
    assert broken.culprit is None and broken.reason == "no culprit named: the lookup failed: boom"


def test_a_node_kill_is_announced_with_its_culprit_and_noted_in_its_record() -> None:
    client = _cluster()
    app, posted = _app(Source(MEASURED), client)
    node_kill = _kill(types.Classification.NODE)
    body = client.body(REC)
    body["status"]["kills"][0]["id"] = node_kill.kill.identity  # records go by identity
    client.put(REC, body)
    app.culprits.announce(TARGET, [node_kill], key="shop/deployment-victim")
    app.culprits.wait()
    (event,) = posted
    assert event["reason"] == "OOMKillDetected" and event["type"] == "Warning"
    assert "Node (node ran out of memory)" in event["message"]
    assert "; likely culprit: shop/hog-1/app uses 1Gi" in event["message"]
    rec = recommendation.parse(client.body(REC))
    node_record, limit_record = rec.status.kills
    assert node_record.culprit is not None and (node_record.culprit.namespace, node_record.culprit.pod) == ("shop", "hog-1")
    assert (node_record.culprit.usage, node_record.culprit.request) == ("1Gi", "128Mi")
    assert limit_record.culprit is None  # only kills still classified Node get one


def test_only_node_kills_wait_for_a_culprit() -> None:
    source = Source(MEASURED)
    app, posted = _app(source)
    app.culprits.announce(TARGET, [_kill(types.Classification.LIMIT)], key=None)
    assert len(posted) == 1 and "likely culprit" not in posted[0]["message"]
    assert source.asked == []  # a Limit kill costs no lookup
    app.culprits.announce(TARGET, [_kill(types.Classification.NODE)], key=None)
    app.culprits.wait()
    assert len(source.asked) == 1 and len(posted) == 2 and "likely culprit: shop/hog-1/app" in posted[1]["message"]


def test_an_api_error_listing_the_pods_is_a_reason_not_a_crash() -> None:
    client = _cluster()
    client.fail["/api/v1/pods"] = api.ApiError(status=403, reason="Forbidden", body={"message": "pods is forbidden"},
                                               method="GET", path="/api/v1/pods")
    found = _app(Source(MEASURED), client)[0].culprits.culprit("n1", NOW)
    assert found.culprit is None and "the lookup failed" in found.reason and "forbidden" in found.reason
