"""Usage history from Prometheus (`prom.usage`): the queries it builds, how it reads the answers, and
how it degrades when Prometheus is down, slow, failing, empty or answers nonsense.

Real: prometheus-api-client and requests, over HTTP to a small fake Prometheus in this process that
answers what each test tells it, slowly, by the byte, with garbage or with more than anyone should
read (`tests.fake_prometheus`; a real Prometheus is in tests/e2e/test_prometheus.py). Real
`prom.metrics` counter. The clock of the circuit breaker is faked where a test needs time to pass.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import re
import threading
import time
import urllib.parse
from collections.abc import Iterator
from typing import Any

import pytest

from oomtuner import config
from oomtuner.api import types
from oomtuner.domain import kills
from oomtuner.prom import bounded, metrics, promql, usage
from tests.fake_prometheus import FakePrometheus

MI = 1024 * 1024
GI = 1024 * MI
UTC = datetime.timezone.utc
NOW = datetime.datetime(2026, 1, 5, 12, 0, tzinfo=UTC)


def kill(pod: str = "web-7d4b9c8f6d-x2x4z", *, at_h: float = 0, lived_h: float = 2, container: str = "app") -> kills.OOMKill:
    at = NOW - datetime.timedelta(hours=at_h)
    return kills.OOMKill(
        namespace="shop", pod=pod, pod_uid="uid", container=container, container_type=types.ContainerType.CONTAINER,
        node="n1", at=at, started_at=at - datetime.timedelta(hours=lived_h), restart_count=1, exit_code=137,
        container_id=None, request=128 * MI, limit_at_kill=256 * MI, qos_class=types.QOSClass.BURSTABLE,
        oom_score_adj=None, pod_memory_limit=None,
    )


def query(*found: kills.OOMKill, containers: tuple[str, ...] = ("app",), lookback_h: float = 168) -> usage.Query:
    return usage.Query(namespace="shop", workload_kind="Deployment", workload_name="web", containers=containers,
                       kills=found or (kill(),), lookback=datetime.timedelta(hours=lookback_h), now=NOW)


# ---- pure parts ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("kind", "name", "matches", "misses"), [
    ("Deployment", "web", ["web-7d4b9c8f6d-x2x4z", "web-5c7f8-bcdfg"], ["web-api-7d4b9c8f6d-x2x4z", "web-x2x4z", "web-0"]),
    ("StatefulSet", "db", ["db-0", "db-12"], ["db-x2x4z", "db"]),
    ("DaemonSet", "agent", ["agent-x2x4z"], ["agent-7d4b9c8f6d-x2x4z", "agent-a1b2c"]),
    ("CronJob", "nightly", ["nightly-29400000-x2x4z"], ["nightly-x2x4z"]),
    ("Job", "once", ["once-x2x4z"], ["once"]),
    ("Pod", "a.b", ["a.b"], ["aab", "a.b-x2x4z"]),
    ("Deployment", "x" * 60, ["x" * 58 + "bcdfg"], ["y" + "x" * 60]),
])
def test_pod_pattern_follows_the_controllers_naming(kind: str, name: str, matches: list[str], misses: list[str]) -> None:
    pattern = promql.pod_pattern(kind, name)
    for pod in matches:
        assert re.fullmatch(pattern, pod), (pattern, pod)
    for pod in misses:
        assert not re.fullmatch(pattern, pod), (pattern, pod)


def test_step_keeps_points_bounded() -> None:
    assert promql.step_for(datetime.timedelta(days=7), max_points=2000, min_step=datetime.timedelta(seconds=30)) \
        == datetime.timedelta(seconds=303)
    assert promql.step_for(datetime.timedelta(hours=1), max_points=2000, min_step=datetime.timedelta(seconds=30)) \
        == datetime.timedelta(seconds=30)


def test_summary_query_reads_every_statistic_in_one_query() -> None:
    text = promql.summary_query(query(containers=("app", "side")), step=datetime.timedelta(seconds=303))
    assert text.count(" or ") == 3
    for stat in ("peak", "p95", "restarts", "oomkilled_pods"):
        assert f'"oomtuner_stat", "{stat}"' in text
    assert 'namespace="shop"' in text and 'container=~"app|side"' in text and "[604800s]" in text
    assert "quantile_over_time(0.95, (max by (container, pod) (container_memory_working_set_bytes" in text
    assert "[604800s:303s]" in text and 'reason="OOMKilled"' in text
    # The regex travels inside a PromQL string: its backslashes are escaped.
    assert '\\\\.' not in text  # no dots in this name
    assert '"a\\\\.b"' in promql.summary_query(
        usage.Query(namespace="n", workload_kind="Pod", workload_name="a.b", containers=("c",), kills=(), lookback=datetime.timedelta(hours=1), now=NOW),
        step=datetime.timedelta(seconds=30))


def test_slope_range_covers_the_last_two_killed_lives() -> None:
    first, second = kill(at_h=5, lived_h=3), kill(at_h=0, lived_h=4)
    start, pods = promql.slope_range(query(first, second))  # type: ignore[misc]
    assert start == NOW - datetime.timedelta(hours=8) and pods == ("web-7d4b9c8f6d-x2x4z",)
    # One kill: the life before it ended some other way, so the whole lookback is read.
    start, _ = promql.slope_range(query(second, lookback_h=24))  # type: ignore[misc]
    assert start == NOW - datetime.timedelta(hours=24)
    # Never before the lookback.
    start, _ = promql.slope_range(query(kill(at_h=30, lived_h=3), second, lookback_h=24))  # type: ignore[misc]
    assert start == NOW - datetime.timedelta(hours=24)
    assert promql.slope_range(query(kill(container="other"))) is None


def _row(stat: str, value: str, container: str = "app") -> dict[str, Any]:
    return {"metric": {"container": container, "oomtuner_stat": stat}, "value": [NOW.timestamp(), value]}


def _leak_series(pod: str = "web-7d4b9c8f6d-x2x4z") -> list[dict[str, Any]]:
    rows = []
    t0 = NOW.timestamp() - 4 * 3600
    for life in range(2):
        start = t0 + life * 7200
        values = [[start + i * 60, str(64 * MI + i * MI)] for i in range(120)]
        rows.append({"metric": {"container": "app", "pod": pod, "id": f"/cg/{life}"}, "values": values})
    return rows


def test_assemble_gives_usage_and_evidence() -> None:
    stats = promql.parse_summary([_row("peak", "268435456"), _row("p95", "209715200.4"), _row("restarts", "3"),
                                 _row("oomkilled_pods", "1"), _row("p95", "NaN", "side")])
    q = query(kill(at_h=0, lived_h=2))
    history = promql.assemble(q, stats=stats, series=promql.parse_series(_leak_series()),
                             max_gap=datetime.timedelta(minutes=10), source="Prometheus")
    assert history.ok and history.data_source == "prometheus (7d)"
    app = history.usage["app"]
    assert app.peak == 256 * MI and app.p95 == 200 * MI + 1
    assert app.slope_bytes_per_s == pytest.approx(MI / 60) and app.window == datetime.timedelta(minutes=119)
    assert app.source.startswith("Prometheus 7d: the last 2 lives longer than 1h both grew steadily")
    assert "app: peak 256Mi, p95 200Mi; trend: the last 2 lives" in history.message
    assert "kube-state-metrics: 3 restart(s), 1 pod(s) last terminated OOMKilled" in history.message


def test_assemble_without_series_is_no_data_and_partial_data_says_what_is_missing() -> None:
    history = promql.assemble(query(containers=("app",)), stats={}, series={}, max_gap=datetime.timedelta(minutes=10),
                             source="Prometheus")
    assert history.outcome == usage.Outcome.NO_DATA and not history.ok and history.data_source == "kills"
    assert "no container_memory_working_set_bytes for app" in history.message and "kills alone" in history.message
    history = promql.assemble(query(containers=("app", "side")), stats={"app": {"peak": 1.0 * MI}}, series={},
                             max_gap=datetime.timedelta(minutes=10), source="Prometheus")
    assert history.ok and set(history.usage) == {"app"} and "no container_memory_working_set_bytes for side" in history.message
    assert history.usage["app"].slope_bytes_per_s is None and "no life longer than 1h" in history.message


def test_parse_rejects_malformed_answers() -> None:
    with pytest.raises((KeyError, TypeError, IndexError)):
        promql.parse_summary([{"metric": {}}])


def test_breaker_opens_for_the_backoff_then_lets_one_probe_through() -> None:
    clock = [100.0]
    breaker = usage.Breaker(backoff=datetime.timedelta(seconds=30), clock=lambda: clock[0])
    assert breaker.allow() is None
    breaker.failure("ConnectionError: Connection refused")
    clock[0] += 10
    why = breaker.allow()
    assert why is not None and "10s ago (ConnectionError: Connection refused)" in why and "next try in 20s" in why
    clock[0] += 21
    assert breaker.allow() is None  # the probe
    assert breaker.allow() is not None  # the others wait for it
    breaker.success()
    assert breaker.allow() is None and breaker.allow() is None


def test_disabled_source_and_settings() -> None:
    assert usage.from_settings(config.Settings()).history(query()) == usage.NOT_CONFIGURED
    assert usage.NOT_CONFIGURED.data_source == "kills" and usage.NOT_CONFIGURED.outcome == usage.Outcome.NOT_CONFIGURED
    settings = config.from_environ({
        "OOMTUNER_PROMETHEUS_URL": "https://prom:9090", "OOMTUNER_PROMETHEUS_TIMEOUT": "2s",
        "OOMTUNER_PROMETHEUS_BEARER_TOKEN_FILE": "/var/run/token", "OOMTUNER_PROMETHEUS_CA_FILE": "/etc/ca.pem",
        "OOMTUNER_PROMETHEUS_BACKOFF": "1m", "OOMTUNER_PROMETHEUS_MAX_POINTS": "500", "OOMTUNER_PROMETHEUS_MIN_STEP": "1m",
    })
    source = usage.from_settings(settings)
    assert isinstance(source, usage.PrometheusUsage)
    assert source.timeout == 2 and source.breaker.backoff == 60 and source.max_points == 500
    assert source._client._session.verify == "/etc/ca.pem"
    with pytest.raises(config.SettingsError, match="OOMTUNER_PROMETHEUS_TIMEOUT"):
        config.from_environ({"OOMTUNER_PROMETHEUS_TIMEOUT": "soon"})


# ---- against a fake Prometheus over HTTP -------------------------------------------------------------


@pytest.fixture
def fake() -> Iterator[FakePrometheus]:
    server = FakePrometheus(summary=[_row("peak", str(300 * MI)), _row("p95", str(250 * MI))], series=_leak_series())
    yield server
    server.close()


def source(url: str, *, timeout: float = 1.0, backoff: float = 30.0, **kwargs: Any) -> usage.PrometheusUsage:
    return usage.PrometheusUsage(url=url, timeout=datetime.timedelta(seconds=timeout),
                                 backoff=datetime.timedelta(seconds=backoff), **kwargs)


def failures() -> float:
    return metrics.PROMETHEUS_QUERY_FAILURES._value.get()  # type: ignore[attr-defined,no-any-return]


def test_a_working_prometheus_gives_usage_with_two_bounded_queries(fake: FakePrometheus) -> None:
    history = source(fake.url).history(query(kill(at_h=0, lived_h=2)))
    assert history.ok and history.usage["app"].peak == 300 * MI and history.usage["app"].slope_bytes_per_s
    (path1, params1, _), (path2, params2, _) = fake.requests
    assert path1 == "/api/v1/query" and params1["timeout"] == "1s" and float(params1["time"]) == NOW.timestamp()
    assert path2 == "/api/v1/query_range" and params2["step"] == "303s" and params2["timeout"] == "1s"
    assert 'pod=~"web-7d4b9c8f6d-x2x4z"' in params2["query"]
    assert int(params2["end"]) - int(params2["start"]) == 7 * 24 * 3600


def test_empty_answers_are_no_data_and_no_failure(fake: FakePrometheus) -> None:
    fake.summary = []
    before = failures()
    history = source(fake.url).history(query())
    assert history.outcome == usage.Outcome.NO_DATA and history.data_source == "kills"
    assert failures() == before and len(fake.requests) == 1  # no range query without a peak


@pytest.mark.parametrize(("status", "body", "expected"), [
    (503, {"status": "error", "error": "overloaded"}, "HTTP Status Code 503"),
    (422, {"status": "error", "errorType": "timeout"}, "HTTP Status Code 422"),
    (200, "not json", "JSONDecodeError"),
    (200, {"status": "success", "data": {"result": "nonsense"}}, "unexpected answer"),
])
def test_errors_degrade_count_and_open_the_breaker(fake: FakePrometheus, status: int, body: Any, expected: str) -> None:
    fake.status, fake.body = status, body
    src = source(fake.url)
    before = failures()
    history = src.history(query())
    assert history.outcome == usage.Outcome.UNAVAILABLE and not history.usage and history.data_source == "kills"
    assert expected in history.message and "computed from the kills alone" in history.message
    assert failures() == before + 1
    # Within the back-off nothing is sent, and nothing more is counted.
    again = src.history(query())
    assert "not queried: the last query failed" in again.message and len(fake.requests) == 1
    assert failures() == before + 1


def test_a_hanging_prometheus_costs_one_timeout_then_nothing(fake: FakePrometheus) -> None:
    fake.delay = 3
    src = source(fake.url, timeout=0.5)
    started = time.monotonic()
    history = src.history(query())
    assert time.monotonic() - started < 2.5  # bounded by the timeout, not by the server
    assert history.outcome == usage.Outcome.UNAVAILABLE and "timed out" in history.message
    started = time.monotonic()
    assert src.history(query()).outcome == usage.Outcome.UNAVAILABLE
    assert time.monotonic() - started < 0.1


def test_a_refused_connection_degrades_and_recovers_after_the_backoff(fake: FakePrometheus) -> None:
    clock = [0.0]
    src = source("http://127.0.0.1:1", breaker=usage.Breaker(backoff=datetime.timedelta(seconds=30), clock=lambda: clock[0]))
    history = src.history(query())
    assert history.outcome == usage.Outcome.UNAVAILABLE and "Connection refused" in history.message
    src.url = fake.url
    src._client.url = fake.url
    clock[0] += 31
    assert src.history(query()).ok


def test_the_bearer_token_is_read_on_every_query(fake: FakePrometheus, tmp_path: Any) -> None:
    token = tmp_path / "token"
    token.write_text("first\n")
    src = source(fake.url, bearer_token_file=str(token))
    src.history(query())
    token.write_text("second")
    src.history(query())
    seen = [headers.get("Authorization") for _path, _params, headers in fake.requests]
    assert seen == ["Bearer first", "Bearer first", "Bearer second", "Bearer second"]


def test_a_missing_token_file_is_a_failed_query_not_a_crash(fake: FakePrometheus, tmp_path: Any) -> None:
    history = source(fake.url, bearer_token_file=str(tmp_path / "missing")).history(query())
    assert history.outcome == usage.Outcome.UNAVAILABLE and "FileNotFoundError" in history.message


def test_a_malformed_row_is_a_failed_query(fake: FakePrometheus) -> None:
    fake.body = {"status": "success", "data": {"result": [{"metric": {"container": "app"}}]}}
    before = failures()
    history = source(fake.url).history(query())
    assert history.outcome == usage.Outcome.UNAVAILABLE and "KeyError" in history.message
    assert failures() == before + 1


# ---- what the operator asks, and that a broken source never costs the recommendation ----------------


class Recording:
    def __init__(self, answer: usage.History | Exception):
        self.answer = answer
        self.queries: list[usage.Query] = []

    def history(self, q: usage.Query) -> usage.History:
        self.queries.append(q)
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


def _recompute(source: Recording) -> Any:
    from oomtuner.services import recompute

    return recompute.Recompute(usage=source, caps=None)  # type: ignore[arg-type]


def test_the_operator_asks_for_the_killed_containers_over_the_policys_lookback() -> None:
    from oomtuner.api import policy, recommendation
    from oomtuner.domain import workload

    target = workload.from_body({
        "apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "db", "namespace": "shop"},
        "spec": {"template": {"spec": {"containers": [{"name": "app"}, {"name": "side"}]}}},
    })
    chosen = policy.parse({"apiVersion": "oomtuner.dev/v1alpha1", "kind": "OOMPolicy",
                           "metadata": {"name": "p", "namespace": "shop"}, "spec": {"prometheus": {"lookback": "36h"}}})
    records = [recommendation.Kill(id="k1", pod="db-0", container="app", at="2026-01-05T11:00:00Z",
                                   startedAt="2026-01-05T09:00:00Z")]
    source = Recording(usage.History(outcome=usage.Outcome.NO_DATA, message="none"))
    assert _recompute(source).history(target, chosen, records, now=NOW).outcome == usage.Outcome.NO_DATA
    (asked,) = source.queries
    assert (asked.namespace, asked.workload_kind, asked.workload_name) == ("shop", "StatefulSet", "db")
    assert asked.containers == ("app",) and asked.lookback == datetime.timedelta(hours=36) and asked.now == NOW
    assert [k.pod for k in asked.kills] == ["db-0"] and asked.kills[0].started_at == NOW - datetime.timedelta(hours=3)
    # Without a policy, the default lookback (7d); a source that raises becomes "unavailable".
    broken = Recording(RuntimeError("boom"))
    history = _recompute(broken).history(target, None, records, now=NOW)
    assert broken.queries[0].lookback == datetime.timedelta(days=7)
    assert history.outcome == usage.Outcome.UNAVAILABLE and "boom" in history.message and history.data_source == "kills"


# ---- the culprit of a node OOM: the node's containers around the kill ------------------------------


def node_q(*pods: tuple[str, str]) -> usage.NodeQuery:
    return usage.NodeQuery(node="n1", pods=pods or (("shop", "web-0"), ("shop", "a.b"), ("ops", "agent-x2x4z")), at=NOW)


def _node_row(namespace: str, pod: str, container: str, value: str) -> dict[str, Any]:
    return {"metric": {"namespace": namespace, "pod": pod, "container": container}, "value": [NOW.timestamp(), value]}


def test_node_query_reads_the_pods_on_the_node_by_namespace_and_name() -> None:
    text = promql.node_query(node_q())
    assert text.count(" or ") == 1  # one term per namespace
    assert 'namespace="ops",pod=~"agent-x2x4z",container!="",container!="POD"' in text
    assert 'namespace="shop",pod=~"a\\\\.b|web-0"' in text  # escaped, inside a PromQL string
    assert text.count("max by (namespace, pod, container) (max_over_time(container_memory_working_set_bytes{") == 2
    assert "[300s]" in text and "node=" not in text and "instance=" not in text


def test_parse_node_usage_keeps_the_asked_pods_and_the_highest_value() -> None:
    rows = [_node_row("shop", "web-0", "app", "104857600.2"), _node_row("shop", "web-0", "app", "1"),
            _node_row("ops", "web-0", "app", "999"),  # same name, other namespace: not on the node
            _node_row("shop", "web-0", "", "5"), _node_row("shop", "a.b", "side", "NaN")]
    assert promql.parse_node_usage(rows, pods=[("shop", "web-0"), ("shop", "a.b")]) == {("shop", "web-0", "app"): 100 * MI + 1}
    with pytest.raises(KeyError):
        promql.parse_node_usage([{"metric": {}}], pods=[])


def test_node_usage_from_prometheus_at_the_kill(fake: FakePrometheus) -> None:
    fake.summary = [_node_row("shop", "web-0", "app", str(GI)), _node_row("ops", "agent-x2x4z", "agent", str(10 * MI))]
    found = source(fake.url).node_usage(node_q())
    assert found.ok and found.usage == {("shop", "web-0", "app"): GI, ("ops", "agent-x2x4z", "agent"): 10 * MI}
    assert found.message == "peak working set over the 5m up to the kill, from Prometheus"
    ((path, params, _),) = fake.requests
    assert path == "/api/v1/query" and float(params["time"]) == NOW.timestamp() and params["timeout"] == "1s"
    fake.summary = []
    empty = source(fake.url).node_usage(node_q())
    assert empty.outcome == usage.Outcome.NO_DATA and "for the 3 pod(s) on node n1 in the 5m up to the kill" in empty.message
    assert source(fake.url).node_usage(usage.NodeQuery(node="n1", pods=(), at=NOW)).outcome == usage.Outcome.NO_DATA
    assert usage.Disabled().node_usage(node_q()).outcome == usage.Outcome.NOT_CONFIGURED


def test_node_usage_goes_through_the_breaker_and_the_failure_counter(fake: FakePrometheus) -> None:
    fake.status, fake.body = 503, {"status": "error"}
    src = source(fake.url)
    before = failures()
    failed = src.node_usage(node_q())
    assert failed.outcome == usage.Outcome.UNAVAILABLE and "HTTP Status Code 503" in failed.message
    assert failures() == before + 1
    # The breaker is shared with the usage history: neither asks again within the back-off.
    assert "not queried" in src.node_usage(node_q()).message and "not queried" in src.history(query()).message
    assert len(fake.requests) == 1 and failures() == before + 1



# ---- the working set now, for `oomtuner report` ------------------------------------------------------


def test_current_queries_read_the_latest_sample_per_namespace_in_one_query() -> None:
    (text,) = promql.current_queries([("shop", "web-0"), ("shop", "a.b"), ("ops", "agent-x2x4z"), ("shop", "web-0")])
    assert text == (
        'max by (namespace, pod, container) (container_memory_working_set_bytes'
        '{namespace="ops",pod=~"agent-x2x4z",container!="",container!="POD"}) or '
        'max by (namespace, pod, container) (container_memory_working_set_bytes'
        '{namespace="shop",pod=~"a\\\\.b|web-0",container!="",container!="POD"})'
    )
    assert "max_over_time" not in text  # now, not a peak over a window
    assert promql.current_queries([]) == []


def _pods_in(queries: list[str]) -> list[tuple[str, str]]:
    found = []
    for text in queries:
        for namespace, pattern in re.findall(r'namespace=("[^"]*"),pod=~("(?:[^"\\]|\\.)*")', text):
            found += [(json.loads(namespace), p.replace("\\.", ".")) for p in json.loads(pattern).split("|")]
    return found


@pytest.mark.parametrize("max_chars", [300, 1000, promql.MAX_QUERY_CHARS])
def test_current_queries_stay_within_the_bound_and_ask_for_every_pod_once(max_chars: int) -> None:
    pods = [("shop", f"web-7d4b9c8f6d-{i:05d}") for i in range(400)] + [("ops", f"agent.{i}") for i in range(30)]
    pods += [("a" * 63, "p" * 253)]  # the longest names Kubernetes allows
    queries = promql.current_queries(pods, max_chars=max_chars)
    assert sorted(_pods_in(queries)) == sorted(pods)
    lengths = {q: len(urllib.parse.quote_plus(q)) for q in queries}
    # Within the bound, except the query of the one pod whose term alone is longer.
    assert [q for q in queries if lengths[q] > max_chars] == ([] if max_chars > 600 else [q for q in queries if "a" * 63 in q])
    # Packed: no query but the last has room left for even a new term with one pod.
    one_pod = len(urllib.parse.quote_plus(promql.current_queries([("shop", "web-7d4b9c8f6d-00000")])[0] + " or "))
    assert all(lengths[q] > max_chars - one_pod for q in queries[:-1])
    if max_chars == promql.MAX_QUERY_CHARS:
        assert len(queries) == 2


def test_a_pod_too_long_for_the_bound_still_gets_its_own_query() -> None:
    assert _pods_in(promql.current_queries([("shop", "a-very-long-pod-name"), ("shop", "b")], max_chars=10)) == [
        ("shop", "a-very-long-pod-name"), ("shop", "b")]


def test_current_usage_packs_the_pods_into_few_queries_at_one_time(fake: FakePrometheus, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(promql, "MAX_QUERY_CHARS", 400)
    pods = [("shop", f"web-{i}") for i in range(20)] + [("ops", "agent-x2x4z")]
    fake.summary = [_node_row("shop", "web-3", "app", str(GI)), _node_row("ops", "agent-x2x4z", "agent", str(10 * MI)),
                    _node_row("shop", "gone", "app", "1")]
    found = source(fake.url).current_usage(pods, at=NOW)
    assert found.ok and found.usage == {("shop", "web-3", "app"): GI, ("ops", "agent-x2x4z", "agent"): 10 * MI}
    assert found.message == f"working set now, from Prometheus at {fake.url}"
    assert len(fake.requests) == len(promql.current_queries(pods)) > 1
    assert {params["time"] for _path, params, _headers in fake.requests} == {f"{NOW.timestamp():.3f}"}
    assert all(path == "/api/v1/query" and params["timeout"] == "1s" for path, params, _headers in fake.requests)
    fake.summary = []
    empty = source(fake.url).current_usage(pods, at=NOW)
    assert empty.outcome == usage.Outcome.NO_DATA and empty.message.endswith("for the 21 pod(s)")
    assert source(fake.url).current_usage([], at=NOW).outcome == usage.Outcome.NO_DATA
    assert usage.Disabled().current_usage(pods, at=NOW).outcome == usage.Outcome.NOT_CONFIGURED


def test_current_usage_fails_as_a_whole_through_the_breaker(fake: FakePrometheus, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(promql, "MAX_QUERY_CHARS", 400)
    fake.status, fake.body = 503, {"status": "error"}
    before = failures()
    failed = source(fake.url).current_usage([("shop", f"web-{i}") for i in range(20)], at=NOW)
    assert failed.outcome == usage.Outcome.UNAVAILABLE and not failed.usage
    assert failed.message.startswith(f"Prometheus at {fake.url}: query failed: ") and "HTTP Status Code 503" in failed.message
    assert len(fake.requests) == 1 and failures() == before + 1  # the first failure stops the rest


# ---- settle: usage since the raise ---------------------------------------------------------------


def since_query(hours: float = 26, containers: tuple[str, ...] = ("app",)) -> usage.SinceQuery:
    return usage.SinceQuery(namespace="shop", workload_kind="Deployment", workload_name="web", containers=containers,
                            since=NOW - datetime.timedelta(hours=hours), now=NOW)


def test_since_range_starts_one_window_after_the_raise_with_a_bounded_step() -> None:
    start, step = promql.since_range(since_query(26), max_points=2000, min_step=datetime.timedelta(seconds=30)) or (None, None)
    # The first point's window (the step, at least a minute) starts at the raise.
    assert step == datetime.timedelta(seconds=47) and start == NOW - datetime.timedelta(hours=26, minutes=-1)
    start, step = promql.since_range(since_query(1), max_points=2000, min_step=datetime.timedelta(seconds=30)) or (None, None)
    assert step == datetime.timedelta(seconds=30) and start == NOW - datetime.timedelta(hours=1) + datetime.timedelta(minutes=1)
    assert promql.since_range(since_query(0.01), max_points=2000, min_step=datetime.timedelta(seconds=30)) is None
    text = promql.since_query(since_query(), step=datetime.timedelta(seconds=47))
    assert text.startswith("max by (container, pod, id) (max_over_time(container_memory_working_set_bytes{")
    assert f'pod=~"{promql.pod_pattern("Deployment", "web")}"' in text and text.endswith("[60s]))")


def test_since_raise_reads_every_pod_of_the_workload_in_one_range_query(fake: FakePrometheus) -> None:
    # Two pods of the workload since the raise, every 47 s: one flat at 500Mi, one at 700Mi later on.
    start = NOW - datetime.timedelta(hours=26, minutes=-1)
    instants = [start.timestamp() + k * 47 for k in range(int((NOW - start).total_seconds() // 47) + 1)]
    fake.series = [
        {"metric": {"container": "app", "pod": "web-7d4b9c8f6d-x2x4z", "id": "/cg/a"},
         "values": [[t, str(500 * MI)] for t in instants]},
        {"metric": {"container": "app", "pod": "web-7d4b9c8f6d-bcdfg", "id": "/cg/b"},
         "values": [[t, str(700 * MI)] for t in instants[len(instants) // 2:]]},
    ]
    found = source(fake.url).since_raise(since_query())
    assert found.ok and found.usage["app"].peak == 700 * MI and found.usage["app"].coverage == 1
    assert not found.usage["app"].growing and found.usage["app"].source == "Prometheus, step 47s"
    assert found.message == "usage over the 1d2h since the raise from Prometheus: app: peak 700Mi, 100% covered"
    ((path, params, _),) = fake.requests
    assert path == "/api/v1/query_range" and params["step"] == "47s" and params["timeout"] == "1s"
    assert int(params["start"]) == round(start.timestamp()) and int(params["end"]) == round(NOW.timestamp())


def test_since_raise_without_data_or_prometheus_says_why(fake: FakePrometheus) -> None:
    fake.series = []
    found = source(fake.url).since_raise(since_query())
    assert found.outcome == usage.Outcome.NO_DATA and not found.usage and "since the raise" in found.message
    fake.status, fake.body = 503, {"status": "error"}
    before = failures()
    failed = source(fake.url).since_raise(since_query())
    assert failed.outcome == usage.Outcome.UNAVAILABLE and "HTTP Status Code 503" in failed.message
    assert failures() == before + 1
    off = usage.Disabled().since_raise(since_query())
    assert off.outcome == usage.Outcome.NOT_CONFIGURED and "settle needs usage history" in off.message


# ---- bounds: the whole query within the timeout, answers within a size, values that can be memory ----


def test_a_drip_of_bytes_is_cut_at_the_timeout_of_the_whole_query(fake: FakePrometheus) -> None:
    # Every byte comes well within a read timeout of 1s, so only a bound on the whole query ends it.
    fake.drip = 0.25
    started = time.monotonic()
    history = source(fake.url, timeout=1.0).history(query())
    took = time.monotonic() - started
    assert history.outcome == usage.Outcome.UNAVAILABLE and history.data_source == "kills"
    assert "DeadlineExceeded: timed out: no complete answer within 1s" in history.message
    assert 0.9 < took < 1.6, took
    assert 0 < fake.sent < 10  # a few bytes of the body, then the connection was shut


def test_a_drip_of_the_status_line_and_headers_is_cut_too(fake: FakePrometheus) -> None:
    fake.drip, fake.drip_head = 0.2, True
    started = time.monotonic()
    history = source(fake.url, timeout=0.8).history(query())
    assert time.monotonic() - started < 1.4
    assert "DeadlineExceeded" in history.message and fake.sent < 8


def test_the_deadline_spares_a_kept_alive_connection_and_leaves_no_thread(fake: FakePrometheus) -> None:
    session = bounded.Session(timeout=0.5, max_bytes=1 << 20)
    before = threading.active_count()
    for _ in range(20):  # each well within its deadline, over one kept-alive connection
        assert session.get(f"{fake.url}/api/v1/query").json()["status"] == "success"
    time.sleep(0.7)  # past every deadline: a timer left behind would now shut the reused socket
    assert session.get(f"{fake.url}/api/v1/query").status_code == 200
    assert threading.active_count() <= before + 1  # the server's one connection thread, no timers
    fake.delay = 2
    started = time.monotonic()
    with pytest.raises(bounded.DeadlineExceeded):
        session.get(f"{fake.url}/api/v1/query")
    assert time.monotonic() - started < 1.0
    fake.delay = 0
    assert session.get(f"{fake.url}/api/v1/query").status_code == 200  # a fresh connection after that


def test_a_huge_answer_is_refused_from_its_content_length_unread(fake: FakePrometheus) -> None:
    fake.declared = 200 * MI
    before = failures()
    history = source(fake.url).history(query())
    assert history.outcome == usage.Outcome.UNAVAILABLE
    assert "AnswerTooLarge: answer of 200Mi refused unread: more than the 16Mi allowed" in history.message
    assert failures() == before + 1
    assert fake.sent < 32 * MI  # what the socket buffers took before the client closed it, not 200Mi


def test_a_huge_answer_without_a_length_is_refused_as_soon_as_it_passes_the_bound(fake: FakePrometheus) -> None:
    fake.stream_bytes = 200 * MI
    history = source(fake.url, max_response=1 * MI).history(query())
    assert history.outcome == usage.Outcome.UNAVAILABLE
    assert "AnswerTooLarge: answer refused after 1" in history.message and "more than the 1Mi allowed" in history.message
    assert fake.sent < 32 * MI


def test_the_bound_is_on_the_decoded_answer_not_on_the_compressed_one(fake: FakePrometheus) -> None:
    rows = [_row("peak", str(300 * MI), container=f"c{i:06d}") for i in range(30_000)]  # ~2.5Mi of JSON
    fake.body, fake.gzip = {"status": "success", "data": {"result": rows}}, True
    history = source(fake.url, max_response=1 * MI).history(query())
    assert "AnswerTooLarge: answer refused after" in history.message
    fake.body, fake.summary = None, rows[:100] + [_row("peak", str(300 * MI))]
    assert source(fake.url, max_response=1 * MI).history(query()).ok  # the same encoding, within the bound


@pytest.mark.parametrize(("body", "expected"), [
    (b"\x89PNG\r\n\x1a\n\x00\x00garbage", "JSONDecodeError"),
    ('{"status": "success", "data": {"result": [', "JSONDecodeError"),  # cut short
    ("<html><body>502 Bad Gateway</body></html>", "JSONDecodeError"),
    ({"status": "success", "data": {"result": [{"metric": {"container": "app"}, "value": "x"}]}}, "IndexError"),
])
def test_garbage_is_a_failed_query(fake: FakePrometheus, body: Any, expected: str) -> None:
    fake.body = body
    history = source(fake.url).history(query())
    assert history.outcome == usage.Outcome.UNAVAILABLE and expected in history.message


def test_the_max_response_setting() -> None:
    settings = config.from_environ({"OOMTUNER_PROMETHEUS_URL": "http://prom:9090", "OOMTUNER_PROMETHEUS_MAX_RESPONSE": "64Mi"})
    src = usage.from_settings(settings)
    assert isinstance(src, usage.PrometheusUsage) and src.max_response == 64 * MI
    assert config.Settings().prometheus_max_response == "16Mi"
    for bad in ("lots", "-1Mi", "10"):
        with pytest.raises(config.SettingsError, match="OOMTUNER_PROMETHEUS_MAX_RESPONSE"):
            config.from_environ({"OOMTUNER_PROMETHEUS_MAX_RESPONSE": bad})


@pytest.mark.parametrize(("raw", "bound", "why"), [
    ("NaN", None, "not a number"),
    ("n/a", None, "not a number"),
    ("+Inf", None, "infinite"),
    ("-1", None, "negative"),
    (str(2**51), None, "above 1Pi, more than any machine has"),
    (str(17 * GI), 16 * GI, "above the largest node's memory capacity (16Gi)"),
])
def test_values_that_cannot_be_memory_are_discarded_with_the_reason(raw: str, bound: int | None, why: str) -> None:
    sort = promql.Discarded(bound=bound)
    assert sort.memory(raw) is None
    assert sort.sentence() == f"discarded 1 value(s) that cannot be memory: 1 {why}"
    assert sort.memory("0") == 0.0 and sort.memory(str(16 * GI if bound else 2**50)) is not None
    assert promql.Discarded().sentence() == ""


def test_a_peak_that_cannot_be_memory_is_not_used_and_the_history_says_why(fake: FakePrometheus) -> None:
    fake.summary = [_row("peak", "-268435456"), _row("p95", "NaN")]
    history = source(fake.url).history(query())
    assert history.outcome == usage.Outcome.NO_DATA and not history.usage and history.data_source == "kills"
    assert history.discarded == "discarded 2 value(s) that cannot be memory: 1 negative, 1 not a number"
    assert history.message.endswith(f"; {history.discarded}; computed from the kills alone")
    assert len(fake.requests) == 1  # no slope query without a peak


def test_values_above_the_largest_node_are_discarded_and_the_rest_is_used(fake: FakePrometheus) -> None:
    fake.summary = [_row("peak", str(300 * MI)), _row("p95", str(64 * GI)), _row("restarts", "3")]
    series = _leak_series()
    series[0]["values"][5][1] = "+Inf"
    series[1]["values"][7][1] = str(64 * GI)
    fake.series = series
    history = source(fake.url).history(dataclasses.replace(query(kill(at_h=0, lived_h=2)), memory_bound=32 * GI))
    assert history.ok and history.usage["app"].peak == 300 * MI and history.usage["app"].p95 is None
    assert history.usage["app"].slope_bytes_per_s  # the lives still grew steadily without the two bad points
    assert history.discarded == ("discarded 3 value(s) that cannot be memory: "
                                 "2 above the largest node's memory capacity (32Gi), 1 infinite")
    assert history.message.endswith(f"; {history.discarded}")


def test_the_culprit_lookup_discards_values_above_the_nodes_capacity(fake: FakePrometheus) -> None:
    fake.summary = [_node_row("shop", "web-0", "app", str(20 * GI)), _node_row("ops", "agent-x2x4z", "agent", str(10 * MI))]
    found = source(fake.url).node_usage(dataclasses.replace(node_q(), memory_bound=16 * GI))
    assert found.ok and found.usage == {("ops", "agent-x2x4z", "agent"): 10 * MI}
    assert found.discarded == "discarded 1 value(s) that cannot be memory: 1 above node n1's memory capacity (16Gi)"
    assert found.message.endswith(f"({found.discarded})")
    now = source(fake.url).current_usage([("shop", "web-0")], at=NOW, memory_bound=16 * GI)
    assert now.outcome == usage.Outcome.NO_DATA and "1 above the largest node's memory capacity (16Gi)" in now.message
