"""Usage history from Prometheus: what a container really used over the policy's lookback.

The recommendation works without it (from the kills alone); with it, a Limit kill's new limit is never
below the observed peak × (1 + margin), a Node kill's request comes from observed usage, requestPolicy
`FromUsage` has a p95, and a steadily growing working set can flag a leak (`domain.usage` says when).

Two queries per recommendation, both bounded:
- one *instant* query gives, per container, the peak working set (`max_over_time` over the raw
  samples of the lookback), its p95 (each pod's `quantile_over_time` over a subquery at a bounded
  step, and of those the busiest pod's, as KRR takes it), and, when kube-state-metrics is scraped,
  the restarts and the pods whose last termination was OOMKilled (informational: the kills
  themselves come from the pod status). One row per container and statistic, whatever the number
  of pods.
- one *range* query gives the working set of the pods that were OOM-killed (the kill ledger's pods,
  at most `recommendation.MAX_KILLS`), per container instance (`id`), over the lookback (from the
  start of the second-to-last killed life when two kills are known: the lives the leak rule
  compares), at a step that keeps every series under `max_points` points. `domain.usage` turns it
  into the leak slope.

For a Node kill, one more *instant* query, at the kill (`node_usage`): the peak working set over
`CULPRIT_WINDOW` up to it of every container of the pods on that node, matched by namespace and pod
name. The reconcile layer names the likely culprit from it (`domain.classify.culprit_on_node`).

For `oomtuner report`, *instant* queries of the working set now (`current_usage`) of every container
of the pods it lists, one term per namespace, packed into as few queries as fit `MAX_QUERY_CHARS`.

For settle (`since_raise`), one *range* query of every pod of the workload since oomtuner's last
raise, per container instance, at a step that keeps every series under `max_points` points: the
peak, how much of the time has samples, and whether a life running now still grows
(`domain.settle.usage_since`).

Every request carries a client timeout and Prometheus' own `timeout` parameter, is never retried,
and runs in the caller's worker thread (the reconcile layer runs in `asyncio.to_thread`), so kopf's
event loop never waits on it. A failed query (connection refused, timeout, an HTTP error, an
unreadable answer) increments `oomtuner_prometheus_query_failures_total` and opens a circuit breaker:
for `backoff` no query is sent at all, so a Prometheus that is down or hanging costs one timeout per
back-off period instead of one per kill. Then one probe goes through; success closes the breaker.
Failures never raise out of this module: the `History` says what happened, and the recommendation
is computed from the kills alone with a condition that says so.

The workload's pods are found by name (the controllers' naming rules, `pod_pattern`), not by the
pods that exist now: a rollout replaces them, and the history of the old ones is what counts.
"""

from __future__ import annotations

import dataclasses
import datetime
import enum
import json
import logging
import math
import re
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Protocol, TypeVar

import requests
import requests.auth
from prometheus_api_client import prometheus_connect
from urllib3.util import retry as urllib3_retry

from oomtuner import config
from oomtuner.domain import duration, kills, quantity, recommend, settle
from oomtuner.domain import usage as domain_usage
from oomtuner.prom import metrics

logger = logging.getLogger(__name__)
_T = TypeVar("_T")

WORKING_SET = "container_memory_working_set_bytes"
KSM_RESTARTS = "kube_pod_container_status_restarts_total"
KSM_LAST_TERMINATED = "kube_pod_container_status_last_terminated_reason"
STAT_LABEL = "oomtuner_stat"
# The window of max_over_time per range-query point: at least this, so that points never fall
# between two scrapes (a gap would look like a restart).
MIN_POINT_WINDOW = datetime.timedelta(minutes=1)
# The range query is ignored (no slope) beyond this many series: a bound on what one answer holds.
MAX_SERIES = 500
# How far back from a node OOM the working set of the node's containers is read, for its culprit: a
# few scrape intervals, so the last samples before the kill are in it.
CULPRIT_WINDOW = datetime.timedelta(minutes=5)
# The most characters of one query's PromQL once URL-encoded (queries are GET requests): proxies in
# front of Prometheus commonly refuse request lines beyond 8KiB, and the other parameters need a few.
MAX_QUERY_CHARS = 6000
# Kubernetes' random name suffixes (k8s.io/apimachinery/pkg/util/rand) and pod-template-hash use
# these characters only; matching them keeps `web` from matching the pods of `web-api`.
_SUFFIX_CHARS = "[bcdfghjklmnpqrstvwxz2456789]"
# generateName keeps at most 58 characters of its base before the 5 random ones.
_GENERATE_NAME_BASE = 58


