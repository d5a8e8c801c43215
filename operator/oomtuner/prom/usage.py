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
of the pods it lists, one term per namespace, packed into as few queries as fit `promql.MAX_QUERY_CHARS`.

For settle (`since_raise`), one *range* query of every pod of the workload since oomtuner's last
raise, per container instance, at a step that keeps every series under `max_points` points: the
peak, how much of the time has samples, and whether a life running now still grows
(`domain.settle.usage_since`).

Every request is bounded (`prom.bounded`): the timeout bounds the whole request, from the connect to
the last byte of the answer, however slowly it comes, and an answer larger than `max_response` bytes
is refused before it is parsed. Prometheus gets the same `timeout` as a parameter. A request is never
retried, and runs in the caller's worker thread (the reconcile layer runs in `asyncio.to_thread`), so
kopf's event loop never waits on it. A failed query (connection refused, timeout, an HTTP error, an
unreadable answer) increments `oomtuner_prometheus_query_failures_total` and opens a circuit breaker:
for `backoff` no query is sent at all, so a Prometheus that is down or hanging costs one timeout per
back-off period instead of one per kill. Then one probe goes through; success closes the breaker.
Failures never raise out of this module: the `History` says what happened, and the recommendation
is computed from the kills alone with a condition that says so.

Values that cannot be memory (not a number, infinite, negative, above the node's memory capacity,
or above `MAX_PLAUSIBLE_MEMORY` where the capacity is not known) are discarded, not used, and the
answer says how many and why (`History.discarded`, also in its message): a unit mistake in a
recording rule or an exporter's garbage must not become a limit.

