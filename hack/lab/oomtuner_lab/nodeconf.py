"""The real node's names, files and configuration, all derived from the lab directory.

`Layout` names what the node puts on the host (its cgroup root `/oomtuner-lab-<id>` in every
hierarchy, the bridge `olab<id>`, the CNI network, a /24 of 10.88.0.0/16) and where its files go
(`<lab>/realnode`), so two labs on one machine never touch each other's. The builders write
containerd's, the CNI plugins' and the kubelet's configuration. `state.json` keeps what `stop`
needs to undo (the subnet, what existed on the host before the node started) and why the node does
not run, for `lab status`. Nothing here touches the host.
"""

from __future__ import annotations

import dataclasses
import hashlib
import ipaddress
import json
import shutil
from pathlib import Path
from typing import Any

from oomtuner_lab import binaries
from oomtuner_lab.config import Paths, Ports
from oomtuner_lab.processes import LabError

NODE_NAME = "lab-node-real"
TAINT = {"key": "oomtuner.dev/real-node", "value": "true", "effect": "NoSchedule"}
LABELS = {"type": "real", "oomtuner.dev/lab-node": "real"}
#: What a pod spec needs to run there.
TOLERATION = {"key": TAINT["key"], "operator": "Equal", "value": TAINT["value"], "effect": TAINT["effect"]}

MEMHOG_IMAGE = "lab.oomtuner.dev/memhog:v1"
PAUSE_IMAGE = "lab.oomtuner.dev/pause:3.10"

MIB = 1 << 20
#: The memory limit of the lab's cgroup root: everything the node runs (containers, shims,
#: containerd, the kubelet) shares it.
LAB_MEMORY = 2048 * MIB
#: What the kubelet offers pods (allocatable, and the limit of its `kubepods` cgroup).
POD_MEMORY = 1536 * MIB

NAMESPACE = "k8s.io"  # containerd's namespace for the CRI
SUBNET_BASE = ipaddress.ip_network("10.88.0.0/16")  # one /24 of it per lab


@dataclasses.dataclass(frozen=True)
class Layout:
    """The real node's files and host names, all derived from the lab directory."""

    lab: Paths

    @property
    def ident(self) -> str:
        return hashlib.sha256(str(self.lab.root.resolve()).encode()).hexdigest()[:8]

    @property
    def root(self) -> Path:
        return self.lab.root / "realnode"

    @property
    def state_file(self) -> Path:
        return self.root / "state.json"

    @property
    def containerd_root(self) -> Path:
        return self.root / "containerd" / "root"

    @property
    def containerd_state(self) -> Path:
        return self.root / "containerd" / "state"

    @property
    def containerd_config(self) -> Path:
        return self.root / "containerd" / "config.toml"

    @property
    def socket(self) -> Path:
        # A unix socket path is at most 107 bytes: keep it short-ish and under the lab.
        return self.root / "containerd.sock"

    @property
    def runc_root(self) -> Path:
        return self.root / "runc"

    @property
    def kubelet_dir(self) -> Path:
        return self.root / "kubelet"

    @property
    def kubelet_config(self) -> Path:
        return self.root / "kubelet-config.yaml"

    @property
    def pod_logs(self) -> Path:
        return self.root / "pod-logs"

    @property
    def cni_conf_dir(self) -> Path:
        return self.root / "cni" / "net.d"

    @property
    def cni_ipam_dir(self) -> Path:
        return self.root / "cni" / "ipam"

    @property
    def cgroup_name(self) -> str:
        return f"oomtuner-lab-{self.ident}"

    @property
    def bridge(self) -> str:
        return f"olab{self.ident}"  # 12 characters: an interface name has at most 15

    @property
    def network(self) -> str:
        return f"oomtuner-lab-{self.ident}"

    def subnet(self, taken: list[ipaddress.IPv4Network]) -> ipaddress.IPv4Network:
        """This lab's /24 of 10.88.0.0/16: the one it had last time, unless `taken` (the networks
        the host routes, with the node's own bridge down) has it now; else the first free one from
        a place its directory picks."""
        all_24 = list(SUBNET_BASE.subnets(new_prefix=24))
        first = int(self.ident, 16) % len(all_24)
        saved = read_state(self).get("subnet")
        candidates = [ipaddress.ip_network(saved)] if saved else []
        candidates += [all_24[(first + step) % len(all_24)] for step in range(len(all_24))]
        for candidate in candidates:
            if not any(candidate.overlaps(net) for net in taken):
                return candidate
        raise LabError(f"no free /24 in {SUBNET_BASE} for the real node's pods")


def read_state(layout: Layout) -> dict[str, Any]:
    try:
        return dict(json.loads(layout.state_file.read_text()))
    except (FileNotFoundError, ValueError):
        return {}


def write_state(layout: Layout, **values: Any) -> None:
    layout.root.mkdir(parents=True, exist_ok=True)
    layout.state_file.write_text(json.dumps({**read_state(layout), **values}, indent=2) + "\n")


