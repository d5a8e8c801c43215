"""The dashboard's copy of the cluster: lists shared by every request, refreshed in the background.

A page never calls the API server. Each kind of object is a `Listing`: one paged list of the whole
collection (as `kubectl get -A` does), parsed at the edge, kept as a snapshot. A read of a snapshot
older than its TTL returns it at once and starts one refresh in a background thread; only the very
first read of a listing waits for the list. So a page of a thousand workloads costs no API call, a
thousand readers cost one list per TTL, and a listing nobody reads (the pods, while nobody looks at
the nodes page) is not refreshed at all.

A refresh that fails keeps the last snapshot and says why (`Snapshot.error`), so a page shows what
was known and when, instead of an error. Why not a watch: a list per TTL needs no resourceVersion
bookkeeping, no relist on a 410 and no long-lived connection per kind, and the dashboard's data
only has to be as fresh as a person reading it needs (seconds).
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
import threading
import time
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from oomtuner import report
from oomtuner.api import core, recommendation
from oomtuner.dashboard import views
from oomtuner.domain import classify
from oomtuner.kube import api

logger = logging.getLogger(__name__)
T = TypeVar("T")


@dataclasses.dataclass(frozen=True)
class Snapshot(Generic[T]):
    """What a listing held after its last successful list (`taken`), and why the latest refresh
    failed, if it did."""

    items: T
    taken: datetime.datetime | None
    error: str | None = None


class Listing(Generic[T]):
    """One collection, listed at most once per `ttl` seconds, whoever asks.

    `fetch` lists and parses (it runs in the caller's thread the first time, then in a background
    thread); `empty` is what a listing that never succeeded holds. Thread-safe.
    """

    def __init__(self, name: str, fetch: Callable[[], T], *, empty: T, ttl: float,
                 clock: Callable[[], float] = time.monotonic):
        self.name = name
        self.ttl = ttl
        self._fetch = fetch
        self._clock = clock
        self._lock = threading.Lock()
        self._refreshing = threading.Lock()
        self._snapshot: Snapshot[T] = Snapshot(items=empty, taken=None)
        self._fresh_until: float | None = None

    def get(self) -> Snapshot[T]:
        """The snapshot; stale ones are refreshed in the background, a missing one now."""
        with self._lock:
            snapshot, fresh_until = self._snapshot, self._fresh_until
        if fresh_until is None:
            with self._refreshing:  # the first readers wait for one list together
                if self._fresh_until is None:
                    self._refresh()
            with self._lock:
                return self._snapshot
        if self._clock() >= fresh_until and self._refreshing.acquire(blocking=False):
            threading.Thread(target=self._refresh_and_release, name=f"dashboard-{self.name}", daemon=True).start()
        return snapshot

    def _refresh_and_release(self) -> None:
        try:
            self._refresh()
        finally:
            self._refreshing.release()

    def _refresh(self) -> None:
        started = self._clock()
        try:
            items = self._fetch()
        except Exception as exc:  # noqa: BLE001 - any failure: keep what was known, say why
            error = f"{self.name}: {exc}"[:300]
            logger.warning("dashboard: listing %s failed: %s", self.name, exc)
            with self._lock:
                self._snapshot = dataclasses.replace(self._snapshot, error=error)
                self._fresh_until = started + min(self.ttl, 5.0)
            return
        with self._lock:
            self._snapshot = Snapshot(items=items, taken=datetime.datetime.now(datetime.timezone.utc))
            self._fresh_until = started + self.ttl


@dataclasses.dataclass(frozen=True)
class Recommendations:
    """Every readable OOMRecommendation, how many could not be read, and the workloads table's rows
    (computed once per list, in the refresh: their day and week windows end when it was listed)."""

    items: tuple[recommendation.OOMRecommendation, ...] = ()
    unreadable: int = 0
    rows: tuple[views.Row, ...] = ()

    def find(self, namespace: str, name: str) -> recommendation.OOMRecommendation | None:
        return next((r for r in self.items if r.metadata.namespace == namespace and r.metadata.name == name), None)


RowHtml = Callable[[views.Row, datetime.datetime], str]


def parse_recommendations(bodies: list[dict[str, Any]], *, now: datetime.datetime, row_html: RowHtml) -> Recommendations:
    """The recommendations, and the table's rows with their HTML (`row_html`): a page of a thousand
    rows then costs a join, not a thousand renderings."""
    items, unreadable = [], 0
    for body in bodies:
        try:
            items.append(recommendation.parse(body))
        except ValueError:  # pydantic's ValidationError: a body the schema let through but is not ours
            unreadable += 1
    rows = tuple(dataclasses.replace(row, html=row_html(row, now)) for rec in items for row in views.rows_of(rec, now=now))
    return Recommendations(items=tuple(items), unreadable=unreadable, rows=rows)


def _utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def parse_pods(bodies: list[dict[str, Any]]) -> tuple[core.Pod, ...]:
    pods = []
    for body in bodies:
        try:
            pods.append(core.parse_pod(body))
        except core.InvalidObject:
            continue
    return tuple(pods)


class Cluster:
    """The listings the pages read, all through one client."""

    def __init__(self, client: api.Client, *, ttl: float, row_html: RowHtml, now: Callable[[], datetime.datetime] = _utcnow):
        path = api.cluster(group=recommendation.GROUP, version=recommendation.VERSION, plural=recommendation.PLURAL)
        self.recommendations: Listing[Recommendations] = Listing(
            "OOMRecommendations", lambda: parse_recommendations(client.list(path), now=now(), row_html=row_html),
            empty=Recommendations(), ttl=ttl)
        self.nodes: Listing[dict[str, int | None]] = Listing(
            "nodes", lambda: report.node_capacities(client.list("/api/v1/nodes")), empty={}, ttl=ttl)
        self.pods: Listing[tuple[core.Pod, ...]] = Listing(
            "pods", lambda: parse_pods(client.list("/api/v1/pods")), empty=(), ttl=ttl)
        self.node_ooms: Listing[list[classify.NodeOOM]] = Listing(
            "node events",
            lambda: report.node_ooms_in(client.list("/api/v1/events", query={"fieldSelector": report.NODE_EVENTS})),
            empty=[], ttl=ttl)
