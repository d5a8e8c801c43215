"""`oomtuner report`: OOM kills across a live cluster, and who the kernel would kill next per node.

It reads pods and nodes once (paged lists), finds kills with the same domain code the operator
uses, sets beside them the count each workload's OOMRecommendation recorded (pod statuses show
only a container's newest two terminations; the operator's ledger counts every kill), and ranks each node's containers by the kernel's badness estimate: memory (usage when
known, else the request) over node capacity × 1000, plus oom_score_adj.

Usage is each container's working set *now* (its latest sample: at most Prometheus' lookback delta,
5m by default, old), read from Prometheus in a few bounded instant queries
(`prom.promql.current_queries`). Now, not a peak over a window: the kernel compares what each process
holds at the moment memory runs out, and a recent peak would rank a container by memory it has given
back, or a container that restarted after a kill by its previous life. Without Prometheus, or when it
fails or has no data, the ranking is by memory request, and `ranking` in the result says so.
"""

from __future__ import annotations

import collections
import datetime
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from oomtuner import culprits
from oomtuner.api import core, recommendation, types
from oomtuner.domain import classify, evidence, kills, qos, quantity, redaction, resources, timestamps
from oomtuner.kube import api, owners
from oomtuner.prom import promql
from oomtuner.prom import usage as prom_usage

# The events a node OOM is posted as are on the Node.
NODE_EVENTS = "involvedObject.kind=Node"


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
    nodes = node_capacities(client.list("/api/v1/nodes"))
    path = f"/api/v1/namespaces/{api.quote(namespace)}/pods" if namespace else "/api/v1/pods"
    bodies = client.list(path)
    node_ooms = node_ooms_in(client.list("/api/v1/events", query={"fieldSelector": NODE_EVENTS}))
    placed: list[tuple[str, int, core.Pod]] = []
    seen: list[tuple[core.Pod, Mapping[str, Any], list[kills.OOMKill]]] = []
    for body in bodies:
        try:
            pod = core.parse_pod(body)
        except core.InvalidObject:
            continue
        where = placement(pod, nodes)
        if where is not None:
            placed.append((*where, pod))
        node = pod.spec.nodeName
        found = kills.kills_from_pod(pod, node_memory_capacity=nodes.get(node) if node else None)
        if found:
            seen.append((pod, body, found))
    result_workloads, node_kills = _workloads(client, seen, node_ooms=node_ooms)
    result_workloads = with_recorded_kills(result_workloads, _recommendations(client, namespace))
    at = now or datetime.datetime.now(datetime.timezone.utc)
    result_nodes, ranked_by = next_victims(nodes, placed, top=top, usage=usage, at=at)
    source = usage if usage is not None else prom_usage.Disabled()
    return {
        "workloads": result_workloads,
        "nodeKills": _node_kills(client, source, node_kills, nodes=nodes, now=at,
                                 namespaces=[namespace] if namespace else []),
        "nodes": result_nodes,
        "ranking": ranked_by,
    }


def _workloads(client: api.Client, seen: Sequence[tuple[core.Pod, Mapping[str, Any], list[kills.OOMKill]]], *,
               node_ooms: Sequence[classify.NodeOOM]) -> tuple[list[dict[str, Any]], list[tuple[kills.OOMKill, str]]]:
    """The kills of the pods that show some, per workload and container (classified with the node
    OOMs), and the Node kills among them with their workload."""
    workloads: dict[tuple[str, str], dict[str, Any]] = {}
    node_kills: list[tuple[kills.OOMKill, str]] = []
    for _pod, body, found in seen:
        target = owners.resolve(client, body)
        entry = workloads.setdefault((target.namespace, target.display),
                                     {"namespace": target.namespace, "workload": target.display, "uid": target.uid,
                                      "containers": {}})
        for k in found:
            cls, _reason = classify.classify(k, node_ooms=node_ooms)
            if cls == types.Classification.NODE and k.node:
                node_kills.append((k, target.display))
            cont = entry["containers"].setdefault(
                k.container,
                {"name": k.container, "type": k.container_type.value, "kills": 0, "classifications": set(),
                 "limit": k.limit_at_kill, "request": k.request, "lastKill": None, "qosClass": k.qos_class.value,
                 "oomScoreAdj": k.oom_score_adj},
            )
            cont["kills"] += 1
            cont["classifications"].add(cls.value)
            stamp = timestamps.format_or_none(k.at)
            if stamp and (cont["lastKill"] is None or stamp > cont["lastKill"]):
                cont["lastKill"] = stamp
    result = [{**entry, "containers": [{**c, "classifications": sorted(c["classifications"])}
                                       for c in entry["containers"].values()]}
              for _key, entry in sorted(workloads.items())]
    return result, node_kills


