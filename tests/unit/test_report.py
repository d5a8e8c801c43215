"""`oomtuner report`'s ranking of the next victims: by each container's working set now when
Prometheus has it, else by memory request, and saying which, in the JSON, the table and on stderr.

Real: `report.collect` and the domain, the `oomtuner report` command (click's runner), and
prometheus-api-client over HTTP to the small fake Prometheus of test_prom_usage. Played: the API
server (an in-memory client with one node's pods) and, for `collect`, the usage source.
"""

from __future__ import annotations

import datetime
import json
from typing import Any

import pytest
from click.testing import CliRunner

from oomtuner import cli, report
from oomtuner.prom import usage
from tests.fake_prometheus import FakePrometheus
from tests.unit.test_prom_usage import _node_row, fake  # noqa: F401

MI = 1024 * 1024
GI = 1024 * MI
NOW = datetime.datetime(2026, 1, 5, 12, 0, tzinfo=datetime.timezone.utc)
URL = "http://prometheus.example:9090"


def _pod(name: str, request: str, *, namespace: str = "shop", node: str = "n1") -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": namespace, "uid": f"uid-{name}"},
            "spec": {"nodeName": node, "containers": [{"name": "app", "resources": {"requests": {"memory": request}}}]},
            "status": {"phase": "Running", "qosClass": "Burstable"}}


