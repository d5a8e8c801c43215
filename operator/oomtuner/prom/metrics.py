"""The operator's own Prometheus metrics, served on /metrics.

One registry per process (prometheus_client's default). Label values are bounded by what exists
in the cluster: namespace, workload, container and a closed set of classifications and results.
"""

from __future__ import annotations

import prometheus_client

OOM_KILLS = prometheus_client.Counter(
    "oomtuner_oom_kills_total",
    "OOM kills seen, each counted once.",
    ["namespace", "workload", "container", "classification"],
)
RECOMMENDATIONS = prometheus_client.Gauge(
    "oomtuner_recommendations",
    "OOMRecommendations by phase, as last written by this replica.",
    ["phase"],
)
PATCHES = prometheus_client.Counter(
    "oomtuner_patches_total",
    "Attempts to patch a workload's memory, by result.",
    ["result"],
)
DETECTION_LATENCY = prometheus_client.Histogram(
    "oomtuner_detection_latency_seconds",
    "From a kill's finishedAt (or when its status was seen) to the recommendation being written.",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300),
)
SETTLES = prometheus_client.Counter(
    "oomtuner_settles_total",
    "Raises of the operator's own it recommended to settle (lower), once usage since the raise was known.",
    ["namespace", "workload", "container"],
)
RECONCILE_ERRORS = prometheus_client.Counter(
    "oomtuner_reconcile_errors_total",
    "Handler runs that failed, by what was handled.",
    ["kind"],
)
PROMETHEUS_QUERY_FAILURES = prometheus_client.Counter(
    "oomtuner_prometheus_query_failures_total",
    "Usage-history queries to Prometheus that failed or timed out.",
)


def serve(port: int, *, addr: str = "0.0.0.0") -> None:
    """Start the /metrics HTTP server in a daemon thread. Port 0 disables it."""
    if port:
        prometheus_client.start_http_server(port, addr=addr)
