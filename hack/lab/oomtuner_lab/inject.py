"""Producing OOM kills the way a kubelet reports them, for the lab (or any test cluster).

kwok plays the kubelet but never OOM-kills anything. These functions write what a kubelet
would write:

- `oom_kill`: the container status after the kubelet restarted an OOM-killed container
  (pods/status subresource). Once kwok has made a pod Running (its `pod-ready` stage only
  matches pods without a podIP), no default kwok stage matches the pod again, so kwok leaves
  this status alone.
- `system_oom`: the `SystemOOM` Warning event the kubelet posts on its Node when the kernel
  OOM-kills a process in the root cgroup.
"""

from __future__ import annotations

import json
import secrets
from datetime import UTC, datetime
from typing import Any, Literal

ContainerKind = Literal["container", "init", "ephemeral"]

_STATUS_FIELD: dict[str, str] = {
    "container": "containerStatuses",
    "init": "initContainerStatuses",
    "ephemeral": "ephemeralContainerStatuses",
}
_LABEL: dict[str, str] = {"container": "container", "init": "init container", "ephemeral": "ephemeral container"}
_SPEC_FIELD: dict[str, str] = {
    "container": "containers",
    "init": "initContainers",
    "ephemeral": "ephemeralContainers",
}


def _ts(t: datetime) -> str:
    """RFC 3339 in UTC with second precision, as metav1.Time serializes."""
    if t.tzinfo is None:
        t = t.replace(tzinfo=UTC)
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _container_id(old: str | None) -> str:
    runtime = old.split("://", 1)[0] if old and "://" in old else "containerd"
    return f"{runtime}://{secrets.token_hex(32)}"


def _raw(call: Any, *args: Any, **kwargs: Any) -> dict[str, Any]:
    resp = call(*args, _preload_content=False, **kwargs)
    return json.loads(resp.data)


def oom_kill(
    core_v1: Any,
    *,
    namespace: str,
    pod: str,
    container: str,
    container_kind: ContainerKind = "container",
    at: datetime | None = None,
    exit_code: int = 137,
    reason: str = "OOMKilled",
) -> dict[str, Any]:
    """Record an OOM kill of one container in the pod's status; return its new status.

    - Regular containers and sidecars (init containers with `restartPolicy: Always`): the
      kubelet restarted it, so `state.running` (startedAt = now), `restartCount + 1`, and
      `lastState.terminated` = {reason, exitCode, startedAt, finishedAt=at, containerID}.
    - Classic init containers: the same, except that the new state is `terminated` with
      reason `Completed` (the retry succeeded, since the pod is past its init phase).
    - Ephemeral containers are never restarted: `state.terminated` is the OOM kill and
      `restartCount` stays.

    The patch carries the pod's resourceVersion, so a concurrent writer makes it fail with 409
    rather than lose an update; it is retried a few times.
    """
    return oom_kill_containers(
        core_v1, namespace=namespace, pod=pod, containers=[container], container_kind=container_kind,
        at=at, exit_code=exit_code, reason=reason,
    )[0]