class FakeClient:
    """Node n1 (16Gi) with three Burstable pods: `big` requests 4Gi, `greedy` 128Mi, `quiet` 256Mi;
    node n2 (8Gi) with `agent` in another namespace. No kills and no events."""

    def list(self, path: str, *, query: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        if path == "/api/v1/nodes":
            return [{"metadata": {"name": "n1"}, "status": {"capacity": {"memory": "16Gi"}}},
                    {"metadata": {"name": "n2"}, "status": {"capacity": {"memory": "8Gi"}}}]
        if path == "/api/v1/pods":
            return [_pod("big", "4Gi"), _pod("greedy", "128Mi"), _pod("quiet", "256Mi"),
                    _pod("agent", "64Mi", namespace="ops", node="n2")]
        assert path in ("/api/v1/events", "/apis/oomtuner.dev/v1alpha1/oomrecommendations"), path
        return []


class Source:
    """Answers `current_usage` as told and records what it was asked."""

    url = URL

    def __init__(self, answer: usage.NodeUsage):
        self.answer = answer
        self.asked: list[tuple[list[tuple[str, str]], datetime.datetime]] = []
        self.bounds: list[int | None] = []

    def history(self, query: usage.Query) -> usage.History:
        return usage.NOT_CONFIGURED

    def node_usage(self, query: usage.NodeQuery) -> usage.NodeUsage:
        return usage.NodeUsage(outcome=usage.Outcome.NO_DATA, message="")

    def current_usage(self, pods: Any, *, at: datetime.datetime, memory_bound: int | None = None) -> usage.NodeUsage:
        self.asked.append((list(pods), at))
        self.bounds.append(memory_bound)
        return self.answer


MEASURED = usage.NodeUsage(outcome=usage.Outcome.USED, message=f"working set now, from Prometheus at {URL}",
                           usage={("shop", "big", "app"): 100 * MI, ("shop", "greedy", "app"): 3 * GI,
                                  ("ops", "agent", "app"): 32 * MI})


def _victims(result: dict[str, Any], node: str = "n1") -> list[tuple[str, str, int | None]]:
    entry = next(n for n in result["nodes"] if n["name"] == node)
    return [(v["pod"], v["basis"], v["memory"]) for v in entry["nextVictims"]]


def test_with_usage_the_biggest_user_comes_first_and_each_entry_says_its_basis() -> None:
    source = Source(MEASURED)
    result = report.collect(FakeClient(), namespace=None, usage=source, now=NOW)  # type: ignore[arg-type]
    # greedy: 3Gi/16Gi → 187 + adj 993; quiet has no sample: its request 256Mi → 15 + 985; big: 6 + 750.
    assert _victims(result) == [("greedy", "usage", 3 * GI), ("quiet", "request", 256 * MI), ("big", "usage", 100 * MI)]
    first = result["nodes"][0]["nextVictims"][0]
    assert (first["score"], first["usage"], first["request"]) == (1180, 3 * GI, 128 * MI)
    assert result["ranking"] == {
        "basis": "usage", "prometheus": URL, "at": "2026-01-05T12:00:00Z",
        "message": f"by working set now, from Prometheus at {URL}, for 3 of 4 container(s); the others by memory request",
    }
    # One lookup, for every pod that can be ranked, at the report's time.
    assert source.asked == [([("ops", "agent"), ("shop", "big"), ("shop", "greedy"), ("shop", "quiet")], NOW)]
    assert source.bounds == [16 * GI]  # no working set above the largest node's memory is believed
    assert report.warning(result) is None
    table = report.render_table(result)
    assert f"Next victims ranked by working set now, from Prometheus at {URL}, for 3 of 4 container(s);" in table
    assert "1. shop/greedy app  Burstable  oom_score_adj=993  usage=3Gi (request 128Mi)  score≈1180" in table
    assert "2. shop/quiet app  Burstable  oom_score_adj=985  request=256Mi (usage unknown)  score≈1000" in table


def test_without_prometheus_the_request_decides_and_it_says_so() -> None:
    result = report.collect(FakeClient(), namespace=None, now=NOW)  # type: ignore[arg-type]
    # Burstable scores all come to about 1000 by request (the request's share and oom_score_adj cancel
    # out): the larger request goes first.
    assert _victims(result) == [("big", "request", 4 * GI), ("quiet", "request", 256 * MI), ("greedy", "request", 128 * MI)]
    assert all(v["usage"] is None for n in result["nodes"] for v in n["nextVictims"])
    assert result["ranking"] == {
        "basis": "request", "prometheus": None, "at": None,
        "message": "by memory request: no Prometheus is configured (--prometheus-url or OOMTUNER_PROMETHEUS_URL)",
    }
    assert report.warning(result) == "warning: next victims ranked " + result["ranking"]["message"]
    assert "Next victims ranked by memory request: no Prometheus is configured" in report.render_table(result)


@pytest.mark.parametrize(("answer", "message"), [
    (usage.NodeUsage(outcome=usage.Outcome.UNAVAILABLE, message=f"Prometheus at {URL}: query failed: ConnectionError: Connection refused",
                     usage=MEASURED.usage),
     f"by memory request: Prometheus at {URL}: query failed: ConnectionError: Connection refused"),
    (usage.NodeUsage(outcome=usage.Outcome.NO_DATA, message=f"Prometheus at {URL} has no container_memory_working_set_bytes for the 4 pod(s)"),
     f"by memory request: Prometheus at {URL} has no container_memory_working_set_bytes for the 4 pod(s)"),
    (usage.NodeUsage(outcome=usage.Outcome.USED, message="working set now", usage={("shop", "big", "other"): GI}),
     f"by memory request: Prometheus at {URL} has no container_memory_working_set_bytes for these containers"),
])
def test_a_failing_or_empty_prometheus_gives_the_ranking_by_request(answer: usage.NodeUsage, message: str) -> None:
    result = report.collect(FakeClient(), namespace=None, usage=Source(answer), now=NOW)  # type: ignore[arg-type]
    assert _victims(result)[0] == ("big", "request", 4 * GI)
    assert result["ranking"]["basis"] == "request" and result["ranking"]["message"] == message
    assert report.warning(result) == f"warning: next victims ranked {message}"


def test_the_json_contract_only_gains_keys() -> None:
    result = report.collect(FakeClient(), namespace=None, usage=Source(MEASURED), now=NOW)  # type: ignore[arg-type]
    assert {"workloads", "nodes"} <= set(result)
    assert {"name", "memoryCapacity", "nextVictims"} <= set(result["nodes"][0])
    assert {"namespace", "pod", "container", "qosClass", "oomScoreAdj", "memory", "basis", "score"} \
        <= set(result["nodes"][0]["nextVictims"][0])


def test_nothing_to_rank_is_no_warning() -> None:
    class Empty(FakeClient):
        def list(self, path: str, *, query: dict[str, Any] | None = None) -> list[dict[str, Any]]:
            return [] if path == "/api/v1/pods" else super().list(path, query=query)

    result = report.collect(Empty(), namespace=None, now=NOW)  # type: ignore[arg-type]
    assert result["ranking"]["basis"] == "request" and report.warning(result) is None


# ---- the command ------------------------------------------------------------------------------------


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli.cluster, "connect", lambda kubeconfig, context, **_: FakeClient())
    for name in ("URL", "TIMEOUT", "BEARER_TOKEN_FILE", "CA_FILE"):
        monkeypatch.delenv(f"OOMTUNER_PROMETHEUS_{name}", raising=False)


def _report(*args: str, env: dict[str, str] | None = None) -> Any:
    return CliRunner().invoke(cli.main, ["report", "-o", "json", *args], env=env)


def test_the_command_takes_prometheus_from_the_operators_setting(offline: None, fake: FakePrometheus) -> None:  # noqa: F811
    fake.summary = [_node_row("shop", "greedy", "app", str(3 * GI)), _node_row("shop", "big", "app", str(100 * MI))]
    result = _report(env={"OOMTUNER_PROMETHEUS_URL": fake.url, "OOMTUNER_PROMETHEUS_TIMEOUT": "2s"})
    assert result.exit_code == 0 and result.stderr == "", result.output
    out = json.loads(result.stdout)
    assert _victims(out)[0] == ("greedy", "usage", 3 * GI) and out["ranking"]["prometheus"] == fake.url
    ((path, params, _headers),) = fake.requests
    assert path == "/api/v1/query" and params["timeout"] == "2s" and 'pod=~"big|greedy|quiet"' in params["query"]
    # The flag wins over the variable; an empty one turns Prometheus off.
    result = _report("--prometheus-url=", env={"OOMTUNER_PROMETHEUS_URL": fake.url})
    assert json.loads(result.stdout)["ranking"]["basis"] == "request" and len(fake.requests) == 1
    assert result.stderr.startswith("oomtuner: warning: next victims ranked by memory request: no Prometheus is configured")


