"""`oomtuner lab up` and `oomtuner lab down` with the real node, in a lab of the test's own.

Real: a second lab beside the session's (its own control plane, containerd, kubelet, cgroups,
bridge and subnet), started and stopped with the CLI as a user does, with a running container, a
container the kernel killed, and a hostPort (portmap's iptables rules) on its real node. After
`lab down` nothing of it is left on the host, and the session's lab still runs.
"""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from typing import Any

import pytest

from oomtuner.kube import api, client
from oomtuner_lab import cluster, host, nodeconf, nodehost, realnode
from oomtuner_lab.config import Paths
from tests.e2e import kit
from tests.realnode import scenarios

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

ROOT = pathlib.Path(__file__).resolve().parents[2]


@pytest.fixture
def own_lab() -> Iterator[pathlib.Path]:
    if os.environ.get("KUBECONFIG"):
        pytest.skip("tests the local lab's real node; KUBECONFIG points at another cluster")
    reason = realnode.unavailable()
    if reason is not None:
        pytest.skip(f"this host cannot run the lab's real node: {reason}")
    # Short: containerd's socket path (under the lab) must fit in 107 bytes.
    root = pathlib.Path(tempfile.mkdtemp(prefix="oomtuner-lab-", dir="/tmp"))
    yield root
    _lab(root, "down", check=False)
    shutil.rmtree(root, ignore_errors=True)


def _lab(root: pathlib.Path, *args: str, check: bool = True) -> str:
    done = subprocess.run([sys.executable, "-m", "oomtuner", "lab", *args], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "OOMTUNER_LAB_DIR": str(root)}, timeout=240)
    if check and done.returncode != 0:
        pytest.fail(f"oomtuner lab {' '.join(args)} exited {done.returncode}:\n{done.stdout}\n{done.stderr}")
    return done.stdout + done.stderr


def _pod(name: str, container: dict[str, Any]) -> dict[str, Any]:
    node = scenarios.RealNode(nodeconf.NODE_NAME, (nodeconf.TOLERATION,), None)
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
            "spec": node.pin({"containers": [container]})}


def test_lab_down_leaves_nothing_of_the_real_node_on_the_host(real_node: scenarios.RealNode, own_lab: pathlib.Path) -> None:
    up = _lab(own_lab, "up", "--no-build", "--no-self-check")
    assert f"real node {nodeconf.NODE_NAME}" in up and "Ready in" in up, up
    assert f"real node {nodeconf.NODE_NAME}: running" in _lab(own_lab, "status")
    layout = nodeconf.Layout(Paths(root=own_lab))

    kube: api.Client = client.connect(kubeconfig=str(own_lab / "kubeconfig"))
    pods = "/api/v1/namespaces/default/pods"
    kube.create(pods, _pod("holder", scenarios.memhog("--allocate", "16Mi")))
    kube.create(pods, _pod("killed", scenarios.memhog("--allocate", "96Mi", "--rate", "64Mi/s")))
    kube.create(pods, _pod("hostport", {**scenarios.memhog(), "ports": [{"containerPort": 8080, "hostPort": 18080}]}))

    def settled() -> bool:
        by_name = {p["metadata"]["name"]: scenarios.container_status(p) for p in kube.list(pods)}
        return ("running" in (by_name.get("holder", {}).get("state") or {})
                and "running" in (by_name.get("hostport", {}).get("state") or {})
                and (by_name.get("killed", {}).get("restartCount") or 0) >= 1)

    kit.wait_for(settled, timeout=90, what="two running containers and one the kernel killed")
    sandboxes = nodehost.sandbox_ids(layout)
    assert len(sandboxes) == 3
    before = nodehost.leftovers(layout, sandboxes=sandboxes)
    for what in ("processes", "cgroup", "mount", "bridge", "iptables", "CNI cache", "shim socket", "log link"):
        assert any(line.startswith(what) for line in before), f"nothing like {what!r} while it runs: {before}"

    down = _lab(own_lab, "down")
    assert "stopped kubelet" in down and "stopped containerd" in down, down
    assert nodehost.leftovers(layout, sandboxes=sandboxes) == []
    assert [p.name for p in layout.root.iterdir()] == ["state.json"]
    processes = [p for p in pathlib.Path("/proc").iterdir() if p.name.isdigit()
                 and str(own_lab) in host.read_cmdline(int(p.name))]
    assert processes == []
    assert f"real node {nodeconf.NODE_NAME}: not running" in _lab(own_lab, "status", check=False)

    # The session's lab, with a real node of its own, was not touched.
    time.sleep(1)
    assert cluster.status().real_node.running
