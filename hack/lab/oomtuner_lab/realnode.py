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
first.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import hashlib
import ipaddress
import json
import os
import shlex
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from oomtuner_lab import binaries, processes
from oomtuner_lab.config import Paths, Ports
from oomtuner_lab.processes import LabError

Echo = Callable[[str], None]

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

#: The host programs the node runs (Debian packages containerd, runc, iptables, iproute2).
HOST_PROGRAMS = ("containerd", "containerd-shim-runc-v2", "runc", "ctr", "ip", "iptables", "iptables-save")
NAMESPACE = "k8s.io"  # containerd's namespace for the CRI
SUBNET_BASE = ipaddress.ip_network("10.88.0.0/16")  # one /24 of it per lab
CGROUP_MOUNT = Path("/sys/fs/cgroup")
CNI_CACHE = Path("/var/lib/cni")  # libcni's cache (results/), containerd 1.6 does not move it
CONTAINER_LOG_LINKS = Path("/var/log/containers")  # the kubelet's symlinks, not configurable
SHIM_SOCKETS = Path("/run/containerd/s")  # containerd 1.6 puts every shim's socket there
#: Host directories the node's programs make (deepest first): removed at stop when the lab made
#: them and they are empty.
HOST_DIRS = (SHIM_SOCKETS, SHIM_SOCKETS.parent, CNI_CACHE / "results", CNI_CACHE, CONTAINER_LOG_LINKS)


# --- where things are -----------------------------------------------------------------------


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

    def subnet(self) -> ipaddress.IPv4Network:
        """This lab's /24 of 10.88.0.0/16: the one it had last time, unless another bridge routes
        it now; else the first free one from a place its directory picks. Call it with the
        node's own bridge down."""
        taken = _routed_networks()
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


def _write_state(layout: Layout, **values: Any) -> None:
    layout.root.mkdir(parents=True, exist_ok=True)
    layout.state_file.write_text(json.dumps({**read_state(layout), **values}, indent=2) + "\n")


def _routed_networks() -> list[ipaddress.IPv4Network]:
    out = _run(["ip", "-4", "-o", "route", "show", "table", "all"], check=False).stdout
    nets = []
    for line in out.splitlines():
        word = line.split()[0] if line.split() else ""
        if word in ("local", "broadcast", "unreachable", "prohibit", "blackhole"):
            word = line.split()[1]
        with contextlib.suppress(ValueError):
            if word != "default":
                nets.append(ipaddress.ip_network(word, strict=False))
    return nets