class Outcome(str, enum.Enum):
    """What the usage lookup gave: the reason of the recommendation's UsageHistory condition."""

    USED = "Prometheus"
    NO_DATA = "NoUsageData"
    UNAVAILABLE = "PrometheusUnavailable"
    NOT_CONFIGURED = "NotConfigured"


@dataclasses.dataclass(frozen=True)
class Query:
    """What to look up: a workload's containers over a lookback, with the kills known so far
    (their pods and times tell the instances apart)."""

    namespace: str
    workload_kind: str
    workload_name: str
    containers: tuple[str, ...]
    kills: tuple[kills.OOMKill, ...]
    lookback: datetime.timedelta
    now: datetime.datetime


@dataclasses.dataclass(frozen=True)
class History:
    """The answer: usage per container that had data, and how it went (`outcome`, `message`)."""

    outcome: Outcome
    message: str
    lookback: datetime.timedelta | None = None
    usage: Mapping[str, recommend.Usage] = dataclasses.field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.outcome == Outcome.USED

    @property
    def data_source(self) -> str:
        """`status.dataSource`: "kills", or "prometheus (7d)" when usage history was used."""
        if self.usage and self.lookback is not None:
            return f"prometheus ({duration.format(self.lookback)})"
        return "kills"


NOT_CONFIGURED_MESSAGE = "no Prometheus is configured (OOMTUNER_PROMETHEUS_URL)"
NOT_CONFIGURED = History(
    outcome=Outcome.NOT_CONFIGURED,
    message=f"{NOT_CONFIGURED_MESSAGE}; computed from the kills alone",
)


@dataclasses.dataclass(frozen=True)
class NodeQuery:
    """What to look up for the culprit of a node OOM: the containers of the pods on the node, at the
    kill. Pods are matched by namespace and name, which every setup labels alike (the node shows up
    as `node` or as `instance` depending on how cAdvisor is scraped)."""

    node: str
    pods: tuple[tuple[str, str], ...]  # (namespace, pod)
    at: datetime.datetime
    window: datetime.timedelta = CULPRIT_WINDOW


@dataclasses.dataclass(frozen=True)
class NodeUsage:
    """The answer: the working set per (namespace, pod, container) that had data, and how it went;
    with data, `message` says what the numbers are (the basis of the culprit's evidence). Both
    `node_usage` (the peak near a kill) and `current_usage` (now) answer with it."""

    outcome: Outcome
    message: str
    usage: Mapping[tuple[str, str, str], int] = dataclasses.field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.outcome == Outcome.USED


@dataclasses.dataclass(frozen=True)
class SinceQuery:
    """What settle looks up: the working set of a workload's containers, all its pods, since `since`
    (oomtuner's last raise) up to `now`."""

    namespace: str
    workload_kind: str
    workload_name: str
    containers: tuple[str, ...]
    since: datetime.datetime
    now: datetime.datetime


@dataclasses.dataclass(frozen=True)
class SinceRaise:
    """The answer: usage since the raise per container that had data, and how it went."""

    outcome: Outcome
    message: str
    usage: Mapping[str, settle.UsageSinceRaise] = dataclasses.field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.outcome == Outcome.USED


class Source(Protocol):
    def history(self, query: Query) -> History: ...

    def since_raise(self, query: SinceQuery) -> SinceRaise: ...

    def node_usage(self, query: NodeQuery) -> NodeUsage: ...

    def current_usage(self, pods: Sequence[tuple[str, str]], *, at: datetime.datetime) -> NodeUsage: ...


