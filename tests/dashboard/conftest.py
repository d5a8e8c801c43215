"""Fixtures of the dashboard's browser tests: real recommendations on the lab, the dashboard as a
process, and a headless Chromium.

Real: the lab's API server and controller-manager, the CRDs, `oomtuner run` (it writes every
recommendation the pages show), `oomtuner dashboard` as a process (with and without Prometheus),
Debian's Prometheus scraping the lab exporter, and Chromium. Played: the kubelet (kills written
into pod status with `oomtuner_lab.inject`, the kubelet's SystemOOM event on a node of the
module's own), the node agent (its own `build_event` body for a child-process kill) and cAdvisor
(the exporter serves a working set for the scenario's pods).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import pathlib
import subprocess
import sys
import urllib.request
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from oomtuner.kube import api
from oomtuner_lab import exporter as lab_exporter
from oomtuner_lab import prometheus as lab_prometheus
from tests.dashboard import cdp, scenario
from tests.e2e import kit
from tests.e2e.conftest import ROOT, _free_port, core_v1, crds, kube, kubeconfig, operator, pytest_runtest_makereport  # noqa: F401
from tests.e2e.test_prometheus import exporter, prometheus  # noqa: F401 - the same Prometheus on the lab exporter


class DashboardProcess:
    """`oomtuner dashboard` as a child process, logging to a file."""

    def __init__(self, *, kubeconfig: str, log: pathlib.Path, args: list[str], env: dict[str, str]):
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        with open(log, "wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "oomtuner", "dashboard", "--port", str(self.port), "--refresh", "1", *args],
                stdout=out, stderr=subprocess.STDOUT, cwd=ROOT,
                env={**os.environ, "KUBECONFIG": kubeconfig, "OOMTUNER_PROMETHEUS_URL": "", **env})
        kit.wait_for(self._up, timeout=30, what="the dashboard's /healthz")

    def _up(self) -> bool:
        if self.proc.poll() is not None:
            pytest.fail(f"the dashboard exited with {self.proc.returncode}:\n{self.log.read_text(errors='replace')}")
        try:
            with urllib.request.urlopen(f"{self.url}/healthz", timeout=1) as r:
                return r.status == 200
        except OSError:
            return False

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)


@pytest.fixture(scope="module")
def lab_namespace(kube: api.Client, crds: list[str]) -> Iterator[str]:  # noqa: F811
    name = f"dash-{uuid.uuid4().hex[:6]}"
    kube.create("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    kit.wait_for(lambda: kube.get_or_none(f"/api/v1/namespaces/{name}/serviceaccounts/default"), timeout=30,
                 what="the default ServiceAccount")
    yield name
    with contextlib.suppress(api.ApiError):
        kube.delete(f"/api/v1/namespaces/{name}")


@pytest.fixture(scope="module")
def made(kube: api.Client, core_v1: Any, operator: Any, lab_namespace: str,  # noqa: F811
         exporter: lab_exporter.Exporter, prometheus: lab_prometheus.Server) -> Iterator[scenario.Made]:
    """The scenario's recommendations, as the operator wrote them (Prometheus scrapes meanwhile)."""
    made = scenario.make(kube, core_v1, namespace=lab_namespace, exporter=exporter)
    yield made
    with contextlib.suppress(api.ApiError):
        kube.delete(f"/api/v1/nodes/{made.node}")


@pytest.fixture(scope="module")
def dashboard(kubeconfig: str, made: scenario.Made, prometheus: lab_prometheus.Server,  # noqa: F811
              tmp_path_factory: pytest.TempPathFactory) -> Iterator[DashboardProcess]:
    proc = DashboardProcess(kubeconfig=kubeconfig, log=tmp_path_factory.mktemp("dashboard") / "dashboard.log",
                            args=["--allow-approve", "--top", "20"],
                            env={"OOMTUNER_PROMETHEUS_URL": prometheus.url, "OOMTUNER_PROMETHEUS_MIN_STEP": "2s"})
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def plain_dashboard(kubeconfig: str, made: scenario.Made, tmp_path_factory: pytest.TempPathFactory,  # noqa: F811
                    ) -> Iterator[DashboardProcess]:
    """The dashboard without Prometheus and without --allow-approve."""
    proc = DashboardProcess(kubeconfig=kubeconfig, log=tmp_path_factory.mktemp("plain-dashboard") / "dashboard.log",
                            args=[], env={})
    yield proc
    proc.stop()


TAKEN: list[pathlib.Path] = []


@dataclasses.dataclass
class Shots:
    folder: pathlib.Path

    def take(self, browser: cdp.Browser, name: str) -> pathlib.Path:
        path = browser.screenshot(self.folder / f"{name}.png")
        TAKEN.append(path)
        return path


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Where the screenshots are: one per page, kept as the run's artifacts."""
    for path in TAKEN:
        terminalreporter.write_line(f"dashboard screenshot: {path}")


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[cdp.Browser]:
    if cdp.find() is None:
        pytest.fail("chromium is not installed: run `bash hack/install-deps.sh` (Debian package chromium)")
    folder = tmp_path_factory.mktemp("chromium")
    session = cdp.Browser(profile=folder / "profile", log=folder / "chromium.log")
    yield session
    session.close()


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Shots:
    return Shots(folder=tmp_path_factory.mktemp("screenshots"))


