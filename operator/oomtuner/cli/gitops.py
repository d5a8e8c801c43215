"""`oomtuner patch`: a recommendation's change in the form a repository takes (README, "GitOps")."""

from __future__ import annotations

from typing import Any

import click

from oomtuner.cli.base import (
    ClusterFail,
    Fail,
    connect,
    context_option,
    kubeconfig_option,
    main,
    namespace_option,
    namespaced,
    request_timeout_option,
)

OUTPUTS = ("kustomize", "helm-values", "kubectl")


@main.command()
@click.argument("ref", metavar="NAMESPACE/NAME")
@namespace_option
@click.option("-o", "--output", type=click.Choice(OUTPUTS), required=True,
              help="kustomize: a strategic-merge patch file; helm-values: a values file (needs --values-path); "
                   "kubectl: one `kubectl patch` command line.")
@click.option("--values-path", "values_paths", multiple=True, metavar="[CONTAINER=]PATH",
              help="With -o helm-values: the chart's values path of the container's resources, e.g. app.resources "
                   "(CONTAINER=PATH for each when several containers change). Repeatable.")
@kubeconfig_option
@context_option
@request_timeout_option
def patch(ref: str, namespace: str | None, output: str, values_paths: tuple[str, ...], kubeconfig: str | None,
          context: str | None, request_timeout: str) -> None:
    """Print a recommendation's memory change for a repository.

    NAME is an OOMRecommendation (deployment-cart) or a workload, as KIND/NAME (deployment/cart).
    The change sets each container's recommended request and limit, also where the cluster's
    template has them already (the repository may lag it), never below the template's values.
    """
    from oomtuner.domain import gitops
    from oomtuner.domain import patch as patch_mod
    from oomtuner.kube import api

    if (output == "helm-values") != bool(values_paths):
        raise Fail("--values-path goes with -o helm-values, and -o helm-values needs it")
    ns, name = namespaced(ref, namespace, what="NAME")
    cl = connect(kubeconfig, context, request_timeout=request_timeout)
    try:
        rec, current = _resolve(cl, ns, name)
    except api.ApiError as exc:
        raise ClusterFail(str(exc)) from None
    target = rec.spec.targetRef
    changes = patch_mod.memory_changes(rec.status.containers, current.containers(), restate=True)
    if not changes:
        raise ClusterFail(f"OOMRecommendation {ns}/{rec.metadata.name} (phase {_phase(rec)}) recommends no memory "
                          f"for the containers of {target.kind} {ns}/{target.name}")
    note = (f"oomtuner patch: the memory OOMRecommendation {ns}/{rec.metadata.name} (phase {_phase(rec)}) recommends "
            f"for {target.kind} {ns}/{target.name}: {patch_mod.describe(changes)}")
    try:
        if output == "kustomize":
            text = gitops.kustomize(api_version=current.api_version, kind=target.kind, name=target.name, namespace=ns,
                                    changes=changes, note=note)
        elif output == "helm-values":
            text = gitops.helm_values(changes, gitops.values_paths(values_paths, changes), note=note)
        else:
            text = gitops.kubectl_command(kind=target.kind, name=target.name, namespace=ns, changes=changes) + "\n"
    except gitops.GitOpsError as exc:
        raise Fail(str(exc)) from None
    click.echo(text, nl=False)


def _phase(rec: Any) -> str:
    return rec.status.phase.value if rec.status.phase is not None else "none"


def _resolve(cl: Any, namespace: str, name: str) -> tuple[Any, Any]:
    """(the OOMRecommendation, its workload) that `name` names: a recommendation by its name, or for
    `KIND/NAME` the workload's own recommendation (its targetRef and an owner reference name the
    workload: the operator's adoption rule)."""
    from oomtuner.api import kinds, recommendation
    from oomtuner.domain import workload
    from oomtuner.kube import api, owners

    def read_recommendation(rec_name: str) -> Any:
        found = cl.get_or_none(api.namespaced(group=recommendation.GROUP, version=recommendation.VERSION,
                                              plural=recommendation.PLURAL, namespace=namespace, name=rec_name))
        try:
            return None if found is None else recommendation.read(found)
        except recommendation.InvalidRecommendation as exc:
            raise ClusterFail(str(exc)) from None

    def read_workload(kind: kinds.WorkloadKind, workload_name: str, *, what: str) -> Any:
        body = cl.get_or_none(owners.path_of(kind=kind.kind, namespace=namespace, name=workload_name))
        if body is None:
            raise ClusterFail(f"{kind.kind} {namespace}/{workload_name}{what} not found")
        return workload.from_body({**body, "apiVersion": kind.api_version, "kind": kind.kind})

    word, sep, workload_name = name.partition("/")
    if not sep:
        rec = read_recommendation(name)
        if rec is None:
            raise ClusterFail(f"OOMRecommendation {namespace}/{name} not found")
        ref = rec.spec.targetRef
        current = read_workload(kinds.get(ref.kind), ref.name, what=f", the target of OOMRecommendation {namespace}/{name},")
        if not workload.adopts(current, rec):
            raise ClusterFail(f"OOMRecommendation {namespace}/{name} is not {ref.kind} {namespace}/{ref.name}'s own "
                              "(no owner reference with its uid): the operator does not use it, nor does this command")
        return rec, current
    kind = kinds.named(word)
    if kind is None or not workload_name or "/" in workload_name:
        raise Fail(f"{name!r}: expected an OOMRecommendation's name, or KIND/NAME of a workload (deployment/cart)")
    current = read_workload(kind, workload_name, what="")
    for candidate in (recommendation.name_for(kind=kind.kind, name=workload_name),
                      recommendation.alternate_name_for(kind=kind.kind, name=workload_name, uid=current.uid or "")):
        rec = read_recommendation(candidate)
        if rec is not None and workload.adopts(current, rec):
            return rec, current
    raise ClusterFail(f"{kind.kind} {namespace}/{workload_name} has no OOMRecommendation of its own (no OOM kill recorded yet)")