class Disabled:
    """No Prometheus configured: every answer says so."""

    def history(self, query: Query) -> History:
        return NOT_CONFIGURED

    def since_raise(self, query: SinceQuery) -> SinceRaise:
        return SinceRaise(outcome=Outcome.NOT_CONFIGURED, message=f"{NOT_CONFIGURED_MESSAGE}; settle needs usage history")

    def node_usage(self, query: NodeQuery) -> NodeUsage:
        return NodeUsage(outcome=Outcome.NOT_CONFIGURED, message=NOT_CONFIGURED_MESSAGE)

    def current_usage(self, pods: Sequence[tuple[str, str]], *, at: datetime.datetime) -> NodeUsage:
        return NodeUsage(outcome=Outcome.NOT_CONFIGURED, message=NOT_CONFIGURED_MESSAGE)


# ---- pure helpers ------------------------------------------------------------------------------


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


def _seconds(td: datetime.timedelta) -> str:
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
    lookback = _seconds(query.lookback)
    parts = {
        "peak": f"max by (container) (max_over_time({ws}[{lookback}]))",
        "p95": f"max by (container) (quantile_over_time(0.95, (max by (container, pod) ({ws}))[{lookback}:{_seconds(step)}]))",
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
    window = _seconds(max(step, MIN_POINT_WINDOW))
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


def parse_summary(result: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, float]]:
    """Per container, the statistics of the instant query. Raises ValueError on a malformed answer."""
    found: dict[str, dict[str, float]] = {}
    for row in result:
        labels = row["metric"]
        value = _number(row["value"][1])
        if value is None:
            continue
        found.setdefault(str(labels.get("container", "")), {})[str(labels.get(STAT_LABEL, ""))] = value
    return found


def parse_series(result: Sequence[Mapping[str, Any]]) -> dict[str, list[domain_usage.Series]]:
    """Per container, the range query's series (one per pod and instance id)."""
    found: dict[str, list[domain_usage.Series]] = {}
    for row in result:
        labels = row["metric"]
        points = tuple(
            (float(t), v) for t, raw in row["values"] if (v := _number(raw)) is not None
        )
        key = f"{labels.get('pod', '')}/{labels.get('id', '')}"
        found.setdefault(str(labels.get("container", "")), []).append(domain_usage.Series(key=key, points=points))
    return found


def node_query(query: NodeQuery) -> str:
    """The instant query for the culprit of a node OOM: each container's peak working set over the
    window, per namespace, pod and container (one row each, whatever the scrape labels)."""
    window = _seconds(query.window)
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


def parse_node_usage(result: Sequence[Mapping[str, Any]], *, pods: Iterable[tuple[str, str]]) -> dict[tuple[str, str, str], int]:
    """Working set per (namespace, pod, container) of the asked pods, the highest where several series
    match one container. Raises on a malformed answer."""
    wanted = set(pods)
    found: dict[tuple[str, str, str], int] = {}
    for row in result:
        labels = row["metric"]
        value = _number(row["value"][1])
        key = (str(labels.get("namespace", "")), str(labels.get("pod", "")), str(labels.get("container", "")))
        if value is None or not key[2] or key[:2] not in wanted:
            continue
        found[key] = max(found.get(key, 0), math.ceil(value))
    return found


def assemble(
    query: Query,
    *,
    stats: Mapping[str, Mapping[str, float]],
    series: Mapping[str, Sequence[domain_usage.Series]],
    max_gap: datetime.timedelta,
    source: str,
) -> History:
    """Usage per container from the parsed answers, with the evidence for the condition's message."""
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
        text = f"{container}: peak {quantity.humanize(math.ceil(peak))}"
        if p95 is not None:
            text += f", p95 {quantity.humanize(math.ceil(p95))}"
        text += f"; trend: {trend_note}"
        if "restarts" in mine or "oomkilled_pods" in mine:
            text += (
                f"; kube-state-metrics: {round(mine.get('restarts', 0))} restart(s), "
                f"{round(mine.get('oomkilled_pods', 0))} pod(s) last terminated OOMKilled"
            )
        notes.append(text)
    if not usage:
        return History(
            outcome=Outcome.NO_DATA,
            lookback=query.lookback,
            message=(
                f"{source} has no {WORKING_SET} for {', '.join(missing)} of pods "
                f"{pod_pattern(query.workload_kind, query.workload_name)} in {query.namespace} over {lookback}; "
                "computed from the kills alone"
            ),
        )
    if missing:
        notes.append(f"no {WORKING_SET} for {', '.join(missing)}")
    return History(
        outcome=Outcome.USED,
        lookback=query.lookback,
        usage=usage,
        message=f"usage over {lookback} from {source}: " + "; ".join(notes),
    )


