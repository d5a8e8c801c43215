"""`oomtuner explain`: the offline JSON contract other tools depend on, the table, and bad input
(exit 2, one line naming the file and the problem, no traceback). Runs the real CLI in-process."""

from __future__ import annotations

import json
import pathlib
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from oomtuner import cli

MI = 1024 * 1024


def _pod(name: str = "web-1", *, limit: str | None = "256Mi", request: str | None = "128Mi",
         reason: str = "OOMKilled", exit_code: int = 137) -> dict[str, Any]:
    resources: dict[str, Any] = {}
    if request:
        resources["requests"] = {"memory": request}
    if limit:
        resources["limits"] = {"memory": limit}
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "shop", "uid": f"uid-{name}"},
        "spec": {"nodeName": "node-a", "containers": [{"name": "app", "resources": resources}],
                 "initContainers": [{"name": "proxy", "restartPolicy": "Always",
                                     "resources": {"requests": {"memory": "32Mi"}, "limits": {"memory": "64Mi"}}}]},
        "status": {
            "initContainerStatuses": [{"name": "proxy", "restartCount": 0, "state": {"running": {"startedAt": "2026-11-26T10:00:00Z"}}}],
            "containerStatuses": [{
                "name": "app", "restartCount": 3,
                "state": {"running": {"startedAt": "2026-11-26T10:05:00Z"}},
                "lastState": {"terminated": {"reason": reason, "exitCode": exit_code,
                                             "startedAt": "2026-11-26T10:01:00Z", "finishedAt": "2026-11-26T10:04:59Z"}},
            }],
        },
    }


def _run(args: list[str], stdin: str | None = None) -> Any:
    return CliRunner().invoke(cli.main, args, input=stdin, catch_exceptions=False)


def _write(tmp_path: pathlib.Path, name: str, doc: Any, *, as_yaml: bool = False) -> str:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(doc) if as_yaml else json.dumps(doc))
    return str(path)


