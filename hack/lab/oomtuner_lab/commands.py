"""`oomtuner lab ...`: a local Kubernetes control plane without Docker.

Attach with `main.add_command(commands.lab)`.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import click

from oomtuner_lab import binaries, cluster, exporter, inject, prometheus
from oomtuner_lab.processes import LabError


@click.group()
def lab() -> None:
    """A local Kubernetes lab: etcd, kube-apiserver, controller-manager, scheduler and kwok
    as local processes (state in $OOMTUNER_LAB_DIR, default ~/.cache/oomtuner/lab)."""


@lab.command()
@click.option("--force", is_flag=True, help="Rebuild even binaries that are cached.")
@click.argument("names", nargs=-1)
def build(force: bool, names: tuple[str, ...]) -> None:
    """Build the lab's binaries from Go modules (hack/lab/build.sh) into the cache."""
    try:
        binaries.build(names, force=force)
    except subprocess.CalledProcessError as exc:
        raise click.ClickException(f"build.sh failed with exit code {exc.returncode}") from exc


@lab.command()
@click.option("--no-self-check", is_flag=True, help="Skip running a test pod after start.")
@click.option("--no-build", is_flag=True, help="Fail instead of building missing binaries.")
@click.option("--real-node/--no-real-node", default=None,
              help="Add lab-node-real, run by a real kubelet and containerd, where the host can "
                   "(default; OOMTUNER_LAB_REAL_NODE=0 turns it off).")
def up(no_self_check: bool, no_build: bool, real_node: bool | None) -> None:
    """Start the lab (does nothing but report if it runs already)."""
    try:
        cluster.up(echo=click.echo, self_check=not no_self_check, build=not no_build, real_node=real_node)
    except (LabError, subprocess.CalledProcessError) as exc:
        raise click.ClickException(str(exc)) from exc


@lab.command()
@click.option("--purge", is_flag=True, help="Also delete the lab's data (etcd, certificates, logs).")
def down(purge: bool) -> None:
    """Stop every process of the lab."""
    cluster.down(purge=purge, echo=click.echo)


@lab.command()
def status() -> None:
    """Each component's pid and state, and the apiserver's health. Exit 1 if not running."""
    st = cluster.status()
    for line in st.lines():
        click.echo(line)
    sys.exit(0 if st.running else 1)


@lab.command()
def env() -> None:
    """Print shell exports for the lab: eval "$(oomtuner lab env)"."""
    for line in cluster.env_lines():
        click.echo(line)


def _kubeconfig() -> Path:
    st = cluster.status()
    if not st.running:
        raise click.ClickException("the lab is not running: oomtuner lab up")
    return st.kubeconfig


@lab.command()
@click.argument("target", metavar="NAMESPACE/POD")
@click.option("-c", "--container", required=True, help="Container name.")
@click.option(
    "--kind",
    "container_kind",
    type=click.Choice(["container", "init", "ephemeral"]),
    default="container",
    show_default=True,
)
@click.option("--exit-code", default=137, show_default=True)
@click.option("--reason", default="OOMKilled", show_default=True)
def oom(target: str, container: str, container_kind: str, exit_code: int, reason: str) -> None:
    """Write an OOM kill into a pod's status, as the kubelet would after a restart."""
    namespace, _, pod = target.rpartition("/")
    with cluster.core_v1(_kubeconfig()) as api:
        try:
            new = inject.oom_kill(
                api,
                namespace=namespace or "default",
                pod=pod,
                container=container,
                container_kind=container_kind,  # type: ignore[arg-type]
                exit_code=exit_code,
                reason=reason,
            )
        except ValueError as exc:
            raise click.ClickException(str(exc)) from exc
    click.echo(json.dumps(new, indent=2))


@lab.command("system-oom")
@click.argument("node")
@click.option("--pid", "victim_pid", default=4242, show_default=True)
@click.option("--process", "process_name", default="stress", show_default=True)
def system_oom(node: str, victim_pid: int, process_name: str) -> None:
    """Post a SystemOOM Warning event on a node, as the kubelet would."""
    with cluster.core_v1(_kubeconfig()) as api:
        event = inject.system_oom(api, node=node, victim_pid=victim_pid, process_name=process_name)
    click.echo(f"event default/{event['metadata']['name']}: {event['message']}")


# ---- `oomtuner lab prometheus ...` -----------------------------------------------------------------


@click.group("prometheus")
def prometheus_command() -> None:
    """A real Prometheus (Debian's package) scraping the lab exporter, next to the lab
    (state in $OOMTUNER_LAB_DIR/prometheus)."""


@prometheus_command.command("up")
def _prometheus_up() -> None:
    """Start the exporter and Prometheus (does nothing but report if they run)."""
    st = cluster.status()
    try:
        server = prometheus.lab_up(kubeconfig=st.kubeconfig if st.running else None, echo=click.echo)
    except LabError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"export OOMTUNER_PROMETHEUS_URL={server.url}")


@prometheus_command.command("down")
def _prometheus_down() -> None:
    """Stop the lab's Prometheus and exporter."""
    prometheus.lab_down(echo=click.echo)


@prometheus_command.command("status")
def _prometheus_status() -> None:
    """Whether Prometheus and the exporter run. Exit 1 if Prometheus does not."""
    for line in prometheus.lab_status():
        click.echo(line)
    sys.exit(0 if prometheus.lab_server().running() else 1)


lab.add_command(prometheus_command)
lab.add_command(exporter.command)