def oom_kill_containers(
    core_v1: Any,
    *,
    namespace: str,
    pod: str,
    containers: list[str],
    container_kind: ContainerKind = "container",
    at: datetime | None = None,
    exit_code: int = 137,
    reason: str = "OOMKilled",
) -> list[dict[str, Any]]:
    """`oom_kill` of several containers of one pod in one status write, as the kubelet reports a
    pod whose containers died together; returns their new statuses, in the order given."""
    if container_kind not in _STATUS_FIELD:
        raise ValueError(f"container_kind must be one of {sorted(_STATUS_FIELD)}")
    finished = at or datetime.now(UTC)
    for attempt in range(5):
        obj = _raw(core_v1.read_namespaced_pod_status, pod, namespace)
        status_field = _STATUS_FIELD[container_kind]
        statuses: list[dict[str, Any]] = list(obj.get("status", {}).get(status_field) or [])
        written = []
        for container in containers:
            index = next((i for i, s in enumerate(statuses) if s.get("name") == container), None)
            spec = next(
                (c for c in obj["spec"].get(_SPEC_FIELD[container_kind]) or [] if c["name"] == container),
                None,
            )
            if spec is None:
                raise ValueError(f"pod {namespace}/{pod} has no {_LABEL[container_kind]} {container!r}")
            if index is None:
                if container_kind != "ephemeral":
                    raise ValueError(
                        f"pod {namespace}/{pod} has no status for {_LABEL[container_kind]} {container!r} "
                        f"(is it Running yet?)"
                    )
                statuses.append({"name": container, "image": spec.get("image", ""), "restartCount": 0})
                index = len(statuses) - 1
            new = _killed(statuses[index], container_kind, spec, finished, exit_code, reason)
            statuses[index] = new
            written.append(new)
        patch = {
            "metadata": {"resourceVersion": obj["metadata"]["resourceVersion"]},
            "status": {status_field: statuses},
        }
        try:
            _raw(
                core_v1.patch_namespaced_pod_status,
                pod,
                namespace,
                patch,
                _content_type="application/merge-patch+json",
            )
        except Exception as exc:
            if getattr(exc, "status", None) == 409 and attempt < 4:
                continue
            raise
        return written
    raise AssertionError("unreachable")


def _killed(
    old: dict[str, Any],
    kind: str,
    spec: dict[str, Any],
    finished: datetime,
    exit_code: int,
    reason: str,
) -> dict[str, Any]:
    now = datetime.now(UTC)
    state = old.get("state") or {}
    started = (state.get("running") or {}).get("startedAt") or _ts(finished)
    old_id = old.get("containerID") or _container_id(None)
    terminated = {
        "exitCode": exit_code,
        "reason": reason,
        "startedAt": started,
        "finishedAt": _ts(finished),
        "containerID": old_id,
    }
    new = dict(old)
    # A container that already terminated (an ephemeral container, or a Job's pod that kwok has
    # completed) is not restarted: the kubelet reports the kill as its final state.
    if kind == "ephemeral" or (state.get("terminated") and kind == "container"):
        new["state"] = {"terminated": terminated}
        new["ready"] = False
        new["started"] = False
        new["containerID"] = old_id
        return new
    new_id = _container_id(old_id)
    new["restartCount"] = int(old.get("restartCount") or 0) + 1
    new["lastState"] = {"terminated": terminated}
    new["containerID"] = new_id
    if kind == "init" and spec.get("restartPolicy") != "Always":
        new["state"] = {
            "terminated": {
                "exitCode": 0,
                "reason": "Completed",
                "startedAt": _ts(now),
                "finishedAt": _ts(now),
                "containerID": new_id,
            }
        }
        new["ready"] = True
        new["started"] = False
    else:
        new["state"] = {"running": {"startedAt": _ts(now)}}
        new["ready"] = True
        new["started"] = True
    return new


def system_oom(
    core_v1: Any,
    *,
    node: str,
    victim_pid: int = 4242,
    process_name: str = "stress",
    at: datetime | None = None,
) -> dict[str, Any]:
    """Post the Warning event a kubelet posts on a node-wide OOM (pkg/kubelet/oom); return it.

    Like the kubelet's recorder: the event lives in `default`, its involvedObject is the Node
    with UID = node name, source {component: kubelet, host: node}.
    """
    when = _ts(at or datetime.now(UTC))
    message = "System OOM encountered"
    if process_name and victim_pid:
        message += f", victim process: {process_name}, pid: {victim_pid}"
    name = f"{node}.{int(datetime.now(UTC).timestamp() * 1e9):x}"
    body = {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": name, "namespace": "default"},
        "involvedObject": {"kind": "Node", "name": node, "uid": node},
        "reason": "SystemOOM",
        "message": message,
        "type": "Warning",
        "source": {"component": "kubelet", "host": node},
        "firstTimestamp": when,
        "lastTimestamp": when,
        "count": 1,
        "reportingComponent": "kubelet",
        "reportingInstance": node,
    }
    return _raw(core_v1.create_namespaced_event, "default", body)
