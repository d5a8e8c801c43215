"""`oomtuner explain`: the offline view of pods and their OOM kills, for people and for tools.

Input is what `kubectl get pod -o json|yaml` prints: a Pod, a v1 List of Pods, or several YAML
documents, read within the bounds of `inputs`. The JSON output is a contract other tools depend on (see README); `-o table` is the
view for people. Nothing here talks to a cluster: with no Node at hand, the node's memory comes
from `--node-memory`, and without it a Burstable container's oom_score_adj is unknown (null).
"""

from __future__ import annotations

from typing import IO, Any, Iterable, Sequence

from oomtuner import inputs
from oomtuner.api import core, policy, types
from oomtuner.domain import caps as domain_caps
from oomtuner.domain import classify, kills, policies, qos, quantity, recommend, resources, timestamps, workload

InputError = inputs.InputError


def load_pods(path: str, *, stdin: IO[Any] | None = None, budget: inputs.Budget | None = None) -> list[core.Pod]:
    """Every Pod in the file; raises InputError for anything that is not a Pod or a List of them, and
    for a Pod whose CPU or memory the API server would refuse or the operator cannot hold (naming
    the field). Reads within `budget` (see `inputs`)."""
    source, data = inputs.read_bytes(path, stdin=stdin, budget=budget)
    pods: list[core.Pod] = []
    for doc in inputs.documents(inputs.decode(data, source=source), source=source):
        pods.extend(_pods_of(doc, source=source))
    if not pods:
        raise InputError(f"{source}: no Pod found")
    return pods


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _pods_of(doc: Any, *, source: str) -> Iterable[core.Pod]:
    if not isinstance(doc, dict):
        raise InputError(f"{source}: expected a Pod or a List of Pods, got {type(doc).__name__}")
    kind = doc.get("kind")
    if kind in ("List", "PodList") or (kind is None and isinstance(doc.get("items"), list)):
        items = doc.get("items")
        if not isinstance(items, list):
            raise InputError(f"{source}: {kind}.items must be a list")
        for index, item in enumerate(items):
            if not isinstance(item, dict) or item.get("kind", "Pod") != "Pod":
                got = _shown(item.get("kind")) if isinstance(item, dict) else type(item).__name__
                raise InputError(f"{source}: items[{index}] is a {got}, not a Pod")
            yield _parse(item, source=f"{source}: items[{index}]")
        return
    if kind != "Pod":
        raise InputError(f"{source}: expected a Pod or a List of Pods, got kind {_shown(kind)}")
    yield _parse(doc, source=source)


def _parse(body: dict[str, Any], *, source: str) -> core.Pod:
    try:
        pod = core.parse_pod(body)
    except core.InvalidObject as exc:
        raise InputError(f"{source}: {exc}") from None
    problems = resources.quantity_problems(pod)
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        name = f"{pod.metadata.namespace}/{pod.metadata.name}" if pod.metadata.namespace else pod.metadata.name
        raise InputError(f"{source}: Pod {_shown(name)[1:-1]}: {problems[0]}{more}")
    return pod


def load_policy(path: str, *, budget: inputs.Budget | None = None) -> policy.OOMPolicy:
    source, data = inputs.read_bytes(path, budget=budget)
    docs = inputs.documents(inputs.decode(data, source=source), source=source)
    kind = docs[0].get("kind") if len(docs) == 1 and isinstance(docs[0], dict) else None
    if kind not in (policy.KIND, policy.CLUSTER_KIND):
        raise InputError(f"{source}: expected one OOMPolicy or ClusterOOMPolicy")
    try:
        parsed = (policy.parse(docs[0], source=source) if kind == policy.KIND
                  else policy.parse_cluster(docs[0], source=source).as_policy())
    except policy.InvalidPolicy as exc:
        raise InputError(str(exc)) from None
    found = policies.problem(parsed)
    if found:
        raise InputError(f"{source}: {found}")
    return parsed


