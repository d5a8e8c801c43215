"""The `oomtuner` command: run | report | explain | approve | dashboard | crds | lab.

Every command turns bad input into one line on stderr and exit code 2 (click's usage errors, and
`InputError`s from the commands), never a traceback.
"""

from __future__ import annotations

import json
import logging
import os
import pathlib
import sys
import time
from typing import Any

import click

from oomtuner import __version__, config, crdgen, memory
from oomtuner import explain as explain_mod

logger = logging.getLogger("oomtuner")


class _Fail(click.ClickException):
    exit_code = 2

    def show(self, file: Any = None) -> None:
        click.echo(f"oomtuner: {self.format_message()}", err=True)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="oomtuner")
def main() -> None:
    """Explains and fixes OOM kills in a Kubernetes cluster."""


# ---- crds ---------------------------------------------------------------------------------------


@main.command()
@click.option("--output", "-o", "output", type=click.Path(file_okay=False, path_type=pathlib.Path),
              default=pathlib.Path("crds"), show_default=True, help="Folder to write the CRD YAML into.")
@click.option("--stdout", is_flag=True, help="Print the CRDs as one YAML stream instead.")
def crds(output: pathlib.Path, stdout: bool) -> None:
    """Write the CRDs generated from the API models."""
    if stdout:
        click.echo("---\n".join(crdgen.render().values()), nl=False)
        return
    for path in crdgen.write(output):
        click.echo(f"wrote {path}", err=True)


# ---- explain ------------------------------------------------------------------------------------


@main.command()
@click.option("-f", "--filename", "paths", multiple=True, required=True,
              help="A Pod or a v1 List of Pods, JSON or YAML; `-` reads stdin. Repeatable.")
@click.option("--node-memory", help="The node's memory capacity (e.g. 16Gi), for oom_score_adj of Burstable pods.")
@click.option("--policy", "policy_path", help="An OOMPolicy file whose memory settings apply.")
@click.option("-o", "--output", type=click.Choice(["table", "json"]), default="table", show_default=True)
def explain(paths: tuple[str, ...], node_memory: str | None, policy_path: str | None, output: str) -> None:
    """Explain the OOM kills in pod files, offline."""
    from oomtuner.domain import quantity

    try:
        memory = quantity.parse_bytes(node_memory) if node_memory is not None else None
        if memory is not None and memory <= 0:
            raise explain_mod.InputError(f"--node-memory: must be more than 0, got {node_memory!r}")
        chosen = explain_mod.load_policy(policy_path) if policy_path else None
        pods = [pod for path in paths for pod in explain_mod.load_pods(path)]
    except quantity.QuantityError as exc:
        raise _Fail(f"--node-memory: {exc}") from None
    except explain_mod.InputError as exc:
        raise _Fail(str(exc)) from None
    result = explain_mod.explain(pods, node_memory=memory, chosen=chosen)
    if output == "json":
        click.echo(json.dumps(result, indent=2))
    else:
        click.echo(explain_mod.render_table(result), nl=False)


# ---- cluster commands -----------------------------------------------------------------------------


def _connect(kubeconfig: str | None, context: str | None) -> Any:
    from oomtuner.kube import client

    try:
        return client.connect(kubeconfig=kubeconfig, context=context)
    except client.NoCluster as exc:
        raise _Fail(str(exc)) from None


_kubeconfig = click.option("--kubeconfig", envvar="KUBECONFIG", help="Path to the kubeconfig (default: $KUBECONFIG).")
_context = click.option("--context", help="The kubeconfig context to use.")
_PROMETHEUS_OPTIONS = (
    click.option("--prometheus-url", help="Prometheus base URL (default: $OOMTUNER_PROMETHEUS_URL)."),
    click.option("--prometheus-bearer-token-file",
                 help="File with a bearer token for Prometheus, read on every query (default: $OOMTUNER_PROMETHEUS_BEARER_TOKEN_FILE)."),
    click.option("--prometheus-ca-file", help="CA bundle for Prometheus' TLS certificate (default: $OOMTUNER_PROMETHEUS_CA_FILE)."),
    click.option("--prometheus-timeout", help="Timeout of one Prometheus query, e.g. 5s (default: $OOMTUNER_PROMETHEUS_TIMEOUT or 5s)."),
)


def _prometheus_options(command: Any) -> Any:
    """The operator's Prometheus settings as flags (`run` and `report` share them and their variables);
    the command takes them as `**prometheus`, named as the settings are."""
    for option in reversed(_PROMETHEUS_OPTIONS):
        command = option(command)
    return command