The workload's pods are found by name (the controllers' naming rules, `pod_pattern`), not by the
pods that exist now: a rollout replaces them, and the history of the old ones is what counts.
"""

from __future__ import annotations

import datetime
import logging
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar

import requests
import requests.auth
from prometheus_api_client import prometheus_connect
from urllib3.util import retry as urllib3_retry

from oomtuner import config
from oomtuner.domain import duration, kills, quantity, redaction, settle
from oomtuner.domain import usage as domain_usage
from oomtuner.prom import bounded, metrics
from oomtuner.prom.breaker import Breaker as Breaker
from oomtuner.prom.promql import (
    WORKING_SET,
    Discarded,
    assemble,
    current_queries,
    node_query,
    parse_node_usage,
    parse_series,
    parse_summary,
    pod_pattern,
    seconds,
    since_query,
    since_range,
    slope_query,
    slope_range,
    step_for,
    summary_query,
)

# What a source is asked and answers lives in prom.queries; callers see it here, beside the sources.
from oomtuner.prom.queries import CULPRIT_WINDOW as CULPRIT_WINDOW
from oomtuner.prom.queries import NOT_CONFIGURED as NOT_CONFIGURED
from oomtuner.prom.queries import NOT_CONFIGURED_MESSAGE as NOT_CONFIGURED_MESSAGE
from oomtuner.prom.queries import Disabled as Disabled
from oomtuner.prom.queries import History as History
from oomtuner.prom.queries import NodeQuery as NodeQuery
from oomtuner.prom.queries import NodeUsage as NodeUsage
from oomtuner.prom.queries import Outcome as Outcome
from oomtuner.prom.queries import Query as Query
from oomtuner.prom.queries import SinceQuery as SinceQuery
from oomtuner.prom.queries import SinceRaise as SinceRaise
from oomtuner.prom.queries import Source as Source

logger = logging.getLogger(__name__)
_T = TypeVar("_T")

# The range query is ignored (no slope) beyond this many series: a bound on what one answer holds.
MAX_SERIES = 500
# The default bound of one answer (OOMTUNER_PROMETHEUS_MAX_RESPONSE): about 270 series of 2000 points.
DEFAULT_MAX_RESPONSE = 16 * 1024 * 1024


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
    """Usage history through prometheus-api-client, with bounded requests (`prom.bounded`: the
    timeout bounds each whole request, `max_response` the bytes of each answer) and a circuit
    breaker."""

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
        max_response: int = DEFAULT_MAX_RESPONSE,
    ):
        self.url = url.rstrip("/")
        self.timeout = timeout.total_seconds()
        self.max_points = max_points
        self.min_step = min_step
        self.max_response = max_response
        self.breaker = breaker or Breaker(backoff=backoff)
        session = bounded.Session(timeout=self.timeout, max_bytes=max_response)
        session.verify = ca_file if ca_file else True
        self._client = prometheus_connect.PrometheusConnect(
            url=self.url,
            session=session,
            # The breaker decides when to try again; a retry would multiply the timeout.
            retry=urllib3_retry.Retry(total=0, redirect=False),
            auth=_BearerTokenFile(bearer_token_file) if bearer_token_file else None,  # type: ignore[arg-type]
            timeout=self.timeout,  # type: ignore[arg-type]
        )
        # prometheus-api-client mounts a plain adapter on the URL: the bounded one goes back on top.
        session.mount_bounded(self.url)

    @property
    def shown_url(self) -> str:
        """The URL as messages, conditions, events and logs show it: without credentials."""
        return redaction.url(self.url)

    def history(self, query: Query) -> History:
        if not query.containers:
            return History(outcome=Outcome.NO_DATA, message="no containers to look up", lookback=query.lookback)
        discarded = Discarded(bound=query.memory_bound)
        try:
            step = step_for(query.lookback, max_points=self.max_points, min_step=self.min_step)
            stats = self._query(summary_query(query, step=step), at=query.now,
                                parse=lambda rows: parse_summary(rows, discarded=discarded))
            series: dict[str, list[domain_usage.Series]] = {}
            where = slope_range(query)
            max_gap = datetime.timedelta(minutes=10)
            if where is not None and any("peak" in s for s in stats.values()):
                start, pods = where
                span = query.now - start
                range_step = step_for(span, max_points=self.max_points, min_step=self.min_step)
                max_gap = max(max_gap, 10 * range_step)
                rows = self.query_range(slope_query(query, pods, step=range_step), start=start, end=query.now,
                                         step=range_step, parse=_bounded)
                series = parse_series(rows, discarded=discarded)
        except QueryFailed as exc:
            note = discarded.sentence()
            return History(
                outcome=Outcome.UNAVAILABLE,
                lookback=query.lookback,
                message=f"Prometheus at {self.shown_url}: {exc}; " + (f"{note}; " if note else "") + "computed from the kills alone",
                discarded=note,
            )
        return assemble(query, stats=stats, series=series, max_gap=max_gap, source="Prometheus",
                        discarded=discarded.sentence())

    def since_raise(self, query: SinceQuery) -> SinceRaise:
        """Usage since the raise (module docstring): one bounded range query. A failure or an empty
        answer says why; it never raises."""
        since = duration.format(datetime.timedelta(seconds=int((query.now - query.since).total_seconds())))
        where = since_range(query, max_points=self.max_points, min_step=self.min_step)
        if not query.containers or where is None:
            return SinceRaise(outcome=Outcome.NO_DATA, message=f"nothing to look up over the {since} since the raise")
        start, step = where
        try:
            rows = self.query_range(since_query(query, step=step), start=start, end=query.now, step=step, parse=_bounded)
        except QueryFailed as exc:
            return SinceRaise(outcome=Outcome.UNAVAILABLE, message=f"Prometheus at {self.shown_url}: {exc}")
        series = parse_series(rows)
        max_gap = max(datetime.timedelta(minutes=10), 10 * step)
        found: dict[str, settle.UsageSinceRaise] = {}
        for container in query.containers:
            seen = settle.usage_since(
                series.get(container, ()), start=float(round(start.timestamp())), end=float(round(query.now.timestamp())),
                step=step.total_seconds(), max_gap=max_gap, source=f"Prometheus, step {seconds(step)}",
            )
            if seen.peak is not None:
                found[container] = seen
        if not found:
            return SinceRaise(
                outcome=Outcome.NO_DATA,
                message=f"Prometheus at {self.shown_url} has no {WORKING_SET} for {', '.join(query.containers)} of pods "
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
        discarded = Discarded(bound=query.memory_bound, bound_name=f"node {query.node}'s memory capacity")
        try:
            found = self._query(node_query(query), at=query.at,
                                parse=lambda rows: parse_node_usage(rows, pods=query.pods, discarded=discarded))
        except QueryFailed as exc:
            return NodeUsage(outcome=Outcome.UNAVAILABLE, message=f"Prometheus at {self.shown_url}: {exc}")
        window = duration.format(query.window)
        note = discarded.sentence()
        if not found:
            return NodeUsage(
                outcome=Outcome.NO_DATA,
                message=f"Prometheus has no {WORKING_SET} for the {len(query.pods)} pod(s) on node {query.node} "
                        f"in the {window} up to the kill" + (f" ({note})" if note else ""),
                discarded=note,
            )
        return NodeUsage(outcome=Outcome.USED, usage=found, discarded=note,
                         message=f"peak working set over the {window} up to the kill, from Prometheus"
                                 + (f" ({note})" if note else ""))

    def current_usage(
        self, pods: Sequence[tuple[str, str]], *, at: datetime.datetime, memory_bound: int | None = None
    ) -> NodeUsage:
        """The working set at `at` of every container of `pods` ((namespace, pod)), in as few
        bounded queries as `current_queries` packs them; values above `memory_bound` (the largest
        node's memory capacity, where known) or otherwise not memory are left out. All or nothing:
        after a failed query the answer is UNAVAILABLE and holds none of what earlier queries gave."""
        wanted = frozenset(pods)
        if not wanted:
            return NodeUsage(outcome=Outcome.NO_DATA, message="no pods to look up")
        discarded = Discarded(bound=memory_bound)
        found: dict[tuple[str, str, str], int] = {}
        try:
            for promql in current_queries(wanted):
                found.update(self._query(promql, at=at,
                                         parse=lambda rows: parse_node_usage(rows, pods=wanted, discarded=discarded)))
        except QueryFailed as exc:
            return NodeUsage(outcome=Outcome.UNAVAILABLE, message=f"Prometheus at {self.shown_url}: {exc}")
        note = discarded.sentence()
        if not found:
            return NodeUsage(outcome=Outcome.NO_DATA, discarded=note,
                             message=f"Prometheus at {self.shown_url} has no {WORKING_SET} for the {len(wanted)} pod(s)"
                                     + (f" ({note})" if note else ""))
        return NodeUsage(outcome=Outcome.USED, usage=found, discarded=note,
                         message=f"working set now, from Prometheus at {self.shown_url}" + (f" ({note})" if note else ""))

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

    def query_range(
        self, promql: str, *, start: datetime.datetime, end: datetime.datetime, step: datetime.timedelta,
        parse: Callable[[list[Mapping[str, Any]]], _T],
    ) -> _T:
        """One range query through the breaker, its rows read by `parse`; raises QueryFailed."""
        return self._guarded(
            lambda: self._client.custom_query_range(
                promql, start_time=start, end_time=end, step=seconds(step), params=self._params()
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
    if isinstance(exc, (bounded.DeadlineExceeded, bounded.AnswerTooLarge)):
        return f"{type(exc).__name__}: {text}"  # already short, and the bound is the point
    # requests' messages repeat the pool and the URL; the root cause is at the end.
    for marker in ("Read timed out", "Connection refused", "timed out", "Name or service not known"):
        if marker in text:
            return f"{type(exc).__name__}: {marker}"
    text = redaction.text(" ".join(text.split()))
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
        max_response=quantity.parse_bytes(settings.prometheus_max_response),
    )


def containers_with_kills(kills_: Iterable[kills.OOMKill]) -> tuple[str, ...]:
    return tuple(sorted({k.container for k in kills_}))
