"""PromQL for the usage queries (`prom.queries`), and the reading of Prometheus' answers: pure text
and arithmetic, no I/O. `prom.usage` sends them.
"""

from __future__ import annotations

import collections
import datetime
import json
import math
import re
import urllib.parse
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from oomtuner.domain import duration, quantity, recommend
from oomtuner.domain import usage as domain_usage
from oomtuner.prom.queries import History, NodeQuery, Outcome, Query, SinceQuery

WORKING_SET = "container_memory_working_set_bytes"
KSM_RESTARTS = "kube_pod_container_status_restarts_total"
KSM_LAST_TERMINATED = "kube_pod_container_status_last_terminated_reason"
STAT_LABEL = "oomtuner_stat"
# The window of max_over_time per range-query point: at least this, so that points never fall
# between two scrapes (a gap would look like a restart).
MIN_POINT_WINDOW = datetime.timedelta(minutes=1)
# The most characters of one query's PromQL once URL-encoded (queries are GET requests): proxies in
# front of Prometheus commonly refuse request lines beyond 8KiB, and the other parameters need a few.
MAX_QUERY_CHARS = 6000
# Kubernetes' random name suffixes (k8s.io/apimachinery/pkg/util/rand) and pod-template-hash use
# these characters only; matching them keeps `web` from matching the pods of `web-api`.
_SUFFIX_CHARS = "[bcdfghjklmnpqrstvwxz2456789]"
# generateName keeps at most 58 characters of its base before the 5 random ones.
_GENERATE_NAME_BASE = 58
# More memory than any machine has (1Pi): a working set above it is garbage whatever the node.
MAX_PLAUSIBLE_MEMORY = 1 << 50



def pod_pattern(kind: str, name: str) -> str:
    """An RE2 pattern (fully anchored, as PromQL matches) for the pods a workload creates.

    Deployment `web` → `web-<hash>-<5>`; ReplicaSet, DaemonSet, Job → `<name>-<5>`; StatefulSet →
    `<name>-<ordinal>`; CronJob → `<name>-<scheduled minute>-<5>`; a bare Pod is itself. Where
    generateName truncates a long base (58 characters), the pattern matches any suffix after the
    truncated base.
    """
    escaped = _escape(name)
    if kind == "Pod":
        return escaped
    if kind == "StatefulSet":
        return f"{escaped}-[0-9]+"
    middle = {"Deployment": f"-{_SUFFIX_CHARS}{{1,10}}", "CronJob": "-[0-9]+"}.get(kind, "")
    if len(name) + (12 if kind in ("Deployment", "CronJob") else 1) > _GENERATE_NAME_BASE:
        return f"{_escape(name[:_GENERATE_NAME_BASE])}.*"
    return f"{escaped}{middle}-{_SUFFIX_CHARS}{{5}}"


def _escape(text: str) -> str:
    return re.sub(r"([.\\+*?()|\[\]{}^$])", r"\\\1", text)


def _string(text: str) -> str:
    """A PromQL string literal (double-quoted, Go escapes)."""
    return json.dumps(text)


def _selector(namespace: str, pods: str, containers: Sequence[str], **extra: str) -> str:
    parts = [
        f"namespace={_string(namespace)}",
        f"pod=~{_string(pods)}",
        f"container=~{_string('|'.join(_escape(c) for c in containers))}",
    ]
    parts += [f"{k}={_string(v)}" for k, v in extra.items()]
    return "{" + ",".join(parts) + "}"


def seconds(td: datetime.timedelta) -> str:
    return f"{max(1, math.ceil(td.total_seconds()))}s"


def step_for(span: datetime.timedelta, *, max_points: int, min_step: datetime.timedelta) -> datetime.timedelta:
    """The step that keeps `span` within `max_points` points, never finer than `min_step`, in whole seconds."""
    seconds = max(min_step.total_seconds(), span.total_seconds() / max(1, max_points))
    return datetime.timedelta(seconds=math.ceil(seconds))


