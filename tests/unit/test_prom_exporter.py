"""The lab's cAdvisor stand-in (`lab.exporter`): traces, what a scrape sees, the OpenMetrics history
for promtool, and its HTTP control.

Real: the exporter's HTTP server in this process, prometheus_client's parsers for both formats. The
real Prometheus that scrapes it and the real promtool backfill are in tests/e2e/test_prometheus.py.
"""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest
from prometheus_client import parser as text_parser
from prometheus_client.openmetrics import parser as om_parser

from oomtuner_lab import exporter

MI = 1024 * 1024
T0 = 1_800_000_000.0


def leak() -> exporter.Trace:
    return exporter.Trace("shop", "web-1", "app", (
        exporter.Life("a", T0, T0 + 100, base=64 * MI, bytes_per_s=MI),
        exporter.Life("b", T0 + 100, None, base=64 * MI, bytes_per_s=MI, max=100 * MI, reason="Error"),
    ))


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_parser.text_string_to_metric_families(text) for s in family.samples}


def test_lives_grow_cap_and_end() -> None:
    trace = leak()
    assert trace.life_at(T0 - 1) is None
    assert trace.life_at(T0 + 50).id == "a" and trace.life_at(T0 + 50).value(T0 + 50) == 114 * MI  # type: ignore[union-attr]
    assert trace.life_at(T0 + 100).id == "b"  # type: ignore[union-attr]
    assert trace.lives[1].value(T0 + 1000) == 100 * MI  # capped
    assert [life.id for life in trace.ended_before(T0 + 100)] == ["a"]


def test_a_scrape_sees_the_current_life_with_its_own_id_and_the_restarts() -> None:
    found = samples(exporter.exposition([leak()], T0 + 110))
    ids = {"container": "app", "namespace": "shop", "pod": "web-1"}
    ws = ("container_memory_working_set_bytes", tuple(sorted({**ids, "id": "/kubepods/shop/web-1/app/b"}.items())))
    assert found[ws] == 74 * MI
    assert found[("kube_pod_container_status_restarts_total", tuple(sorted(ids.items())))] == 1
    last = ("kube_pod_container_status_last_terminated_reason", tuple(sorted({**ids, "reason": "OOMKilled"}.items())))
    assert found[last] == 1
    assert not samples(exporter.exposition([leak()], T0 - 5))


def test_history_is_valid_openmetrics_with_the_scrape_labels() -> None:
    text = exporter.openmetrics([leak()], start=T0, end=T0 + 200, interval=30, labels={"job": "j", "instance": "i:1"})
    assert text.endswith("# EOF\n")
    families = {f.name: f for f in om_parser.text_string_to_metric_families(text)}
    ws = families["container_memory_working_set_bytes"].samples
    assert len(ws) == 7 and all(s.labels["job"] == "j" and s.labels["instance"] == "i:1" for s in ws)
    assert [s.labels["id"].rsplit("/", 1)[1] for s in ws] == ["a"] * 4 + ["b"] * 3
    assert [float(s.timestamp) for s in ws if s.labels["id"].endswith("/a")] == [T0, T0 + 30, T0 + 60, T0 + 90]
    assert families["kube_pod_container_status_restarts"].type == "counter"


def test_default_traces_follow_the_running_pods_requests() -> None:
    pods = [
        {"metadata": {"namespace": "a", "name": "p"}, "status": {"phase": "Running"},
         "spec": {"containers": [{"name": "c", "resources": {"requests": {"memory": "200Mi"}}}, {"name": "d"}]}},
        {"metadata": {"namespace": "a", "name": "q"}, "status": {"phase": "Pending"}, "spec": {"containers": [{"name": "c"}]}},
    ]
    found = {t.key: t.lives[0].base for t in exporter.default_traces(pods, now=T0)}
    assert found == {("a", "p", "c"): 200 * MI, ("a", "p", "d"): exporter.DEFAULT_USAGE}


@pytest.fixture
def running() -> Iterator[exporter.Exporter]:
    server = exporter.Exporter().start()
    yield server
    server.stop()


def test_http_control_sets_lists_and_deletes_traces(running: exporter.Exporter) -> None:
    client = exporter.Client(f"http://{running.address}")
    running.traces.set_defaults([exporter.Trace.constant(namespace="other", pod="p", container="c", value=1, start=0)])
    now = exporter.Trace.constant(namespace="shop", pod="web-1", container="app", value=5 * MI, start=time.time() - 10)
    client.set(now)
    assert client.traces() == [now]
    with urllib.request.urlopen(f"http://{running.address}/metrics", timeout=5) as r:
        text = r.read().decode()
    assert 'pod="web-1"' in text and 'namespace="other"' in text
    assert client.delete("nope") == 0 and client.delete("shop") == 1 and client.traces() == []
    request = urllib.request.Request(f"http://{running.address}/traces", data=b"{}", method="PUT")
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(request, timeout=5)
    assert err.value.code == 400
    err.value.close()
