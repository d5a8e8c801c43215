"""What the real node does to the host, and how it is undone.

The node's processes live in the lab's own cgroup tree; containerd and the kubelet mount root
filesystems, shm, network namespaces and volumes under the lab directory; the CNI plugins make a
bridge, iptables rules (portmap, for hostPorts) and cache files in /var/lib/cni; containerd's shims
leave sockets in /run/containerd/s; the kubelet links container logs from /var/log/containers.
`undo` removes all of it, whatever state a run left it in (a clean stop or a crash); `leftovers`
lists what is still there, for the test that `lab down` leaves nothing behind.

Nothing here raises on a host program that is missing: `run` answers 127, as a shell would.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import hashlib
import ipaddress
import os
import shlex
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from oomtuner_lab import nodeconf
from oomtuner_lab.processes import LabError

CNI_CACHE = Path("/var/lib/cni")  # libcni's cache (results/), containerd 1.6 does not move it
CONTAINER_LOG_LINKS = Path("/var/log/containers")  # the kubelet's symlinks, not configurable
SHIM_SOCKETS = Path("/run/containerd/s")  # containerd 1.6 puts every shim's socket there
#: Host directories the node's programs make (deepest first): removed at stop when the lab made
#: them and they are empty.
HOST_DIRS = (SHIM_SOCKETS, SHIM_SOCKETS.parent, CNI_CACHE / "results", CNI_CACHE, CONTAINER_LOG_LINKS)


def run(argv: list[str], *, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run a host program; a program that is not installed is exit code 127, as in a shell."""
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    except FileNotFoundError:
        done = subprocess.CompletedProcess(argv, 127, "", f"{argv[0]}: not installed")
    if check and done.returncode != 0:
        raise LabError(f"{' '.join(argv)} failed ({done.returncode}): {(done.stderr or done.stdout).strip()[:500]}")
    return done


def read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def routed_networks() -> list[ipaddress.IPv4Network]:
    out = run(["ip", "-4", "-o", "route", "show", "table", "all"], check=False).stdout
    nets = []
    for line in out.splitlines():
        word = line.split()[0] if line.split() else ""
        if word in ("local", "broadcast", "unreachable", "prohibit", "blackhole"):
            word = line.split()[1]
        with contextlib.suppress(ValueError):
            if word != "default":
                nets.append(ipaddress.ip_network(word, strict=False))
    return nets


def link_exists(name: str) -> bool:
    return run(["ip", "link", "show", "dev", name], check=False).returncode == 0


def node_ip() -> str:
    """The host's first global IPv4 address (the kubelet refuses a loopback node IP), not one of
    the labs' bridges."""
    out = run(["ip", "-4", "-o", "addr", "show", "scope", "global"], check=False).stdout
    for line in out.splitlines():
        words = line.split()
        if "inet" in words and not words[1].startswith("olab"):
            return words[words.index("inet") + 1].split("/")[0]
    raise LabError("no global IPv4 address on this host for the kubelet's node IP")


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
        if h.v2 and "memory" in read(h.mount / "cgroup.controllers").split():
            return h
    return None


def lab_cgroups(layout: nodeconf.Layout) -> list[Path]:
    """The lab's cgroup root in each hierarchy (whether it exists or not)."""
    return [h.mount / layout.cgroup_name for h in hierarchies()]


def kubepods_cgroup(layout: nodeconf.Layout) -> Path | None:
    """The kubelet's `kubepods` in the memory hierarchy: what `oomtuner agent --cgroup-root` reads."""
    memory = memory_hierarchy()
    return memory.mount / layout.cgroup_name / "kubepods" if memory else None


def runtime_cgroup(layout: nodeconf.Layout) -> Path | None:
    """Where containerd, its shims and the kubelet run, beside `kubepods`."""
    memory = memory_hierarchy()
    return memory.mount / layout.cgroup_name / "runtime" if memory else None


