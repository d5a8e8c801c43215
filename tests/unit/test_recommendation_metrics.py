"""The operator's memory series (`oomtuner_recommendation_memory_bytes`) and `oomtuner_build_info`.

Real: the pure function over parsed OOMRecommendations, prometheus_client's gauges in a registry of
the test's own, and its text exposition read back with prometheus_client's parser. Nothing faked.
"""

from __future__ import annotations

import platform
from typing import Any

import prometheus_client
from prometheus_client import parser

import oomtuner
from oomtuner.api import recommendation
from oomtuner.prom import metrics

MI = 1024 * 1024


def _rec(containers: list[dict[str, Any]], *, namespace: str = "shop", name: str = "cart") -> recommendation.OOMRecommendation:
    return recommendation.read({
        "metadata": {"name": f"deployment-{name}", "namespace": namespace},
        "spec": {"targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name}},
        "status": {"containers": containers}})


def test_every_set_value_is_a_series_in_bytes() -> None:
    rec = _rec([
        {"name": "app", "current": {"request": "128Mi", "limit": "256Mi"}, "recommended": {"request": "192Mi", "limit": "384Mi"}},
        # No limit, and no recommendation yet (Observe mode): no series for what is not set.
        {"name": "proxy", "current": {"request": "64Mi"}, "recommended": {}},
    ])
    assert metrics.recommendation_memory(rec) == {
        ("shop", "Deployment/cart", "app", "request", "current"): 128.0 * MI,
        ("shop", "Deployment/cart", "app", "limit", "current"): 256.0 * MI,
        ("shop", "Deployment/cart", "app", "request", "recommended"): 192.0 * MI,
        ("shop", "Deployment/cart", "app", "limit", "recommended"): 384.0 * MI,
        ("shop", "Deployment/cart", "proxy", "request", "current"): 64.0 * MI,
    }
    assert metrics.recommendation_memory(_rec([])) == {}


def _exposed(registry: prometheus_client.CollectorRegistry) -> dict[tuple[tuple[str, str], ...], float]:
    text = prometheus_client.generate_latest(registry).decode()
    return {tuple(sorted(s.labels.items())): s.value for family in parser.text_string_to_metric_families(text)
            for s in family.samples if s.name == "oomtuner_recommendation_memory_bytes"}


def test_series_follow_the_recommendation_and_go_with_it() -> None:
    registry = prometheus_client.CollectorRegistry()
    gauge = prometheus_client.Gauge("oomtuner_recommendation_memory_bytes", "test",
                                    ["namespace", "workload", "container", "resource", "value"], registry=registry)
    shown = metrics.RecommendationSeries(gauge)
    two = _rec([{"name": "app", "current": {"limit": "256Mi"}, "recommended": {"limit": "384Mi"}},
                {"name": "old", "current": {"limit": "64Mi"}}])
    other = _rec([{"name": "app", "current": {"limit": "1Gi"}}], name="web")
    shown.show("shop/deployment-cart", metrics.recommendation_memory(two))
    shown.show("shop/deployment-web", metrics.recommendation_memory(other))
    assert len(_exposed(registry)) == 4
    # The container "old" left the template: its series goes; the new value replaces the old one.
    one = _rec([{"name": "app", "current": {"limit": "384Mi"}, "recommended": {"limit": "384Mi"}}])
    shown.show("shop/deployment-cart", metrics.recommendation_memory(one))
    cart = {k: v for k, v in _exposed(registry).items() if ("workload", "Deployment/cart") in k}
    assert sorted((dict(k)["container"], dict(k)["value"], v) for k, v in cart.items()) == [
        ("app", "current", 384.0 * MI), ("app", "recommended", 384.0 * MI)]
    # Deleted: every series of it goes, the others stay.
    shown.forget("shop/deployment-cart")
    assert [dict(k)["workload"] for k in _exposed(registry)] == ["Deployment/web"]
    shown.forget("shop/never-shown")


def test_build_info_names_the_versions() -> None:
    metrics.set_build_info(oomtuner.__version__)
    assert prometheus_client.REGISTRY.get_sample_value(
        "oomtuner_build_info", {"version": oomtuner.__version__, "python": platform.python_version()}) == 1.0