def summary_query(query: Query, *, step: datetime.timedelta) -> str:
    """The instant query for peak, p95, restarts and OOMKilled pods per container (one row per
    container and statistic, tagged with the label `oomtuner_stat`)."""
    pods = pod_pattern(query.workload_kind, query.workload_name)
    ws = WORKING_SET + _selector(query.namespace, pods, query.containers)
    lookback = seconds(query.lookback)
    parts = {
        "peak": f"max by (container) (max_over_time({ws}[{lookback}]))",
        "p95": f"max by (container) (quantile_over_time(0.95, (max by (container, pod) ({ws}))[{lookback}:{seconds(step)}]))",
        "restarts": f"sum by (container) (increase({KSM_RESTARTS}{_selector(query.namespace, pods, query.containers)}[{lookback}]))",
        "oomkilled_pods": (
            f"count by (container) (max_over_time({KSM_LAST_TERMINATED}"
            f"{_selector(query.namespace, pods, query.containers, reason='OOMKilled')}[{lookback}]) == 1)"
        ),
    }
    return " or ".join(f'label_replace({expr}, "{STAT_LABEL}", "{name}", "", "")' for name, expr in parts.items())


def slope_range(query: Query) -> tuple[datetime.datetime, tuple[str, ...]] | None:
    """Where the range query for slopes starts, and which pods it reads; None without killed pods.

    With two or more kills of these containers whose lives are known, it starts where the
    second-to-last killed life started (the two lives the leak rule compares), for a finer step;
    else at now − lookback (the life before a first kill ended some other way, and is found by its
    series). Never before now − lookback.
    """
    mine = [k for k in query.kills if k.container in query.containers]
    pods = tuple(sorted({k.pod for k in mine}))
    if not pods:
        return None
    earliest = query.now - query.lookback
    starts = sorted((k.started_at for k in mine if k.at is not None and k.started_at is not None), reverse=True)
    start = starts[1] if len(starts) >= 2 else earliest
    return max(start, earliest), pods


def slope_query(query: Query, pods: Sequence[str], *, step: datetime.timedelta) -> str:
    return _instances_query(query.namespace, "|".join(_escape(p) for p in pods), query.containers, step=step)


def _instances_query(namespace: str, pods: str, containers: Sequence[str], *, step: datetime.timedelta) -> str:
    """Each container instance's (`id`) highest working set over the step before each point (at
    least MIN_POINT_WINDOW, so that no point falls between two scrapes)."""
    window = seconds(max(step, MIN_POINT_WINDOW))
    selector = _selector(namespace, pods, containers)
    return f"max by (container, pod, id) (max_over_time({WORKING_SET}{selector}[{window}]))"


def since_range(
    query: SinceQuery, *, max_points: int, min_step: datetime.timedelta
) -> tuple[datetime.datetime, datetime.timedelta] | None:
    """Where settle's range query starts and its step; None when less than one point's window has
    passed since the raise. The first point's window starts at the raise, so no sample from before
    it counts."""
    step = step_for(query.now - query.since, max_points=max_points, min_step=min_step)
    start = query.since + datetime.timedelta(seconds=math.ceil(max(step, MIN_POINT_WINDOW).total_seconds()))
    if start > query.now:
        return None
    return start, step


def since_query(query: SinceQuery, *, step: datetime.timedelta) -> str:
    """The range query for settle: every pod of the workload, per container instance."""
    return _instances_query(
        query.namespace, pod_pattern(query.workload_kind, query.workload_name), query.containers, step=step
    )


def _number(text: Any) -> float | None:
    try:
        value = float(text)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


class Discarded:
    """Sorts the values of an answer into memory and what cannot be memory, and counts the latter by
    why. `bound` is the most memory a container can have (a node's capacity, `bound_name` says which
    node) where known; MAX_PLAUSIBLE_MEMORY always bounds."""

    def __init__(self, *, bound: int | None = None, bound_name: str = "the largest node's memory capacity"):
        self.bound = bound if bound is not None and 0 < bound < MAX_PLAUSIBLE_MEMORY else None
        self.bound_name = bound_name
        self.reasons: collections.Counter[str] = collections.Counter()

    def memory(self, text: Any) -> float | None:
        """The value as bytes of memory, or None (counted) when it cannot be that."""
        try:
            value = float(text)
        except (TypeError, ValueError):
            value = math.nan
        why = self._why_not(value)
        if why is not None:
            self.reasons[why] += 1
            return None
        return value

    def _why_not(self, value: float) -> str | None:
        if math.isnan(value):
            return "not a number"
        if math.isinf(value):
            return "infinite"
        if value < 0:
            return "negative"
        if self.bound is not None and value > self.bound:
            return f"above {self.bound_name} ({quantity.humanize(self.bound)})"
        if value > MAX_PLAUSIBLE_MEMORY:
            return f"above {quantity.humanize(MAX_PLAUSIBLE_MEMORY)}, more than any machine has"
        return None

    def sentence(self) -> str:
        """E.g. "discarded 3 value(s) that cannot be memory: 2 negative, 1 not a number"; "" when none."""
        if not self.reasons:
            return ""
        parts = ", ".join(f"{n} {why}" for why, n in sorted(self.reasons.items(), key=lambda item: (-item[1], item[0])))
        return f"discarded {sum(self.reasons.values())} value(s) that cannot be memory: {parts}"


