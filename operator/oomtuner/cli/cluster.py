"""Commands that read a cluster: `report`, `approve` and `dashboard`."""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

import click

from oomtuner.cli.base import (
    CLUSTER_ERROR,
    ClusterFail,
    Fail,
    connect,
    context_option,
    kubeconfig_option,
    main,
    namespace_option,
    namespaced,
    one_line,
    prometheus_options,
    request_timeout_option,
    settings_from,
    structured,
)


@main.command()
@click.option("-n", "--namespace", help="Only this namespace (default: all namespaces).")
@click.option("-A", "--all-namespaces", is_flag=True, help="Every namespace (the default without --namespace).")
@click.option("-o", "--output", type=click.Choice(["table", "json", "yaml"]), default="table", show_default=True)
@click.option("--top", type=click.IntRange(1, 1000), default=5, show_default=True, help="Victims listed per node.")
@prometheus_options
@kubeconfig_option
@context_option
@request_timeout_option
def report(
    namespace: str | None, all_namespaces: bool, output: str, top: int, kubeconfig: str | None, context: str | None,
    request_timeout: str, **prometheus: str | None,
) -> None:
    """Workloads with OOM kills, and who dies next on each node.

    With Prometheus (--prometheus-url, or the operator's OOMTUNER_PROMETHEUS_URL), the next victims
    are ranked by each container's working set now; without it (or --prometheus-url=''), or when it
    fails, by memory request, and one warning on stderr says so.
    """
    from oomtuner import report as report_mod
    from oomtuner.kube import api
    from oomtuner.prom import usage

    if namespace and all_namespaces:
        raise Fail("--namespace and --all-namespaces exclude each other")
    settings = settings_from(**prometheus)
    # The report says once on stderr what Prometheus did; the prom layer's log lines are for the operator's log.
    logging.getLogger("oomtuner.prom").addHandler(logging.NullHandler())
    cl = connect(kubeconfig, context, request_timeout=request_timeout)
    try:
        result = report_mod.collect(cl, namespace=namespace, top=top, usage=usage.from_settings(settings))
    except api.ApiError as exc:
        raise ClusterFail(str(exc)) from None
    warning = report_mod.warning(result)
    if warning:
        click.echo(f"oomtuner: {one_line(warning)}", err=True)
    if output == "table":
        click.echo(report_mod.render_table(result), nl=False)
    else:
        click.echo(structured(result, output), nl=False)


@main.command()
@click.argument("ref", metavar="NAMESPACE/NAME")
@namespace_option
@click.option("--wait/--no-wait", default=True, show_default=True, help="Wait for the operator to act on it.")
@click.option("--timeout", type=float, default=60, show_default=True, help="Seconds to wait.")
@kubeconfig_option
@context_option
@request_timeout_option
def approve(ref: str, namespace: str | None, wait: bool, timeout: float, kubeconfig: str | None, context: str | None,
            request_timeout: str) -> None:
    """Approve an OOMRecommendation: the operator applies it once."""
    from oomtuner.api import recommendation
    from oomtuner.kube import api

    namespace, name = namespaced(ref, namespace, what="NAME")
    if not 0 <= timeout <= 86400:
        raise Fail(f"--timeout: must be between 0 and 86400 seconds, got {timeout:g}")
    cl = connect(kubeconfig, context, request_timeout=request_timeout)
    path = api.namespaced(group=recommendation.GROUP, version=recommendation.VERSION,
                          plural=recommendation.PLURAL, namespace=namespace, name=name)
    try:
        body = cl.merge_patch(path, {"spec": {"approved": True}})
        generation = (body.get("metadata") or {}).get("generation")
        click.echo(f"oomrecommendation {namespace}/{name} approved (generation {generation})")
        if not wait:
            return
        outcome = _wait_for_operator(cl, path, generation=generation, timeout=timeout)
    except api.NotFound:
        raise ClusterFail(f"OOMRecommendation {namespace}/{name} not found") from None
    except api.ApiError as exc:
        raise ClusterFail(str(exc)) from None
    if outcome is None:
        raise ClusterFail(f"the operator did not act on {namespace}/{name} within {timeout:g}s (is it running?)")
    line, refused = outcome
    click.echo(line)
    if refused:
        sys.exit(CLUSTER_ERROR)


def _wait_for_operator(cl: Any, path: str, *, generation: Any, timeout: float) -> tuple[str, bool] | None:
    """(what the operator said, whether it refused) once it acted on `generation`; None on timeout.
    A status of the wrong shape is read as "not yet"."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = cl.get(path).get("status")
        status = status if isinstance(status, dict) else {}
        if status.get("appliedGeneration") == generation:
            found = status.get("conditions")
            conditions: list[Any] = found if isinstance(found, list) else []
            cond: dict[str, Any] = next((c for c in conditions if isinstance(c, dict) and c.get("type") == "Applied"), {})
            return (one_line(f"phase {status.get('phase')}: {cond.get('reason', '')}: {cond.get('message', '')}"),
                    cond.get("status") == "False")
        time.sleep(0.5)
    return None


@main.command()
@click.option("--address", default="127.0.0.1", show_default=True, help="Address to listen on (0.0.0.0 in a pod).")
@click.option("--port", type=click.IntRange(1, 65535), default=8090, show_default=True)
@click.option("--refresh", type=click.FloatRange(1, 3600), default=10, show_default=True,
              help="Seconds between two lists of the cluster's objects, shared by every page.")
@click.option("--top", type=click.IntRange(1, 100), default=5, show_default=True, help="Next victims shown per node.")
@click.option("--allow-approve", is_flag=True,
              help="Offer an Approve button where this dashboard's account may patch OOMRecommendations.")
@click.option("--root-path", default="", help="The path prefix a proxy serves the dashboard under.")
@prometheus_options
@kubeconfig_option
@context_option
def dashboard(address: str, port: int, refresh: float, top: int, allow_approve: bool, root_path: str,
              kubeconfig: str | None, context: str | None, **prometheus: str | None) -> None:
    """A read-only web dashboard: kills per workload, memory against limits, who dies next."""
    from oomtuner.dashboard import server

    settings = settings_from(**prometheus)
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        app = server.build(client=connect(kubeconfig, context), settings=settings, refresh=refresh, top=top,
                           allow_approve=allow_approve, root_path=root_path.rstrip("/"))
    except server.MissingExtra as exc:
        raise Fail(str(exc)) from None
    server.serve(app, host=address, port=port, root_path=root_path.rstrip("/"), log_level=settings.log_level)


# ---- run ----------------------------------------------------------------------------------------


