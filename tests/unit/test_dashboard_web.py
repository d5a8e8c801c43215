"""The dashboard's routes through Starlette's test client: security headers, escaping, the listing
shared by requests, approvals refused where they must be. The API server is `tests/fakes.FakeApi`
(the real one, and a real browser, are in tests/dashboard)."""

from __future__ import annotations

import datetime
from typing import Any

import pytest
from starlette.testclient import TestClient

from oomtuner.dashboard import approve, cache, web
from oomtuner.prom import usage as prom_usage
from tests.fakes import FakeApi

EVIL = '<script>alert("x")</script>'
REC = "/apis/oomtuner.dev/v1alpha1/namespaces/shop/oomrecommendations/deployment-web"


def body(reason: str = "OOM-killed at 256Mi") -> dict[str, Any]:
    return {
        "apiVersion": "oomtuner.dev/v1alpha1", "kind": "OOMRecommendation",
        "metadata": {"name": "deployment-web", "namespace": "shop", "annotations": {"team": EVIL}},
        "spec": {"targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"}},
        "status": {"phase": "Pending", "target": "Deployment/web", "totalKills": 1, "kills": [{
            "id": "uid-1/app/2026-12-01T11:00:00Z", "pod": "web-1", "container": "app", "at": "2026-12-01T11:00:00Z",
            "limitAtKill": "256Mi", "classification": "Limit", "reason": reason}],
            "containers": [{"name": "app", "current": {"request": "128Mi", "limit": "256Mi"},
                            "recommended": {"request": "192Mi", "limit": "384Mi"}, "phase": "Pending", "oomKills": 1,
                            "reason": reason}]},
    }


@pytest.fixture
def fake() -> FakeApi:
    return FakeApi({REC: body(reason=f"killed by {EVIL}")})


def client_for(fake: FakeApi, *, allow_approve: bool = False) -> TestClient:
    now = lambda: datetime.datetime(2026, 12, 1, 12, 0, tzinfo=datetime.timezone.utc)  # noqa: E731
    dashboard = web.Dashboard(
        cluster=cache.Cluster(fake, ttl=60, now=now, row_html=web.row_html("")),  # type: ignore[arg-type]
        usage=prom_usage.Disabled(), approvals=approve.Approvals(fake, enabled=allow_approve),  # type: ignore[arg-type]
        min_step=datetime.timedelta(seconds=30), now=now)
    return TestClient(web.create_app(dashboard))


@pytest.mark.parametrize("path", ["/", "/workloads", "/nodes", "/namespaces/shop/recommendations/deployment-web",
                                  "/namespaces/shop/recommendations/nope", "/static/memchart.js"])
def test_every_answer_carries_the_security_headers(fake: FakeApi, path: str) -> None:
    answer = client_for(fake).get(path)
    assert answer.status_code in (200, 404)
    csp = answer.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp and "default-src 'none'" in csp
    assert answer.headers["x-content-type-options"] == "nosniff" and answer.headers["x-frame-options"] == "DENY"


def test_tenant_strings_are_escaped_and_no_script_is_inline(fake: FakeApi) -> None:
    client = client_for(fake)
    for path in ("/namespaces/shop/recommendations/deployment-web", f"/workloads?q={EVIL}"):
        html = client.get(path).text
        assert EVIL not in html and "&lt;script&gt;" in html
        assert "<script>" not in html and "onerror" not in html
        scripts = [line for line in html.splitlines() if "<script" in line]
        assert all('src="/static/memchart.js"' in line for line in scripts), scripts


def test_pages_share_one_list_per_ttl(fake: FakeApi) -> None:
    client = client_for(fake)
    for _ in range(5):
        assert 'data-col="day">1<' in client.get("/workloads").text
        assert client.get("/namespaces/shop/recommendations/deployment-web").status_code == 200
    assert fake.count("LIST /apis/oomtuner.dev/v1alpha1/oomrecommendations") == 1
    assert fake.count("GET") == 0


def test_an_unknown_recommendation_is_a_404_page(fake: FakeApi) -> None:
    answer = client_for(fake).get("/namespaces/shop/recommendations/deployment-gone")
    assert answer.status_code == 404 and "No OOMRecommendation shop/deployment-gone" in answer.text


def test_chart_data_without_prometheus_has_the_limits_and_says_why(fake: FakeApi) -> None:
    data = client_for(fake).get("/namespaces/shop/recommendations/deployment-web/chart.json?range=1d").json()
    (container,) = data["containers"]
    assert container["limit"][-1][1] == 256 * 1024 * 1024 and container["workingSet"] == []
    assert [k["kind"] for k in container["kills"]] == ["limit"]
    assert data["usage"]["ok"] is False and "no Prometheus is configured" in data["usage"]["message"]


def test_approve_is_neither_offered_nor_accepted_by_default(fake: FakeApi) -> None:
    client = client_for(fake)
    assert 'id="approve"' not in client.get("/namespaces/shop/recommendations/deployment-web").text
    answer = client.post("/namespaces/shop/recommendations/deployment-web/approve", data={"token": "x"})
    assert answer.status_code == 403
    assert fake.body(REC)["spec"].get("approved") is None
    assert fake.count("POST /apis/authorization.k8s.io") == 0, "no access review when approving is off"


def test_approve_from_another_site_is_refused(fake: FakeApi) -> None:
    client = client_for(fake, allow_approve=True)
    answer = client.post("/namespaces/shop/recommendations/deployment-web/approve", data={"token": "x"},
                         headers={"origin": "https://evil.example"})
    assert answer.status_code == 403 and "another site" in answer.text
    assert fake.body(REC)["spec"].get("approved") is None


def test_approve_needs_the_access_review_to_allow_it(fake: FakeApi) -> None:
    client = client_for(fake, allow_approve=True)  # the fake's access review answers without `allowed`
    page = client.get("/namespaces/shop/recommendations/deployment-web").text
    assert 'id="approve"' not in page and "may not patch OOMRecommendations in shop" in page
    assert fake.count("POST /apis/authorization.k8s.io/v1/selfsubjectaccessreviews") == 1
