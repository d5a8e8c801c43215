"""The lab's state directory, ports and kubeconfigs."""

from __future__ import annotations

import base64
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import yaml

from oomtuner_lab import processes
from oomtuner_lab.pki import Pki

SERVICE_CIDR = "10.96.0.0/16"
SERVICE_IP = "10.96.0.1"  # the `kubernetes` Service
POD_CIDR = "10.244.0.0/16"
#: What the apiserver advertises in the `kubernetes` Endpoints. It binds 127.0.0.1 only, but
#: a loopback address is invalid in Endpoints, so advertise an address nothing listens on
#: (like the kwok nodes' addresses): pods in the lab are never run, so never connect.
ADVERTISE_ADDRESS = "10.89.0.1"
SA_ISSUER = "https://kubernetes.default.svc.cluster.local"

#: Started in this order, stopped in the reverse.
COMPONENTS: tuple[str, ...] = (
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kwok",
)

#: Which client certificate (pki.CLIENTS) each component's kubeconfig uses.
KUBECONFIG_USERS: dict[str, str] = {
    "kube-controller-manager": "kube-controller-manager",
    "kube-scheduler": "kube-scheduler",
    "kwok": "kwok",
    "kubelet": "kubelet",
}


def lab_dir() -> Path:
    env = os.environ.get("OOMTUNER_LAB_DIR")
    return Path(env) if env else Path.home() / ".cache" / "oomtuner" / "lab"


@dataclass
class Ports:
    etcd_client: int = 0
    etcd_peer: int = 0
    apiserver: int = 0
    controller_manager: int = 0
    scheduler: int = 0
    kwok: int = 0
    kubelet: int = 0  # the real node's kubelet API
    kubelet_healthz: int = 0

    def choose(self) -> None:
        """Keep the ports from the last run where still free, pick free ones for the rest,
        so kubeconfigs stay valid across `down` and `up`."""
        taken: set[int] = set()
        for name, port in asdict(self).items():
            if not port or port in taken or not processes.port_free(port):
                port = processes.free_port(exclude=taken)
            taken.add(port)
            setattr(self, name, port)


@dataclass
class Paths:
    root: Path = field(default_factory=lab_dir)

    @property
    def state_file(self) -> Path:
        return self.root / "lab.json"

    @property
    def lock_file(self) -> Path:
        return self.root / ".lock"

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def etcd_data(self) -> Path:
        return self.data / "etcd"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def pids(self) -> Path:
        return self.root / "pids"

    @property
    def kubeconfig(self) -> Path:
        """The admin kubeconfig (user in group system:masters)."""
        return self.root / "kubeconfig"

    def component_kubeconfig(self, component: str) -> Path:
        return self.root / "kubeconfigs" / f"{component}.kubeconfig"

    @property
    def pki(self) -> Pki:
        return Pki(self.root / "pki")

    def proc(self, component: str) -> processes.Proc:
        return processes.Proc(
            name=component,
            pid_file=self.pids / f"{component}.pid",
            log_file=self.logs / f"{component}.log",
        )

    def load_ports(self) -> Ports:
        try:
            data = json.loads(self.state_file.read_text())
        except (FileNotFoundError, ValueError):
            return Ports()
        known = set(asdict(Ports()))
        return Ports(**{k: int(v) for k, v in data.get("ports", {}).items() if k in known})

    def save_ports(self, ports: Ports, **extra: str) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.state_file.write_text(json.dumps({"ports": asdict(ports), **extra}, indent=2) + "\n")

    def server(self, ports: Ports | None = None) -> str:
        port = (ports or self.load_ports()).apiserver
        return f"https://127.0.0.1:{port}" if port else "(no port yet)"


def _b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def write_kubeconfig(path: Path, *, server: str, pki: Pki, client: str, user: str) -> None:
    """A kubeconfig with the CA and the client certificate embedded (portable, no file refs)."""
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "oomtuner-lab",
                "cluster": {"server": server, "certificate-authority-data": _b64(pki.ca_crt)},
            }
        ],
        "users": [
            {
                "name": user,
                "user": {
                    "client-certificate-data": _b64(pki.client_crt(client)),
                    "client-key-data": _b64(pki.client_key(client)),
                },
            }
        ],
        "contexts": [{"name": "oomtuner-lab", "context": {"cluster": "oomtuner-lab", "user": user}}],
        "current-context": "oomtuner-lab",
        "preferences": {},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(yaml.safe_dump(config, sort_keys=False))
    tmp.chmod(0o600)
    tmp.replace(path)


def write_kubeconfigs(paths: Paths, ports: Ports) -> None:
    server = paths.server(ports)
    write_kubeconfig(paths.kubeconfig, server=server, pki=paths.pki, client="admin", user="lab-admin")
    for component, client in KUBECONFIG_USERS.items():
        write_kubeconfig(
            paths.component_kubeconfig(component), server=server, pki=paths.pki, client=client, user=component
        )


def kwok_workdir(paths: Paths) -> Path:
    return paths.root / "kwok"