def make_cgroups(layout: nodeconf.Layout) -> None:
    """The lab's cgroup root in every hierarchy, with LAB_MEMORY as its memory limit, and `runtime`
    below it for containerd and the kubelet (the kubelet makes `kubepods` beside it)."""
    for h in hierarchies():
        path = h.mount / layout.cgroup_name
        path.mkdir(exist_ok=True)
        if "cpuset" in h.controllers:
            # A new v1 cpuset has no CPUs and no memory nodes: nothing could run in it.
            for name in ("cpuset.cpus", "cpuset.mems"):
                (path / name).write_text(read(h.mount / name).strip() or "0")
        if h.v2:  # the kubelet's cgroups below get the controllers the root hands down
            for controller in read(h.mount / "cgroup.subtree_control").split():
                with contextlib.suppress(OSError):
                    (path / "cgroup.subtree_control").write_text(f"+{controller}")
    memory = memory_hierarchy()
    if memory is None:
        raise LabError("no memory cgroup hierarchy")
    lab = memory.mount / layout.cgroup_name
    (lab / ("memory.max" if memory.v2 else "memory.limit_in_bytes")).write_text(str(nodeconf.LAB_MEMORY))
    runtime = lab / "runtime"
    runtime.mkdir(exist_ok=True)


def _procs_under(root: Path) -> set[int]:
    pids: set[int] = set()
    if not root.is_dir():
        return pids
    for dirpath, _, _ in os.walk(root):
        for word in read(Path(dirpath) / "cgroup.procs").split():
            pids.add(int(word))
    return pids


def kill_processes(layout: nodeconf.Layout, *, timeout: float = 20) -> int:
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


def remove_cgroups(layout: nodeconf.Layout) -> list[Path]:
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


# --- mounts, rules, caches: what the runtime leaves ------------------------------------------


def mounts_under(root: Path) -> list[Path]:
    """Mount points at or below `root`, deepest first (from /proc/self/mountinfo)."""
    found = []
    prefix = str(root.resolve()) if root.exists() else str(root)
    for line in read(Path("/proc/self/mountinfo")).splitlines():
        point = line.split()[4].replace("\\040", " ")
        if point == prefix or point.startswith(prefix + "/"):
            found.append(Path(point))
    return sorted(found, key=lambda p: len(p.parts), reverse=True)


def unmount_all(root: Path) -> None:
    """Unmount everything at or below `root`, deepest first (lazily: the processes are gone)."""
    for _ in range(5):
        points = mounts_under(root)
        if not points:
            return
        for point in points:
            run(["umount", "--lazy", str(point)], check=False)
    left = mounts_under(root)
    if left:
        raise LabError(f"mounts under {root} could not be removed: {[str(p) for p in left]}")


def iptables_rules(layout: nodeconf.Layout, subnet: ipaddress.IPv4Network | None) -> list[tuple[str, str]]:
    """(table, rule) of every iptables rule that names the lab's network (the CNI plugins put it
    in their comments) or its subnet."""
    out = run(["iptables-save"], check=False).stdout
    words = [layout.network] + ([str(subnet)] if subnet else [])
    table = ""
    rules = []
    for line in out.splitlines():
        if line.startswith("*"):
            table = line[1:]
        elif line.startswith("-A ") and any(w in line for w in words):
            rules.append((table, line))
    return rules


def remove_iptables_rules(layout: nodeconf.Layout, subnet: ipaddress.IPv4Network | None) -> None:
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
            run(["iptables", "-t", table, "-D", *shlex.split(" ".join(words[1:]))], check=False)
            if "-j" in words:
                target = words[words.index("-j") + 1]
                if target.startswith("CNI-") and target not in SHARED_CNI_CHAINS:
                    chains.add((table, target))
        for table, chain in chains:
            if not _chain_used(table, chain):
                run(["iptables", "-t", table, "-F", chain], check=False)
                run(["iptables", "-t", table, "-X", chain], check=False)
    if not nodeconf.read_state(layout).get("portmap_chains_before", True) and _portmap_chains_unused():
        _remove_portmap_chains()