def explain_pod(pod: core.Pod, *, node_memory: int | None, chosen: policy.OOMPolicy | None) -> dict[str, Any]:
    settings = chosen.spec.memory if chosen else policy.MemorySettings()
    caps = domain_caps.Caps(policy_max_limit=quantity.parse_bytes(settings.maxLimit) if settings.maxLimit else None)
    found = kills.kills_from_pod(pod, node_memory_capacity=node_memory)
    by_container: dict[str, list[kills.OOMKill]] = {}
    for k in found:
        by_container.setdefault(k.container, []).append(k)
    containers = []
    specs = workload.containers_of(pod)
    for ec in pod.spec.ephemeralContainers or []:
        specs.append(recommend.ContainerResources(name=ec.name, type=types.ContainerType.EPHEMERAL, request=None, limit=None))
    for res in specs:
        mine = by_container.get(res.name, [])
        verdicts = [classify.classify(k, node_ooms=[]) for k in mine]
        rec_json = None
        if mine:
            rec = recommend.recommend_container(
                current=res, kills=mine, classifications=[v[0] for v in verdicts], settings=settings, caps=caps
            )
            rec_json = {"memoryRequest": rec.request, "memoryLimit": rec.limit, "phase": rec.phase.value, "reason": rec.reason,
                        "policy": chosen.metadata.name if chosen else None}
        containers.append(
            {
                "name": res.name,
                "type": res.type.value,
                "memoryRequest": res.request,
                "memoryLimit": res.limit,
                "oomScoreAdj": qos.oom_score_adj(pod=pod, container_name=res.name, node_memory_capacity=node_memory),
                "kills": [
                    {
                        "at": timestamps.format_or_none(k.at),
                        "restartCount": k.restart_count,
                        "exitCode": k.exit_code,
                        "classification": v[0].value,
                        "limitAtKill": k.limit_at_kill,
                        "reason": v[1],
                        "culprit": _culprit(v[0]),
                    }
                    for k, v in zip(mine, verdicts)
                ],
                "recommendation": rec_json,
            }
        )
    return {
        "namespace": pod.metadata.namespace,
        "name": pod.metadata.name,
        "node": pod.spec.nodeName,
        "qosClass": qos.effective_qos_class(pod).value,
        "containers": containers,
    }


# Offline there is no usage history, so a Node kill's culprit is never named; the reason says so.
_OFFLINE = classify.no_culprit("no usage data: explain reads no Prometheus")


def _culprit(classification: types.Classification) -> dict[str, Any] | None:
    """A Node kill's `culprit`, shaped as in the recommendation's kill records (memory in bytes);
    None for other kills."""
    if classification != types.Classification.NODE:
        return None
    return {"namespace": None, "pod": None, "container": None, "usage": None, "request": None, "reason": _OFFLINE.reason}


def explain(pods: Sequence[core.Pod], *, node_memory: int | None, chosen: policy.OOMPolicy | None) -> dict[str, Any]:
    return {"pods": [explain_pod(p, node_memory=node_memory, chosen=chosen) for p in pods]}


def _q(value: int | None) -> str:
    return quantity.humanize(value) if value is not None else "-"


def render_table(result: dict[str, Any]) -> str:
    """The people's view: one block per pod, one row per container, then the evidence."""
    lines: list[str] = []
    for pod in result["pods"]:
        lines.append(f"Pod {pod['namespace'] or '-'}/{pod['name']}  node={pod['node'] or '-'}  qos={pod['qosClass']}")
        header = ("CONTAINER", "TYPE", "REQUEST", "LIMIT", "OOM_SCORE_ADJ", "KILLS", "CLASS", "RECOMMENDED", "PHASE")
        rows = [header]
        for c in pod["containers"]:
            rec = c["recommendation"]
            classes = sorted({k["classification"] for k in c["kills"]})
            rows.append(
                (
                    c["name"],
                    c["type"],
                    _q(c["memoryRequest"]),
                    _q(c["memoryLimit"]),
                    "?" if c["oomScoreAdj"] is None else str(c["oomScoreAdj"]),
                    str(len(c["kills"])),
                    ",".join(classes) or "-",
                    f"{_q(rec['memoryRequest'])}/{_q(rec['memoryLimit'])}" if rec else "-",
                    rec["phase"] if rec else "-",
                )
            )
        widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
        for r in rows:
            lines.append("  " + "  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip())
        for c in pod["containers"]:
            for k in c["kills"]:
                lines.append(f"  - {c['name']}: killed {k['at'] or 'at an unknown time'} (restart {k['restartCount']}): {k['classification']}: {k['reason']}")
                if k.get("culprit"):
                    lines.append(f"    {k['culprit']['reason']}")
            if c["recommendation"]:
                lines.append(f"  → {c['name']}: {c['recommendation']['reason']}")
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"
