"""The `oomtuner` command: run | report | explain | approve | dashboard | crds | lab.

Every failure is one line on stderr, `oomtuner: ...`, never a traceback, with an exit code that
says whose fault it was (README, "Exit codes"):

- 2: the command line or its input (click's usage errors, unreadable or invalid files, a kubeconfig
  that cannot be loaded, settings that do not parse);
- 1: the cluster (no connection, a timeout, an answer that is not JSON, an error from the API
  server), or `approve` when the operator refused the change.

Messages are made one line here, whatever they quote: control characters are escaped and a very
long message is cut.
"""

from __future__ import annotations

import json
import logging
import os
import pathlib
import sys
import time
import warnings
from typing import Any

import click
import pydantic

from oomtuner import __version__, config, crdgen, memory
from oomtuner import explain as explain_mod
from oomtuner.domain import redaction

logger = logging.getLogger("oomtuner")

USAGE_ERROR = 2
CLUSTER_ERROR = 1
_LONGEST_MESSAGE = 1000


def one_line(message: str) -> str:
    """A message fit for one line of stderr: control characters (and lone surrogates) escaped,
    credentials in URLs redacted, at most _LONGEST_MESSAGE characters."""
    text = "".join(ch if ch.isprintable() else ascii(ch)[1:-1] for ch in redaction.text(message))
    return text if len(text) <= _LONGEST_MESSAGE else text[: _LONGEST_MESSAGE - 3] + "..."


class _Fail(click.ClickException):
    """Bad input or usage: exit 2."""

    exit_code = USAGE_ERROR

    def show(self, file: Any = None) -> None:
        click.echo(f"oomtuner: {one_line(self.format_message())}", err=True)


class _ClusterFail(_Fail):
    """The cluster failed us: exit 1."""

    exit_code = CLUSTER_ERROR


_LAZY_COMMANDS: dict[str, Any] = {}


