"""`oomtuner report`: OOM kills across a live cluster, and who the kernel would kill next per node.

It reads pods and nodes once (paged lists), finds kills with the same domain code the operator
uses, and ranks each node's containers by the kernel's badness estimate: memory (usage when
known, else the request) over node capacity × 1000, plus oom_score_adj.

Usage is each container's working set *now* (its latest sample: at most Prometheus' lookback delta,
5m by default, old), read from Prometheus in a few bounded instant queries
(`prom.usage.current_queries`). Now, not a peak over a window: the kernel compares what each process
holds at the moment memory runs out, and a recent peak would rank a container by memory it has given
back, or a container that restarted after a kill by its previous life. Without Prometheus, or when it
fails or has no data, the ranking is by memory request, and `ranking` in the result says so.
"""

from __future__ import annotations

import collections
import datetime
from typing import Any

from oomtuner.api import core
from oomtuner.domain import classify, kills, qos, quantity, timestamps
from oomtuner.kube import api, owners
from oomtuner.prom import usage as prom_usage


def collect(
    client: api.Client,
    *,
    namespace: str | None,
    top: int = 5,
    usage: prom_usage.Source | None = None,
    now: datetime.datetime | None = None,
) -> dict[str, Any]:
    """Kills per workload and the next victims per node; `usage` (default: none) supplies the
    containers' working set at `now` (default: the current time)."""
    nodes: dict[str, int | None] = {}
    for body in client.list("/api/v1/nodes"):
        name = (body.get("metadata") or {}).get("name")
        mem = ((body.get("status") or {}).get("capacity") or {}).get("memory")
        try:
            nodes[name] = quantity.parse_bytes(mem) if mem is not None else None
        except quantity.QuantityError:
            nodes[name] = None
    path = f"/api/v1/namespaces/{api.quote(namespace)}/pods" if namespace else "/api/v1/pods"
    bodies = client.list(path)
    workloads: dict[tuple[str, str], dict[str, Any]] = {}
    placed: list[tuple[str, int, core.Pod]] = []
    node_ooms: list[classify.NodeOOM] = []
    for ev in client.list("/api/v1/events", query={"fieldSelector": "involvedObject.kind=Node"}):
        if ev.get("reason") in ("SystemOOM", "OOMKilling"):
            try:
                found = classify.node_oom_from_event(core.Event.model_validate(ev))
            except Exception:
                continue
            if found is not None:
                node_ooms.append(found)
    for body in bodies:
        try:
            pod = core.parse_pod(body)
        except core.InvalidObject:
            continue
        node = pod.spec.nodeName
        capacity = nodes.get(node) if node else None
        if node and capacity and pod.status.phase in ("Running", "Pending", None):
            placed.append((node, capacity, pod))
        found = kills.kills_from_pod(pod, node_memory_capacity=capacity)
        if not found:
            continue
        target = owners.resolve(client, body)
        key = (target.namespace, target.display)
        entry = workloads.setdefault(key, {"namespace": target.namespace, "workload": target.display, "containers": {}})
        for k in found:
            cls, reason = classify.classify(k, node_ooms=node_ooms)
            cont = entry["containers"].setdefault(
                k.container,
                {"name": k.container, "type": k.container_type.value, "kills": 0, "classifications": set(),
                 "limit": k.limit_at_kill, "request": k.request, "lastKill": None, "qosClass": k.qos_class.value,
                 "oomScoreAdj": k.oom_score_adj},
            )
            cont["kills"] += 1
            cont["classifications"].add(cls.value)
            at = timestamps.format_or_none(k.at)
            if at and (cont["lastKill"] is None or at > cont["lastKill"]):
                cont["lastKill"] = at
    result_workloads = []
    for (_, _), entry in sorted(workloads.items()):
        containers = []
        for c in entry["containers"].values():
            containers.append({**c, "classifications": sorted(c["classifications"])})
        result_workloads.append({**entry, "containers": containers})
    source = usage if usage is not None else prom_usage.Disabled()
    at = now or datetime.datetime.now(datetime.timezone.utc)
    measured = source.current_usage(sorted({(p.metadata.namespace or "", p.metadata.name) for _, _, p in placed}), at=at,
                                    memory_bound=max((c for c in nodes.values() if c), default=None))
    by_pod = qos.usage_by_pod(measured.usage) if measured.ok else {}
    per_node: dict[str, list[qos.VictimCandidate]] = collections.defaultdict(list)
    for node, capacity, pod in placed:
        mine = by_pod.get((pod.metadata.namespace or "", pod.metadata.name))
        per_node[node].extend(qos.candidates_from_pod(pod, node_memory_capacity=capacity, usage=mine))
    result_nodes = []
    for node, capacity in sorted(nodes.items()):
        if capacity is None:
            continue
        ranked = qos.rank_victims(per_node.get(node, []), capacity=capacity)[:top]
        result_nodes.append(
            {
                "name": node,
                "memoryCapacity": capacity,
                "nextVictims": [
                    {"namespace": r.namespace, "pod": r.pod, "container": r.container, "qosClass": r.qos.value,
                     "oomScoreAdj": r.oom_score_adj, "memory": r.memory_bytes, "basis": r.basis, "score": r.score,
                     "usage": r.usage_bytes, "request": r.request_bytes}
                    for r in ranked
                ],
            }
        )
    candidates = [c for found in per_node.values() for c in found]
    return {
        "workloads": result_workloads,
        "nodes": result_nodes,
        "ranking": ranking(measured, candidates=candidates, prometheus=getattr(source, "url", None),
                           at=at if measured.outcome != prom_usage.Outcome.NOT_CONFIGURED else None),
    }