def write_kwok_config(paths: Paths, stages_dir: Path) -> Path:
    """kwok's config: its default Stages (copied from the kwok module by build.sh).

    The standalone kwok binary has no built-in stages (kwokctl writes its defaults into the
    config it generates), so we do the same: node-initialize and node-heartbeat-with-lease
    make our Nodes Ready, pod-ready makes pods Running, pod-complete finishes Job pods,
    pod-delete removes deleted pods. kwok reads `$KWOK_WORKDIR/kwok.yaml` (default
    ~/.kwok/kwok.yaml) before any --config, so the lab points KWOK_WORKDIR at this file's
    directory, keeping a user's own kwok config out.
    """
    names = ("node-initialize", "node-heartbeat-with-lease", "pod-ready", "pod-complete", "pod-delete")
    # No KwokConfiguration document: without one kwok uses its defaulted configuration
    # (one with empty options would leave e.g. the lease parallelism at 0), and the flags
    # set the rest.
    docs = [(stages_dir / f"{n}.yaml").read_text() for n in names]
    path = kwok_workdir(paths) / "kwok.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("---\n".join(d if d.endswith("\n") else d + "\n" for d in docs))
    return path


def env(component: str, paths: Paths) -> dict[str, str]:
    """Extra environment of one component."""
    if component == "kwok":
        return {"KWOK_WORKDIR": str(kwok_workdir(paths))}
    return {}


def argv(component: str, bin: Path, paths: Paths, ports: Ports, *, kwok_stages: Path) -> list[str]:
    """The command line of one component."""
    pki = paths.pki
    exe = str(bin / component)
    if component == "etcd":
        client = f"http://127.0.0.1:{ports.etcd_client}"
        peer = f"http://127.0.0.1:{ports.etcd_peer}"
        return [
            exe,
            "--name=lab",
            f"--data-dir={paths.etcd_data}",
            f"--listen-client-urls={client}",
            f"--advertise-client-urls={client}",
            f"--listen-peer-urls={peer}",
            f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster=lab={peer}",
            "--unsafe-no-fsync",
            "--log-level=warn",
        ]
    if component == "kube-apiserver":
        return [
            exe,
            f"--etcd-servers=http://127.0.0.1:{ports.etcd_client}",
            "--bind-address=127.0.0.1",
            f"--advertise-address={ADVERTISE_ADDRESS}",
            f"--secure-port={ports.apiserver}",
            f"--tls-cert-file={pki.serving_crt}",
            f"--tls-private-key-file={pki.serving_key}",
            f"--client-ca-file={pki.ca_crt}",
            f"--cert-dir={paths.data / 'apiserver'}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--authorization-mode=Node,RBAC",
            "--allow-privileged=true",
            f"--service-account-issuer={SA_ISSUER}",
            f"--service-account-key-file={pki.sa_pub}",
            f"--service-account-signing-key-file={pki.sa_key}",
            # The front proxy (aggregation layer) setup, as kubeadm does; without it every
            # component logs errors about the requestheader client CA.
            f"--requestheader-client-ca-file={pki.ca_crt}",
            "--requestheader-allowed-names=front-proxy-client",
            "--requestheader-username-headers=X-Remote-User",
            "--requestheader-group-headers=X-Remote-Group",
            "--requestheader-extra-headers-prefix=X-Remote-Extra-",
            f"--proxy-client-cert-file={pki.client_crt('front-proxy-client')}",
            f"--proxy-client-key-file={pki.client_key('front-proxy-client')}",
            # Towards the real node's kubelet (logs, exec, port-forward); it has no DNS name.
            f"--kubelet-client-certificate={pki.client_crt('apiserver-kubelet-client')}",
            f"--kubelet-client-key={pki.client_key('apiserver-kubelet-client')}",
            "--kubelet-preferred-address-types=InternalIP,Hostname",
            "--profiling=false",
        ]
    if component in ("kube-controller-manager", "kube-scheduler"):
        kubeconfig = paths.component_kubeconfig(component)
        common = [
            exe,
            f"--kubeconfig={kubeconfig}",
            f"--authentication-kubeconfig={kubeconfig}",
            f"--authorization-kubeconfig={kubeconfig}",
            "--bind-address=127.0.0.1",
            "--leader-elect=false",
            "--profiling=false",
            # The defaults (20 and 50 requests/s) make a 10,000-pod benchmark wait minutes for
            # ReplicaSets and bindings; real clusters of that size raise them too.
            "--kube-api-qps=300",
            "--kube-api-burst=600",
        ]
        if component == "kube-scheduler":
            return [*common, f"--secure-port={ports.scheduler}"]
        return [
            *common,
            f"--secure-port={ports.controller_manager}",
            f"--service-account-private-key-file={pki.sa_key}",
            f"--root-ca-file={pki.ca_crt}",
            f"--cluster-signing-cert-file={pki.ca_crt}",
            f"--cluster-signing-key-file={pki.ca_key}",
            "--use-service-account-credentials=true",
            "--controllers=*",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
        ]
    if component == "kwok":
        return [
            exe,
            f"--kubeconfig={paths.component_kubeconfig('kwok')}",
            f"--config={write_kwok_config(paths, kwok_stages)}",
            "--manage-all-nodes=false",
            "--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake",
            f"--cidr={POD_CIDR}",
            f"--server-address=127.0.0.1:{ports.kwok}",
            # kwok renews the Node Leases (node-heartbeat-with-lease only refreshes the
            # conditions every 10 minutes), or the node lifecycle controller taints the
            # nodes unreachable and evicts their pods.
            "--node-lease-duration-seconds=40",
        ]
    raise ValueError(f"unknown component {component!r}")