def _recommendations(client: api.Client, namespace: str | None) -> list[recommendation.OOMRecommendation]:
    """The OOMRecommendations that can be read (none where the CRD is not installed)."""
    path = (api.namespaced(group=recommendation.GROUP, version=recommendation.VERSION, plural=recommendation.PLURAL,
                           namespace=namespace) if namespace else
            api.cluster(group=recommendation.GROUP, version=recommendation.VERSION, plural=recommendation.PLURAL))
    try:
        bodies = client.list(path)
    except api.NotFound:
        return []
    found = []
    for body in bodies:
        try:
            found.append(recommendation.read(body))
        except recommendation.InvalidRecommendation:
            continue
    return found


def with_recorded_kills(workloads: list[dict[str, Any]], recs: Sequence[recommendation.OOMRecommendation]) -> list[dict[str, Any]]:
    """The workloads with kills in pod statuses, each with its OOMRecommendation's count beside
    (`recommendation`, and per container `recordedKills`), and the workloads whose recommendation
    records kills that no pod status shows any more. A recommendation counts only where it is the
    workload's own: its owner reference carries the workload's uid (for a workload seen through its
    pods) or names its kind and name."""
    by_key = {(w["namespace"], w["workload"]): w for w in workloads}
    for rec in recs:
        ref = rec.spec.targetRef
        key = (rec.metadata.namespace or "", f"{ref.kind}/{ref.name}")
        entry = by_key.get(key)
        owners_named = [o for o in rec.metadata.ownerReferences if (o.kind, o.name) == (ref.kind, ref.name)]
        if not owners_named or (entry is not None and entry.get("uid") and not any(o.uid == entry["uid"] for o in owners_named)):
            continue
        if entry is None:
            if not rec.status.totalKills:
                continue
            entry = by_key[key] = {"namespace": key[0], "workload": key[1], "containers": []}
        entry["recommendation"] = {"name": rec.metadata.name, "phase": rec.status.phase.value if rec.status.phase else None,
                                   "totalKills": rec.status.totalKills}
        containers = {c["name"]: c for c in entry["containers"]}
        for c in rec.status.containers:
            if c.name not in containers and c.oomKills:
                containers[c.name] = _recorded_only(c)
                entry["containers"].append(containers[c.name])
            if c.name in containers:
                containers[c.name]["recordedKills"] = c.oomKills
    result = []
    for _key, entry in sorted(by_key.items()):
        entry.pop("uid", None)
        entry.setdefault("recommendation", None)
        for c in entry["containers"]:
            c.setdefault("recordedKills", None)
        result.append(entry)
    return result


def _recorded_only(c: recommendation.ContainerStatus) -> dict[str, Any]:
    """A container whose kills only its recommendation remembers: its memory as the recommendation
    last saw the template, its last kill and class from there."""
    return {"name": c.name, "type": c.type.value, "kills": 0, "classifications": [c.classification.value],
            "request": resources.bytes_or_none(c.current.request), "limit": resources.bytes_or_none(c.current.limit),
            "lastKill": c.lastOOMAt, "qosClass": None, "oomScoreAdj": None}


def node_ooms_in(events: Iterable[Mapping[str, Any]]) -> list[classify.NodeOOM]:
    """The node-wide OOMs among events on nodes (`SystemOOM`, `OOMKilling`); others are skipped."""
    node_ooms: list[classify.NodeOOM] = []
    for ev in events:
        if core.reason_of(ev) not in (classify.SYSTEM_OOM, classify.OOM_KILLING):
            continue
        try:
            event = core.parse_event(ev)
        except core.InvalidObject:
            continue
        # Anyone may post events: only the node's own kubelet or kernel monitor counts (domain.evidence).
        found = classify.node_oom_from_event(event) if evidence.node_oom_problem(event) is None else None
        if found is not None:
            node_ooms.append(found)
    return node_ooms


def node_capacities(bodies: Iterable[Mapping[str, Any]]) -> dict[str, int | None]:
    """Each node's memory capacity in bytes (None when it has none, or one that cannot be read)."""
    nodes: dict[str, int | None] = {}
    for body in bodies:
        name = str((body.get("metadata") or {}).get("name") or "")
        mem = ((body.get("status") or {}).get("capacity") or {}).get("memory")
        try:
            nodes[name] = quantity.parse_bytes(mem) if mem is not None else None
        except quantity.QuantityError:
            nodes[name] = None
    return nodes


def placement(pod: core.Pod, nodes: Mapping[str, int | None]) -> tuple[str, int] | None:
    """The node a pod holds memory on and its capacity, or None when it holds none there (not bound,
    finished, or on a node of unknown capacity)."""
    node = pod.spec.nodeName
    capacity = nodes.get(node) if node else None
    if node and capacity and pod.status.phase in ("Running", "Pending", None):
        return node, capacity
    return None


