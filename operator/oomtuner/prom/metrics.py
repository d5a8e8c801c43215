"""The operator's own Prometheus metrics, served on /metrics.

One registry per process (prometheus_client's default). Label values are bounded by what exists
in the cluster: namespace, workload, container and a closed set of classifications and results.
A recommendation's memory series go with the recommendation (`RecommendationSeries.forget`).
"""

from __future__ import annotations

import platform
import threading
from collections.abc import Mapping

import prometheus_client

from oomtuner.api import recommendation
from oomtuner.domain import resources

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


RECOMMENDATION_MEMORY = prometheus_client.Gauge(
    "oomtuner_recommendation_memory_bytes",
    "Each container's memory request and limit in its OOMRecommendation: what the template has (value=current) "
    "and what oomtuner recommends (value=recommended), in bytes. A series exists only for a value that is set.",
    ["namespace", "workload", "container", "resource", "value"],
)
BUILD_INFO = prometheus_client.Gauge(
    "oomtuner_build_info",
    "Always 1: the oomtuner version and the Python version of the running operator.",
    ["version", "python"],
)

# The labels of one series of oomtuner_recommendation_memory_bytes, in the gauge's order.
MemoryLabels = tuple[str, str, str, str, str]


def recommendation_memory(rec: recommendation.OOMRecommendation) -> dict[MemoryLabels, float]:
    """The series of `oomtuner_recommendation_memory_bytes` for one recommendation: per container,
    resource (`request`, `limit`) and value (`current`, `recommended`), the bytes its status holds.
    `workload` is `Kind/name`, as in `oomtuner_oom_kills_total`. A value that is unset (no limit, no
    recommendation yet in Observe mode) or unreadable has no series. Pure."""
    ref = rec.spec.targetRef
    workload = f"{ref.kind}/{ref.name}"
    series: dict[MemoryLabels, float] = {}
    for c in rec.status.containers:
        for value, memory in (("current", c.current), ("recommended", c.recommended)):
            for resource, text in (("request", memory.request), ("limit", memory.limit)):
                found = resources.bytes_or_none(text)
                if found is not None:
                    series[(rec.metadata.namespace or "", workload, c.name, resource, value)] = float(found)
    return series


class RecommendationSeries:
    """The series of `oomtuner_recommendation_memory_bytes` per recommendation (`namespace/name`), so that
    a container or value that goes away takes its series along, and a deleted recommendation all of
    them. Thread-safe."""

    def __init__(self, gauge: prometheus_client.Gauge = RECOMMENDATION_MEMORY) -> None:
        self._gauge = gauge
        self._shown: dict[str, set[MemoryLabels]] = {}
        self._lock = threading.Lock()

    def show(self, key: str, series: Mapping[MemoryLabels, float]) -> None:
        """Set the recommendation's series to `series` (from `recommendation_memory`)."""
        with self._lock:
            for labels in self._shown.get(key, set()) - set(series):
                self._gauge.remove(*labels)
            for labels, value in series.items():
                self._gauge.labels(*labels).set(value)
            self._shown[key] = set(series)

    def forget(self, key: str) -> None:
        """Remove every series of a recommendation that was deleted."""
        self.show(key, {})
        with self._lock:
            self._shown.pop(key, None)


def set_build_info(version: str) -> None:
    """`oomtuner_build_info{version, python} 1`, set once at start."""
    BUILD_INFO.labels(version=version, python=platform.python_version()).set(1)


def serve(port: int, *, addr: str = "0.0.0.0") -> None:
    """Start the /metrics HTTP server in a daemon thread. Port 0 disables it."""
    if port:
        prometheus_client.start_http_server(port, addr=addr)