def _settings(**overrides: Any) -> config.Settings:
    """The `OOMTUNER_*` settings with the flags that were given on top (None: not given), validated."""
    try:
        settings = config.from_environ()
    except config.SettingsError as exc:
        raise _Fail(str(exc)) from None
    settings = settings.model_copy(update={k: v for k, v in overrides.items() if v is not None})
    try:
        return config.Settings.model_validate(settings.model_dump())
    except ValueError as exc:  # pydantic's ValidationError, e.g. a --prometheus-timeout that is no duration
        raise _Fail(str(exc).splitlines()[0] + ": " + " ".join(str(exc).splitlines()[1:3])) from None


@main.command()
@click.option("-n", "--namespace", help="Only this namespace (default: all namespaces).")
@click.option("-o", "--output", type=click.Choice(["table", "json"]), default="table", show_default=True)
@click.option("--top", type=click.IntRange(1, 1000), default=5, show_default=True, help="Victims listed per node.")
@_prometheus_options
@_kubeconfig
@_context
def report(
    namespace: str | None, output: str, top: int, kubeconfig: str | None, context: str | None, **prometheus: str | None
) -> None:
    """Workloads with OOM kills, and who dies next on each node.

    With Prometheus (--prometheus-url, or the operator's OOMTUNER_PROMETHEUS_URL), the next victims
    are ranked by each container's working set now; without it (or --prometheus-url=''), or when it
    fails, by memory request, and one warning on stderr says so.
    """
    from oomtuner import report as report_mod
    from oomtuner.kube import api
    from oomtuner.prom import usage

    settings = _settings(**prometheus)
    # The report says once on stderr what Prometheus did; the prom layer's log lines are for the operator's log.
    logging.getLogger("oomtuner.prom").addHandler(logging.NullHandler())
    cl = _connect(kubeconfig, context)
    try:
        result = report_mod.collect(cl, namespace=namespace, top=top, usage=usage.from_settings(settings))
    except api.ApiError as exc:
        raise _Fail(str(exc)) from None
    except OSError as exc:
        raise _Fail(f"cannot reach the API server: {exc}") from None
    warning = report_mod.warning(result)
    if warning:
        click.echo(f"oomtuner: {warning}", err=True)
    if output == "json":
        click.echo(json.dumps(result, indent=2))
    else:
        click.echo(report_mod.render_table(result), nl=False)


@main.command()
@click.argument("ref", metavar="NAMESPACE/NAME")
@click.option("--wait/--no-wait", default=True, show_default=True, help="Wait for the operator to act on it.")
@click.option("--timeout", type=float, default=60, show_default=True, help="Seconds to wait.")
@_kubeconfig
@_context
def approve(ref: str, wait: bool, timeout: float, kubeconfig: str | None, context: str | None) -> None:
    """Approve an OOMRecommendation: the operator applies it once."""
    from oomtuner.api import recommendation
    from oomtuner.kube import api

    namespace, sep, name = ref.partition("/")
    if not sep or not namespace or not name:
        raise _Fail(f"expected NAMESPACE/NAME, got {ref!r}")
    cl = _connect(kubeconfig, context)
    path = api.namespaced(group=recommendation.GROUP, version=recommendation.VERSION,
                          plural=recommendation.PLURAL, namespace=namespace, name=name)
    try:
        body = cl.merge_patch(path, {"spec": {"approved": True}})
    except api.NotFound:
        raise _Fail(f"OOMRecommendation {namespace}/{name} not found") from None
    except api.ApiError as exc:
        raise _Fail(str(exc)) from None
    generation = (body.get("metadata") or {}).get("generation")
    click.echo(f"oomrecommendation {namespace}/{name} approved (generation {generation})")
    if not wait:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        current = cl.get(path)
        status = current.get("status") or {}
        if status.get("appliedGeneration") == generation:
            cond: dict[str, Any] = next((c for c in status.get("conditions") or [] if c.get("type") == "Applied"), {})
            click.echo(f"phase {status.get('phase')}: {cond.get('reason', '')}: {cond.get('message', '')}")
            if cond.get("status") == "False":
                sys.exit(1)
            return
        time.sleep(0.5)
    raise _Fail(f"the operator did not act on {namespace}/{name} within {timeout:g}s (is it running?)")


@main.command()
@click.option("--address", default="127.0.0.1", show_default=True, help="Address to listen on (0.0.0.0 in a pod).")
@click.option("--port", type=click.IntRange(1, 65535), default=8090, show_default=True)
@click.option("--refresh", type=click.FloatRange(1, 3600), default=10, show_default=True,
              help="Seconds between two lists of the cluster's objects, shared by every page.")
@click.option("--top", type=click.IntRange(1, 100), default=5, show_default=True, help="Next victims shown per node.")
@click.option("--allow-approve", is_flag=True,
              help="Offer an Approve button where this dashboard's account may patch OOMRecommendations.")