#: portmap's chains in the nat table, shared by every CNI network on the host, and the rules of
#: the built-in chains that jump to them. The lab removes them only when it made them (they did
#: not exist when its node started) and no hostPort uses them any more.
SHARED_CNI_CHAINS = ("CNI-HOSTPORT-DNAT", "CNI-HOSTPORT-SETMARK", "CNI-HOSTPORT-MASQ")


def portmap_chains() -> list[str]:
    out = run(["iptables-save", "-t", "nat"], check=False).stdout
    return [c for c in SHARED_CNI_CHAINS if f":{c} " in out]


def _portmap_chains_unused() -> bool:
    out = run(["iptables-save", "-t", "nat"], check=False).stdout
    return not any(line.startswith("-A CNI-HOSTPORT-DNAT ") for line in out.splitlines())


def _remove_portmap_chains() -> None:
    out = run(["iptables-save", "-t", "nat"], check=False).stdout
    for line in out.splitlines():
        words = line.split()
        if line.startswith("-A ") and words[1] in ("PREROUTING", "OUTPUT", "POSTROUTING") \
                and "-j" in words and words[words.index("-j") + 1] in SHARED_CNI_CHAINS:
            run(["iptables", "-t", "nat", "-D", *shlex.split(" ".join(words[1:]))], check=False)
    for chain in SHARED_CNI_CHAINS:
        run(["iptables", "-t", "nat", "-F", chain], check=False)
    for chain in SHARED_CNI_CHAINS:
        run(["iptables", "-t", "nat", "-X", chain], check=False)


def _chain_used(table: str, chain: str) -> bool:
    out = run(["iptables-save", "-t", table], check=False).stdout
    return any(line.startswith("-A ") and f"-j {chain}" in line for line in out.splitlines())


def shim_sockets(layout: nodeconf.Layout, ids: list[str] | tuple[str, ...] = ()) -> list[Path]:
    """The sockets containerd 1.6 made for the lab's shims, one per pod sandbox (`ids`, or the
    tasks in its state directory): /run/containerd/s/sha256(<address>/<namespace>/<id>)."""
    tasks = layout.containerd_state / "io.containerd.runtime.v2.task" / nodeconf.NAMESPACE
    every = set(ids) | ({p.name for p in tasks.iterdir()} if tasks.is_dir() else set())
    return [SHIM_SOCKETS / hashlib.sha256(f"{layout.socket}/{nodeconf.NAMESPACE}/{i}".encode()).hexdigest()
            for i in sorted(every)]


def socket_users(layout: nodeconf.Layout) -> list[int]:
    """Processes whose command line names the lab's containerd socket (its shims: `-address <it>`)."""
    return [int(d.name) for d in Path("/proc").iterdir()
            if d.name.isdigit() and str(layout.socket) in read(d / "cmdline").replace("\0", " ")]


def sandbox_ids(layout: nodeconf.Layout) -> list[str]:
    """The pod sandboxes containerd made (their IDs name the CNI cache files)."""
    ids = set()
    sandboxes = layout.containerd_root / "io.containerd.grpc.v1.cri" / "sandboxes"
    if sandboxes.is_dir():
        ids |= {p.name for p in sandboxes.iterdir()}
    for cached in cni_cache_files(layout, ()):
        ids.add(cached.name.removeprefix(f"{layout.network}-").rpartition("-")[0])
    return sorted(ids)


def cni_cache_files(layout: nodeconf.Layout, sandboxes: list[str] | tuple[str, ...]) -> list[Path]:
    """libcni's cached results of the lab's network, and of containerd's loopback for `sandboxes`."""
    results = CNI_CACHE / "results"
    if not results.is_dir():
        return []
    files = list(results.glob(f"{layout.network}-*"))
    files += [results / f"cni-loopback-{i}-lo" for i in sandboxes if (results / f"cni-loopback-{i}-lo").exists()]
    return files


def container_log_links(layout: nodeconf.Layout) -> list[Path]:
    if not CONTAINER_LOG_LINKS.is_dir():
        return []
    found = []
    for link in CONTAINER_LOG_LINKS.iterdir():
        with contextlib.suppress(OSError):
            if link.is_symlink() and os.readlink(link).startswith(str(layout.pod_logs) + "/"):
                found.append(link)
    return found


