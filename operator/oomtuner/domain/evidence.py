"""Whether an event may count as evidence of an OOM kill: who posted it, about what, on which node.

Events are easy to write: anyone who may create events in a namespace can post an
`OOMKillChildProcess` with `newKills=20000` about any pod there, or a `SystemOOM` that turns other
tenants' kills into `Node` kills. So before an event counts:

- an `OOMKillChildProcess` must come from the node agent (`source.component` and, when set,
  `reportingComponent` are `oomtuner-agent`) of the node the pod runs on (`source.host` and, when set,
  `reportingInstance` are the pod's `spec.nodeName`), sit in the pod's namespace and name the pod by
  its UID;
- a `SystemOOM` must come from the kubelet, an `OOMKilling` from node-problem-detector's kernel
  monitor (`source.component`), of the node it is about (`source.host` is `involvedObject.name`),
  and sit in the `default` namespace, where both post their node events (client-go puts an event
  about a cluster-scoped object there).

These checks read fields the poster writes, so they stop a forger only together with who may write
them: the chart's ValidatingAdmissionPolicy lets only the agent's ServiceAccount, on its own node,
create `OOMKillChildProcess` events, and only cluster administrators usually may create events in
`default` (README, "Forged evidence").

Each event also counts for at most `MAX_KILLS_PER_EVENT` kills (`child_kills.kills_from_event` keeps
the newest): a recommendation's ledger holds the last `recommendation.MAX_KILLS` kill identities,
so more kills from one event could only push each other, and every other kill of the workload, out
of it; what a real agent sees between two reads of a counter (2 s apart by default) is far below.
"""

from __future__ import annotations

from oomtuner.api import core, recommendation

AGENT = "oomtuner-agent"
KUBELET = "kubelet"
# node-problem-detector's kernel monitor posts as its source's name.
KERNEL_MONITOR = "kernel-monitor"
NODE_EVENTS_NAMESPACE = "default"
MAX_KILLS_PER_EVENT = recommendation.MAX_KILLS

_NODE_OOM_POSTERS = {"SystemOOM": KUBELET, "OOMKilling": KERNEL_MONITOR}


def _poster_problem(event: core.Event, *, component: str, host: str | None, what: str) -> str | None:
    """Why `event` was not posted by `component` on `host` (None: it was, as far as its fields say).

    `source` is what every core/v1 poster fills (the kubelet, node-problem-detector and the agent use
    client-go's recorder or write it themselves); `reportingComponent` and `reportingInstance`, when
    set, must say the same."""
    if event.source.component != component or event.reportingComponent not in (None, "", component):
        shown = event.source.component if event.source.component != component else event.reportingComponent
        return f"not posted by {component} (component {shown!r}): {what} counts only from {component}"
    if host is None:
        return f"the node is unknown: {what} counts only from {component} on the node"
    if event.source.host != host or event.reportingInstance not in (None, "", host):
        shown = event.source.host if event.source.host != host else event.reportingInstance
        return f"posted from node {shown!r}, not from {host!r}: {what} counts only from {component} on that node"
    return None


def child_kill_problem(event: core.Event, *, pod: core.Pod | None) -> str | None:
    """Why an OOMKillChildProcess event must not count for `pod` (the pod it names, as read from the
    API server), or None when it may. Checks the poster, the node, the namespace and the pod's UID."""
    what = "a child-process OOM kill"
    if pod is None:
        return "the pod it names is gone or unknown"
    involved = event.involvedObject
    if involved.kind not in (None, "Pod"):
        return f"it is about a {involved.kind}, not a Pod"
    namespace = pod.metadata.namespace
    if event.metadata.namespace and event.metadata.namespace != namespace:
        return f"it sits in namespace {event.metadata.namespace!r}, not in the pod's {namespace!r}"
    if not involved.uid or involved.uid != pod.metadata.uid:
        return f"it names pod UID {involved.uid!r}, not the pod's {pod.metadata.uid!r}"
    return _poster_problem(event, component=AGENT, host=pod.spec.nodeName or None, what=what)


def node_oom_problem(event: core.Event) -> str | None:
    """Why a SystemOOM or OOMKilling event must not count as a node running out of memory, or None
    when it may. Other reasons are not node OOMs at all (a problem is returned)."""
    component = _NODE_OOM_POSTERS.get(event.reason or "")
    if component is None:
        return f"reason {event.reason!r} is not a node OOM"
    what = f"a node OOM ({event.reason})"
    if event.involvedObject.kind != "Node" or not event.involvedObject.name:
        return f"it is about a {event.involvedObject.kind or 'missing object'}, not a Node"
    if event.metadata.namespace and event.metadata.namespace != NODE_EVENTS_NAMESPACE:
        return (f"it sits in namespace {event.metadata.namespace!r}: node events are posted in "
                f"{NODE_EVENTS_NAMESPACE!r}")
    return _poster_problem(event, component=component, host=event.involvedObject.name, what=what)
