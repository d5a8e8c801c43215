"""Connecting to the API server: in-cluster service account first, then the kubeconfig."""

from __future__ import annotations

import kubernetes

from oomtuner.kube import api


class NoCluster(RuntimeError):
    """Neither in-cluster configuration nor a usable kubeconfig was found."""


def connect(*, kubeconfig: str | None = None, context: str | None = None, timeout: float = 30.0) -> api.Client:
    """A JSON client for the cluster. Raises NoCluster with a readable message."""
    configuration = kubernetes.client.Configuration()
    if kubeconfig is None and context is None:
        try:
            kubernetes.config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
            return api.Client(kubernetes.client.ApiClient(configuration), timeout=timeout)
        except kubernetes.config.ConfigException:
            pass
    try:
        kubernetes.config.load_kube_config(  # type: ignore[no-untyped-call]
            config_file=kubeconfig, context=context, client_configuration=configuration
        )
    except (kubernetes.config.ConfigException, FileNotFoundError, OSError) as exc:
        raise NoCluster(f"cannot load a kubeconfig ({kubeconfig or '$KUBECONFIG or ~/.kube/config'}): {exc}") from None
    return api.Client(kubernetes.client.ApiClient(configuration), timeout=timeout)
