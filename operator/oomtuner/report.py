"""`oomtuner report`: OOM kills across a live cluster, and who the kernel would kill next per node.

It reads pods and nodes once (paged lists), finds kills with the same domain code the operator
uses, and ranks each node's containers by the kernel's badness estimate: memory (usage when
known, else the request) over node capacity × 1000, plus oom_score_adj.
"""

from __future__ import annotations

import collections
from typing import Any

from oomtuner.api import core
from oomtuner.domain import classify, kills, qos, quantity, timestamps
from oomtuner.kube import api, owners


def collect(client: api.Client, *, namespace: str | None, top: int = 5) -> dict[str, Any]:
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
    per_node: dict[str, list[qos.VictimCandidate]] = collections.defaultdict(list)
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
            per_node[node].extend(qos.candidates_from_pod(pod, node_memory_capacity=capacity))
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
                     "oomScoreAdj": r.oom_score_adj, "memory": r.memory_bytes, "basis": r.basis, "score": r.score}
                    for r in ranked
                ],
            }
        )
    return {"workloads": result_workloads, "nodes": result_nodes}


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
    for n in result["nodes"]:
        lines.append(f"Node {n['name']} ({quantity.humanize(n['memoryCapacity'])}): next to be killed")
        if not n["nextVictims"]:
            lines.append("  (no running containers)")
        for i, v in enumerate(n["nextVictims"], 1):
            lines.append(
                f"  {i}. {v['namespace']}/{v['pod']} {v['container']}  {v['qosClass']}  oom_score_adj={v['oomScoreAdj']}"
                f"  {v['basis']}={quantity.humanize(v['memory'])}  score≈{v['score']}"
            )
    return "\n".join(lines).rstrip() + "\n"
