"""Helpers for e2e tests: workload bodies, waiting, and reading what the operator wrote."""

from __future__ import annotations

import datetime
import os
import time
from typing import Any, Callable

import pytest

from oomtuner.kube import api

# kwok ignores the image; on kind the kubelet pulls it, so it must be a real, tiny one.
IMAGE = os.environ.get("OOMTUNER_E2E_IMAGE", "registry.k8s.io/pause:3.10")


def wait_for(predicate: Callable[[], Any], *, timeout: float = 30, interval: float = 0.2, what: str = "condition") -> Any:
    """Poll until predicate() returns something truthy; return it. Fails the test on timeout."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except api.ApiError as exc:
            last_error = exc
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout:g}s waiting for {what}" + (f" (last error: {last_error})" if last_error else ""))


# ---- workload helpers -----------------------------------------------------------------------------


def container(name: str = "app", *, request: str | None = "128Mi", limit: str | None = "256Mi") -> dict[str, Any]:
    resources: dict[str, Any] = {}
    if request:
        resources["requests"] = {"memory": request, "cpu": "50m"}
    if limit:
        resources["limits"] = {"memory": limit}
    return {"name": name, "image": IMAGE, "resources": resources}


def pod_template(labels: dict[str, str], containers: list[dict[str, Any]], *, init: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"containers": containers}
    if init:
        spec["initContainers"] = init
    return {"metadata": {"labels": labels}, "spec": spec}


def deployment(name: str, *, containers: list[dict[str, Any]] | None = None, replicas: int = 1,
               init: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "labels": labels},
        "spec": {"replicas": replicas, "selector": {"matchLabels": labels},
                 "template": pod_template(labels, containers or [container()], init=init)},
    }


def running_pods(kube: api.Client, namespace: str, app: str, *, count: int = 1, timeout: float = 60) -> list[dict[str, Any]]:
    """Wait for `count` Running pods with label app=<app>; return them."""
    def ready() -> list[dict[str, Any]] | None:
        pods = kube.list(f"/api/v1/namespaces/{namespace}/pods", query={"labelSelector": f"app={app}"})
        running = [p for p in pods if (p.get("status") or {}).get("phase") == "Running"
                   and not (p.get("metadata") or {}).get("deletionTimestamp")
                   and (p.get("status") or {}).get("containerStatuses")]
        return running if len(running) >= count else None

    return wait_for(ready, timeout=timeout, what=f"{count} Running pod(s) app={app} in {namespace}")


def recommendation(kube: api.Client, namespace: str, name: str) -> dict[str, Any] | None:
    return kube.get_or_none(f"/apis/oomtuner.dev/v1alpha1/namespaces/{namespace}/oomrecommendations/{name}")


def wait_recommendation(kube: api.Client, namespace: str, name: str, predicate: Callable[[dict[str, Any]], bool],
                        *, timeout: float = 30, what: str = "") -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        rec = recommendation(kube, namespace, name)
        return rec if rec is not None and predicate(rec) else None

    return wait_for(check, timeout=timeout, what=what or f"OOMRecommendation {namespace}/{name}")


def events_for(kube: api.Client, namespace: str, *, reason: str, name: str | None = None) -> list[dict[str, Any]]:
    found = kube.list(f"/api/v1/namespaces/{namespace}/events")
    return [e for e in found if e.get("reason") == reason
            and (name is None or (e.get("involvedObject") or {}).get("name") == name)]


def utc(seconds_ago: float = 0) -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0) - datetime.timedelta(seconds=seconds_ago)


KWOK_ANNOTATION = "kwok.x-k8s.io/node"


def dedicated_node(kube: api.Client, name: str, *, memory: str = "16Gi") -> str | None:
    """A node of the test's own, so a node-wide OOM posted on it cannot touch other tests' kills.

    On the lab it is a new kwok node (kwok manages every Node carrying its annotation); it carries a
    taint that only the test's pods tolerate. Returns None where nodes cannot be made up (kind):
    the caller then shares a real node.
    """
    nodes = kube.list("/api/v1/nodes")
    if not any((n["metadata"].get("annotations") or {}).get(KWOK_ANNOTATION) == "fake" for n in nodes):
        return None
    kube.create("/api/v1/nodes", {
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "annotations": {KWOK_ANNOTATION: "fake"},
                     "labels": {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux", "type": "kwok",
                                "oomtuner.dev/e2e": name}},
        "spec": {"taints": [{"key": "oomtuner.dev/e2e", "value": name, "effect": "NoSchedule"}]},
        "status": {"capacity": {"cpu": "4", "memory": memory, "pods": "110"},
                   "allocatable": {"cpu": "4", "memory": memory, "pods": "110"}},
    })

    def ready() -> bool:
        body = kube.get(f"/api/v1/nodes/{name}")
        return any(c.get("type") == "Ready" and c.get("status") == "True"
                   for c in (body.get("status") or {}).get("conditions") or [])

    wait_for(ready, timeout=30, what=f"node {name} Ready")
    return name


def on_node(template: dict[str, Any], node: str | None) -> dict[str, Any]:
    """Pin a pod template to the dedicated node (a no-op without one)."""
    if node is not None:
        spec = template["spec"]["template"]["spec"]
        spec["nodeSelector"] = {"oomtuner.dev/e2e": node}
        spec["tolerations"] = [{"key": "oomtuner.dev/e2e", "operator": "Equal", "value": node, "effect": "NoSchedule"}]
    return template
