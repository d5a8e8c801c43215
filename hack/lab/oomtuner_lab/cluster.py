"""Bringing the lab up and down: etcd, kube-apiserver, kube-controller-manager,
kube-scheduler and kwok as local processes, plus three fake kwok Nodes, and the real node
(`realnode`) where the host can run it."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from oomtuner_lab import binaries, config, pki, processes, realnode
from oomtuner_lab.config import COMPONENTS, Paths, Ports
from oomtuner_lab.processes import LabError

Echo = Callable[[str], None]

KWOK_ANNOTATION = "kwok.x-k8s.io/node"
SELF_CHECK_POD = "oomtuner-lab-selfcheck"
PAUSE_IMAGE = "registry.k8s.io/pause:3.10"
NODE_IP_PREFIX = "10.89.0."  # nothing listens there: kwok nodes are only API objects


@dataclass(frozen=True)
class NodeSpec:
    name: str
    cpu: int  # cores
    memory_gi: int

    def manifest(self, k8s_version: str, index: int) -> dict[str, Any]:
        return {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": self.name,
                "annotations": {KWOK_ANNOTATION: "fake", "node.alpha.kubernetes.io/ttl": "0"},
                "labels": {
                    "kubernetes.io/hostname": self.name,
                    "kubernetes.io/os": "linux",
                    "kubernetes.io/arch": "amd64",
                    "node.kubernetes.io/instance-type": f"lab-{self.cpu}cpu-{self.memory_gi}gi",
                    "type": "kwok",
                },
            },
            "spec": {},
            "status": self.status(k8s_version, index),
        }

    def status(self, k8s_version: str, index: int) -> dict[str, Any]:
        memory_ki = self.memory_gi * 1024 * 1024
        # Like a kubelet with the default eviction threshold (memory.available<100Mi) and
        # 100m of CPU reserved for the system.
        return {
            "capacity": {
                "cpu": str(self.cpu),
                "memory": f"{memory_ki}Ki",
                "pods": "110",
                "ephemeral-storage": "100Gi",
            },
            "allocatable": {
                "cpu": f"{self.cpu * 1000 - 100}m",
                "memory": f"{memory_ki - 100 * 1024}Ki",
                "pods": "110",
                "ephemeral-storage": "95Gi",
            },
            "addresses": [
                {"type": "InternalIP", "address": f"{NODE_IP_PREFIX}{10 + index}"},
                {"type": "Hostname", "address": self.name},
            ],
            "nodeInfo": {
                "architecture": "amd64",
                "operatingSystem": "linux",
                "osImage": "kwok",
                "kernelVersion": "6.1.0-kwok",
                "kubeletVersion": k8s_version,
                "kubeProxyVersion": "",  # deprecated, but the Python client's model requires it
                "containerRuntimeVersion": "kwok",
                "machineID": "",
                "systemUUID": "",
                "bootID": "",
            },
        }


#: The fake nodes `up` creates.
NODES: tuple[NodeSpec, ...] = (
    NodeSpec("lab-node-small", cpu=4, memory_gi=16),
    NodeSpec("lab-node-medium", cpu=8, memory_gi=32),
    NodeSpec("lab-node-large", cpu=16, memory_gi=64),
)


@dataclass(frozen=True)
class ComponentStatus:
    name: str
    pid: int | None
    alive: bool
    log: Path


@dataclass(frozen=True)
class Status:
    components: tuple[ComponentStatus, ...]
    apiserver: str  # "ok", or why not
    kubeconfig: Path
    server: str
    real_node: realnode.Status

    @property
    def running(self) -> bool:
        """The control plane and the kwok nodes run (the real node is extra: see `real_node`)."""
        return all(c.alive for c in self.components) and self.apiserver == "ok"

    @property
    def anything_alive(self) -> bool:
        return any(c.alive for c in self.components)

    def lines(self) -> list[str]:
        out = [f"{'COMPONENT':<24} {'PID':>8}  STATE  LOG"]
        for c in self.components:
            state = "alive" if c.alive else "dead"
            out.append(f"{c.name:<24} {c.pid or '-':>8}  {state:<5}  {c.log}")
        out.append(f"apiserver {self.server}: {self.apiserver}")
        out.append(self.real_node.line())
        out.append(f"kubeconfig: {self.kubeconfig}")
        return out


# --- HTTP health checks -------------------------------------------------------------------


def _admin_ssl(paths: Paths) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(paths.pki.ca_crt))
    ctx.load_cert_chain(str(paths.pki.client_crt("admin")), str(paths.pki.client_key("admin")))
    return ctx


def _insecure_ssl() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def _get(url: str, ctx: ssl.SSLContext | None = None, timeout: float = 2.0) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, context=ctx, timeout=timeout) as resp:  # noqa: S310
            return resp.status, resp.read().decode(errors="replace")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")


def _ok(url: str, ctx: ssl.SSLContext | None = None) -> bool:
    return _get(url, ctx)[0] == 200


def apiserver_health(paths: Paths, ports: Ports | None = None) -> str:
    if not paths.pki.complete():
        return "no certificates"
    try:
        code, body = _get(f"{paths.server(ports)}/readyz", _admin_ssl(paths))
    except (OSError, ssl.SSLError) as exc:
        return f"unreachable ({getattr(exc, 'reason', exc)})"
    return "ok" if code == 200 else f"HTTP {code}: {body.strip()[:200]}"


def _etcd_ready(ports: Ports) -> bool:
    code, body = _get(f"http://127.0.0.1:{ports.etcd_client}/health")
    return code == 200 and json.loads(body).get("health") == "true"


# --- Kubernetes API through the Python client ---------------------------------------------


@contextlib.contextmanager
def core_v1(kubeconfig: Path) -> Iterator[Any]:
    """A CoreV1Api on the lab (closed afterwards)."""
    from kubernetes import client
    from kubernetes import config as kconfig

    api_client = kconfig.new_client_from_config(config_file=str(kubeconfig))
    try:
        yield client.CoreV1Api(api_client)
    finally:
        api_client.close()


def _raw(call: Callable[..., Any], *args: Any, **kwargs: Any) -> dict[str, Any]:
    """Call a kubernetes client method and return the JSON body as a dict."""
    resp = call(*args, _preload_content=False, **kwargs)
    return json.loads(resp.data)


def _api_status(exc: Exception) -> int | None:
    return getattr(exc, "status", None)


def ensure_nodes(api: Any, k8s_version: str) -> None:
    """Create the fake Nodes with their status in the same request: kwok's node-initialize
    stage keeps the capacity, addresses and nodeInfo it finds, and fills in defaults
    (1k CPUs, 1Ti) for what is missing, so the status must be there before kwok sees them."""
    for index, node in enumerate(NODES):
        try:
            _raw(api.create_node, node.manifest(k8s_version, index))
        except Exception as exc:
            if _api_status(exc) != 409:
                raise
            _raw(
                api.patch_node_status,
                node.name,
                {"status": node.status(k8s_version, index)},
                _content_type="application/merge-patch+json",
            )


def _delete_stale_leases(api: Any) -> None:
    """Delete the Node Leases a previous kwok held. Each kwok process has a new identity and
    will not take over a Lease held by another until it expires (40s), during which the
    node lifecycle controller may mark the Nodes unreachable and evict their pods."""
    from kubernetes import client

    leases = client.CoordinationV1Api(api.api_client)
    for node in NODES:
        try:
            leases.delete_namespaced_lease(node.name, "kube-node-lease")
        except Exception as exc:
            if _api_status(exc) != 404:
                raise


def _nodes_ready(api: Any) -> bool:
    names = {n.name for n in NODES}
    ready = set()
    for item in _raw(api.list_node)["items"]:
        for cond in item.get("status", {}).get("conditions") or []:
            if cond.get("type") == "Ready" and cond.get("status") == "True":
                ready.add(item["metadata"]["name"])
    return names <= ready


def _service_account_ready(api: Any, namespace: str = "default") -> bool:
    try:
        _raw(api.read_namespaced_service_account, "default", namespace)
    except Exception as exc:
        if _api_status(exc) == 404:
            return False
        raise
    return True


def _self_check(api: Any, echo: Echo) -> None:
    """Create a pod, see the scheduler place it and kwok run it, delete it."""
    ns = "default"
    body = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": SELF_CHECK_POD, "labels": {"app.kubernetes.io/name": SELF_CHECK_POD}},
        "spec": {
            "containers": [{"name": "pause", "image": PAUSE_IMAGE}],
            "terminationGracePeriodSeconds": 0,
        },
    }
    with contextlib.suppress(Exception):
        api.delete_namespaced_pod(SELF_CHECK_POD, ns, grace_period_seconds=0)
    processes.wait_until(
        "the old self-check pod to go",
        lambda: _pod_gone(api, ns, SELF_CHECK_POD),
        timeout=20,
    )
    _raw(api.create_namespaced_pod, ns, body)

    def running() -> bool:
        status = _raw(api.read_namespaced_pod, SELF_CHECK_POD, ns).get("status", {})
        return status.get("phase") == "Running"

    waited = processes.wait_until("the self-check pod to run", running, timeout=30)
    api.delete_namespaced_pod(SELF_CHECK_POD, ns, grace_period_seconds=0)
    echo(f"    self-check: a pod was scheduled and Running in {waited:.1f}s")


def _pod_gone(api: Any, ns: str, name: str) -> bool:
    try:
        _raw(api.read_namespaced_pod, name, ns)
    except Exception as exc:
        if _api_status(exc) == 404:
            return True
        raise
    return False


# --- orchestration ------------------------------------------------------------------------


@contextlib.contextmanager
def _locked(paths: Paths) -> Iterator[None]:
    """Serialize up/down between processes (e.g. several pytest workers)."""
    paths.root.mkdir(parents=True, exist_ok=True)
    with open(paths.lock_file, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def status(paths: Paths | None = None) -> Status:
    paths = paths or Paths()
    comps = []
    for name in COMPONENTS:
        proc = paths.proc(name)
        comps.append(ComponentStatus(name, proc.pid(), proc.alive(), proc.log_file))
    ports = paths.load_ports()
    health = apiserver_health(paths, ports) if ports.apiserver else "never started"
    return Status(tuple(comps), health, paths.kubeconfig, paths.server(ports), realnode.status(paths))


def is_running(paths: Paths | None = None) -> bool:
    return status(paths).running


def _quiet(_: str) -> None:
    pass


def real_node_wanted() -> bool:
    """`OOMTUNER_LAB_REAL_NODE=0` keeps the lab to kwok nodes (default: a real node where the host can)."""
    return os.environ.get("OOMTUNER_LAB_REAL_NODE", "1") not in ("0", "false", "no")


def up(*, echo: Echo = print, self_check: bool = True, build: bool = True, real_node: bool | None = None) -> Status:
    """Start the lab unless it runs already (and the real node, when wanted and not running).
    Returns its status."""
    paths = Paths()
    real_node = real_node_wanted() if real_node is None else real_node
    with _locked(paths):
        current = status(paths)
        if current.running:
            echo(f"lab already running ({paths.root})")
            if real_node and not current.real_node.running:
                _start_real_node(paths, build=build, echo=echo)
                current = status(paths)
            for line in current.lines():
                echo("  " + line)
            return current
        if current.anything_alive:
            echo("lab partly running: stopping what is left first")
            _down(paths, echo=_quiet)
        for attempt in (1, 2):
            try:
                _up(paths, echo=echo, self_check=self_check, build=build, real_node=real_node)
                break
            except LabError as exc:
                # A component that dies at start is most often a port that a process of the last
                # run still held; one more try, after a pause, with the ports chosen again.
                echo(f"lab up failed: stopping what started (logs stay in {paths.logs}): {str(exc).splitlines()[0]}")
                _down(paths, echo=_quiet)
                if attempt == 2:
                    raise
                time.sleep(3)
                echo("trying once more")
            except BaseException:
                echo("lab up failed: stopping what started (logs stay in " + str(paths.logs) + ")")
                _down(paths, echo=_quiet)
                raise
        return status(paths)


def _up(paths: Paths, *, echo: Echo, self_check: bool, build: bool, real_node: bool) -> None:
    t0 = time.monotonic()
    if build:
        bin_dir = binaries.ensure_built()
    else:
        missing = binaries.missing(binaries.CONTROL_PLANE)
        if missing:
            raise LabError(f"missing binaries {missing}: run `oomtuner lab build` (hack/lab/build.sh)")
        bin_dir = binaries.bin_dir()
    k8s_version = binaries.k8s_version()

    ports = paths.load_ports()
    ports.choose()
    paths.save_ports(ports, k8s_version=k8s_version, bin_dir=str(bin_dir))
    pki.ensure(paths.pki.dir, service_ip=config.SERVICE_IP)
    config.write_kubeconfigs(paths, ports)
    paths.data.mkdir(parents=True, exist_ok=True)
    echo(f"starting the lab (Kubernetes {k8s_version}) in {paths.root}")

    checks: dict[str, Callable[[], bool]] = {
        "etcd": lambda: _etcd_ready(ports),
        "kube-apiserver": lambda: apiserver_health(paths, ports) == "ok",
        "kube-controller-manager": lambda: _ok(
            f"https://127.0.0.1:{ports.controller_manager}/healthz", _insecure_ssl()
        ),
        "kube-scheduler": lambda: _ok(f"https://127.0.0.1:{ports.scheduler}/healthz", _insecure_ssl()),
        "kwok": lambda: _ok(f"http://127.0.0.1:{ports.kwok}/healthz"),
    }
    with core_v1(paths.kubeconfig) as api:
        for name in COMPONENTS:
            if name == "kwok":
                # Before kwok: it keeps the Nodes' status it finds, and must own their Leases.
                ensure_nodes(api, k8s_version)
                _delete_stale_leases(api)
            proc = paths.proc(name)
            start = time.monotonic()
            argv = config.argv(name, bin_dir, paths, ports, kwok_stages=binaries.kwok_stages_dir())
            pid = processes.start(proc, argv, env=config.env(name, paths))
            processes.wait_until(f"{name} to be healthy", checks[name], timeout=60, proc=proc)
            echo(f"  {name:<24} pid {pid:<8} ready in {time.monotonic() - start:4.1f}s  log {proc.log_file}")

        start = time.monotonic()
        processes.wait_until("the kwok nodes to be Ready", lambda: _nodes_ready(api), timeout=60)
        processes.wait_until(
            "the default ServiceAccount", lambda: _service_account_ready(api), timeout=60
        )
        echo(
            f"  {len(NODES)} kwok nodes Ready, default ServiceAccount present in "
            f"{time.monotonic() - start:.1f}s"
        )
        if self_check:
            _self_check(api, echo)
    if real_node:
        _start_real_node(paths, build=build, echo=echo)
    else:
        realnode.turned_off(paths)
    echo(f"lab up in {time.monotonic() - t0:.1f}s")
    echo(f"kubeconfig: {paths.kubeconfig}")
    echo(f"  export KUBECONFIG={paths.kubeconfig}")


def _start_real_node(paths: Paths, *, build: bool, echo: Echo) -> None:
    """The real node beside the kwok nodes; one line when the host cannot run it."""
    if build and realnode.unavailable() is None:
        binaries.ensure_built(binaries.REAL_NODE)
    with core_v1(paths.kubeconfig) as api:
        realnode.start(paths, paths.load_ports(), api, echo=echo)


def down(*, purge: bool = False, echo: Echo = print) -> None:
    paths = Paths()
    with _locked(paths):
        _down(paths, echo=echo)
        if purge:
            _purge(paths, echo=echo)


def _down(paths: Paths, *, echo: Echo) -> None:
    # The lab's Prometheus and exporter, when `oomtuner lab prometheus up` started them, and the
    # dashboard `make demo` leaves running.
    from oomtuner_lab import dashboard, prometheus

    dashboard.stop(echo=echo)
    prometheus.lab_down(echo=echo)
    ports = paths.load_ports()
    reachable = bool(ports.apiserver) and apiserver_health(paths, ports) == "ok"
    realnode.stop(paths, api=_NodeDeleter(paths, ports) if reachable else None, echo=echo)
    for name in reversed(COMPONENTS):
        proc = paths.proc(name)
        pid = proc.pid()
        if processes.stop(proc):
            echo(f"  stopped {name} (pid {pid})")
        elif pid is not None:
            echo(f"  {name} (pid {pid}) was not running")


class _NodeDeleter:
    """Deletes a Node with one HTTPS request as the lab's admin: `lab down` needs nothing more of
    the API, and importing the Kubernetes client's models takes seconds."""

    def __init__(self, paths: Paths, ports: Ports) -> None:
        self.paths, self.ports = paths, ports

    def delete_node(self, name: str) -> None:
        request = urllib.request.Request(f"{self.paths.server(self.ports)}/api/v1/nodes/{name}", method="DELETE")
        try:
            with urllib.request.urlopen(request, context=_admin_ssl(self.paths), timeout=10):  # noqa: S310
                pass
        except urllib.error.HTTPError as exc:
            if exc.code != 404:
                raise


def _purge(paths: Paths, *, echo: Echo) -> None:
    """Delete everything under the lab directory but the lock file we hold."""
    for child in paths.root.iterdir():
        if child == paths.lock_file:
            continue
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()
    echo(f"  purged {paths.root}")


def ensure_up(*, echo: Echo = _quiet) -> Path:
    """Start the lab if it is not running (building missing binaries); return the kubeconfig.

    For test fixtures: the lab keeps running after the caller exits; `down()` stops it.
    """
    return up(echo=echo).kubeconfig


def env_lines() -> list[str]:
    paths = Paths()
    return [
        f"export KUBECONFIG={paths.kubeconfig}",
        f"export PATH={binaries.bin_dir()}:$PATH",
    ]
