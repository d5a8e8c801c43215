"""Tenancy: a Node kill's culprit from another namespace reaches the victim's namespace as figures
only (unless OOMTUNER_CULPRIT_NAMES=all), while `oomtuner report` gives the whole record; and the
listeners' bind addresses.

Real: the domain (`classify.culprit_on_node`, `redaction.culprit`, `ledger.culprit_record`), the
settings, and `report.collect`. Played: the API server (an in-memory client whose pods are on one
node) and Prometheus (a usage source that answers the node query).
"""

from __future__ import annotations

import datetime
from typing import Any

import pytest

from oomtuner import config, report
from oomtuner.api import core
from oomtuner.domain import classify, ledger, redaction
from oomtuner.prom import usage

MI = 1024 * 1024
AT = datetime.datetime(2026, 1, 5, 12, 0, tzinfo=datetime.timezone.utc)
BASIS = "peak working set over the 5m up to the kill, from Prometheus"


def _pod(name: str, namespace: str, request: str, *, killed: bool = False) -> dict[str, Any]:
    body: dict[str, Any] = {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": namespace, "uid": f"uid-{name}"},
        "spec": {"nodeName": "n1", "containers": [{"name": "app", "resources": {"requests": {"memory": request}}}]},
        "status": {"phase": "Running", "qosClass": "Burstable"},
    }
    if killed:  # no limit, so a Node kill
        body["status"]["containerStatuses"] = [{"name": "app", "restartCount": 1, "lastState": {"terminated": {
            "reason": "OOMKilled", "exitCode": 137, "finishedAt": "2026-01-05T11:59:00Z"}}}]
    return body


PODS = [_pod("victim", "shop", "256Mi", killed=True), _pod("hog", "other-team", "128Mi")]
USAGE = {("shop", "victim", "app"): 200 * MI, ("other-team", "hog", "app"): 900 * MI}


def _finding() -> classify.CulpritFinding:
    return classify.culprit_on_node([core.parse_pod(p) for p in PODS], node="n1", node_memory_capacity=4096 * MI,
                                    usage=USAGE, basis=BASIS)


def test_a_culprit_in_another_namespace_is_given_by_its_figures_only() -> None:
    finding = redaction.culprit(_finding(), victim_namespace="shop", names=redaction.CulpritNames.SAME_NAMESPACE)
    record = ledger.culprit_record(finding)
    assert (record.namespace, record.pod, record.container) == (None, None, None)
    assert (record.usage, record.request) == ("900Mi", "128Mi")
    assert "other-team" not in finding.reason and "hog" not in finding.reason
    assert finding.reason.startswith("likely culprit: a container in another namespace uses 900Mi, 772Mi above its request (128Mi); "
                                     + BASIS)
    assert "OOMTUNER_CULPRIT_NAMES=same-namespace" in finding.reason and "oomtuner report" in finding.reason


def test_names_cross_namespaces_when_the_setting_allows_or_there_is_no_crossing() -> None:
    full = _finding()
    assert redaction.culprit(full, victim_namespace="shop", names=redaction.CulpritNames.ALL) is full
    assert redaction.culprit(full, victim_namespace="other-team", names=redaction.CulpritNames.SAME_NAMESPACE) is full
    nobody = classify.no_culprit("no usage data")
    assert redaction.culprit(nobody, victim_namespace="shop", names=redaction.CulpritNames.SAME_NAMESPACE) is nobody


def test_the_setting_is_safe_by_default_and_read_from_the_environment() -> None:
    assert config.from_environ({}).culprit_names == redaction.CulpritNames.SAME_NAMESPACE
    assert config.from_environ({"OOMTUNER_CULPRIT_NAMES": "all"}).culprit_names == redaction.CulpritNames.ALL
    with pytest.raises(config.SettingsError, match="OOMTUNER_CULPRIT_NAMES"):
        config.from_environ({"OOMTUNER_CULPRIT_NAMES": "everyone"})


@pytest.mark.parametrize(("value", "shown"), [("0.0.0.0", "0.0.0.0"), ("127.0.0.1", "127.0.0.1"), ("::", "::"),
                                              ("fd00::0001", "fd00::1")])
def test_listeners_take_an_ip_address(value: str, shown: str) -> None:
    settings = config.from_environ({"OOMTUNER_METRICS_ADDRESS": value, "OOMTUNER_LIVENESS_ADDRESS": value})
    assert settings.metrics_address == settings.liveness_address == shown
    assert config.url_host(shown) == (f"[{shown}]" if ":" in shown else shown)


@pytest.mark.parametrize("value", ["localhost", "1.2.3.4.5", "0.0.0.0:8080", ""])
def test_a_listener_address_that_is_no_ip_is_refused(value: str) -> None:
    if not value:  # empty means unset: the default
        assert config.from_environ({"OOMTUNER_METRICS_ADDRESS": value}).metrics_address == "0.0.0.0"
        return
    with pytest.raises(config.SettingsError, match="OOMTUNER_METRICS_ADDRESS"):
        config.from_environ({"OOMTUNER_METRICS_ADDRESS": value})


class Cluster:
    def list(self, path: str, *, query: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        if path == "/api/v1/nodes":
            return [{"metadata": {"name": "n1"}, "status": {"capacity": {"memory": "4Gi"}}}]
        if path == "/api/v1/pods" or path.endswith("/pods"):
            namespace = path.split("/")[4] if "/namespaces/" in path else None
            return [p for p in PODS if namespace in (None, p["metadata"]["namespace"])]
        return []

    def get(self, path: str, **_: Any) -> dict[str, Any]:
        raise AssertionError(f"no GET expected: {path}")


class Prometheus:
    url = "http://prom:9090"

    def __init__(self) -> None:
        self.asked: list[usage.NodeQuery] = []

    def history(self, query: usage.Query) -> usage.History:
        return usage.NOT_CONFIGURED

    def node_usage(self, query: usage.NodeQuery) -> usage.NodeUsage:
        self.asked.append(query)
        found = {k: v for k, v in USAGE.items() if (k[0], k[1]) in set(query.pods)}
        return usage.NodeUsage(outcome=usage.Outcome.USED, usage=found, message=BASIS)

    def current_usage(self, pods: Any, *, at: datetime.datetime, memory_bound: int | None = None) -> usage.NodeUsage:
        return usage.NodeUsage(outcome=usage.Outcome.NO_DATA, message="none")


def test_the_report_gives_cluster_admins_the_whole_record() -> None:
    prometheus = Prometheus()
    result = report.collect(Cluster(), namespace=None, usage=prometheus, now=AT)  # type: ignore[arg-type]
    [kill] = result["nodeKills"]
    assert (kill["namespace"], kill["pod"], kill["container"], kill["node"], kill["at"]) == ("shop", "victim", "app", "n1", "2026-01-05T11:59:00Z")
    assert kill["culprit"]["namespace"] == "other-team" and kill["culprit"]["pod"] == "hog"
    assert kill["culprit"]["usage"] == 900 * MI and "other-team/hog/app uses 900Mi" in kill["culprit"]["reason"]
    assert prometheus.asked[0].at == datetime.datetime(2026, 1, 5, 11, 59, tzinfo=datetime.timezone.utc)
    assert "other-team/hog/app" in report.render_table(result)


def test_a_namespaced_report_sees_only_its_namespace() -> None:
    result = report.collect(Cluster(), namespace="shop", usage=Prometheus(), now=AT)  # type: ignore[arg-type]
    [kill] = result["nodeKills"]
    assert kill["culprit"]["pod"] is None and "other-team" not in kill["culprit"]["reason"]