# ---- the circuit breaker ---------------------------------------------------------------------


class Breaker:
    """After a failure, let nothing through for `backoff`; then one probe at a time.

    Thread-safe. `clock` is monotonic seconds (injectable for tests).
    """

    def __init__(self, *, backoff: datetime.timedelta, clock: Callable[[], float] = time.monotonic):
        self.backoff = backoff.total_seconds()
        self.clock = clock
        self._lock = threading.Lock()
        self._open_until: float | None = None
        self._failed_at: float | None = None
        self._error = ""

    def allow(self) -> str | None:
        """None when a query may go out; else why not (the last error and when it is retried)."""
        with self._lock:
            now = self.clock()
            if self._open_until is None:
                return None
            if now >= self._open_until:
                self._open_until = now + self.backoff  # this caller probes; the others wait
                return None
            ago = now - (self._failed_at or now)
            wait = self._open_until - now
            return f"not queried: the last query failed {ago:.0f}s ago ({self._error}); next try in {wait:.0f}s"

    def failure(self, error: str) -> None:
        with self._lock:
            now = self.clock()
            self._failed_at = now
            self._open_until = now + self.backoff
            self._error = error

    def success(self) -> None:
        with self._lock:
            self._open_until = None
            self._failed_at = None
            self._error = ""


# ---- the Prometheus client -----------------------------------------------------------------------


class QueryFailed(Exception):
    """A query that did not give a usable answer; the message is short enough for a condition."""


class _BearerTokenFile(requests.auth.AuthBase):
    """Reads the token on every request, so a rotated (projected) token is picked up."""

    def __init__(self, path: str):
        self.path = path

    def __call__(self, r: requests.PreparedRequest) -> requests.PreparedRequest:
        with open(self.path, encoding="utf-8") as f:
            r.headers["Authorization"] = f"Bearer {f.read().strip()}"
        return r