def ranking(
    measured: prom_usage.NodeUsage,
    *,
    candidates: list[qos.VictimCandidate],
    prometheus: str | None,
    at: datetime.datetime | None,
) -> dict[str, Any]:
    """What the next victims are ranked by: `basis` "usage" when any container has a measured working
    set (each victim's own `basis` says which), else "request"; `message` says so in words ("by ...")
    and, for a ranking by request, why."""
    with_usage = sum(1 for c in candidates if c.usage_bytes is not None)
    if with_usage:
        message = f"by {measured.message}, for {with_usage} of {len(candidates)} container(s)"
        if with_usage < len(candidates):
            message += "; the others by memory request"
    elif measured.outcome == prom_usage.Outcome.NOT_CONFIGURED:
        message = "by memory request: no Prometheus is configured (--prometheus-url or OOMTUNER_PROMETHEUS_URL)"
    elif measured.ok:
        message = f"by memory request: Prometheus at {prometheus} has no {prom_usage.WORKING_SET} for these containers"
    else:
        message = f"by memory request: {measured.message}"
    return {"basis": "usage" if with_usage else "request", "prometheus": prometheus,
            "at": timestamps.format_or_none(at), "message": message}


def warning(result: dict[str, Any]) -> str | None:
    """The one line to say on stderr when the next victims are ranked by request (none when no node
    has a running container: then there is nothing to rank)."""
    if result["ranking"]["basis"] == "request" and any(n["nextVictims"] for n in result["nodes"]):
        return f"warning: next victims ranked {result['ranking']['message']}"
    return None


def _other_memory(victim: dict[str, Any]) -> str:
    """The memory figure the score did not use: the request next to usage, or that usage is unknown."""
    if victim["basis"] == "request":
        return "usage unknown"
    request = victim.get("request")
    return f"request {quantity.humanize(request)}" if request is not None else "no request"


def render_table(result: dict[str, Any]) -> str:
    lines = []
    rows = [("NAMESPACE", "WORKLOAD", "CONTAINER", "KILLS", "CLASS", "QOS", "OOM_SCORE_ADJ", "REQUEST", "LIMIT", "LAST KILL")]
    for w in result["workloads"]:
        for c in w["containers"]:
            rows.append((
                w["namespace"], w["workload"], c["name"], str(c["kills"]), ",".join(c["classifications"]), c["qosClass"],
                "?" if c["oomScoreAdj"] is None else str(c["oomScoreAdj"]),
                quantity.humanize(c["request"]) if c["request"] is not None else "-",
                quantity.humanize(c["limit"]) if c["limit"] is not None else "-",
                c["lastKill"] or "-",
            ))
    if len(rows) == 1:
        lines.append("No OOM kills found.")
    else:
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        lines.extend("  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip() for r in rows)
    lines.append("")
    lines.append(f"Next victims ranked {result['ranking']['message']}")
    for n in result["nodes"]:
        lines.append(f"Node {n['name']} ({quantity.humanize(n['memoryCapacity'])}): next to be killed")
        if not n["nextVictims"]:
            lines.append("  (no running containers)")
        for i, v in enumerate(n["nextVictims"], 1):
            lines.append(
                f"  {i}. {v['namespace']}/{v['pod']} {v['container']}  {v['qosClass']}  oom_score_adj={v['oomScoreAdj']}"
                f"  {v['basis']}={quantity.humanize(v['memory'])} ({_other_memory(v)})  score≈{v['score']}"
            )
    return "\n".join(lines).rstrip() + "\n"