def _run(argv: list[str], *, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run a host program; a program that is not installed is exit code 127, as in a shell."""
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    except FileNotFoundError:
        done = subprocess.CompletedProcess(argv, 127, "", f"{argv[0]}: not installed")
    if check and done.returncode != 0:
        raise LabError(f"{' '.join(argv)} failed ({done.returncode}): {(done.stderr or done.stdout).strip()[:500]}")
    return done


# --- cgroups --------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Hierarchy:
    mount: Path
    controllers: frozenset[str]
    v2: bool


def hierarchies() -> list[Hierarchy]:
    """The cgroup filesystems mounted on this machine (v1 controllers, named ones, and v2)."""
    found = []
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return []
    for line in lines:
        left, _, right = line.partition(" - ")
        fields, extra = left.split(), right.split()
        if len(extra) < 3 or extra[0] not in ("cgroup", "cgroup2"):
            continue
        controllers = frozenset(extra[2].split(",")) - {"rw", "ro"}
        found.append(Hierarchy(Path(fields[4]), controllers, extra[0] == "cgroup2"))
    return found


def memory_hierarchy() -> Hierarchy | None:
    """Where memory is accounted: the v1 memory controller's mount, else a v2 mount with memory."""
    all_ = hierarchies()
    for h in all_:
        if not h.v2 and "memory" in h.controllers:
            return h
    for h in all_:
        if h.v2 and "memory" in _read(h.mount / "cgroup.controllers").split():
            return h
    return None


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def lab_cgroups(layout: Layout) -> list[Path]:
    """The lab's cgroup root in each hierarchy (whether it exists or not)."""
    return [h.mount / layout.cgroup_name for h in hierarchies()]


def kubepods_cgroup(layout: Layout) -> Path | None:
    """The kubelet's `kubepods` in the memory hierarchy: what `oomtuner agent --cgroup-root` reads."""
    memory = memory_hierarchy()
    return memory.mount / layout.cgroup_name / "kubepods" if memory else None


def runtime_cgroup(layout: Layout) -> Path | None:
    """Where containerd, its shims and the kubelet run, beside `kubepods`."""
    memory = memory_hierarchy()
    return memory.mount / layout.cgroup_name / "runtime" if memory else None


def _make_cgroups(layout: Layout) -> None:
    for h in hierarchies():
        path = h.mount / layout.cgroup_name
        path.mkdir(exist_ok=True)
        if "cpuset" in h.controllers:
            # A new v1 cpuset has no CPUs and no memory nodes: nothing could run in it.
            for name in ("cpuset.cpus", "cpuset.mems"):
                (path / name).write_text(_read(h.mount / name).strip() or "0")
        if h.v2:  # the kubelet's cgroups below get the controllers the root hands down
            for controller in _read(h.mount / "cgroup.subtree_control").split():
                with contextlib.suppress(OSError):
                    (path / "cgroup.subtree_control").write_text(f"+{controller}")
    memory = memory_hierarchy()
    if memory is None:
        raise LabError("no memory cgroup hierarchy")
    lab = memory.mount / layout.cgroup_name
    (lab / ("memory.max" if memory.v2 else "memory.limit_in_bytes")).write_text(str(LAB_MEMORY))
    runtime = lab / "runtime"
    runtime.mkdir(exist_ok=True)


def _procs_under(root: Path) -> set[int]:
    pids: set[int] = set()
    if not root.is_dir():
        return pids
    for dirpath, _, _ in os.walk(root):
        for word in _read(Path(dirpath) / "cgroup.procs").split():
            pids.add(int(word))
    return pids


def _kill_cgroup_processes(layout: Layout, *, timeout: float = 20) -> int:
    """SIGKILL every process in the lab's cgroups (all hierarchies) until none is left."""
    killed: set[int] = set()
    deadline = time.monotonic() + timeout
    me = os.getpid()
    while True:
        pids = set().union(*(_procs_under(path) for path in lab_cgroups(layout))) - {me}
        if not pids:
            return len(killed)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            killed.add(pid)
        if time.monotonic() > deadline:
            raise LabError(f"processes {sorted(pids)} in the lab's cgroups outlived SIGKILL")
        time.sleep(0.1)


def rmdir_cgroup(path: Path, *, timeout: float = 10) -> None:
    """Remove an empty cgroup (gone already is fine). The kernel answers EBUSY for a moment after
    its last process exited; that is waited out up to `timeout`. Raises OSError otherwise."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            path.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError as exc:
            if exc.errno != errno.EBUSY or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def _remove_cgroups(layout: Layout) -> list[Path]:
    """rmdir the lab's cgroup trees, deepest first; return what could not be removed."""
    left = []
    for root in lab_cgroups(layout):
        if not root.is_dir():
            continue
        dirs = [Path(d) for d, _, _ in os.walk(root)]
        for path in sorted(dirs, key=lambda p: len(p.parts), reverse=True):
            try:
                rmdir_cgroup(path)
            except OSError:
                left.append(path)
    return left


# --- mounts, network, rules -----------------------------------------------------------------


def mounts_under(root: Path) -> list[Path]:
    """Mount points at or below `root`, deepest first (from /proc/self/mountinfo)."""
    found = []
    prefix = str(root.resolve()) if root.exists() else str(root)
    for line in _read(Path("/proc/self/mountinfo")).splitlines():
        point = line.split()[4].replace("\\040", " ")
        if point == prefix or point.startswith(prefix + "/"):
            found.append(Path(point))
    return sorted(found, key=lambda p: len(p.parts), reverse=True)


def _unmount_all(root: Path) -> None:
    for _ in range(5):
        points = mounts_under(root)
        if not points:
            return
        for point in points:
            _run(["umount", "--lazy", str(point)], check=False)
    left = mounts_under(root)
    if left:
        raise LabError(f"mounts under {root} could not be removed: {[str(p) for p in left]}")


def _link_exists(name: str) -> bool:
    return _run(["ip", "link", "show", "dev", name], check=False).returncode == 0


def iptables_rules(layout: Layout, subnet: ipaddress.IPv4Network | None) -> list[tuple[str, str]]:
    """(table, rule) of every iptables rule that names the lab's network (the CNI plugins put it
    in their comments) or its subnet."""
    out = _run(["iptables-save"], check=False).stdout
    words = [layout.network] + ([str(subnet)] if subnet else [])
    table = ""
    rules = []
    for line in out.splitlines():
        if line.startswith("*"):
            table = line[1:]
        elif line.startswith("-A ") and any(w in line for w in words):
            rules.append((table, line))
    return rules


def _remove_iptables_rules(layout: Layout, subnet: ipaddress.IPv4Network | None) -> None:
    """Delete the rules that name the lab's network or subnet, then the CNI chains that only
    they used (portmap's `CNI-DN-…`), then portmap's shared chains when the lab made them and
    they are empty now."""
    for _ in range(3):
        rules = iptables_rules(layout, subnet)
        if not rules:
            break
        chains: set[tuple[str, str]] = set()
        for table, rule in rules:
            words = rule.split()
            _run(["iptables", "-t", table, "-D", *shlex.split(" ".join(words[1:]))], check=False)
            if "-j" in words:
                target = words[words.index("-j") + 1]
                if target.startswith("CNI-") and target not in SHARED_CNI_CHAINS:
                    chains.add((table, target))
        for table, chain in chains:
            if not _chain_used(table, chain):
                _run(["iptables", "-t", table, "-F", chain], check=False)
                _run(["iptables", "-t", table, "-X", chain], check=False)
    if not read_state(layout).get("portmap_chains_before", True) and _portmap_chains_unused():
        _remove_portmap_chains()


#: portmap's chains in the nat table, shared by every CNI network on the host, and the rules of
#: the built-in chains that jump to them. The lab removes them only when it made them (they did
#: not exist when its node started) and no hostPort uses them any more.
SHARED_CNI_CHAINS = ("CNI-HOSTPORT-DNAT", "CNI-HOSTPORT-SETMARK", "CNI-HOSTPORT-MASQ")


def portmap_chains() -> list[str]:
    out = _run(["iptables-save", "-t", "nat"], check=False).stdout
    return [c for c in SHARED_CNI_CHAINS if f":{c} " in out]


def _portmap_chains_unused() -> bool:
    out = _run(["iptables-save", "-t", "nat"], check=False).stdout
    return not any(line.startswith("-A CNI-HOSTPORT-DNAT ") for line in out.splitlines())


def _remove_portmap_chains() -> None:
    out = _run(["iptables-save", "-t", "nat"], check=False).stdout
    for line in out.splitlines():
        words = line.split()
        if line.startswith("-A ") and words[1] in ("PREROUTING", "OUTPUT", "POSTROUTING") \
                and "-j" in words and words[words.index("-j") + 1] in SHARED_CNI_CHAINS:
            _run(["iptables", "-t", "nat", "-D", *shlex.split(" ".join(words[1:]))], check=False)
    for chain in SHARED_CNI_CHAINS:
        _run(["iptables", "-t", "nat", "-F", chain], check=False)
    for chain in SHARED_CNI_CHAINS:
        _run(["iptables", "-t", "nat", "-X", chain], check=False)


def _chain_used(table: str, chain: str) -> bool:
    out = _run(["iptables-save", "-t", table], check=False).stdout
    return any(line.startswith("-A ") and f"-j {chain}" in line for line in out.splitlines())


def _shim_sockets(layout: Layout, ids: list[str] | tuple[str, ...] = ()) -> list[Path]:
    """The sockets containerd 1.6 made for the lab's shims, one per pod sandbox (`ids`, or the
    tasks in its state directory): /run/containerd/s/sha256(<address>/<namespace>/<id>)."""
    tasks = layout.containerd_state / "io.containerd.runtime.v2.task" / NAMESPACE
    every = set(ids) | ({p.name for p in tasks.iterdir()} if tasks.is_dir() else set())
    return [SHIM_SOCKETS / hashlib.sha256(f"{layout.socket}/{NAMESPACE}/{i}".encode()).hexdigest()
            for i in sorted(every)]


def _socket_users(layout: Layout) -> list[int]:
    """Processes whose command line names the lab's containerd socket (its shims: `-address <it>`)."""
    return [int(d.name) for d in Path("/proc").iterdir()
            if d.name.isdigit() and str(layout.socket) in _read(d / "cmdline").replace("\0", " ")]


def sandbox_ids(layout: Layout) -> list[str]:
    """The pod sandboxes containerd made (their IDs name the CNI cache files)."""
    ids = set()
    sandboxes = layout.containerd_root / "io.containerd.grpc.v1.cri" / "sandboxes"
    if sandboxes.is_dir():
        ids |= {p.name for p in sandboxes.iterdir()}
    for cached in _cni_cache_files(layout, ()):
        ids.add(cached.name.removeprefix(f"{layout.network}-").rpartition("-")[0])
    return sorted(ids)


def _cni_cache_files(layout: Layout, sandboxes: list[str] | tuple[str, ...]) -> list[Path]:
    """libcni's cached results of the lab's network, and of containerd's loopback for `sandboxes`."""
    results = CNI_CACHE / "results"
    if not results.is_dir():
        return []
    files = list(results.glob(f"{layout.network}-*"))
    files += [results / f"cni-loopback-{i}-lo" for i in sandboxes if (results / f"cni-loopback-{i}-lo").exists()]
    return files


def host_leftovers(layout: Layout, *, sandboxes: list[str] | tuple[str, ...] = ()) -> list[str]:
    """What the real node left on the host outside the lab directory; empty when clean.
    `sandboxes`: the pod sandbox IDs it ran (see `sandbox_ids`), whose cache files must be gone."""
    left = []
    pids = set().union(*(_procs_under(path) for path in lab_cgroups(layout)))
    if pids:
        left.append(f"processes {sorted(pids)} in the lab's cgroups")
    left += [f"cgroup {p}" for p in lab_cgroups(layout) if p.exists()]
    left += [f"mount {p}" for p in mounts_under(layout.root)]
    if _link_exists(layout.bridge):
        left.append(f"bridge {layout.bridge}")
    subnet = read_state(layout).get("subnet")
    left += [f"iptables -t {t} {r}" for t, r in iptables_rules(layout, ipaddress.ip_network(subnet) if subnet else None)]
    if not read_state(layout).get("portmap_chains_before", True):
        left += [f"iptables -t nat chain {c} (made for the lab)" for c in portmap_chains()]
    left += [f"CNI cache {p}" for p in _cni_cache_files(layout, sandboxes)]
    left += [f"shim socket {p}" for p in _shim_sockets(layout, sandboxes) if p.exists()]
    left += [f"log link {p}" for p in _container_log_links(layout)]
    before = read_state(layout).get("host_dirs_before")
    if before is not None:
        left += [f"directory {d} (made for the lab)" for d in HOST_DIRS if str(d) not in before and d.exists()]
    left += [f"process {pid} using {layout.socket}" for pid in _socket_users(layout)]
    return left


def _container_log_links(layout: Layout) -> list[Path]:
    if not CONTAINER_LOG_LINKS.is_dir():
        return []
    found = []
    for link in CONTAINER_LOG_LINKS.iterdir():
        with contextlib.suppress(OSError):
            if link.is_symlink() and os.readlink(link).startswith(str(layout.pod_logs) + "/"):
                found.append(link)
    return found


# --- can this host run it? ------------------------------------------------------------------


def unavailable() -> str | None:
    """Why this host cannot run the real node, in a few words; None when it can."""
    if os.geteuid() != 0:
        return "not root (the kubelet and containerd need root)"
    memory = memory_hierarchy()
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


# --- configuration --------------------------------------------------------------------------


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
    for line in _read(Path("/proc/meminfo")).splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) * 1024
    raise LabError("MemTotal not found in /proc/meminfo")


