"""`oomtuner run`: the operator itself."""

from __future__ import annotations

import logging
import os
import sys

import click

from oomtuner import __version__, config, memory
from oomtuner.cli.base import Fail, connect, context_option, kubeconfig_option, main, prometheus_options, settings_from
from oomtuner.domain import redaction
from oomtuner.kube import api

logger = logging.getLogger("oomtuner")


def _setup_logging(settings: config.Settings, verbose: bool) -> None:
    import kopf

    fmt = settings.log_format
    if fmt == "auto":
        fmt = "text" if sys.stderr.isatty() else "json"
    kopf.configure(
        verbose=verbose,
        log_format=kopf.LogFormat.JSON if fmt == "json" else kopf.LogFormat.FULL,
        log_refkey="object" if fmt == "json" else None,
    )
    logging.getLogger().setLevel(settings.log_level.upper() if not verbose else "DEBUG")
    for noisy in ("kubernetes", "urllib3", "aiohttp.access") + (() if verbose else ("kopf.objects",)):
        logging.getLogger(noisy).setLevel(logging.WARNING)


@main.command()
@click.option("-n", "--namespace", "namespaces", multiple=True, help="Watch this namespace. Repeatable.")
@click.option("-A", "--all-namespaces", is_flag=True, help="Watch every namespace (the default without --namespace).")
@click.option("--default-mode", type=click.Choice(["Observe", "Recommend", "Auto"]), help="Mode where no OOMPolicy applies.")
@click.option("--metrics-port", type=click.IntRange(0, 65535), help="Port of /metrics; 0 disables.")
@click.option("--liveness-port", type=click.IntRange(0, 65535), help="Port of /healthz; 0 disables.")
@click.option("--metrics-address", help="IP address /metrics listens on (default 0.0.0.0: every address).")
@click.option("--liveness-address", help="IP address /healthz listens on (default 0.0.0.0: every address).")
@click.option("--culprit-names", type=click.Choice(["same-namespace", "all"]),
              help="Name a Node kill's culprit from another namespace in the victim's namespace (all), or give only its figures.")
@click.option("--standalone", is_flag=True, default=None, help="No peering: for a single replica.")
@click.option("--priority", type=int, help="Peering priority; give each replica its own.")
@click.option("--priority-from-pod-name", is_flag=True,
              help="Derive a distinct peering priority from $POD_NAME (or $HOSTNAME): for replicas of a Deployment.")
@prometheus_options
@click.option("--log-format", type=click.Choice(["auto", "json", "text"]), help="auto: JSON when not on a terminal.")
@click.option("-v", "--verbose", is_flag=True)
@kubeconfig_option
@context_option
def run(
    namespaces: tuple[str, ...],
    all_namespaces: bool,
    default_mode: str | None,
    metrics_port: int | None,
    liveness_port: int | None,
    metrics_address: str | None,
    liveness_address: str | None,
    culprit_names: str | None,
    standalone: bool | None,
    priority: int | None,
    priority_from_pod_name: bool,
    log_format: str | None,
    verbose: bool,
    kubeconfig: str | None,
    context: str | None,
    **prometheus: str | None,
) -> None:
    """Run the operator against the current cluster."""
    if namespaces and all_namespaces:
        raise Fail("--namespace and --all-namespaces exclude each other")
    if priority_from_pod_name:
        priority = _priority_from_pod_name(priority=priority, standalone=standalone)
    settings = settings_from(
        namespaces=list(namespaces) or (None if not all_namespaces else []),
        default_mode=default_mode,
        metrics_port=metrics_port,
        liveness_port=liveness_port,
        metrics_address=metrics_address,
        liveness_address=liveness_address,
        culprit_names=culprit_names,
        standalone=standalone,
        priority=priority,
        log_format=log_format,
        **prometheus,
    )
    _setup_logging(settings, verbose)
    memory.limit_arenas()
    if kubeconfig:
        os.environ["KUBECONFIG"] = kubeconfig
    _start(settings, connect(kubeconfig, context))


def _priority_from_pod_name(*, priority: int | None, standalone: bool | None) -> int:
    if priority is not None or standalone:
        raise Fail("--priority-from-pod-name excludes --priority and --standalone")
    pod_name = os.environ.get("POD_NAME") or os.environ.get("HOSTNAME")
    if not pod_name:
        raise Fail("--priority-from-pod-name needs $POD_NAME or $HOSTNAME")
    return config.priority_from_name(pod_name)


def _start(settings: config.Settings, cl: api.Client) -> None:
    """Build the operator, serve /metrics, and hand over to kopf until it stops."""
    import kopf

    from oomtuner import app as app_mod
    from oomtuner import handlers  # noqa: F401 - registers the kopf handlers
    from oomtuner.prom import metrics

    operator = app_mod.App(client=cl, settings=settings)
    metrics.set_build_info(__version__)
    try:
        metrics.serve(settings.metrics_port, addr=settings.metrics_address)
    except OSError as exc:
        raise Fail(f"--metrics-address {settings.metrics_address} --metrics-port {settings.metrics_port}: {exc.strerror or exc}") from None
    logger.info(
        "oomtuner %s starting: namespaces=%s default mode=%s metrics=%s:%s prometheus=%s culprit names=%s",
        __version__, ",".join(settings.namespaces) or "*", settings.default_mode.value, settings.metrics_address,
        settings.metrics_port, redaction.url(settings.prometheus_url) if settings.prometheus_url else "none",
        settings.culprit_names.value,
    )
    kopf.run(
        standalone=settings.standalone,
        priority=settings.priority,
        # A peering name makes peering mandatory in kopf (its KopfPeering CRDs must exist).
        peering_name=None if settings.standalone else settings.peering_name,
        clusterwide=not settings.namespaces,
        namespaces=settings.namespaces,
        liveness_endpoint=(f"http://{config.url_host(settings.liveness_address)}:{settings.liveness_port}/healthz"
                           if settings.liveness_port else None),
        memo=kopf.Memo(app=operator),
    )