def next_victims(
    nodes: Mapping[str, int | None],
    placed: Sequence[tuple[str, int, core.Pod]],
    *,
    top: int,
    usage: prom_usage.Source | None,
    at: datetime.datetime,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Per node (with a capacity), its `top` next victims among the `placed` pods (node, capacity,
    pod), ranked by their working set at `at` from `usage` (default: none) or their request; and
    `ranking`'s account of what they are ranked by."""
    source = usage if usage is not None else prom_usage.Disabled()
    measured = source.current_usage(sorted({(p.metadata.namespace or "", p.metadata.name) for _, _, p in placed}), at=at,
                                    memory_bound=max((c for c in nodes.values() if c), default=None))
    by_pod = qos.usage_by_pod(measured.usage) if measured.ok else {}
    per_node: dict[str, list[qos.VictimCandidate]] = collections.defaultdict(list)
    for node, on_node, pod in placed:
        mine = by_pod.get((pod.metadata.namespace or "", pod.metadata.name))
        per_node[node].extend(qos.candidates_from_pod(pod, node_memory_capacity=on_node, usage=mine))
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
    return result_nodes, ranking(measured, candidates=candidates, prometheus=_shown_url(source),
                                 at=at if measured.outcome != prom_usage.Outcome.NOT_CONFIGURED else None)


# The Node kills whose culprit the report looks up, newest first: one Prometheus query each.
MAX_CULPRIT_LOOKUPS = 20


def _node_kills(
    client: api.Client, source: prom_usage.Source, found: list[tuple[kills.OOMKill, str]], *,
    nodes: dict[str, int | None], now: datetime.datetime, namespaces: list[str],
) -> list[dict[str, Any]]:
    """The newest Node kills with their likely culprit, names and all: the full record, which the
    victims' namespaces may see without the culprit's names (README, "Tenancy"). With -n, only the
    pods of that namespace are candidates; a cluster administrator's report sees every pod."""
    newest = sorted(found, key=lambda item: (item[0].at or now, item[0].identity), reverse=True)[:MAX_CULPRIT_LOOKUPS]
    asked: dict[tuple[str, datetime.datetime], classify.CulpritFinding] = {}
    result = []
    for kill, workload_name in newest:
        place = (kill.node or "", kill.at or now)
        if place not in asked:
            asked[place] = culprits.on_node(client, source, node=place[0], at=place[1], capacity=nodes.get(place[0]),
                                            namespaces=namespaces)
        finding = asked[place]
        culprit = finding.culprit
        result.append({
            "namespace": kill.namespace, "workload": workload_name, "pod": kill.pod, "container": kill.container,
            "node": kill.node, "at": timestamps.format_or_none(kill.at),
            "culprit": {"namespace": culprit.namespace if culprit else None, "pod": culprit.pod if culprit else None,
                        "container": culprit.container if culprit else None,
                        "usage": culprit.usage_bytes if culprit else None,
                        "request": culprit.request_bytes if culprit else None, "reason": finding.reason},
        })
    return result


def _shown_url(source: Any) -> str | None:
    """The usage source's URL as the report shows it: without credentials (None without one)."""
    url = getattr(source, "url", None)
    return redaction.url(url) if url else None


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
        message = f"by memory request: Prometheus at {prometheus} has no {promql.WORKING_SET} for these containers"
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


RECORDED_LEGEND = ("RECORDED: kills counted in the workload's OOMRecommendation (status.containers[].oomKills; "
                   "- without one). IN PODS: kills the pod statuses show now (at most the newest two per container).")


def render_table(result: dict[str, Any]) -> str:
    lines = []
    rows = [("NAMESPACE", "WORKLOAD", "CONTAINER", "RECORDED", "IN PODS", "CLASS", "QOS", "OOM_SCORE_ADJ", "REQUEST", "LIMIT",
             "LAST KILL")]
    for w in result["workloads"]:
        for c in w["containers"]:
            rows.append((
                w["namespace"], w["workload"], c["name"], "-" if c["recordedKills"] is None else str(c["recordedKills"]),
                str(c["kills"]), ",".join(c["classifications"]), c["qosClass"] or "-",
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
        lines.append(RECORDED_LEGEND)
    if result.get("nodeKills"):
        lines.append("")
        lines.append("Node OOM kills and their likely culprit (all names: the victims' namespaces may see figures only)")
        for k in result["nodeKills"]:
            lines.append(f"  {k['at'] or '-'} {k['namespace']}/{k['pod']} {k['container']} on {k['node']}: {k['culprit']['reason']}")
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
