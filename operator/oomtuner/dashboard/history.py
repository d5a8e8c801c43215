"""A workload's working set over time, for its chart: one read-only range query to Prometheus.

It goes through the operator's own client (`prom.usage.PrometheusUsage`, built from the same
settings): the same timeout, bearer token, CA bundle, circuit breaker and failure counter, and the
same rule for which pods are the workload's (`pod_pattern`, by name, so the pods a rollout replaced
count). One series per container: the highest working set among the workload's pods at each
point, over a window as long as the step (at least a minute), so a peak between two points is not
lost. Without Prometheus, or when the query fails, the answer says why in one line and the page
draws the kills and the limits alone.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

from oomtuner.prom import promql
from oomtuner.prom import usage as prom_usage

# Points per series the chart asks for: enough for a 1,000-pixel-wide chart.
POINTS = 600


@dataclasses.dataclass(frozen=True)
class WorkingSet:
    """Per container, [[unix seconds, bytes], ...]; `message` says where it came from or why not."""

    ok: bool
    message: str
    series: Mapping[str, list[list[float]]] = dataclasses.field(default_factory=dict)


def query(*, namespace: str, kind: str, name: str, containers: Sequence[str], step: datetime.timedelta) -> str:
    window = max(step, promql.MIN_POINT_WINDOW)
    selector = ",".join([
        f"namespace={json.dumps(namespace)}",
        f"pod=~{json.dumps(promql.pod_pattern(kind, name))}",
        f"container=~{json.dumps('|'.join(re.escape(c) for c in containers))}",
    ])
    return (f"max by (container) (max_over_time({promql.WORKING_SET}{{{selector}}}"
            f"[{math.ceil(window.total_seconds())}s]))")


def parse(rows: Sequence[Mapping[str, Any]]) -> dict[str, list[list[float]]]:
    """Per container, its points whose value can be memory (`promql.Discarded`). Raises on a
    malformed answer (the guarded query counts that as a failure)."""
    sort = promql.Discarded()
    found: dict[str, list[list[float]]] = {}
    for row in rows:
        points = found.setdefault(str(row["metric"].get("container", "")), [])
        for t, raw in row["values"]:
            value = sort.memory(raw)
            if value is not None:
                points.append([float(t), float(value)])
    return found


def working_set(source: prom_usage.Source, *, namespace: str, kind: str, name: str, containers: Sequence[str],
                start: datetime.datetime, end: datetime.datetime, min_step: datetime.timedelta) -> WorkingSet:
    if not isinstance(source, prom_usage.PrometheusUsage):
        return WorkingSet(ok=False, message=f"No working set: {prom_usage.NOT_CONFIGURED_MESSAGE}; "
                                            "the chart shows the kills and the memory limits only.")
    if not containers:
        return WorkingSet(ok=False, message="No working set: the recommendation names no container.")
    step = promql.step_for(end - start, max_points=POINTS, min_step=min_step)
    text = query(namespace=namespace, kind=kind, name=name, containers=containers, step=step)
    try:
        # The client's own guarded range query: its timeout, breaker and failure counter.
        series = source.query_range(text, start=start, end=end, step=step, parse=parse)
    except prom_usage.QueryFailed as exc:
        return WorkingSet(ok=False, message=f"No working set: Prometheus at {source.shown_url}: {exc}; "
                                            "the chart shows the kills and the memory limits only.")
    if not any(series.values()):
        return WorkingSet(ok=False, message=f"No working set: Prometheus at {source.shown_url} has no {promql.WORKING_SET} "
                                            f"for pods {promql.pod_pattern(kind, name)} in {namespace} in this range.")
    return WorkingSet(ok=True, series=series,
                      message=f"Working set: the highest of the workload's pods, from Prometheus at {source.shown_url}.")
