"""The lab's real node: its configuration, and what `lab up` does where the host cannot run it.

Real: the config builders and the state file in a temporary lab directory. Faked: the host checks
(`unavailable`) and the API server (a recorder of Node deletions). tests/realnode runs the node.
"""

from __future__ import annotations

import pathlib
import tomllib
from typing import Any

import pytest

from oomtuner_lab import nodeconf, realnode
from oomtuner_lab.config import Paths, Ports


def _layout(tmp_path: pathlib.Path, name: str = "lab") -> nodeconf.Layout:
    return nodeconf.Layout(Paths(root=tmp_path / name))


def test_every_host_name_comes_from_the_lab_directory(tmp_path: pathlib.Path) -> None:
    one, other = _layout(tmp_path, "one"), _layout(tmp_path, "other")
    assert one.ident != other.ident
    assert len(one.bridge) <= 15, "a Linux interface name has at most 15 characters"
    assert one.cgroup_name == f"oomtuner-lab-{one.ident}" and one.network == f"oomtuner-lab-{one.ident}"
    assert one.socket.is_relative_to(one.lab.root) and one.kubelet_dir.is_relative_to(one.lab.root)


def test_the_bridge_leaves_forwarding_and_masquerading_of_the_host_alone(tmp_path: pathlib.Path) -> None:
    layout = _layout(tmp_path)
    subnet = nodeconf.SUBNET_BASE.subnets(new_prefix=24).__next__()
    config = nodeconf.cni_config(layout, subnet)
    bridge, portmap = config["plugins"]
    assert bridge["bridge"] == layout.bridge and config["name"] == layout.network
    assert bridge["isGateway"] is False and bridge["ipMasq"] is False
    assert bridge["ipam"]["ranges"] == [[{"subnet": str(subnet), "rangeStart": str(subnet[10])}]]
    assert pathlib.Path(bridge["ipam"]["dataDir"]).is_relative_to(layout.lab.root)
    assert portmap == {"type": "portmap", "capabilities": {"portMappings": True}}


def test_the_kubelet_offers_pods_only_the_lab_share_of_the_memory(tmp_path: pathlib.Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    layout = _layout(tmp_path)
    monkeypatch.setattr(nodeconf, "_mem_total", lambda: 24 * 1024 * nodeconf.MIB)
    config = nodeconf.kubelet_config(layout, Ports(kubelet=10250, kubelet_healthz=10248), node_ip="192.0.2.2",
                                     ca=tmp_path / "ca.crt")
    assert config["systemReserved"] == {"memory": f"{24 * 1024 - 1536}Mi"}
    assert config["enforceNodeAllocatable"] == ["pods"] and nodeconf.POD_MEMORY < nodeconf.LAB_MEMORY
    assert config["cgroupRoot"] == f"/{layout.cgroup_name}" and config["cgroupDriver"] == "cgroupfs"
    assert config["failCgroupV1"] is False and config["failSwapOn"] is False
    assert config["makeIPTablesUtilChains"] is False
    assert config["registerWithTaints"] == [nodeconf.TAINT]
    assert config["containerRuntimeEndpoint"] == f"unix://{layout.socket}"
    assert (config["address"], config["port"], config["readOnlyPort"]) == ("192.0.2.2", 10250, 0)


def test_containerd_keeps_everything_under_the_lab_and_clamps_negative_oom_score_adj(tmp_path: pathlib.Path) -> None:
    layout = _layout(tmp_path)
    config = tomllib.loads(nodeconf.containerd_config(layout))
    assert (config["root"], config["state"]) == (str(layout.containerd_root), str(layout.containerd_state))
    assert config["grpc"]["address"] == str(layout.socket)
    cri = config["plugins"]["io.containerd.grpc.v1.cri"]
    assert cri["restrict_oom_score_adj"] is True and cri["netns_mounts_under_state_dir"] is True
    assert cri["sandbox_image"] == nodeconf.PAUSE_IMAGE
    assert cri["cni"]["conf_dir"] == str(layout.cni_conf_dir)
    options = cri["containerd"]["runtimes"]["runc"]["options"]
    assert options["Root"] == str(layout.runc_root) and options["SystemdCgroup"] is False


class _Api:
    def __init__(self) -> None:
        self.deleted: list[str] = []

    def delete_node(self, name: str) -> None:
        self.deleted.append(name)


def test_a_host_that_cannot_run_it_gets_one_line_and_kwok_nodes_only(tmp_path: pathlib.Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    paths = Paths(root=tmp_path / "lab")
    monkeypatch.setattr(realnode, "unavailable", lambda: "not root (the kubelet and containerd need root)")
    said: list[str] = []
    api: Any = _Api()

    assert realnode.start(paths, Ports(), api, echo=said.append) is False
    assert said == [f"  real node {nodeconf.NODE_NAME}: not started, not root (the kubelet and containerd need "
                    "root); the lab runs kwok nodes only"]
    assert api.deleted == [nodeconf.NODE_NAME], "a Node left by an earlier run goes"
    status = realnode.status(paths)
    assert not status.running
    assert status.line() == (f"real node {nodeconf.NODE_NAME}: not running (not available: not root (the kubelet "
                             "and containerd need root)); kwok nodes only")
