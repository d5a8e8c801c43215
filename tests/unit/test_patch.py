"""The server-side apply bodies for each workload kind, and the in-place resize body. Pure."""

from __future__ import annotations

import pytest
import yaml

from oomtuner.api import kinds, types
from oomtuner.domain import patch

MI = 1024 * 1024


def _changes() -> list[patch.MemoryChange]:
    return [
        patch.MemoryChange(container="app", type=types.ContainerType.CONTAINER, request=256 * MI, limit=512 * MI),
        patch.MemoryChange(container="init", type=types.ContainerType.INIT, request=None, limit=128 * MI),
        patch.MemoryChange(container="proxy", type=types.ContainerType.SIDECAR, request=64 * MI, limit=None),
    ]


@pytest.mark.parametrize(
    ("kind", "path"),
    [("Deployment", ["spec", "template", "spec"]), ("StatefulSet", ["spec", "template", "spec"]),
     ("DaemonSet", ["spec", "template", "spec"]), ("CronJob", ["spec", "jobTemplate", "spec", "template", "spec"])],
)
def test_apply_body_puts_memory_in_the_template(kind: str, path: list[str]) -> None:
    body = patch.apply_body(api_version="apps/v1", kind=kind, name="w", namespace="ns", changes=_changes())
    assert body["metadata"] == {"name": "w", "namespace": "ns"}
    node = body
    for key in path:
        node = node[key]
    assert node["containers"] == [{"name": "app", "resources": {"requests": {"memory": "256Mi"}, "limits": {"memory": "512Mi"}}}]
    assert node["initContainers"] == [
        {"name": "init", "resources": {"limits": {"memory": "128Mi"}}},
        {"name": "proxy", "resources": {"requests": {"memory": "64Mi"}}},
    ]
    assert yaml.safe_load(patch.to_yaml(body)) == body


def test_kinds_without_a_template_are_refused() -> None:
    with pytest.raises(KeyError):
        patch.apply_body(api_version="v1", kind="Pod", name="p", namespace="ns", changes=_changes())
    assert not kinds.patchable("Job") and not kinds.patchable("Pod")


def test_resize_body_only_regular_containers() -> None:
    assert patch.resize_body(_changes()) == {
        "spec": {"containers": [{"name": "app", "resources": {"requests": {"memory": "256Mi"}, "limits": {"memory": "512Mi"}}}]}
    }
