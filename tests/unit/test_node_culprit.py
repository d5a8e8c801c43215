"""The likely culprit of a node OOM, as the operator wires it: the pods on the node from the API, their
usage from the usage source, the finding in the Node kill's event and kill record, and nothing of it
for other kills. Real: `reconcile.Operator`, the domain, the store's status writes. Played: the API
server (a small in-memory client) and the usage source (answers what each test tells it).
"""

from __future__ import annotations

import datetime
from typing import Any

from oomtuner import config, reconcile
from oomtuner.api import recommendation, types
from oomtuner.domain import kills, ledger, workload
from oomtuner.kube import api
from oomtuner.prom import usage

MI = 1024 * 1024
GI = 1024 * MI
NOW = datetime.datetime(2026, 1, 5, 12, 0, tzinfo=datetime.timezone.utc)
REC = "/apis/oomtuner.dev/v1alpha1/namespaces/shop/oomrecommendations/deployment-victim"


def _pod(name: str, request: str, namespace: str = "shop") -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": namespace, "uid": f"uid-{name}"},
            "spec": {"nodeName": "n1", "containers": [{"name": "app", "resources": {"requests": {"memory": request}}}]}}


class FakeClient:
    """Pods on node n1, the node, and one recommendation whose status can be replaced."""

    def __init__(self) -> None:
        self.pods = [_pod("victim-1", "128Mi"), _pod("hog-1", "128Mi"), _pod("agent-1", "64Mi", "ops")]
        self.lists: list[tuple[str, dict[str, Any]]] = []
        self.rec: dict[str, Any] = {
            "apiVersion": "oomtuner.dev/v1alpha1", "kind": "OOMRecommendation",
            "metadata": {"name": "deployment-victim", "namespace": "shop", "resourceVersion": "1"},
            "spec": {"targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "victim"}},
            "status": {"kills": [
                {"id": "k-node", "pod": "victim-1", "container": "app", "node": "n1", "at": "2026-01-05T12:00:00Z",
                 "classification": "Node"},
                {"id": "k-limit", "pod": "victim-1", "container": "app", "node": "n1", "at": "2026-01-05T11:00:00Z",
                 "classification": "Limit"},
            ]},
        }

    def list(self, path: str, *, query: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        self.lists.append((path, dict(query or {})))
        assert (query or {}).get("fieldSelector") == "spec.nodeName=n1"
        prefix = "/api/v1/namespaces/"
        return [p for p in self.pods if not path.startswith(prefix) or path == f"{prefix}{p['metadata']['namespace']}/pods"]

    def get_or_none(self, path: str) -> dict[str, Any] | None:
        if path == "/api/v1/nodes/n1":
            return {"metadata": {"name": "n1"}, "status": {"capacity": {"memory": "16Gi"}, "allocatable": {"memory": "15Gi"}}}
        return self.rec if path == REC else None

    def replace(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        assert path == REC + "/status"
        self.rec = {**self.rec, "status": body["status"], "metadata": {**self.rec["metadata"], "resourceVersion": "2"}}
        return self.rec


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


def _operator(source: Any, client: FakeClient | None = None, **settings: Any) -> tuple[reconcile.Operator, list[dict[str, Any]]]:
    op = reconcile.Operator(client=client or FakeClient(), settings=config.Settings(**settings),  # type: ignore[arg-type]
                            usage=source, clock=lambda: NOW)
    posted: list[dict[str, Any]] = []
    op._post = posted.append  # type: ignore[method-assign]
    return op, posted


def _kill(classification: types.Classification) -> ledger.Classified:
    k = kills.OOMKill(namespace="shop", pod="victim-1", pod_uid="uid-victim-1", container="app",
                      container_type=types.ContainerType.CONTAINER, node="n1", at=NOW, started_at=None, restart_count=1,
                      exit_code=137, container_id=None, request=128 * MI, limit_at_kill=256 * MI,
                      qos_class=types.QOSClass.BURSTABLE, oom_score_adj=992, pod_memory_limit=None)
    return ledger.Classified(kill=k, classification=classification, reason="node ran out of memory")


TARGET = workload.from_body({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "victim", "namespace": "shop"},
                             "spec": {"template": {"spec": {"containers": [{"name": "app"}]}}}})


def test_the_culprit_comes_from_the_pods_on_the_node_and_their_usage_at_the_kill() -> None:
    client = FakeClient()
    source = Source(MEASURED)
    found = _operator(source, client)[0]._culprit("n1", NOW)
    assert found.culprit is not None and found.culprit.pod == "hog-1"
    assert found.reason.startswith("likely culprit: shop/hog-1/app uses 1Gi, 896Mi above its request (128Mi); peak working set")
    (asked,) = source.asked
    assert asked.at == NOW and asked.node == "n1"
    assert set(asked.pods) == {("shop", "victim-1"), ("shop", "hog-1"), ("ops", "agent-1")}
    assert [path for path, _ in client.lists] == ["/api/v1/pods"]
    # An operator that watches some namespaces lists the node's pods in those only.
    client = FakeClient()
    _operator(Source(MEASURED), client, namespaces=["shop"])[0]._culprit("n1", NOW)
    assert [path for path, _ in client.lists] == ["/api/v1/namespaces/shop/pods"]


def test_without_usage_no_culprit_is_named_and_the_reason_says_why() -> None:
    client = FakeClient()
    disabled = _operator(usage.Disabled(), client)[0]._culprit("n1", NOW)
    assert disabled.culprit is None and disabled.reason == (
        "no culprit named: no usage data: no Prometheus is configured (OOMTUNER_PROMETHEUS_URL)")
    assert client.lists == []  # nothing to measure: the node's pods are not read
    down = usage.NodeUsage(outcome=usage.Outcome.UNAVAILABLE, message="Prometheus at http://p: query failed: timed out")
    assert _operator(Source(down))[0]._culprit("n1", NOW).reason == \
        "no culprit named: no usage data: Prometheus at http://p: query failed: timed out"
    broken = _operator(Source(RuntimeError("boom")))[0]._culprit("n1", None)
    assert broken.culprit is None and broken.reason == "no culprit named: the lookup failed: boom"


def test_a_node_kill_is_announced_with_its_culprit_and_noted_in_its_record() -> None:
    client = FakeClient()
    op, posted = _operator(Source(MEASURED), client)
    node_kill = _kill(types.Classification.NODE)
    client.rec["status"]["kills"][0]["id"] = node_kill.kill.identity  # places and records go by identity
    op._blame(key="shop/deployment-victim", places={node_kill.kill.identity: ("n1", NOW), "k-limit": ("n1", NOW)},
              announce=(TARGET, [node_kill]))
    (event,) = posted
    assert event["reason"] == "OOMKillDetected" and event["type"] == "Warning"
    assert "Node (node ran out of memory)" in event["message"]
    assert "; likely culprit: shop/hog-1/app uses 1Gi" in event["message"]
    rec = recommendation.parse(client.rec)
    node_record, limit_record = rec.status.kills
    assert node_record.culprit is not None and (node_record.culprit.namespace, node_record.culprit.pod) == ("shop", "hog-1")
    assert (node_record.culprit.usage, node_record.culprit.request) == ("1Gi", "128Mi")
    assert limit_record.culprit is None  # only kills still classified Node get one


def test_only_node_kills_wait_for_a_culprit() -> None:
    source = Source(MEASURED)
    op, posted = _operator(source)
    op._announce_and_blame(TARGET, [_kill(types.Classification.LIMIT)], key=None)
    assert len(posted) == 1 and "likely culprit" not in posted[0]["message"]
    assert source.asked == []  # a Limit kill costs no lookup
    op._announce_and_blame(TARGET, [_kill(types.Classification.NODE)], key=None)
    op._culprit_pool.shutdown(wait=True)
    assert len(source.asked) == 1 and len(posted) == 2 and "likely culprit: shop/hog-1/app" in posted[1]["message"]


def test_an_api_error_listing_the_pods_is_a_reason_not_a_crash() -> None:
    class Forbidden(FakeClient):
        def list(self, path: str, *, query: dict[str, Any] | None = None) -> list[dict[str, Any]]:
            raise api.ApiError(status=403, reason="Forbidden", body={"message": "pods is forbidden"}, method="GET", path=path)

    found = _operator(Source(MEASURED), Forbidden())[0]._culprit("n1", NOW)
    assert found.culprit is None and "the lookup failed" in found.reason and "forbidden" in found.reason
