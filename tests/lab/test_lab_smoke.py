"""Smoke test of the local lab: a real control plane, kwok pods, and injected OOM kills.

Starts the lab unless it runs (and stops it afterwards only if this test started it; set
OOMTUNER_LAB_KEEP=1 to keep it). Builds missing binaries first, which takes long once.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from oomtuner_lab import cluster, inject

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(3600)]


def raw(call: Any, *args: Any, **kwargs: Any) -> dict[str, Any]:
    return json.loads(call(*args, _preload_content=False, **kwargs).data)


def wait_for(what: str, check: Any, timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.5)


@pytest.fixture(scope="session")
def lab_kubeconfig() -> Iterator[Path]:
    was_running = cluster.is_running()
    kubeconfig = cluster.ensure_up(echo=print)
    yield kubeconfig
    if not was_running and not os.environ.get("OOMTUNER_LAB_KEEP"):
        cluster.down(echo=print)


@pytest.fixture(scope="session")
def api_client(lab_kubeconfig: Path) -> Iterator[Any]:
    from kubernetes import config

    client = config.new_client_from_config(config_file=str(lab_kubeconfig))
    yield client
    client.close()


@pytest.fixture
def namespace(api_client: Any) -> Iterator[str]:
    from kubernetes import client

    core = client.CoreV1Api(api_client)
    name = f"lab-smoke-{uuid.uuid4().hex[:6]}"
    raw(core.create_namespace, {"metadata": {"name": name}})
    yield name
    core.delete_namespace(name)


def deployment(name: str, replicas: int) -> dict[str, Any]:
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "initContainers": [
                        {
                            "name": "sidecar",
                            "image": "registry.k8s.io/pause:3.10",
                            "restartPolicy": "Always",
                            "resources": {"limits": {"memory": "64Mi"}},
                        }
                    ],
                    "containers": [
                        {
                            "name": "app",
                            "image": "registry.k8s.io/pause:3.10",
                            "resources": {
                                "requests": {"cpu": "100m", "memory": "128Mi"},
                                "limits": {"memory": "256Mi"},
                            },
                        }
                    ],
                },
            },
        },
    }


def test_lab_runs_pods_and_takes_oom_kills(api_client: Any, namespace: str) -> None:
    from kubernetes import client

    core = client.CoreV1Api(api_client)
    apps = client.AppsV1Api(api_client)

    nodes = raw(core.list_node)["items"]
    assert {n["metadata"]["name"] for n in nodes} >= {n.name for n in cluster.NODES}

    raw(apps.create_namespaced_deployment, namespace, deployment("web", 2))

    def running_pods() -> list[dict[str, Any]] | None:
        pods = raw(core.list_namespaced_pod, namespace, label_selector="app=web")["items"]
        running = [p for p in pods if p.get("status", {}).get("phase") == "Running"]
        return running if len(running) == 2 else None

    pods = wait_for("2 Running pods", running_pods)
    wait_for(
        "the Deployment to report 2 ready replicas",
        lambda: raw(apps.read_namespaced_deployment, "web", namespace).get("status", {}).get("readyReplicas")
        == 2,
    )
    pod = pods[0]
    name = pod["metadata"]["name"]
    assert pod["spec"]["nodeName"] in {n.name for n in cluster.NODES}
    before = {s["name"]: s for s in pod["status"]["containerStatuses"]}
    assert before["app"]["state"].get("running")

    at = datetime.now(UTC) - timedelta(seconds=3)
    new = inject.oom_kill(core, namespace=namespace, pod=name, container="app", at=at)
    assert new["restartCount"] == before["app"].get("restartCount", 0) + 1

    sidecar_before = {s["name"]: s for s in pod["status"]["initContainerStatuses"]}["sidecar"]
    inject.oom_kill(core, namespace=namespace, pod=name, container="sidecar", container_kind="init")

    def check(status: dict[str, Any]) -> None:
        app = {s["name"]: s for s in status["containerStatuses"]}["app"]
        assert app["restartCount"] == before["app"].get("restartCount", 0) + 1
        last = app["lastState"]["terminated"]
        assert last["reason"] == "OOMKilled"
        assert last["exitCode"] == 137
        assert last["finishedAt"] == at.strftime("%Y-%m-%dT%H:%M:%SZ")
        assert "running" in app["state"]
        sidecar = {s["name"]: s for s in status["initContainerStatuses"]}["sidecar"]
        assert sidecar["restartCount"] == sidecar_before.get("restartCount", 0) + 1
        assert sidecar["lastState"]["terminated"]["reason"] == "OOMKilled"
        assert "running" in sidecar["state"]

    check(raw(core.read_namespaced_pod, name, namespace)["status"])
    time.sleep(5)  # kwok must not put the old status back
    check(raw(core.read_namespaced_pod, name, namespace)["status"])

    # On a node name no pod runs on: a SystemOOM on a real lab node would make every test's kill on
    # that node within the operator's window a Node kill (the lab and its events outlive this run).
    node = f"smoke-{namespace}"
    event = inject.system_oom(core, node=node, victim_pid=1234, process_name="memhog")
    events = raw(
        core.list_namespaced_event,
        "default",
        field_selector=f"involvedObject.kind=Node,involvedObject.name={node},reason=SystemOOM",
    )["items"]
    found = [e for e in events if e["metadata"]["name"] == event["metadata"]["name"]]
    assert found, events
    assert found[0]["type"] == "Warning"
    assert found[0]["source"] == {"component": "kubelet", "host": node}
    assert found[0]["message"] == "System OOM encountered, victim process: memhog, pid: 1234"
