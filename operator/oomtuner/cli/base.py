"""The command's frame: the top-level group, one-line failures and their exit codes, and what the
commands that talk to a cluster share (the connection, the Prometheus and settings flags).

Every failure is one line on stderr, `oomtuner: ...`, never a traceback, with an exit code that
says whose fault it was (README, "Exit codes"): 2 for the command line or its input, 1 for the
cluster. Messages are made one line here, whatever they quote: control characters are escaped and
a very long message is cut.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import warnings
from typing import Any

import click
import pydantic

from oomtuner import __version__, config
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


class Fail(click.ClickException):
    """Bad input or usage: exit 2."""

    exit_code = USAGE_ERROR

    def show(self, file: Any = None) -> None:
        click.echo(f"oomtuner: {one_line(self.format_message())}", err=True)


class ClusterFail(Fail):
    """The cluster failed us: exit 1."""

    exit_code = CLUSTER_ERROR


LAZY_COMMANDS: dict[str, Any] = {}


class _Command(click.Group):
    """The top-level group: click's usage errors as one line (click prints three), no traceback for
    a closed pipe or an interrupt, and commands in `LAZY_COMMANDS` imported on first use."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._loaded: set[str] = set()

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in LAZY_COMMANDS and cmd_name not in self._loaded:
            self._loaded.add(cmd_name)
            command = LAZY_COMMANDS[cmd_name]()
            if command is not None:
                self.add_command(command, cmd_name)
        return super().get_command(ctx, cmd_name)

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *LAZY_COMMANDS})

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


def connect(kubeconfig: str | None, context: str | None, *, request_timeout: str | None = None) -> Any:
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
            raise Fail(f"--request-timeout: {exc}") from None
        if not 0 < seconds <= 3600:
            raise Fail(f"--request-timeout: must be more than 0 and at most 1h, got {request_timeout!r}")
        options = {"timeout": seconds, "retries": False}
    try:
        return client.connect(kubeconfig=kubeconfig, context=context, **options)
    except client.NoCluster as exc:
        raise Fail(str(exc)) from None


namespace_option = click.option("-n", "--namespace", help="The namespace, for NAME given without one (as kubectl's -n).")


def namespaced(ref: str, namespace: str | None, *, what: str) -> tuple[str, str]:
    """(namespace, name) from `NAMESPACE/NAME`, or from `-n NAMESPACE NAME` (then the name is all of
    `ref`, which may hold a slash of its own, as KIND/NAME does)."""
    if namespace:
        if not ref:
            raise Fail(f"expected {what}, got nothing")
        return namespace, ref
    ns, sep, name = ref.partition("/")
    if not sep or not ns or not name:
        raise Fail(f"expected NAMESPACE/{what} or -n NAMESPACE {what}, got {ref!r}")
    return ns, name


def structured(result: Any, output: str) -> str:
    """`-o json` or `-o yaml` of a command's result, as kubectl prints them (one document)."""
    if output == "yaml":
        import yaml

        return str(yaml.safe_dump(result, sort_keys=False, allow_unicode=True))
    return json.dumps(result, indent=2) + "\n"


kubeconfig_option = click.option("--kubeconfig", envvar="KUBECONFIG", help="Path to the kubeconfig (default: $KUBECONFIG).")
context_option = click.option("--context", help="The kubeconfig context to use.")
request_timeout_option = click.option(
    "--request-timeout", envvar="OOMTUNER_REQUEST_TIMEOUT", default="5s", show_default=True,
    help="Longest wait for one answer of the API server, e.g. 5s or 1m ($OOMTUNER_REQUEST_TIMEOUT).",
)
PROMETHEUS_OPTIONS = (
    click.option("--prometheus-url", help="Prometheus base URL (default: $OOMTUNER_PROMETHEUS_URL)."),
    click.option("--prometheus-bearer-token-file",
                 help="File with a bearer token for Prometheus, read on every query (default: $OOMTUNER_PROMETHEUS_BEARER_TOKEN_FILE)."),
    click.option("--prometheus-ca-file", help="CA bundle for Prometheus' TLS certificate (default: $OOMTUNER_PROMETHEUS_CA_FILE)."),
    click.option("--prometheus-timeout", help="Timeout of one Prometheus query, e.g. 5s (default: $OOMTUNER_PROMETHEUS_TIMEOUT or 5s)."),
)


def prometheus_options(command: Any) -> Any:
    """The operator's Prometheus settings as flags (`run` and `report` share them and their variables);
    the command takes them as `**prometheus`, named as the settings are."""
    for option in reversed(PROMETHEUS_OPTIONS):
        command = option(command)
    return command


def settings_from(**overrides: Any) -> config.Settings:
    """The `OOMTUNER_*` settings with the flags that were given on top (None: not given), validated."""
    try:
        settings = config.from_environ()
    except config.SettingsError as exc:
        raise Fail(str(exc)) from None
    settings = settings.model_copy(update={k: v for k, v in overrides.items() if v is not None})
    try:
        return config.Settings.model_validate(settings.model_dump())
    except pydantic.ValidationError as exc:  # e.g. a --prometheus-timeout that is no duration
        error = exc.errors()[0]
        flag = "--" + str(error["loc"][0]).replace("_", "-") if error["loc"] else "a setting"
        message = error["msg"].removeprefix("Value error, ")
        shown = repr(error.get("input"))
        raise Fail(f"{flag}: {message}" + (f" (got {shown})" if shown not in message else "")) from None