def test_an_unreachable_prometheus_is_one_warning_and_a_ranking_by_request(offline: None) -> None:
    result = _report("--prometheus-url", "http://127.0.0.1:1", "--prometheus-timeout", "1s")
    assert result.exit_code == 0, result.output
    assert result.stderr == ("oomtuner: warning: next victims ranked by memory request: Prometheus at http://127.0.0.1:1: "
                             "query failed: ConnectionError: Connection refused\n")
    out = json.loads(result.stdout)
    assert out["ranking"]["basis"] == "request" and _victims(out)[0] == ("big", "request", 4 * GI)
    table = CliRunner().invoke(cli.main, ["report", "--prometheus-url", "http://127.0.0.1:1"])
    assert "Next victims ranked by memory request: Prometheus at http://127.0.0.1:1: query failed" in table.stdout


def test_a_bad_prometheus_setting_is_one_line(offline: None) -> None:
    result = _report("--prometheus-timeout", "soon")
    assert result.exit_code == 2 and "--prometheus-timeout" in result.stderr and "Traceback" not in result.output
    assert len(result.stderr.strip().splitlines()) == 1


# ---- kills the recommendation recorded, beside those the pods show ----------------------------------


def _rec(kind: str, name: str, *, uid: str, total: int, containers: dict[str, int], namespace: str = "shop") -> Any:
    from oomtuner.api import recommendation

    return recommendation.read({
        "metadata": {"name": f"{kind.lower()}-{name}", "namespace": namespace,
                     "ownerReferences": [{"apiVersion": "apps/v1", "kind": kind, "name": name, "uid": uid}]},
        "spec": {"targetRef": {"apiVersion": "apps/v1", "kind": kind, "name": name}},
        "status": {"phase": "Applied", "totalKills": total, "containers": [
            {"name": c, "oomKills": n, "classification": "Limit", "current": {"request": "128Mi", "limit": "256Mi"},
             "lastOOMAt": "2026-01-05T11:00:00Z"} for c, n in containers.items()]}})


def _seen(name: str, uid: str, kills: int) -> dict[str, Any]:
    return {"namespace": "shop", "workload": f"Deployment/{name}", "uid": uid, "containers": [
        {"name": "app", "type": "container", "kills": kills, "classifications": ["Limit"], "request": 1, "limit": 2,
         "lastKill": None, "qosClass": "Burstable", "oomScoreAdj": 990}]}


def test_the_recommendations_count_stands_beside_the_pods_count() -> None:
    result = report.with_recorded_kills(
        [_seen("web", "uid-web", 8)],
        [_rec("Deployment", "web", uid="uid-web", total=16, containers={"app": 16}),
         # Gone from every pod status, remembered by its recommendation only.
         _rec("Deployment", "old", uid="uid-old", total=3, containers={"app": 3, "idle": 0}),
         # No kills: not listed.
         _rec("Deployment", "calm", uid="uid-calm", total=0, containers={"app": 0})])
    web, old = (next(w for w in result if w["workload"] == f"Deployment/{n}") for n in ("web", "old"))
    assert [w["workload"] for w in result] == ["Deployment/old", "Deployment/web"]
    assert web["recommendation"] == {"name": "deployment-web", "phase": "Applied", "totalKills": 16}
    assert (web["containers"][0]["kills"], web["containers"][0]["recordedKills"]) == (8, 16)
    assert "uid" not in web
    assert [(c["name"], c["kills"], c["recordedKills"]) for c in old["containers"]] == [("app", 0, 3)]
    assert old["containers"][0]["limit"] == 256 * MI and old["containers"][0]["lastKill"] == "2026-01-05T11:00:00Z"
    table = report.render_table({**report.collect(FakeClient(), namespace=None, now=NOW), "workloads": result})  # type: ignore[arg-type]
    header, web_row = table.splitlines()[0], next(line for line in table.splitlines() if "Deployment/web" in line)
    assert header.split()[3:5] == ["RECORDED", "IN"] and web_row.split()[3:5] == ["16", "8"]
    assert report.RECORDED_LEGEND in table


def test_a_recommendation_that_is_not_the_workloads_own_is_not_counted() -> None:
    result = report.with_recorded_kills([_seen("web", "uid-web", 2)],
                                        [_rec("Deployment", "web", uid="uid-forged", total=99, containers={"app": 99})])
    assert result[0]["recommendation"] is None and result[0]["containers"][0]["recordedKills"] is None


def test_report_prints_yaml_and_takes_all_namespaces(offline: None) -> None:
    import yaml

    done = CliRunner().invoke(cli.main, ["report", "-A", "-o", "yaml", "--prometheus-url="])
    assert done.exit_code == 0, done.output
    assert {"workloads", "nodes", "ranking"} <= set(yaml.safe_load(done.stdout))
    done = CliRunner().invoke(cli.main, ["report", "-A", "-n", "shop"])
    assert done.exit_code == 2 and "--namespace and --all-namespaces exclude each other" in done.output
