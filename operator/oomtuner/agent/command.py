"""`oomtuner agent`: the node agent's command line.

Every option has an environment variable, because the agent runs as a DaemonSet whose pod spec sets
`NODE_NAME` from the downward API (`spec.nodeName`) and mounts the host's `/sys/fs/cgroup` read-only
somewhere (`--cgroup-root`). The agent needs from the API server only: list pods (on its node, all
namespaces) and create events. Bad input is one line on stderr and exit code 2, never a traceback.
SIGTERM and SIGINT end it after the poll in progress.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import logging
import pathlib
import signal
import sys
import threading
import types
from typing import Any

import click

from oomtuner.agent import cgroups, loop, metrics, reporter, watcher

logger = logging.getLogger("oomtuner.agent")

DEFAULT_INTERVAL = 2.0
DEFAULT_METRICS_PORT = 9102


class _Fail(click.ClickException):
    exit_code = 2

    def show(self, file: Any = None) -> None:
        click.echo(f"oomtuner agent: {self.format_message()}", err=True)


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.datetime.fromtimestamp(record.created, datetime.timezone.utc).isoformat(),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line)


def _setup_logging(log_format: str, verbose: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json" or (log_format == "auto" and not sys.stderr.isatty()):
        handler.setFormatter(_JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    for noisy in ("kubernetes", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


@click.command("agent", context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--node-name", envvar="NODE_NAME", required=True,
              help="The node this agent runs on ($NODE_NAME; set it from spec.nodeName).")
@click.option("--cgroup-root", envvar="OOMTUNER_AGENT_CGROUP_ROOT", default=str(cgroups.DEFAULT_ROOT),
              show_default=True, type=click.Path(file_okay=False, path_type=pathlib.Path),
              help="Where the host's cgroup filesystem is mounted (v1: the folder holding memory/).")
@click.option("--interval", envvar="OOMTUNER_AGENT_INTERVAL", default=DEFAULT_INTERVAL, show_default=True,
              type=click.FloatRange(min=0.05), help="Seconds between two polls of the counters.")
@click.option("--state-dir", envvar="OOMTUNER_AGENT_STATE_DIR",
              type=click.Path(file_okay=False, path_type=pathlib.Path),
              help="Keep the counters here, so a restarted agent neither misses nor recounts kills "
                   "(a hostPath). Without it, a restart forgets kills that happened while it was down.")
@click.option("--metrics-port", envvar="OOMTUNER_AGENT_METRICS_PORT", default=DEFAULT_METRICS_PORT,
              show_default=True, type=click.IntRange(0, 65535), help="Port of /metrics; 0 disables.")
@click.option("--metrics-address", envvar="OOMTUNER_AGENT_METRICS_ADDRESS", default="0.0.0.0", show_default=True,
              help="IP address /metrics listens on; 0.0.0.0: every address.")
@click.option("--give-up-after", envvar="OOMTUNER_AGENT_GIVE_UP_AFTER", default=300.0, show_default=True,
              type=click.FloatRange(min=0), help="Seconds to keep retrying a kill whose pod is unknown or "
                                                 "whose event cannot be posted.")
@click.option("--log-format", envvar="OOMTUNER_LOG_FORMAT", default="auto", show_default=True,
              type=click.Choice(["auto", "json", "text"]), help="auto: JSON when not on a terminal.")
@click.option("-v", "--verbose", is_flag=True)
@click.option("--kubeconfig", envvar="KUBECONFIG", help="Path to the kubeconfig (default: in-cluster, then $KUBECONFIG).")
@click.option("--context", help="The kubeconfig context to use.")
def agent(
    node_name: str,
    cgroup_root: pathlib.Path,
    interval: float,
    state_dir: pathlib.Path | None,
    metrics_port: int,
    metrics_address: str,
    give_up_after: float,
    log_format: str,
    verbose: bool,
    kubeconfig: str | None,
    context: str | None,
) -> None:
    """Report OOM kills of processes inside containers, which Kubernetes does not report."""
    from oomtuner.kube import client

    if not node_name.strip():
        raise _Fail("--node-name (or $NODE_NAME) must not be empty")
    if not cgroup_root.is_dir():
        raise _Fail(f"--cgroup-root {cgroup_root}: no such folder (mount the host's /sys/fs/cgroup there)")
    try:
        cl = client.connect(kubeconfig=kubeconfig, context=context)
    except client.NoCluster as exc:
        raise _Fail(str(exc)) from None
    _setup_logging(log_format, verbose)
    poller = watcher.Watcher(root=cgroup_root, state_dir=state_dir)
    sender = reporter.Reporter(
        resolver=reporter.NodePods(cl, node_name=node_name),
        sink=reporter.ApiEvents(cl),
        node_name=node_name,
        give_up_after=datetime.timedelta(seconds=give_up_after),
    )
    try:
        metrics.serve(metrics_port, addr=str(ipaddress.ip_address(metrics_address)))
    except ValueError:
        raise _Fail(f"--metrics-address: an IP address to listen on, not {metrics_address!r}") from None
    except OSError as exc:
        raise _Fail(f"--metrics-address {metrics_address} --metrics-port {metrics_port}: {exc}") from None
    stop = threading.Event()

    def _stop(signum: int, frame: types.FrameType | None) -> None:
        logger.info("signal %d: stopping after this poll", signum)
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    logger.info(
        "oomtuner agent on node %s: cgroups under %s (%s), every %gs, state %s, metrics port %s",
        node_name, cgroup_root, cgroups.hierarchy(cgroup_root), interval, state_dir or "not kept", metrics_port or "off",
    )
    loop.run(poller=poller, sender=sender, interval=interval, stop=stop)
    logger.info("oomtuner agent stopped (%d report(s) undelivered)", sender.pending)