class PrometheusUsage:
    """Usage history through prometheus-api-client, with timeouts and a circuit breaker."""

    def __init__(
        self,
        *,
        url: str,
        timeout: datetime.timedelta,
        backoff: datetime.timedelta,
        max_points: int = 2000,
        min_step: datetime.timedelta = datetime.timedelta(seconds=30),
        bearer_token_file: str | None = None,
        ca_file: str | None = None,
        breaker: Breaker | None = None,
    ):
        self.url = url.rstrip("/")
        self.timeout = timeout.total_seconds()
        self.max_points = max_points
        self.min_step = min_step
        self.breaker = breaker or Breaker(backoff=backoff)
        session = requests.Session()
        session.verify = ca_file if ca_file else True
        self._client = prometheus_connect.PrometheusConnect(
            url=self.url,
            session=session,
            # The breaker decides when to try again; a retry would multiply the timeout.
            retry=urllib3_retry.Retry(total=0, redirect=False),
            auth=_BearerTokenFile(bearer_token_file) if bearer_token_file else None,
            timeout=self.timeout,  # type: ignore[arg-type]
        )

    def history(self, query: Query) -> History:
        if not query.containers:
            return History(outcome=Outcome.NO_DATA, message="no containers to look up", lookback=query.lookback)
        try:
            step = step_for(query.lookback, max_points=self.max_points, min_step=self.min_step)
            stats = self._query(summary_query(query, step=step), at=query.now, parse=parse_summary)
            series: dict[str, list[domain_usage.Series]] = {}
            where = slope_range(query)
            max_gap = datetime.timedelta(minutes=10)
            if where is not None and any("peak" in s for s in stats.values()):
                start, pods = where
                span = query.now - start
                range_step = step_for(span, max_points=self.max_points, min_step=self.min_step)
                max_gap = max(max_gap, 10 * range_step)
                rows = self._query_range(slope_query(query, pods, step=range_step), start=start, end=query.now,
                                         step=range_step, parse=_bounded)
                series = parse_series(rows)
        except QueryFailed as exc:
            return History(
                outcome=Outcome.UNAVAILABLE,
                lookback=query.lookback,
                message=f"Prometheus at {self.url}: {exc}; computed from the kills alone",
            )
        return assemble(query, stats=stats, series=series, max_gap=max_gap, source="Prometheus")

    def since_raise(self, query: SinceQuery) -> SinceRaise:
        """Usage since the raise (module docstring): one bounded range query. A failure or an empty
        answer says why; it never raises."""
        since = duration.format(datetime.timedelta(seconds=int((query.now - query.since).total_seconds())))
        where = since_range(query, max_points=self.max_points, min_step=self.min_step)
        if not query.containers or where is None:
            return SinceRaise(outcome=Outcome.NO_DATA, message=f"nothing to look up over the {since} since the raise")
        start, step = where
        try:
            rows = self._query_range(since_query(query, step=step), start=start, end=query.now, step=step, parse=_bounded)
        except QueryFailed as exc:
            return SinceRaise(outcome=Outcome.UNAVAILABLE, message=f"Prometheus at {self.url}: {exc}")
        series = parse_series(rows)
        max_gap = max(datetime.timedelta(minutes=10), 10 * step)
        found: dict[str, settle.UsageSinceRaise] = {}
        for container in query.containers:
            seen = settle.usage_since(
                series.get(container, ()), start=float(round(start.timestamp())), end=float(round(query.now.timestamp())),
                step=step.total_seconds(), max_gap=max_gap, source=f"Prometheus, step {_seconds(step)}",
            )
            if seen.peak is not None:
                found[container] = seen
        if not found:
            return SinceRaise(
                outcome=Outcome.NO_DATA,
                message=f"Prometheus at {self.url} has no {WORKING_SET} for {', '.join(query.containers)} of pods "
                        f"{pod_pattern(query.workload_kind, query.workload_name)} in {query.namespace} over the {since} "
                        "since the raise",
            )
        notes = [f"{c}: peak {quantity.humanize(u.peak or 0)}, {math.floor(u.coverage * 100)}% covered"
                 f"{', growing' if u.growing else ''}" for c, u in found.items()]
        return SinceRaise(outcome=Outcome.USED, usage=found,
                          message=f"usage over the {since} since the raise from Prometheus: " + "; ".join(notes))

    def node_usage(self, query: NodeQuery) -> NodeUsage:
        if not query.pods:
            return NodeUsage(outcome=Outcome.NO_DATA, message=f"no pods on node {query.node}")
        try:
            found = self._query(node_query(query), at=query.at,
                                parse=lambda rows: parse_node_usage(rows, pods=query.pods))
        except QueryFailed as exc:
            return NodeUsage(outcome=Outcome.UNAVAILABLE, message=f"Prometheus at {self.url}: {exc}")
        window = duration.format(query.window)
        if not found:
            return NodeUsage(
                outcome=Outcome.NO_DATA,
                message=f"Prometheus has no {WORKING_SET} for the {len(query.pods)} pod(s) on node {query.node} "
                        f"in the {window} up to the kill",
            )
        return NodeUsage(outcome=Outcome.USED, usage=found,
                         message=f"peak working set over the {window} up to the kill, from Prometheus")

    def current_usage(self, pods: Sequence[tuple[str, str]], *, at: datetime.datetime) -> NodeUsage:
        """The working set at `at` of every container of `pods` ((namespace, pod)), in as few
        bounded queries as `current_queries` packs them. All or nothing: after a failed query the
        answer is UNAVAILABLE and holds none of what earlier queries gave."""
        wanted = frozenset(pods)
        if not wanted:
            return NodeUsage(outcome=Outcome.NO_DATA, message="no pods to look up")
        found: dict[tuple[str, str, str], int] = {}
        try:
            for promql in current_queries(wanted):
                found.update(self._query(promql, at=at, parse=lambda rows: parse_node_usage(rows, pods=wanted)))
        except QueryFailed as exc:
            return NodeUsage(outcome=Outcome.UNAVAILABLE, message=f"Prometheus at {self.url}: {exc}")
        if not found:
            return NodeUsage(outcome=Outcome.NO_DATA,
                             message=f"Prometheus at {self.url} has no {WORKING_SET} for the {len(wanted)} pod(s)")
        return NodeUsage(outcome=Outcome.USED, usage=found, message=f"working set now, from Prometheus at {self.url}")

    def _guarded(self, call: Callable[[], Any], parse: Callable[[list[Mapping[str, Any]]], _T]) -> _T:
        """Run one query through the breaker; any failure (sending, HTTP, reading the answer) is
        counted, opens the breaker and becomes QueryFailed."""
        why_not = self.breaker.allow()
        if why_not is not None:
            raise QueryFailed(why_not)
        try:
            result = call()
            if not isinstance(result, list) or not all(isinstance(r, Mapping) for r in result):
                raise ValueError(f"unexpected answer {str(result)[:100]!r}")
            parsed = parse(result)
        except Exception as exc:  # noqa: BLE001 - whatever went wrong, degrade
            error = _short(exc)
            metrics.PROMETHEUS_QUERY_FAILURES.inc()
            self.breaker.failure(error)
            logger.warning("Prometheus query failed (%s); recommendations use the kills alone for %.0fs", error, self.breaker.backoff)
            raise QueryFailed(f"query failed: {error}") from None
        self.breaker.success()
        return parsed

    def _params(self) -> dict[str, str]:
        return {"timeout": f"{self.timeout:g}s"}

    def _query(self, promql: str, *, at: datetime.datetime, parse: Callable[[list[Mapping[str, Any]]], _T]) -> _T:
        params = {**self._params(), "time": f"{at.timestamp():.3f}"}
        return self._guarded(lambda: self._client.custom_query(promql, params=params), parse)

    def _query_range(
        self, promql: str, *, start: datetime.datetime, end: datetime.datetime, step: datetime.timedelta,
        parse: Callable[[list[Mapping[str, Any]]], _T],
    ) -> _T:
        return self._guarded(
            lambda: self._client.custom_query_range(
                promql, start_time=start, end_time=end, step=_seconds(step), params=self._params()
            ),
            parse,
        )


