"""Fixtures for the node agent's tests: real memory cgroups (see `kernel`), and the lab's real API
server, namespaces and CRDs, shared with the e2e suite."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.agent import kernel
from tests.e2e.conftest import crds, kube, kubeconfig, namespace, pytest_runtest_makereport  # noqa: F401


@pytest.fixture
def kubelet_cgroups() -> Iterator[kernel.KubeletCgroups]:
    """A fresh kubelet-shaped tree in the real memory hierarchy; skips when it cannot be written."""
    tree = kernel.KubeletCgroups(kernel.make_test_root())
    try:
        yield tree
    finally:
        tree.cleanup()
    assert not tree.root.exists(), f"{tree.root} was not removed"