def node_ip() -> str:
    """The host's first global IPv4 address (the kubelet refuses a loopback node IP), not one of
    the labs' bridges."""
    out = _run(["ip", "-4", "-o", "addr", "show", "scope", "global"], check=False).stdout
    for line in out.splitlines():
        words = line.split()
        if "inet" in words and not words[1].startswith("olab"):
            return words[words.index("inet") + 1].split("/")[0]
    raise LabError("no global IPv4 address on this host for the kubelet's node IP")


# --- start and stop -------------------------------------------------------------------------


def _in_cgroup(argv: list[str], cgroup: Path) -> list[str]:
    """argv, started by a shell that first moves itself into `cgroup` (so does all it forks)."""
    return ["sh", "-c", 'echo $$ > "$0/cgroup.procs" && exec "$@"', str(cgroup), *argv]


def _ctr(layout: Layout, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return _run(["ctr", "--address", str(layout.socket), "--namespace", NAMESPACE, *args], timeout=timeout)


def _containerd_ready(layout: Layout) -> bool:
    if not layout.socket.exists():
        return False
    return _run(["ctr", "--address", str(layout.socket), "version"], check=False, timeout=5).returncode == 0


def node_ready(api: Any) -> bool:
    try:
        node = api.read_node(NODE_NAME)
    except Exception:  # noqa: BLE001 - not registered yet
        return False
    return any(c.type == "Ready" and c.status == "True" for c in node.status.conditions or [])


def turned_off(paths: Paths) -> None:
    """Record that this lab runs without the real node (`lab up --no-real-node`)."""
    _write_state(Layout(paths), running=False, reason="turned off: --no-real-node or OOMTUNER_LAB_REAL_NODE=0")


def start(paths: Paths, ports: Ports, api: Any, *, echo: Echo) -> bool:
    """Start the real node unless the host cannot run it; True when it runs and is Ready.

    A host that cannot run it, or a start that fails, is one line on `echo`, the lab goes on
    with kwok nodes only, and the reason is kept for `status`.
    """
    layout = Layout(paths)
    reason = unavailable()
    if reason is None:
        missing = binaries.missing(binaries.REAL_NODE)
        if missing:
            reason = f"{', '.join(missing)} not built (hack/lab/build.sh {' '.join(missing)})"
    if reason is not None:
        _write_state(layout, running=False, reason=f"not available: {reason}")
        _delete_node(api)
        echo(f"  real node {NODE_NAME}: not started, {reason}; the lab runs kwok nodes only")
        return False
    t0 = time.monotonic()
    try:
        _start(layout, ports, api, echo=echo)
    except (LabError, OSError, subprocess.SubprocessError) as exc:
        first = str(exc).splitlines()[0]
        _write_state(layout, running=False, reason=f"failed to start: {first}")
        echo(f"  real node {NODE_NAME}: failed to start ({first}); logs in {paths.logs}; "
             "the lab runs kwok nodes only")
        try:
            _stop(layout, api=api, echo=lambda _: None)
        except (LabError, OSError) as cleanup:
            echo(f"  real node {NODE_NAME}: cleaning up after the failed start: {cleanup}")
        return False
    _write_state(layout, running=True, reason="")
    echo(f"  real node {NODE_NAME:<15} Ready in {time.monotonic() - t0:4.1f}s  "
         f"(kubelet, containerd, cgroup /{layout.cgroup_name}, pods on {read_state(layout)['subnet']})")
    return True


def _start(layout: Layout, ports: Ports, api: Any, *, echo: Echo) -> None:
    paths = layout.lab
    _stop(layout, api=None, echo=echo)  # what a crashed run left
    subnet = layout.subnet()
    _write_state(layout, subnet=str(subnet), portmap_chains_before=bool(portmap_chains()),
                 host_dirs_before=[str(d) for d in HOST_DIRS if d.exists()])
    for d in (layout.containerd_root, layout.containerd_state, layout.kubelet_dir, layout.pod_logs,
              layout.cni_conf_dir, layout.cni_ipam_dir, layout.runc_root):
        d.mkdir(parents=True, exist_ok=True)
    _make_cgroups(layout)
    runtime = runtime_cgroup(layout)
    assert runtime is not None

    if not _link_exists(layout.bridge):
        _run(["ip", "link", "add", "name", layout.bridge, "type", "bridge"])
    _run(["ip", "addr", "replace", f"{subnet[1]}/{subnet.prefixlen}", "dev", layout.bridge])
    _run(["ip", "link", "set", layout.bridge, "up"])
    (layout.cni_conf_dir / "10-lab.conflist").write_text(json.dumps(cni_config(layout, subnet), indent=2) + "\n")

    layout.containerd_config.write_text(containerd_config(layout))
    proc = paths.proc("containerd")
    processes.start(proc, _in_cgroup([shutil.which("containerd") or "containerd", "--config",
                                      str(layout.containerd_config)], runtime))
    processes.wait_until("containerd to answer", lambda: _containerd_ready(layout), timeout=30, proc=proc)
    for archive in binaries.IMAGE_ARCHIVES:
        _ctr(layout, "images", "import", "--snapshotter", "overlayfs", str(binaries.images_dir() / archive))

    config = kubelet_config(layout, ports, node_ip=node_ip(), ca=paths.pki.ca_crt)
    layout.kubelet_config.write_text(yaml.safe_dump(config, sort_keys=False))
    kubelet = paths.proc("kubelet")
    labels = ",".join(f"{k}={v}" for k, v in LABELS.items())
    processes.start(kubelet, _in_cgroup([
        str(binaries.path("kubelet")),
        f"--config={layout.kubelet_config}",
        f"--kubeconfig={paths.component_kubeconfig('kubelet')}",
        f"--root-dir={layout.kubelet_dir}",
        f"--hostname-override={NODE_NAME}",
        f"--node-ip={config['address']}",
        f"--node-labels={labels}",
        "--v=2",
    ], runtime))
    processes.wait_until(f"node {NODE_NAME} to be Ready", lambda: node_ready(api), timeout=120, proc=kubelet)


def _delete_node(api: Any) -> None:
    if api is None:
        return
    try:
        api.delete_node(NODE_NAME)
    except Exception as exc:  # noqa: BLE001
        if getattr(exc, "status", None) not in (404, None):
            raise


def stop(paths: Paths, *, api: Any = None, echo: Echo) -> None:
    """Stop the real node and remove all it made (see the module's docstring)."""
    _stop(Layout(paths), api=api, echo=echo)


def _stop(layout: Layout, *, api: Any, echo: Echo) -> None:
    paths = layout.lab
    if not layout.root.exists():
        return  # never started in this lab directory
    kubelet, containerd = paths.proc("kubelet"), paths.proc("containerd")
    for proc in (kubelet, containerd):
        pid = proc.pid()
        if processes.stop(proc):
            echo(f"  stopped {proc.name} (pid {pid})")
    _delete_node(api)
    killed = _kill_cgroup_processes(layout)
    if killed:
        echo(f"  killed {killed} process(es) left in the real node's cgroups (containers, shims)")
    # Anything still talking to the lab's containerd outside its cgroups (none expected).
    for pid in _socket_users(layout):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    for sock in _shim_sockets(layout):
        with contextlib.suppress(FileNotFoundError):
            sock.unlink()
    _unmount_all(layout.root)
    if _link_exists(layout.bridge):
        _run(["ip", "link", "del", layout.bridge], check=False)
    subnet = read_state(layout).get("subnet")
    _remove_iptables_rules(layout, ipaddress.ip_network(subnet) if subnet else None)
    for cached in _cni_cache_files(layout, sandbox_ids(layout)):
        cached.unlink(missing_ok=True)
    for link in _container_log_links(layout):
        link.unlink(missing_ok=True)
    before = read_state(layout).get("host_dirs_before")
    for d in HOST_DIRS if before is not None else ():
        if str(d) not in before:
            with contextlib.suppress(OSError):  # not empty: another runtime on the host uses it
                d.rmdir()
    left = _remove_cgroups(layout)
    if left:
        raise LabError(f"cgroups could not be removed: {[str(p) for p in left]}")
    if mounts_under(layout.root):
        raise LabError(f"mounts are left under {layout.root}: not deleting it")
    for d in (layout.root / "containerd", layout.kubelet_dir, layout.pod_logs, layout.root / "cni",
              layout.runc_root):
        shutil.rmtree(d, ignore_errors=True)
    for f in (layout.socket, Path(f"{layout.socket}.ttrpc"), layout.kubelet_config):
        f.unlink(missing_ok=True)
    _write_state(layout, running=False)


# --- status ---------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Status:
    running: bool  # both processes alive
    reason: str  # why it does not run, when it does not
    kubelet: int | None
    containerd: int | None

    def line(self) -> str:
        if self.running:
            return f"real node {NODE_NAME}: running (kubelet pid {self.kubelet}, containerd pid {self.containerd})"
        return f"real node {NODE_NAME}: not running ({self.reason or 'stopped'}); kwok nodes only"


def status(paths: Paths) -> Status:
    layout = Layout(paths)
    kubelet, containerd = paths.proc("kubelet"), paths.proc("containerd")
    alive = kubelet.alive() and containerd.alive()
    reason = read_state(layout).get("reason") or ""
    if not alive and not reason and (kubelet.pid() or containerd.pid()):
        reason = "a process died; `oomtuner lab up` starts it again"
    return Status(alive, reason, kubelet.pid() if kubelet.alive() else None,
                  containerd.pid() if containerd.alive() else None)