class _Command(click.Group):
    """The top-level group: click's usage errors as one line (click prints three), no traceback for
    a closed pipe or an interrupt, and commands in `_LAZY_COMMANDS` imported on first use."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._loaded: set[str] = set()

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in _LAZY_COMMANDS and cmd_name not in self._loaded:
            self._loaded.add(cmd_name)
            command = _LAZY_COMMANDS[cmd_name]()
            if command is not None:
                self.add_command(command, cmd_name)
        return super().get_command(ctx, cmd_name)

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *_LAZY_COMMANDS})

    def main(self, args: Any = None, prog_name: str | None = None, complete_var: str | None = None,
             standalone_mode: bool = True, **extra: Any) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        try:
            code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.UsageError as exc:
            where = f" (see `{exc.ctx.command_path} --help`)" if exc.ctx is not None else ""
            click.echo(f"oomtuner: {one_line(exc.format_message())}{where}", err=True)
            sys.exit(USAGE_ERROR)
        except click.ClickException as exc:
            exc.show()
            sys.exit(exc.exit_code)
        except click.Abort:
            click.echo("oomtuner: interrupted", err=True)
            sys.exit(CLUSTER_ERROR)
        except BrokenPipeError:  # `oomtuner report | head`: the reader is gone, nothing to say
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            sys.exit(CLUSTER_ERROR)
        sys.exit(code if isinstance(code, int) else 0)


@click.group(cls=_Command, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="oomtuner")
def main() -> None:
    """Explains and fixes OOM kills in a Kubernetes cluster.

    Exit codes: 0 done, 1 the cluster failed (or `approve` was refused), 2 bad usage or input.
    """


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
    from oomtuner import inputs
    from oomtuner.domain import quantity

    budget = inputs.Budget()
    try:
        memory = quantity.parse_bytes(node_memory) if node_memory is not None else None
        if memory is not None and memory <= 0:
            raise explain_mod.InputError(f"--node-memory: must be more than 0, got {node_memory!r}")
        chosen = explain_mod.load_policy(policy_path, budget=budget) if policy_path else None
        pods = [pod for path in paths for pod in explain_mod.load_pods(path, budget=budget)]
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


def _connect(kubeconfig: str | None, context: str | None, *, request_timeout: str | None = None) -> Any:
    """A client. With `request_timeout` (the CLI's commands): each request sent once and bounded by
    it, and no library warnings on stderr (urllib3 warns on every request to a kubeconfig with
    insecure-skip-tls-verify, and logs its retries). Without it: the operator's client."""
    import urllib3

    from oomtuner.domain import duration
    from oomtuner.kube import client

    options: dict[str, Any] = {}
    if request_timeout is not None:
        warnings.simplefilter("ignore", urllib3.exceptions.InsecureRequestWarning)
        for noisy in ("urllib3", "kubernetes"):
            logging.getLogger(noisy).setLevel(logging.CRITICAL)
        try:
            seconds = duration.parse(request_timeout).total_seconds()
        except duration.DurationError as exc:
            raise _Fail(f"--request-timeout: {exc}") from None
        if not 0 < seconds <= 3600:
            raise _Fail(f"--request-timeout: must be more than 0 and at most 1h, got {request_timeout!r}")
        options = {"timeout": seconds, "retries": False}
    try:
        return client.connect(kubeconfig=kubeconfig, context=context, **options)
    except client.NoCluster as exc:
        raise _Fail(str(exc)) from None


_kubeconfig = click.option("--kubeconfig", envvar="KUBECONFIG", help="Path to the kubeconfig (default: $KUBECONFIG).")
_context = click.option("--context", help="The kubeconfig context to use.")
_request_timeout = click.option(
    "--request-timeout", envvar="OOMTUNER_REQUEST_TIMEOUT", default="5s", show_default=True,
    help="Longest wait for one answer of the API server, e.g. 5s or 1m ($OOMTUNER_REQUEST_TIMEOUT).",
)
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
    except pydantic.ValidationError as exc:  # e.g. a --prometheus-timeout that is no duration
        error = exc.errors()[0]
        flag = "--" + str(error["loc"][0]).replace("_", "-") if error["loc"] else "a setting"
        message = error["msg"].removeprefix("Value error, ")
        shown = repr(error.get("input"))
        raise _Fail(f"{flag}: {message}" + (f" (got {shown})" if shown not in message else "")) from None


@main.command()
@click.option("-n", "--namespace", help="Only this namespace (default: all namespaces).")
@click.option("-o", "--output", type=click.Choice(["table", "json"]), default="table", show_default=True)
@click.option("--top", type=click.IntRange(1, 1000), default=5, show_default=True, help="Victims listed per node.")
@_prometheus_options
@_kubeconfig
@_context
@_request_timeout
def report(
    namespace: str | None, output: str, top: int, kubeconfig: str | None, context: str | None, request_timeout: str,
    **prometheus: str | None,
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
    cl = _connect(kubeconfig, context, request_timeout=request_timeout)
    try:
        result = report_mod.collect(cl, namespace=namespace, top=top, usage=usage.from_settings(settings))
    except api.ApiError as exc:
        raise _ClusterFail(str(exc)) from None
    warning = report_mod.warning(result)
    if warning:
        click.echo(f"oomtuner: {one_line(warning)}", err=True)
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
@_request_timeout
def approve(ref: str, wait: bool, timeout: float, kubeconfig: str | None, context: str | None, request_timeout: str) -> None:
    """Approve an OOMRecommendation: the operator applies it once."""
    from oomtuner.api import recommendation
    from oomtuner.kube import api

    namespace, sep, name = ref.partition("/")
    if not sep or not namespace or not name:
        raise _Fail(f"expected NAMESPACE/NAME, got {ref!r}")
    if not 0 <= timeout <= 86400:
        raise _Fail(f"--timeout: must be between 0 and 86400 seconds, got {timeout:g}")
    cl = _connect(kubeconfig, context, request_timeout=request_timeout)
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
        raise _ClusterFail(f"OOMRecommendation {namespace}/{name} not found") from None
    except api.ApiError as exc:
        raise _ClusterFail(str(exc)) from None
    if outcome is None:
        raise _ClusterFail(f"the operator did not act on {namespace}/{name} within {timeout:g}s (is it running?)")
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
@click.option("--metrics-address", help="IP address /metrics listens on (default 0.0.0.0: every address).")
@click.option("--liveness-address", help="IP address /healthz listens on (default 0.0.0.0: every address).")
@click.option("--culprit-names", type=click.Choice(["same-namespace", "all"]),
              help="Name a Node kill's culprit from another namespace in the victim's namespace (all), or give only its figures.")
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
    cl = _connect(kubeconfig, context)
    operator = app_mod.App(client=cl, settings=settings)
    try:
        metrics.serve(settings.metrics_port, addr=settings.metrics_address)
    except OSError as exc:
        raise _Fail(f"--metrics-address {settings.metrics_address} --metrics-port {settings.metrics_port}: {exc.strerror or exc}") from None
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


def _agent_command() -> click.Command | None:
    from oomtuner.agent import command as agent_command

    return agent_command.agent


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


def _lab_command() -> click.Command | None:
    if _LAB_HOME is None:
        return None
    from oomtuner_lab import commands as lab_commands  # type: ignore[import-not-found]  # only in a checkout

    command: click.Command = lab_commands.lab
    return command


_LAB_HOME = _lab_home()
if _LAB_HOME is not None and str(_LAB_HOME) not in sys.path:
    sys.path.append(str(_LAB_HOME))

# Commands imported when they are asked for: the agent's and the lab's modules (the kubernetes
# client, prometheus_client) would add half a second to every `oomtuner explain`.
_LAZY_COMMANDS.update({"agent": _agent_command, "lab": _lab_command})