def leftovers(layout: nodeconf.Layout, *, sandboxes: list[str] | tuple[str, ...] = ()) -> list[str]:
    """What the real node left on the host outside the lab directory; empty when clean.
    `sandboxes`: the pod sandbox IDs it ran (see `sandbox_ids`), whose cache files must be gone."""
    left = []
    pids = set().union(*(_procs_under(path) for path in lab_cgroups(layout)))
    if pids:
        left.append(f"processes {sorted(pids)} in the lab's cgroups")
    left += [f"cgroup {p}" for p in lab_cgroups(layout) if p.exists()]
    left += [f"mount {p}" for p in mounts_under(layout.root)]
    if link_exists(layout.bridge):
        left.append(f"bridge {layout.bridge}")
    subnet = nodeconf.read_state(layout).get("subnet")
    left += [f"iptables -t {t} {r}" for t, r in iptables_rules(layout, ipaddress.ip_network(subnet) if subnet else None)]
    if not nodeconf.read_state(layout).get("portmap_chains_before", True):
        left += [f"iptables -t nat chain {c} (made for the lab)" for c in portmap_chains()]
    left += [f"CNI cache {p}" for p in cni_cache_files(layout, sandboxes)]
    left += [f"shim socket {p}" for p in shim_sockets(layout, sandboxes) if p.exists()]
    left += [f"log link {p}" for p in container_log_links(layout)]
    before = nodeconf.read_state(layout).get("host_dirs_before")
    if before is not None:
        left += [f"directory {d} (made for the lab)" for d in HOST_DIRS if str(d) not in before and d.exists()]
    left += [f"process {pid} using {layout.socket}" for pid in socket_users(layout)]
    return left


def bridge_up(layout: nodeconf.Layout, subnet: ipaddress.IPv4Network) -> None:
    """The lab's bridge with the subnet's first address: the host reaches the pods, and the CNI
    bridge plugin need not be their gateway (which turns on IP forwarding for the whole host)."""
    if not link_exists(layout.bridge):
        run(["ip", "link", "add", "name", layout.bridge, "type", "bridge"])
    run(["ip", "addr", "replace", f"{subnet[1]}/{subnet.prefixlen}", "dev", layout.bridge])
    run(["ip", "link", "set", layout.bridge, "up"])


def record_before(layout: nodeconf.Layout) -> None:
    """Note what the host had before the node starts, so that `undo` removes only what it made."""
    nodeconf.write_state(layout, portmap_chains_before=bool(portmap_chains()),
                         host_dirs_before=[str(d) for d in HOST_DIRS if d.exists()])


def undo(layout: nodeconf.Layout, *, echo: Callable[[str], None]) -> None:
    """Remove from the host everything the node made (its containerd and kubelet stopped first)."""
    killed = kill_processes(layout)
    if killed:
        echo(f"  killed {killed} process(es) left in the real node's cgroups (containers, shims)")
    # Anything still talking to the lab's containerd outside its cgroups (none expected).
    for pid in socket_users(layout):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    for sock in shim_sockets(layout):
        with contextlib.suppress(FileNotFoundError):
            sock.unlink()
    unmount_all(layout.root)
    if link_exists(layout.bridge):
        run(["ip", "link", "del", layout.bridge], check=False)
    state = nodeconf.read_state(layout)
    remove_iptables_rules(layout, ipaddress.ip_network(state["subnet"]) if state.get("subnet") else None)
    for cached in cni_cache_files(layout, sandbox_ids(layout)):
        cached.unlink(missing_ok=True)
    for link in container_log_links(layout):
        link.unlink(missing_ok=True)
    before = state.get("host_dirs_before")
    for d in HOST_DIRS if before is not None else ():
        if str(d) not in before:
            with contextlib.suppress(OSError):  # not empty: another runtime on the host uses it
                d.rmdir()
    left = remove_cgroups(layout)
    if left:
        raise LabError(f"cgroups could not be removed: {[str(p) for p in left]}")
    if mounts_under(layout.root):
        raise LabError(f"mounts are left under {layout.root}")
