"""The agent's own Prometheus metrics, in a registry of their own.

The agent is a separate process from the operator (a DaemonSet pod), so its /metrics shows only what
the agent knows; a registry of its own also keeps the operator's metrics out of it when both are
imported in one process (tests, `python -m oomtuner`). Label values are bounded by the pods that ran
on the node.
"""

from __future__ import annotations

import prometheus_client

REGISTRY = prometheus_client.CollectorRegistry()

OOM_KILLS = prometheus_client.Counter(
    "oomtuner_agent_oom_kills_total",
    "OOM kills read from container cgroup counters, by the pod and container they happened in.",
    ["namespace", "pod", "container"],
    registry=REGISTRY,
)
UNATTRIBUTED_KILLS = prometheus_client.Counter(
    "oomtuner_agent_unattributed_oom_kills_total",
    "OOM kills in a container cgroup that no pod on this node claimed before the agent gave up.",
    registry=REGISTRY,
)
EVENT_ERRORS = prometheus_client.Counter(
    "oomtuner_agent_event_errors_total",
    "Attempts to post an OOMKillChildProcess event that failed (each retry counts).",
    registry=REGISTRY,
)
POLL_ERRORS = prometheus_client.Counter(
    "oomtuner_agent_poll_errors_total",
    "Polls that failed unexpectedly (the agent keeps polling).",
    registry=REGISTRY,
)
CGROUPS_WATCHED = prometheus_client.Gauge(
    "oomtuner_agent_cgroups_watched",
    "Container cgroups whose OOM kill counter the agent read in its last poll.",
    registry=REGISTRY,
)
LAST_POLL = prometheus_client.Gauge(
    "oomtuner_agent_last_poll_timestamp_seconds",
    "When the last poll finished, in seconds since the epoch.",
    registry=REGISTRY,
)


def serve(port: int, *, addr: str = "0.0.0.0") -> None:
    """Serve /metrics from REGISTRY in a daemon thread. Port 0 disables it."""
    if port:
        prometheus_client.start_http_server(port, addr=addr, registry=REGISTRY)