# The statistics of the summary query that are memory (the others are counts).
_MEMORY_STATS = frozenset({"peak", "p95"})


def parse_summary(result: Sequence[Mapping[str, Any]], *, discarded: Discarded | None = None) -> dict[str, dict[str, float]]:
    """Per container, the statistics of the instant query; memory that cannot be memory is left out
    (and counted in `discarded`). Raises ValueError on a malformed answer."""
    sort = discarded or Discarded()
    found: dict[str, dict[str, float]] = {}
    for row in result:
        labels = row["metric"]
        stat = str(labels.get(STAT_LABEL, ""))
        raw = row["value"][1]
        value = sort.memory(raw) if stat in _MEMORY_STATS else _number(raw)
        if value is None:
            continue
        found.setdefault(str(labels.get("container", "")), {})[stat] = value
    return found


def parse_series(result: Sequence[Mapping[str, Any]], *, discarded: Discarded | None = None) -> dict[str, list[domain_usage.Series]]:
    """Per container, the range query's series (one per pod and instance id), without the points
    that cannot be memory (counted in `discarded`)."""
    sort = discarded or Discarded()
    found: dict[str, list[domain_usage.Series]] = {}
    for row in result:
        labels = row["metric"]
        points = tuple(
            (float(t), v) for t, raw in row["values"] if (v := sort.memory(raw)) is not None
        )
        key = f"{labels.get('pod', '')}/{labels.get('id', '')}"
        found.setdefault(str(labels.get("container", "")), []).append(domain_usage.Series(key=key, points=points))
    return found


def node_query(query: NodeQuery) -> str:
    """The instant query for the culprit of a node OOM: each container's peak working set over the
    window, per namespace, pod and container (one row each, whatever the scrape labels)."""
    window = seconds(query.window)
    terms = []
    for namespace in sorted({ns for ns, _ in query.pods}):
        selector = _containers_of(namespace, {p for ns, p in query.pods if ns == namespace})
        terms.append(f"max by (namespace, pod, container) (max_over_time({WORKING_SET}{selector}[{window}]))")
    return " or ".join(terms)


def _containers_of(namespace: str, pods: Iterable[str]) -> str:
    """The selector of every container of these pods (not the pod's own cgroup, nor its pause container)."""
    pattern = "|".join(_escape(p) for p in sorted(pods))
    return "{" + f'namespace={_string(namespace)},pod=~{_string(pattern)},container!="",container!="POD"' + "}"


def _current_term(namespace: str, pods: Iterable[str]) -> str:
    return f"max by (namespace, pod, container) ({WORKING_SET}{_containers_of(namespace, pods)})"


def _encoded_length(text: str) -> int:
    """How many characters `text` takes in a URL's query string (requests encodes it this way)."""
    return len(urllib.parse.quote_plus(text))


def current_queries(pods: Iterable[tuple[str, str]], *, max_chars: int | None = None) -> list[str]:
    """The instant queries for the working set now of every container of `pods` ((namespace, pod)).

    One term per namespace, joined with `or`, packed into as few queries as keep each within
    `max_chars` (default `MAX_QUERY_CHARS`) once URL-encoded: a namespace that does not fit in what
    is left of a query goes on in a term of the next one, and a term always holds at least one pod.
    Each answer row is the latest sample of a series (what an instant selector gives: at most
    Prometheus' lookback delta old, and none for a container that is gone), the highest where
    several series match one container.
    """
    max_chars = MAX_QUERY_CHARS if max_chars is None else max_chars
    by_namespace: dict[str, set[str]] = {}
    for namespace, pod in pods:
        by_namespace.setdefault(namespace, set()).add(pod)
    joiner, bar = _encoded_length(" or "), _encoded_length("|")
    queries: list[str] = []
    terms: list[str] = []  # the closed terms of the query being filled
    used = 0  # their encoded length, with the joiners between them
    for namespace in sorted(by_namespace):
        empty = _encoded_length(_current_term(namespace, ()))
        names: list[str] = []
        size = empty  # the encoded length of this namespace's open term
        for pod in sorted(by_namespace[namespace]):
            # The pod's part of the pattern as it appears in the PromQL string (the encodings are
            # per character, so the parts' lengths add up).
            part = _encoded_length(_string(_escape(pod))[1:-1])
            if (names or terms) and used + (joiner if terms else 0) + size + (bar if names else 0) + part > max_chars:
                if names:
                    terms.append(_current_term(namespace, names))
                queries.append(" or ".join(terms))
                terms, used, names, size = [], 0, [], empty
            size += part + (bar if names else 0)
            names.append(pod)
        if names:
            used += size + (joiner if terms else 0)
            terms.append(_current_term(namespace, names))
    if terms:
        queries.append(" or ".join(terms))
    return queries