def _bounded(rows: list[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The range query's rows, or none beyond MAX_SERIES (then no slope: a bound on what is read)."""
    if len(rows) > MAX_SERIES:
        logger.warning("%d series for one workload's slope: more than %d, no slope", len(rows), MAX_SERIES)
        return []
    return rows


def _short(exc: BaseException) -> str:
    text = str(exc)
    # requests' messages repeat the pool and the URL; the root cause is at the end.
    for marker in ("Read timed out", "Connection refused", "timed out", "Name or service not known"):
        if marker in text:
            return f"{type(exc).__name__}: {marker}"
    text = " ".join(text.split())
    return f"{type(exc).__name__}: {text[:240]}"


def from_settings(settings: config.Settings) -> Source:
    """The configured source: Prometheus when a URL is set, else `Disabled`."""
    if not settings.prometheus_url:
        return Disabled()
    return PrometheusUsage(
        url=settings.prometheus_url,
        timeout=duration.parse(settings.prometheus_timeout),
        backoff=duration.parse(settings.prometheus_backoff),
        max_points=settings.prometheus_max_points,
        min_step=duration.parse(settings.prometheus_min_step),
        bearer_token_file=settings.prometheus_bearer_token_file,
        ca_file=settings.prometheus_ca_file,
    )


def containers_with_kills(kills_: Iterable[kills.OOMKill]) -> tuple[str, ...]:
    return tuple(sorted({k.container for k in kills_}))