def containerd_config(layout: Layout) -> str:
    """containerd's config: everything under the lab, the CRI as the kubelet needs it here."""
    cri = 'plugins."io.containerd.grpc.v1.cri"'
    return f"""\
version = 2
root = "{layout.containerd_root}"
state = "{layout.containerd_state}"
disabled_plugins = [
  "io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs",
  "io.containerd.internal.v1.tracing",
  "io.containerd.tracing.processor.v1.otlp",
]

[grpc]
  address = "{layout.socket}"

[ttrpc]
  address = "{layout.socket}.ttrpc"

[plugins]
  [plugins."io.containerd.internal.v1.opt"]
    path = "{layout.root / 'containerd' / 'opt'}"
  [{cri}]
    sandbox_image = "{PAUSE_IMAGE}"
    # Without CAP_SYS_RESOURCE the kubelet's negative values (-998 sandboxes, -997 Guaranteed)
    # cannot be written; this keeps them at containerd's own value instead of failing.
    restrict_oom_score_adj = true
    netns_mounts_under_state_dir = true
    disable_apparmor = true
    stream_server_address = "127.0.0.1"
    stream_server_port = "0"
    [{cri}.containerd]
      snapshotter = "overlayfs"
      default_runtime_name = "runc"
      [{cri}.containerd.runtimes.runc]
        runtime_type = "io.containerd.runc.v2"
        [{cri}.containerd.runtimes.runc.options]
          BinaryName = "{shutil.which('runc') or 'runc'}"
          Root = "{layout.runc_root}"
          SystemdCgroup = false
    [{cri}.cni]
      bin_dir = "{binaries.cni_bin_dir()}"
      conf_dir = "{layout.cni_conf_dir}"
      max_conf_num = 1
"""


def cni_config(layout: Layout, subnet: ipaddress.IPv4Network) -> dict[str, Any]:
    """A bridge on the lab's own /24. The lab gives the bridge its first address itself, so the
    plugin need not be the gateway (which would turn on IP forwarding for the whole host) and
    no masquerading is set up: pods reach the host and each other, nothing beyond."""
    return {
        "cniVersion": "1.0.0",
        "name": layout.network,
        "plugins": [
            {
                "type": "bridge",
                "bridge": layout.bridge,
                "isGateway": False,
                "ipMasq": False,
                "hairpinMode": True,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": str(subnet), "rangeStart": str(subnet[10])}]],
                    "dataDir": str(layout.cni_ipam_dir),
                },
            },
            {"type": "portmap", "capabilities": {"portMappings": True}},
        ],
    }


def kubelet_config(layout: Layout, ports: Ports, *, node_ip: str, ca: Path) -> dict[str, Any]:
    total = _mem_total()
    reserved = max(total - POD_MEMORY, 0)
    return {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "address": node_ip,
        "port": ports.kubelet,
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": ports.kubelet_healthz,
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": True},
            "x509": {"clientCAFile": str(ca)},
        },
        "authorization": {"mode": "Webhook"},
        "containerRuntimeEndpoint": f"unix://{layout.socket}",
        "imageServiceEndpoint": f"unix://{layout.socket}",
        "cgroupDriver": "cgroupfs",
        "cgroupRoot": f"/{layout.cgroup_name}",
        "cgroupsPerQOS": True,
        "failCgroupV1": False,
        "failSwapOn": False,
        # No iptables chains of the kubelet's own on the host (KUBE-FIREWALL and its canaries).
        "makeIPTablesUtilChains": False,
        "podLogsDir": str(layout.pod_logs),
        # Pods get POD_MEMORY; the rest of the machine is "reserved", so the kubepods cgroup has
        # that limit and the scheduler never places more there.
        "systemReserved": {"memory": f"{reserved // MIB}Mi"},
        "enforceNodeAllocatable": ["pods"],
        "evictionHard": {
            "memory.available": "50Mi",
            "nodefs.available": "1%",
            "nodefs.inodesFree": "1%",
            "imagefs.available": "1%",
            "imagefs.inodesFree": "1%",
        },
        # The lab's images cannot be pulled again: never collect them.
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "registerWithTaints": [TAINT],
        # A crash-looping container is restarted within 5 s instead of up to 5 minutes.
        "crashLoopBackOff": {"maxContainerRestartPeriod": "5s"},
        # The kernel kills the process, not the whole container (cgroup v2's default since 1.32 is
        # memory.oom.group; v1 has only this): a child's kill leaves the container running.
        "singleProcessOOMKill": True,
        "serializeImagePulls": False,
        "shutdownGracePeriod": "0s",
        "maxPods": 50,
        "resolvConf": "/etc/resolv.conf",
    }


def _mem_total() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) * 1024
    raise LabError("MemTotal not found in /proc/meminfo")