def parse_node_usage(
    result: Sequence[Mapping[str, Any]], *, pods: Iterable[tuple[str, str]], discarded: Discarded | None = None
) -> dict[tuple[str, str, str], int]:
    """Working set per (namespace, pod, container) of the asked pods, the highest where several series
    match one container; values that cannot be memory are left out (counted in `discarded`). Raises on
    a malformed answer."""
    wanted = set(pods)
    sort = discarded or Discarded()
    found: dict[tuple[str, str, str], int] = {}
    for row in result:
        labels = row["metric"]
        raw = row["value"][1]
        key = (str(labels.get("namespace", "")), str(labels.get("pod", "")), str(labels.get("container", "")))
        if not key[2] or key[:2] not in wanted:
            continue
        value = sort.memory(raw)
        if value is None:
            continue
        found[key] = max(found.get(key, 0), math.ceil(value))
    return found


def _evidence(container: str, stats: Mapping[str, float], trend_note: str) -> str:
    """One container's part of the condition's message: its peak, p95, trend and restarts."""
    text = f"{container}: peak {quantity.humanize(math.ceil(stats['peak']))}"
    if stats.get("p95") is not None:
        text += f", p95 {quantity.humanize(math.ceil(stats['p95']))}"
    text += f"; trend: {trend_note}"
    if "restarts" in stats or "oomkilled_pods" in stats:
        text += (
            f"; kube-state-metrics: {round(stats.get('restarts', 0))} restart(s), "
            f"{round(stats.get('oomkilled_pods', 0))} pod(s) last terminated OOMKilled"
        )
    return text


def assemble(
    query: Query,
    *,
    stats: Mapping[str, Mapping[str, float]],
    series: Mapping[str, Sequence[domain_usage.Series]],
    max_gap: datetime.timedelta,
    source: str,
    discarded: str = "",
) -> History:
    """Usage per container from the parsed answers, with the evidence for the condition's message;
    `discarded` (Discarded.sentence) says what the parsing left out."""
    usage: dict[str, recommend.Usage] = {}
    notes: list[str] = []
    missing: list[str] = []
    lookback = duration.format(query.lookback)
    for container in query.containers:
        mine = stats.get(container, {})
        peak = mine.get("peak")
        if peak is None:
            missing.append(container)
            continue
        p95 = mine.get("p95")
        restarts = [k.at.timestamp() for k in query.kills if k.container == container and k.at is not None]
        leak, trend_note = domain_usage.working_set_slope(series.get(container, ()), restarts=restarts, max_gap=max_gap)
        usage[container] = recommend.Usage(
            peak=math.ceil(peak),
            p95=math.ceil(p95) if p95 is not None else None,
            slope_bytes_per_s=leak.bytes_per_s if leak else None,
            window=leak.window if leak else None,
            source=f"{source} {lookback}: {leak.reason}" if leak else f"{source} {lookback}",
        )
        notes.append(_evidence(container, mine, trend_note))
    if not usage:
        return History(
            outcome=Outcome.NO_DATA,
            lookback=query.lookback,
            message=(
                f"{source} has no {WORKING_SET} for {', '.join(missing)} of pods "
                f"{pod_pattern(query.workload_kind, query.workload_name)} in {query.namespace} over {lookback}; "
                + (f"{discarded}; " if discarded else "")
                + "computed from the kills alone"
            ),
            discarded=discarded,
        )
    if missing:
        notes.append(f"no {WORKING_SET} for {', '.join(missing)}")
    if discarded:
        notes.append(discarded)
    return History(
        outcome=Outcome.USED,
        lookback=query.lookback,
        usage=usage,
        message=f"usage over {lookback} from {source}: " + "; ".join(notes),
        discarded=discarded,
    )
