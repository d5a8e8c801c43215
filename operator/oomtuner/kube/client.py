"""Connecting to the API server: in-cluster service account first, then the kubeconfig.

A kubeconfig is input like any other: a file that is not a regular file (`/dev/zero`, a FIFO) or
larger than `MAX_KUBECONFIG_BYTES` is refused before the `kubernetes` package reads it, and whatever
that package raises on a broken one (NUL bytes, bad base64 in `certificate-authority-data`, a list
where a map belongs) becomes one NoCluster line.
"""

from __future__ import annotations

import os
import stat

import kubernetes

from oomtuner.kube import api

MAX_KUBECONFIG_BYTES = 4 * 1024 * 1024
_DEFAULT_KUBECONFIG = "~/.kube/config"


class NoCluster(RuntimeError):
    """Neither in-cluster configuration nor a usable kubeconfig was found."""


def connect(
    *, kubeconfig: str | None = None, context: str | None = None, timeout: float = 30.0, retries: bool = True
) -> api.Client:
    """A JSON client for the cluster. Raises NoCluster with a readable message.

    `timeout` bounds each request (connecting and reading the whole answer); `retries=False` sends
    each request once (the CLI: a dead server costs one timeout, not four).
    """
    configuration = kubernetes.client.Configuration()
    if not retries:
        configuration.retries = False
    if kubeconfig is None and context is None:
        try:
            kubernetes.config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
            return api.Client(kubernetes.client.ApiClient(configuration), timeout=timeout)
        except kubernetes.config.ConfigException:
            pass
    paths = kubeconfig or os.environ.get("KUBECONFIG") or _DEFAULT_KUBECONFIG
    shown = kubeconfig or "$KUBECONFIG or ~/.kube/config"
    for path in paths.split(os.pathsep):
        _check_file(os.path.expanduser(path), shown=shown)
    try:
        kubernetes.config.load_kube_config(  # type: ignore[no-untyped-call]
            config_file=kubeconfig, context=context, client_configuration=configuration
        )
    except Exception as exc:  # noqa: BLE001 - the loader's failures on a broken file are not enumerable
        raise NoCluster(f"cannot load a kubeconfig ({shown}): {_first_line(exc)}") from None
    return api.Client(kubernetes.client.ApiClient(configuration), timeout=timeout)


def _check_file(path: str, *, shown: str) -> None:
    """Refuse a kubeconfig path that could not be read in bounded time and memory (a missing one is
    left to the loader, which merges the files that exist)."""
    try:
        info = os.stat(path)
    except OSError:
        return
    if not stat.S_ISREG(info.st_mode):
        raise NoCluster(f"cannot load a kubeconfig ({shown}): {path} is not a regular file")
    if info.st_size > MAX_KUBECONFIG_BYTES:
        raise NoCluster(f"cannot load a kubeconfig ({shown}): {path} is larger than "
                        f"{MAX_KUBECONFIG_BYTES // (1024 * 1024)} MiB")


def _first_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    text = text if len(text) <= 300 else text[:297] + "..."
    name = type(exc).__name__ if type(exc).__name__ != "Error" else f"{type(exc).__module__}.Error"  # binascii.Error
    return f"{name}: {text}" if text else name
