"""The integration tests share the e2e fixtures for the cluster, the CRDs and namespaces, but never
start the operator."""

from tests.e2e.conftest import crds, kube, kubeconfig, namespace, pytest_runtest_makereport  # noqa: F401
