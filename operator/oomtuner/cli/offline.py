"""Commands that need no cluster: `crds` and `explain`."""

from __future__ import annotations

import pathlib

import click

from oomtuner import crdgen
from oomtuner import explain as explain_mod
from oomtuner.cli.base import Fail, main, structured

# ---- crds ---------------------------------------------------------------------------------------


@main.command()
@click.option("--output", "-o", "output", type=click.Path(file_okay=False, path_type=pathlib.Path),
              default=pathlib.Path("crds"), show_default=True, help="Folder to write the CRD YAML into.")
@click.option("--chart", type=click.Path(file_okay=False, path_type=pathlib.Path),
              help="A Helm chart folder: also write the CRDs' templates into its templates/crds/ (make crds: deploy/helm/oomtuner).")
@click.option("--stdout", is_flag=True, help="Print the CRDs as one YAML stream instead.")
def crds(output: pathlib.Path, chart: pathlib.Path | None, stdout: bool) -> None:
    """Write the CRDs generated from the API models (and the chart's templates of them)."""
    if stdout:
        click.echo("---\n".join(crdgen.render().values()), nl=False)
        return
    try:
        written = crdgen.write(output, chart=chart)
    except (OSError, ValueError) as exc:
        raise Fail(str(exc)) from None
    for path in written:
        click.echo(f"wrote {path}", err=True)


# ---- explain ------------------------------------------------------------------------------------


@main.command()
@click.option("-f", "--filename", "paths", multiple=True, required=True,
              help="A Pod or a v1 List of Pods, JSON or YAML; `-` reads stdin. Repeatable.")
@click.option("--node-memory", help="The node's memory capacity (e.g. 16Gi), for oom_score_adj of Burstable pods.")
@click.option("--policy", "policy_path", help="An OOMPolicy file whose memory settings apply.")
@click.option("-o", "--output", type=click.Choice(["table", "json", "yaml"]), default="table", show_default=True)
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
        raise Fail(f"--node-memory: {exc}") from None
    except explain_mod.InputError as exc:
        raise Fail(str(exc)) from None
    result = explain_mod.explain(pods, node_memory=memory, chosen=chosen)
    if output == "table":
        click.echo(explain_mod.render_table(result), nl=False)
    else:
        click.echo(structured(result, output), nl=False)