@click.option("--root-path", default="", help="The path prefix a proxy serves the dashboard under.")
@_prometheus_options
@_kubeconfig
@_context
def dashboard(address: str, port: int, refresh: float, top: int, allow_approve: bool, root_path: str,
              kubeconfig: str | None, context: str | None, **prometheus: str | None) -> None:
    """A read-only web dashboard: kills per workload, memory against limits, who dies next."""
    from oomtuner.dashboard import server

    settings = _settings(**prometheus)
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        app = server.build(client=_connect(kubeconfig, context), settings=settings, refresh=refresh, top=top,
                           allow_approve=allow_approve, root_path=root_path.rstrip("/"))
    except server.MissingExtra as exc:
        raise _Fail(str(exc)) from None
    server.serve(app, host=address, port=port, root_path=root_path.rstrip("/"), log_level=settings.log_level)


# ---- run ----------------------------------------------------------------------------------------


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
@click.option("--standalone", is_flag=True, default=None, help="No peering: for a single replica.")
@click.option("--priority", type=int, help="Peering priority; give each replica its own.")
@click.option("--priority-from-pod-name", is_flag=True,
              help="Derive a distinct peering priority from $POD_NAME (or $HOSTNAME): for replicas of a Deployment.")
@_prometheus_options
@click.option("--log-format", type=click.Choice(["auto", "json", "text"]), help="auto: JSON when not on a terminal.")
@click.option("-v", "--verbose", is_flag=True)
@_kubeconfig
@_context
def run(
    namespaces: tuple[str, ...],
    all_namespaces: bool,
    default_mode: str | None,
    metrics_port: int | None,
    liveness_port: int | None,
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
    import kopf

    from oomtuner import app as app_mod
    from oomtuner import handlers  # noqa: F401 - registers the kopf handlers
    from oomtuner.prom import metrics

    if namespaces and all_namespaces:
        raise _Fail("--namespace and --all-namespaces exclude each other")
    if priority_from_pod_name:
        if priority is not None or standalone:
            raise _Fail("--priority-from-pod-name excludes --priority and --standalone")
        pod_name = os.environ.get("POD_NAME") or os.environ.get("HOSTNAME")
        if not pod_name:
            raise _Fail("--priority-from-pod-name needs $POD_NAME or $HOSTNAME")
        priority = config.priority_from_name(pod_name)
    settings = _settings(
        namespaces=list(namespaces) or (None if not all_namespaces else []),
        default_mode=default_mode,
        metrics_port=metrics_port,
        liveness_port=liveness_port,
        standalone=standalone,
        priority=priority,
        log_format=log_format,
        **prometheus,
    )
    _setup_logging(settings, verbose)
    memory.limit_arenas()
    if kubeconfig:
        os.environ["KUBECONFIG"] = kubeconfig
    cl = _connect(kubeconfig, context)
    operator = app_mod.App(client=cl, settings=settings)
    metrics.serve(settings.metrics_port)
    logger.info(
        "oomtuner %s starting: namespaces=%s default mode=%s metrics port=%s prometheus=%s",
        __version__, ",".join(settings.namespaces) or "*", settings.default_mode.value, settings.metrics_port,
        settings.prometheus_url or "none",
    )
    kopf.run(
        standalone=settings.standalone,
        priority=settings.priority,
        # A peering name makes peering mandatory in kopf (its KopfPeering CRDs must exist).
        peering_name=None if settings.standalone else settings.peering_name,
        clusterwide=not settings.namespaces,
        namespaces=settings.namespaces,
        liveness_endpoint=f"http://0.0.0.0:{settings.liveness_port}/healthz" if settings.liveness_port else None,
        memo=kopf.Memo(app=operator),
    )


def _attach_agent() -> None:
    from oomtuner.agent import command as agent_command

    main.add_command(agent_command.agent)


_attach_agent()


LAB_PACKAGE = "oomtuner_lab"


def _lab_home() -> pathlib.Path | None:
    """Where the lab's package lives in a checkout (hack/lab), or None outside one.

    The lab is a development tool, not part of the product: it is not in the wheel or the image.
    `oomtuner lab` works from a checkout (an editable install, or OOMTUNER_REPO pointing at one).
    """
    roots = [pathlib.Path(os.environ["OOMTUNER_REPO"])] if os.environ.get("OOMTUNER_REPO") else []
    roots.append(pathlib.Path(__file__).resolve().parents[2])
    for root in roots:
        home = root / "hack" / "lab"
        if (home / LAB_PACKAGE / "__init__.py").is_file():
            return home
    return None


@main.command("lab", context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
def _lab_missing() -> None:
    """A local Kubernetes lab (from a checkout of the repository only)."""
    raise _Fail("`oomtuner lab` is a development tool: run it from a checkout of the oomtuner repository "
                "(pip install -e .), or set OOMTUNER_REPO to one")


def _attach_lab() -> None:
    home = _lab_home()
    if home is None:
        return
    if str(home) not in sys.path:
        sys.path.append(str(home))
    from oomtuner_lab import commands as lab_commands  # type: ignore[import-not-found]  # only in a checkout

    main.add_command(lab_commands.lab)


_attach_lab()
