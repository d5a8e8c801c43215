"""Fixtures for the end-to-end suite: a real cluster, the real CRDs, the real operator process.

What is real: the API server, etcd, controller-manager and scheduler of the local lab (or the kind
cluster that KUBECONFIG points at), the CRDs from crds/, and `oomtuner run` as a separate process.
What is played: the kubelet. kwok runs the pods; an OOM kill is written into the pod status the way
a kubelet writes it (`oomtuner_lab.inject`), and a node-wide OOM is the kubelet's SystemOOM event.

Each test gets its own namespace. When a test fails, the operator's log and the namespace's events
are printed.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import pathlib
import socket
import subprocess
import sys
import urllib.request
import uuid
from typing import Iterator

import kubernetes
import pytest
import yaml

from oomtuner.kube import api
from oomtuner.kube import client as kube_client
from tests.e2e.kit import wait_for

ROOT = pathlib.Path(__file__).resolve().parents[2]
CRDS = ROOT / "crds"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def kubeconfig() -> str:
    """KUBECONFIG when set (kind, any cluster); otherwise the local lab, started if needed."""
    given = os.environ.get("KUBECONFIG")
    if given:
        return given
    from oomtuner_lab import cluster

    return str(cluster.ensure_up(echo=lambda line: print(line, file=sys.stderr)))


@pytest.fixture(scope="session")
def kube(kubeconfig: str) -> api.Client:
    return kube_client.connect(kubeconfig=kubeconfig)


@pytest.fixture(scope="session")
def core_v1(kubeconfig: str) -> kubernetes.client.CoreV1Api:
    configuration = kubernetes.client.Configuration()
    kubernetes.config.load_kube_config(config_file=kubeconfig, client_configuration=configuration)
    return kubernetes.client.CoreV1Api(kubernetes.client.ApiClient(configuration))


@pytest.fixture(scope="session")
def crds(kube: api.Client) -> list[str]:
    """Install crds/ with server-side apply and wait until they are Established."""
    if not CRDS.is_dir():
        pytest.fail(f"CRD folder {CRDS} is missing: run `oomtuner crds`")
    names = []
    for path in sorted(CRDS.glob("*.yaml")):
        body = yaml.safe_load(path.read_text())
        name = body["metadata"]["name"]
        kube.apply(f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}", body,
                   field_manager="oomtuner-e2e", force=True)
        names.append(name)
    for name in names:
        wait_for(lambda: _established(kube, name), timeout=30, what=f"CRD {name} Established")
    return names


def _established(kube: api.Client, name: str) -> bool:
    body = kube.get(f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}")
    return any(c.get("type") == "Established" and c.get("status") == "True"
               for c in (body.get("status") or {}).get("conditions") or [])


class OperatorProcess:
    """`oomtuner run` as a child process, with its log in a file. `command` is what follows the
    Python interpreter (the fault suite runs replicas with peering, or through a wrapper)."""

    STANDALONE = ("-m", "oomtuner", "run", "--standalone", "--all-namespaces")

    def __init__(self, *, kubeconfig: str, log_dir: pathlib.Path, extra_env: dict[str, str] | None = None,
                 command: tuple[str, ...] = STANDALONE, name: str = "operator"):
        self.kubeconfig = kubeconfig
        self.log_path = log_dir / f"{name}.log"
        self.extra_env = extra_env or {}
        self.command = command
        self.proc: subprocess.Popen[bytes] | None = None
        self.metrics_port = 0
        self.liveness_port = 0
        self.starts = 0

    def start(self) -> None:
        self.metrics_port, self.liveness_port = _free_port(), _free_port()
        env = {**os.environ, "KUBECONFIG": self.kubeconfig, "OOMTUNER_LOG_FORMAT": "text",
               "OOMTUNER_COOLDOWN": "10m", **self.extra_env}
        with open(self.log_path, "ab") as log:
            log.write(f"\n==== start #{self.starts + 1} at {datetime.datetime.now().isoformat()} ====\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                [sys.executable, *self.command,
                 "--metrics-port", str(self.metrics_port), "--liveness-port", str(self.liveness_port)],
                stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT,
            )
        self.starts += 1
        wait_for(self._healthy, timeout=60, what="the operator's /healthz")

    def _healthy(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            pytest.fail(f"the operator exited with {self.proc.returncode}:\n{self.log_tail()}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.liveness_port}/healthz", timeout=1) as r:
                return r.status == 200
        except OSError:
            return False

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def kill(self) -> None:
        """SIGKILL: no cleanup, no flush, as when a node dies or the OOM killer takes the operator."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(timeout=10)
            self.proc = None

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as r:
            return str(r.read().decode())

    def log_tail(self, lines: int = 150) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no operator log)"


@pytest.fixture(scope="module")
def operator(kubeconfig: str, crds: list[str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[OperatorProcess]:
    """One operator per test module: modules that start operators of their own (the chart's, one
    with Prometheus) never find another one reacting to their kills."""
    proc = OperatorProcess(kubeconfig=kubeconfig, log_dir=tmp_path_factory.mktemp("operator"))
    proc.start()
    yield proc
    proc.stop()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"rep_{report.when}", report)


@pytest.fixture
def namespace(request: pytest.FixtureRequest, kube: api.Client, crds: list[str]) -> Iterator[str]:
    """A fresh namespace; on failure, the operator's log and the namespace's events are printed."""
    name = f"e2e-{uuid.uuid4().hex[:8]}"
    kube.create("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    wait_for(lambda: kube.get_or_none(f"/api/v1/namespaces/{name}/serviceaccounts/default"), timeout=30,
             what="the default ServiceAccount")
    yield name
    failed = getattr(request.node, "rep_call", None)
    if failed is not None and failed.failed:
        events = kube.list(f"/api/v1/namespaces/{name}/events")
        print(f"\n---- events in {name} ----")
        for ev in events:
            print(f"{ev.get('type')} {ev.get('reason')} {ev.get('involvedObject', {}).get('kind')}/"
                  f"{ev.get('involvedObject', {}).get('name')}: {ev.get('message')}")
        op = request.getfixturevalue("operator") if "operator" in request.fixturenames else None
        if op is not None:
            print("---- operator log ----\n" + op.log_tail())
    with contextlib.suppress(api.ApiError):
        kube.delete(f"/api/v1/namespaces/{name}")


