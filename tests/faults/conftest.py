"""Fixtures of the fault-injection suite: the local lab only, a scenario per test.

The scenarios stop, hang and restart the lab's own processes (kube-apiserver, etcd) and the operator,
so they need the lab of this checkout (`OOMTUNER_LAB_DIR`), not a cluster that KUBECONFIG points at.
Before each scenario the lab is put back as `lab up` left it, in case an earlier one failed halfway.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from typing import Any

import kubernetes
import pytest

from tests.e2e.conftest import crds, kube  # noqa: F401 - fixtures, on this suite's kubeconfig
from tests.faults import lab, scenario


@pytest.fixture(scope="session")
def kubeconfig() -> str:
    if os.environ.get("KUBECONFIG"):
        pytest.skip("fault injection stops and hangs the local lab's own processes: unset KUBECONFIG to run it")
    from oomtuner_lab import cluster

    return str(cluster.ensure_up(echo=lambda line: print(line, file=sys.stderr)))


@pytest.fixture(scope="session")
def core_v1(kubeconfig: str) -> Iterator[kubernetes.client.CoreV1Api]:
    """The kubelet's voice: bursts write from up to 16 threads, so the pool holds as many connections."""
    configuration = kubernetes.client.Configuration()
    kubernetes.config.load_kube_config(config_file=kubeconfig, client_configuration=configuration)
    configuration.connection_pool_maxsize = 32
    client = kubernetes.client.ApiClient(configuration)
    yield kubernetes.client.CoreV1Api(client)
    client.close()


@pytest.fixture
def faults(request: pytest.FixtureRequest, kubeconfig: str, kube: Any, core_v1: Any, crds: list[str],  # noqa: F811
           tmp_path: Any) -> Iterator[scenario.Scenario]:
    """A scenario: its own namespace, its operators, its figures written at the end."""
    restored = lab.restore()
    if restored:
        print(f"lab restored before {request.node.name}: {', '.join(restored)}", file=sys.stderr)
    case = scenario.Scenario(kube=kube, core_v1=core_v1, kubeconfig=kubeconfig, log_dir=tmp_path)
    try:
        yield case
    finally:
        case.close()
        lab.restore()
