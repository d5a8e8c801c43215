"""The lab's real node: a real kubelet, containerd and runc beside the kwok nodes.

kwok plays the kubelet on the other nodes and writes whatever status a test asks for; here the
kernel OOM-kills real processes and a real kubelet reports it. The parts:

- containerd (Debian's 1.6) and runc, with containerd's root, state, socket, runc root and the
  network namespaces' mounts all under `<lab>/realnode`;
- the CNI plugins bridge, host-local, loopback and portmap, built from
  github.com/containernetworking/plugins (`build.sh cni`), on a bridge and subnet of the lab's own;
- the images `lab.oomtuner.dev/pause:3.10` (the sandbox) and `lab.oomtuner.dev/memhog:v1` built by
  `build.sh images` as OCI archives and imported into containerd's `k8s.io` namespace at start (no
  registry is reachable);
- the kubelet built from the lab's k8s.io/kubernetes module, registering `lab-node-real` with a
  `NoSchedule` taint so only pods that ask for it run there, with the cgroupfs driver under a
  cgroup root of the lab's own (`/oomtuner-lab-<id>` in every hierarchy).

Everything the node does to the host is named after the lab directory (`<id>`), so two labs on one
machine never touch each other's containers, cgroups, bridge or rules.

Safety on a shared machine: the lab's cgroup root has a memory limit (`LAB_MEMORY`) and the kubelet
offers pods less than that (`POD_MEMORY`, the rest is reserved), so no pod can ever run the host
out of memory: a kill happens inside the lab's cgroups. Containers get the `oom_score_adj` the
kubelet asks for, except that containerd's `restrict_oom_score_adj` keeps it at or above its own
(where CAP_SYS_RESOURCE is missing, the kubelet's -998 for sandboxes and -997 for Guaranteed pods
could not be written at all); Burstable and BestEffort values are written unchanged.

`stop` takes it all down and leaves nothing behind: every process in the lab's cgroups, their
mounts, network namespaces, the bridge, the CNI plugins' iptables rules and cache files, the
cgroups and the state directories. It also cleans what a crashed run left, so `start` calls it
first. Names and configuration are in `nodeconf`, what the node does to the host and its undoing
in `nodehost`; this module starts, stops and reports.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from oomtuner_lab import binaries, nodeconf, nodehost, processes
from oomtuner_lab.config import Paths, Ports
from oomtuner_lab.processes import LabError

Echo = Callable[[str], None]

#: The host programs the node runs (Debian packages containerd, runc, iptables, iproute2).
HOST_PROGRAMS = ("containerd", "containerd-shim-runc-v2", "runc", "ctr", "ip", "iptables", "iptables-save")
CGROUP_MOUNT = Path("/sys/fs/cgroup")


def unavailable() -> str | None:
    """Why this host cannot run the real node, in a few words; None when it can."""
    if os.geteuid() != 0:
        return "not root (the kubelet and containerd need root)"
    memory = nodehost.memory_hierarchy()
    if memory is None:
        return f"no memory cgroup mounted under {CGROUP_MOUNT}"
    probe = memory.mount / f"oomtuner-lab-probe-{os.getpid()}"
    try:
        probe.mkdir()
        probe.rmdir()
    except OSError as exc:
        return f"the memory cgroup {memory.mount} is not writable ({exc.strerror})"
    missing = [p for p in HOST_PROGRAMS if shutil.which(p) is None]
    if missing:
        return f"{', '.join(missing)} not installed (hack/install-deps.sh installs containerd, runc, iptables)"
    return None


def _in_cgroup(argv: list[str], cgroup: Path) -> list[str]:
    """argv, started by a shell that first moves itself into `cgroup` (so does all it forks)."""
    return ["sh", "-c", 'echo $$ > "$0/cgroup.procs" && exec "$@"', str(cgroup), *argv]


def _ctr(layout: nodeconf.Layout, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return nodehost.run(["ctr", "--address", str(layout.socket), "--namespace", nodeconf.NAMESPACE, *args], timeout=timeout)


def _containerd_ready(layout: nodeconf.Layout) -> bool:
    if not layout.socket.exists():
        return False
    return nodehost.run(["ctr", "--address", str(layout.socket), "version"], check=False, timeout=5).returncode == 0


def node_ready(api: Any) -> bool:
    try:
        node = api.read_node(nodeconf.NODE_NAME)
    except Exception:  # noqa: BLE001 - not registered yet
        return False
    return any(c.type == "Ready" and c.status == "True" for c in node.status.conditions or [])


def turned_off(paths: Paths) -> None:
    """Record that this lab runs without the real node (`lab up --no-real-node`)."""
    nodeconf.write_state(nodeconf.Layout(paths), running=False, reason="turned off: --no-real-node or OOMTUNER_LAB_REAL_NODE=0")


def start(paths: Paths, ports: Ports, api: Any, *, echo: Echo) -> bool:
    """Start the real node unless the host cannot run it; True when it runs and is Ready.

    A host that cannot run it, or a start that fails, is one line on `echo`, the lab goes on
    with kwok nodes only, and the reason is kept for `status`.
    """
    layout = nodeconf.Layout(paths)
    reason = unavailable()
    if reason is None:
        missing = binaries.missing(binaries.REAL_NODE)
        if missing:
            reason = f"{', '.join(missing)} not built (hack/lab/build.sh {' '.join(missing)})"
    if reason is not None:
        nodeconf.write_state(layout, running=False, reason=f"not available: {reason}")
        _delete_node(api)
        echo(f"  real node {nodeconf.NODE_NAME}: not started, {reason}; the lab runs kwok nodes only")
        return False
    t0 = time.monotonic()
    try:
        _start(layout, ports, api, echo=echo)
    except (LabError, OSError, subprocess.SubprocessError) as exc:
        first = str(exc).splitlines()[0]
        nodeconf.write_state(layout, running=False, reason=f"failed to start: {first}")
        echo(f"  real node {nodeconf.NODE_NAME}: failed to start ({first}); logs in {paths.logs}; "
             "the lab runs kwok nodes only")
        try:
            _stop(layout, api=api, echo=lambda _: None)
        except (LabError, OSError) as cleanup:
            echo(f"  real node {nodeconf.NODE_NAME}: cleaning up after the failed start: {cleanup}")
        return False
    nodeconf.write_state(layout, running=True, reason="")
    echo(f"  real node {nodeconf.NODE_NAME:<15} Ready in {time.monotonic() - t0:4.1f}s  "
         f"(kubelet, containerd, cgroup /{layout.cgroup_name}, pods on {nodeconf.read_state(layout)['subnet']})")
    return True


def _start(layout: nodeconf.Layout, ports: Ports, api: Any, *, echo: Echo) -> None:
    paths = layout.lab
    _stop(layout, api=None, echo=echo)  # what a crashed run left
    subnet = layout.subnet(nodehost.routed_networks())
    nodeconf.write_state(layout, subnet=str(subnet))
    nodehost.record_before(layout)
    for d in (layout.containerd_root, layout.containerd_state, layout.kubelet_dir, layout.pod_logs,
              layout.cni_conf_dir, layout.cni_ipam_dir, layout.runc_root):
        d.mkdir(parents=True, exist_ok=True)
    nodehost.make_cgroups(layout)
    runtime = nodehost.runtime_cgroup(layout)
    assert runtime is not None

    nodehost.bridge_up(layout, subnet)
    conflist = nodeconf.cni_config(layout, subnet)
    (layout.cni_conf_dir / "10-lab.conflist").write_text(json.dumps(conflist, indent=2) + "\n")

    layout.containerd_config.write_text(nodeconf.containerd_config(layout))
    proc = paths.proc("containerd")
    processes.start(proc, _in_cgroup([shutil.which("containerd") or "containerd", "--config",
                                      str(layout.containerd_config)], runtime))
    processes.wait_until("containerd to answer", lambda: _containerd_ready(layout), timeout=30, proc=proc)
    for archive in binaries.IMAGE_ARCHIVES:
        _ctr(layout, "images", "import", "--snapshotter", "overlayfs", str(binaries.images_dir() / archive))

    config = nodeconf.kubelet_config(layout, ports, node_ip=nodehost.node_ip(), ca=paths.pki.ca_crt)
    layout.kubelet_config.write_text(yaml.safe_dump(config, sort_keys=False))
    kubelet = paths.proc("kubelet")
    labels = ",".join(f"{k}={v}" for k, v in nodeconf.LABELS.items())
    processes.start(kubelet, _in_cgroup([
        str(binaries.path("kubelet")),
        f"--config={layout.kubelet_config}",
        f"--kubeconfig={paths.component_kubeconfig('kubelet')}",
        f"--root-dir={layout.kubelet_dir}",
        f"--hostname-override={nodeconf.NODE_NAME}",
        f"--node-ip={config['address']}",
        f"--node-labels={labels}",
        "--v=2",
    ], runtime))
    processes.wait_until(f"node {nodeconf.NODE_NAME} to be Ready", lambda: node_ready(api), timeout=120, proc=kubelet)


def _delete_node(api: Any) -> None:
    if api is None:
        return
    try:
        api.delete_node(nodeconf.NODE_NAME)
    except Exception as exc:  # noqa: BLE001
        if getattr(exc, "status", None) not in (404, None):
            raise


def stop(paths: Paths, *, api: Any = None, echo: Echo) -> None:
    """Stop the real node and remove all it made (see the module's docstring)."""
    _stop(nodeconf.Layout(paths), api=api, echo=echo)


def _stop(layout: nodeconf.Layout, *, api: Any, echo: Echo) -> None:
    paths = layout.lab
    if not layout.root.exists():
        return  # never started in this lab directory
    kubelet, containerd = paths.proc("kubelet"), paths.proc("containerd")
    for proc in (kubelet, containerd):
        pid = proc.pid()
        if processes.stop(proc):
            echo(f"  stopped {proc.name} (pid {pid})")
    _delete_node(api)
    nodehost.undo(layout, echo=echo)
    for d in (layout.root / "containerd", layout.kubelet_dir, layout.pod_logs, layout.root / "cni",
              layout.runc_root):
        shutil.rmtree(d, ignore_errors=True)
    for f in (layout.socket, Path(f"{layout.socket}.ttrpc"), layout.kubelet_config):
        f.unlink(missing_ok=True)
    nodeconf.write_state(layout, running=False)


# --- status ---------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Status:
    running: bool  # both processes alive
    reason: str  # why it does not run, when it does not
    kubelet: int | None
    containerd: int | None

    def line(self) -> str:
        if self.running:
            return f"real node {nodeconf.NODE_NAME}: running (kubelet pid {self.kubelet}, containerd pid {self.containerd})"
        return f"real node {nodeconf.NODE_NAME}: not running ({self.reason or 'stopped'}); kwok nodes only"


def status(paths: Paths) -> Status:
    layout = nodeconf.Layout(paths)
    kubelet, containerd = paths.proc("kubelet"), paths.proc("containerd")
    alive = kubelet.alive() and containerd.alive()
    reason = nodeconf.read_state(layout).get("reason") or ""
    if not alive and not reason and (kubelet.pid() or containerd.pid()):
        reason = "a process died; `oomtuner lab up` starts it again"
    return Status(alive, reason, kubelet.pid() if kubelet.alive() else None,
                  containerd.pid() if containerd.alive() else None)