def test_json_contract(tmp_path: pathlib.Path) -> None:
    path = _write(tmp_path, "pod.json", _pod())
    result = _run(["explain", "-f", path, "--node-memory", "16Gi", "-o", "json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    assert set(out) == {"pods"}
    pod = out["pods"][0]
    assert {k: pod[k] for k in ("namespace", "name", "node", "qosClass")} == {
        "namespace": "shop", "name": "web-1", "node": "node-a", "qosClass": "Burstable"}
    by_name = {c["name"]: c for c in pod["containers"]}
    app, proxy = by_name["app"], by_name["proxy"]
    assert proxy["type"] == "sidecar" and proxy["kills"] == [] and proxy["recommendation"] is None
    assert app["type"] == "container"
    assert (app["memoryRequest"], app["memoryLimit"]) == (128 * MI, 256 * MI)
    assert app["oomScoreAdj"] == 1000 - (1000 * 128 * MI) // (16 * 1024 * MI)
    kill = app["kills"][0]
    assert {k: kill[k] for k in ("at", "restartCount", "exitCode", "classification", "limitAtKill")} == {
        "at": "2026-11-26T10:04:59Z", "restartCount": 3, "exitCode": 137, "classification": "Limit", "limitAtKill": 256 * MI}
    assert kill["culprit"] is None  # only a Node kill has one
    rec = app["recommendation"]
    assert (rec["memoryLimit"], rec["memoryRequest"], rec["phase"]) == (384 * MI, 192 * MI, "Pending")
    assert rec["reason"]


def test_yaml_output_is_the_json_contract(tmp_path: pathlib.Path) -> None:
    path = _write(tmp_path, "pod.json", _pod())
    as_json = _run(["explain", "-f", path, "--node-memory", "16Gi", "-o", "json"])
    as_yaml = _run(["explain", "-f", path, "--node-memory", "16Gi", "-o", "yaml"])
    assert as_yaml.exit_code == 0, as_yaml.output
    assert yaml.safe_load(as_yaml.output) == json.loads(as_json.output)


def test_list_yaml_and_stdin(tmp_path: pathlib.Path) -> None:
    doc = {"apiVersion": "v1", "kind": "List", "items": [_pod("a"), _pod("b", limit=None, request=None)]}
    result = _run(["explain", "-f", "-", "-o", "json"], stdin=yaml.safe_dump(doc))
    assert result.exit_code == 0, result.output
    pods = json.loads(result.output)["pods"]
    assert [p["name"] for p in pods] == ["a", "b"]
    b_app = next(c for c in pods[1]["containers"] if c["name"] == "app")
    assert b_app["kills"][0]["classification"] == "Node"  # no limit: only the node can kill it
    # Offline there is no usage: no culprit, and the reason says so, in the status' shape.
    assert b_app["kills"][0]["culprit"] == {"namespace": None, "pod": None, "container": None, "usage": None, "request": None,
                                            "reason": "no culprit named: no usage data: explain reads no Prometheus"}
    assert b_app["recommendation"]["memoryRequest"] is not None
    # Without --node-memory a Burstable container's oom_score_adj is unknown.
    assert pods[0]["containers"][1]["oomScoreAdj"] is None


def test_error_137_is_not_an_oom_kill(tmp_path: pathlib.Path) -> None:
    path = _write(tmp_path, "pod.yaml", _pod(reason="Error"), as_yaml=True)
    out = json.loads(_run(["explain", "-f", path, "-o", "json"]).output)
    app = next(c for c in out["pods"][0]["containers"] if c["name"] == "app")
    assert app["kills"] == [] and app["recommendation"] is None


def test_policy_memory_settings_apply(tmp_path: pathlib.Path) -> None:
    pod = _write(tmp_path, "pod.json", _pod())
    pol = _write(tmp_path, "policy.yaml", {"apiVersion": "oomtuner.dev/v1alpha1", "kind": "OOMPolicy",
                                           "metadata": {"name": "p"},
                                           "spec": {"memory": {"increaseFactor": 2, "maxLimit": "400Mi"}}}, as_yaml=True)
    out = json.loads(_run(["explain", "-f", pod, "--policy", pol, "-o", "json"]).output)
    rec = next(c for c in out["pods"][0]["containers"] if c["name"] == "app")["recommendation"]
    assert rec["memoryLimit"] == 400 * MI and rec["phase"] == "Capped"


def test_table_output(tmp_path: pathlib.Path) -> None:
    result = _run(["explain", "-f", _write(tmp_path, "pod.json", _pod()), "--node-memory", "16Gi"])
    assert result.exit_code == 0
    assert "CONTAINER" in result.output and "384Mi" in result.output and "Limit" in result.output
    assert "culprit" not in result.output
    node_kill = _run(["explain", "-f", _write(tmp_path, "node.json", _pod(limit=None))])
    assert "    no culprit named: no usage data: explain reads no Prometheus" in node_kill.output


@pytest.mark.parametrize(
    ("content", "args", "needle"),
    [
        ("{not json", [], "not valid JSON or YAML"),
        ("", [], "empty"),
        (json.dumps({"kind": "Deployment", "metadata": {"name": "x"}}), [], "Deployment"),
        (json.dumps({"kind": "List", "items": [{"kind": "Service"}]}), [], "items[0]"),
        (json.dumps(_pod()), ["--node-memory", "12Qi"], "12Qi"),
        (json.dumps({"kind": "Pod", "metadata": {"name": "p"}, "spec": {"containers": "nope"}}), [], "containers"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(tmp_path: pathlib.Path, content: str, args: list[str], needle: str) -> None:
    path = tmp_path / "in.json"
    path.write_text(content)
    result = CliRunner().invoke(cli.main, ["explain", "-f", str(path), *args])
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and needle in lines[0], result.output
    assert "Traceback" not in result.output


def test_missing_file_and_bad_policy(tmp_path: pathlib.Path) -> None:
    result = CliRunner().invoke(cli.main, ["explain", "-f", str(tmp_path / "nope.json")])
    assert result.exit_code == 2 and "nope.json" in result.output and "no such file" in result.output
    pod = _write(tmp_path, "pod.json", _pod())
    bad = _write(tmp_path, "pol.yaml", {"kind": "OOMPolicy", "metadata": {"name": "p"},
                                        "spec": {"memory": {"margin": 3}}}, as_yaml=True)
    result = CliRunner().invoke(cli.main, ["explain", "-f", pod, "--policy", bad])
    assert result.exit_code == 2 and "spec.memory.margin" in result.output and "pol.yaml" in result.output
