"""The dashboard's pure parts: rows, kill counts, filter and sort, the limit steps and kill markers,
the working-set query, and the shared listings' refresh rule. Nothing is faked but the clock and,
for `Listing`, the function that lists."""

from __future__ import annotations

import datetime
import threading
from typing import Any

import pytest

from oomtuner.api import recommendation
from oomtuner.dashboard import cache, history, views, workload
from oomtuner.prom import promql
from oomtuner.prom import usage as prom_usage

NOW = datetime.datetime(2026, 12, 1, 12, 0, tzinfo=datetime.timezone.utc)
MI = 1024 * 1024


def ago(**delta: float) -> str:
    return (NOW - datetime.timedelta(**delta)).strftime("%Y-%m-%dT%H:%M:%SZ")


def kill(at: str, *, container: str = "app", limit: str = "256Mi", request: str = "128Mi", cls: str = "Limit",
         stale: bool = False, child: bool = False, pod: str = "web-1") -> dict[str, Any]:
    ident = f"uid-{pod}/{container}/child/abc/1" if child else f"uid-{pod}/{container}/{at}"
    return {"id": ident, "pod": pod, "container": container, "at": at, "limitAtKill": limit, "requestAtKill": request,
            "classification": cls, "stale": stale, "reason": f"killed at {limit}"}


def rec(kills: list[dict[str, Any]], *, namespace: str = "shop", name: str = "web", applied: list[dict[str, Any]] | None = None,
        containers: list[dict[str, Any]] | None = None, phase: str = "Pending", mode: str = "Recommend") -> recommendation.OOMRecommendation:
    return recommendation.parse({
        "metadata": {"name": f"deployment-{name}", "namespace": namespace},
        "spec": {"targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name}},
        "status": {"phase": phase, "mode": mode, "target": f"Deployment/{name}", "totalKills": len(kills), "kills": kills,
                   "applied": applied or [], "dataSource": "kills",
                   "containers": containers if containers is not None else [{
                       "name": "app", "current": {"request": "128Mi", "limit": "256Mi"},
                       "recommended": {"request": "192Mi", "limit": "384Mi"}, "classification": "Limit", "phase": phase,
                       "oomKills": len(kills), "reason": "OOM-killed at 256Mi"}]},
    })


# ---- rows and counts -----------------------------------------------------------------------------


def test_kills_are_counted_per_container_in_the_last_day_and_week() -> None:
    r = rec([kill(ago(hours=1)), kill(ago(hours=30)), kill(ago(days=9)), kill(ago(hours=2), container="sidecar")])
    (row,) = views.rows_of(r, now=NOW)
    assert (str(row.kills_day), str(row.kills_week), row.kills_total) == ("1", "2", 4)
    assert (row.current_limit, row.recommended_limit, row.recommended_request) == (256 * MI, 384 * MI, 192 * MI)
    assert (row.target, row.mode, row.phase, row.data_source) == ("Deployment/web", "Recommend", "Pending", "kills")


def test_a_full_ledger_whose_oldest_kill_is_in_the_window_gives_a_lower_bound() -> None:
    full = [kill(ago(minutes=i)) for i in range(recommendation.MAX_KILLS)]
    (row,) = views.rows_of(rec(full), now=NOW)
    assert str(row.kills_day) == "20+" and row.kills_day.more
    partly = [kill(ago(days=3))] + full[1:]
    (row,) = views.rows_of(rec(partly), now=NOW)
    assert str(row.kills_day) == "19" and str(row.kills_week) == "20+"
    # Another container's old kill says nothing was dropped from this one's day.
    other = [kill(ago(days=3), container="sidecar")] + full[1:]
    app = next(r for r in views.rows_of(rec(other, containers=[{"name": "app"}, {"name": "sidecar"}]), now=NOW) if r.container == "app")
    assert str(app.kills_day) == "19"


def test_a_recommendation_without_containers_still_has_a_row() -> None:
    (row,) = views.rows_of(rec([], containers=[], phase="Observed"), now=NOW)
    assert row.container == "" and row.phase == "Observed" and row.current_limit is None


ROWS = [row for r in (
    rec([kill(ago(hours=1)), kill(ago(hours=2))], name="cart"),
    rec([kill(ago(days=2))], name="api", namespace="billing", mode="Auto", phase="Applied"),
    rec([kill(ago(hours=3), cls="Node")], name="batch", containers=[{
        "name": "app", "current": {"request": "64Mi"}, "classification": "Node", "phase": "Pending", "oomKills": 1}]),
) for row in views.rows_of(r, now=NOW)]


@pytest.mark.parametrize(("query", "expected"), [
    ({}, ["Deployment/cart", "Deployment/batch", "Deployment/api"]),
    ({"sort": "workload"}, ["Deployment/api", "Deployment/batch", "Deployment/cart"]),
    ({"sort": "workload", "order": "desc"}, ["Deployment/cart", "Deployment/batch", "Deployment/api"]),
    ({"sort": "limit"}, ["Deployment/api", "Deployment/cart", "Deployment/batch"]),  # a tie goes by namespace
    ({"namespace": "billing"}, ["Deployment/api"]),
    ({"q": "BAT"}, ["Deployment/batch"]),
    ({"mode": "Auto"}, ["Deployment/api"]),
    ({"phase": "Applied"}, ["Deployment/api"]),
    ({"class": "Node"}, ["Deployment/batch"]),
    ({"sort": "bogus", "order": "sideways"}, ["Deployment/cart", "Deployment/batch", "Deployment/api"]),
])
def test_filter_and_sort(query: dict[str, str], expected: list[str]) -> None:
    assert [r.target for r in views.Filter.from_query(query).apply(ROWS)] == expected


def test_sort_links_keep_the_filter_and_turn_the_order() -> None:
    chosen = views.Filter.from_query({"namespace": "shop", "q": "web", "sort": "day"})
    assert chosen.descending and chosen.order_for("day") == "asc" and chosen.order_for("workload") == "asc"
    assert chosen.order_for("week") == "desc"
    assert chosen.query(sort="week", order="desc") == {"namespace": "shop", "q": "web", "sort": "week", "order": "desc"}


def test_namespaces_sum_their_rows() -> None:
    summaries = {s.name: s for s in views.namespaces_of(ROWS)}
    shop = summaries["shop"]
    assert (shop.workloads, shop.containers, shop.kills_day, shop.kills_week, shop.phases) == (2, 2, 3, 3, {"Pending": 2})
    assert [s.name for s in views.namespaces_of(ROWS)] == ["shop", "billing"]


# ---- the workload page -------------------------------------------------------------------------


def test_limit_steps_follow_the_kills_and_the_patch_and_skip_stale_kills() -> None:
    r = rec([kill(ago(hours=5), limit="256Mi"), kill(ago(hours=2), limit="384Mi"), kill(ago(hours=1), limit="256Mi", stale=True)],
            applied=[{"name": "app", "original": {"request": "128Mi", "limit": "256Mi"},
                      "applied": {"request": "288Mi", "limit": "576Mi"}, "at": ago(minutes=90)}],
            containers=[{"name": "app", "current": {"request": "288Mi", "limit": "576Mi"}, "oomKills": 3}])
    start = NOW - datetime.timedelta(hours=6)
    (chart,) = workload.chart(r, start=start, now=NOW)
    t = lambda **d: (NOW - datetime.timedelta(**d)).timestamp()  # noqa: E731
    assert chart["limit"] == [[start.timestamp(), 256 * MI], [t(hours=2), 256 * MI], [t(hours=2), 384 * MI],
                              [t(minutes=90), 384 * MI], [t(minutes=90), 576 * MI], [NOW.timestamp(), 576 * MI]]
    assert chart["request"][0] == [start.timestamp(), 128 * MI] and chart["request"][-1] == [NOW.timestamp(), 288 * MI]
    assert [(m["kind"], m["stale"], m["limit"]) for m in chart["kills"]] == [
        ("limit", False, 256 * MI), ("limit", False, 384 * MI), ("limit", True, 256 * MI)]


def test_markers_tell_node_and_child_kills_apart_and_stay_in_the_range() -> None:
    r = rec([kill(ago(days=3)), kill(ago(hours=3), cls="Node"), kill(ago(hours=2), child=True), kill(ago(hours=1), cls="Unknown")])
    (chart,) = workload.chart(r, start=NOW - datetime.timedelta(days=1), now=NOW)
    assert [m["kind"] for m in chart["kills"]] == ["node", "child", "unknown"]


def test_steps_without_anything_known_are_empty_and_points_outside_are_clamped() -> None:
    start, end = NOW - datetime.timedelta(hours=1), NOW
    assert workload.steps([], initial=None, start=start, end=end) == []
    line = workload.steps([(NOW - datetime.timedelta(days=2), 2), (NOW, 3)], initial=1, start=start, end=end)
    assert line == [(start, 1), (start, 1), (start, 2), (end, 2), (end, 3), (end, 3)]


def test_the_default_range_holds_the_oldest_kill() -> None:
    assert workload.default_range(rec([kill(ago(minutes=2))]), now=NOW) == "15m"
    assert workload.default_range(rec([kill(ago(minutes=20))]), now=NOW) == "1h"
    assert workload.default_range(rec([kill(ago(hours=20))]), now=NOW) == "1d"
    assert workload.default_range(rec([kill(ago(days=3))]), now=NOW) == "7d"
    assert workload.default_range(rec([kill(ago(days=90))]), now=NOW) == "30d"


def test_the_ledger_is_newest_first_with_culprits_in_words() -> None:
    node_kill = {**kill(ago(hours=1), cls="Node"), "culprit": {"namespace": "shop", "pod": "hog-1", "container": "main",
                                                               "usage": "3Gi", "request": "1Gi", "reason": "3Gi above its 1Gi request"}}
    rows = workload.ledger(rec([kill(ago(hours=2)), node_kill]))
    assert [r.kind for r in rows] == ["node", "limit"]
    assert rows[0].culprit == "shop/hog-1 main: uses 3Gi (requests 1Gi). 3Gi above its 1Gi request"
    assert workload.culprit_text(recommendation.Culprit(reason="no usage data")) == "no usage data"


# ---- the working set ---------------------------------------------------------------------------


def test_the_working_set_query_reads_the_workloads_pods_by_name() -> None:
    text = history.query(namespace="shop", kind="Deployment", name="web", containers=["app", "side-car"],
                           step=datetime.timedelta(seconds=30))
    assert text.startswith("max by (container) (max_over_time(container_memory_working_set_bytes{")
    assert 'namespace="shop"' in text and "[60s]" in text  # the window is at least a minute
    assert f'pod=~"{promql.pod_pattern("Deployment", "web")}"'.replace("\\", "\\\\") in text
    assert 'container=~"app|side\\\\-car"' in text


def test_the_answer_keeps_finite_values_per_container() -> None:
    rows = [{"metric": {"container": "app"}, "values": [[1.0, "10"], [2.0, "NaN"], [3.0, "30"]]}]
    assert history.parse(rows) == {"app": [[1.0, 10.0], [3.0, 30.0]]}


def test_without_prometheus_one_line_says_why() -> None:
    found = history.working_set(prom_usage.Disabled(), namespace="shop", kind="Deployment", name="web", containers=["app"],
                                start=NOW, end=NOW, min_step=datetime.timedelta(seconds=30))
    assert not found.ok and not found.series
    assert found.message.startswith("No working set: no Prometheus is configured") and "kills and the memory limits" in found.message


# ---- the shared listings -------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_a_listing_lists_once_per_ttl_and_refreshes_in_the_background() -> None:
    clock, calls, release = Clock(), [], threading.Event()

    def fetch() -> int:
        calls.append(clock.t)
        if len(calls) > 1:
            release.wait(5)
        return len(calls)

    listing = cache.Listing("things", fetch, empty=0, ttl=10, clock=clock)
    assert listing.get().items == 1 and calls == [0.0]
    clock.t = 5
    assert listing.get().items == 1 and len(calls) == 1  # fresh: no list
    clock.t = 11
    assert listing.get().items == 1  # stale: the old snapshot at once, a refresh behind it
    assert listing.get().items == 1 and len(calls) == 2  # one refresh at a time
    release.set()
    for _ in range(100):
        if listing.get().items == 2:
            break
        threading.Event().wait(0.02)
    assert listing.get().items == 2


def test_a_failed_refresh_keeps_the_snapshot_and_says_why() -> None:
    clock, answers = Clock(), iter([["a"], RuntimeError("connection refused")])

    def fetch() -> list[str]:
        answer = next(answers)
        if isinstance(answer, Exception):
            raise answer
        return answer

    listing = cache.Listing("pods", fetch, empty=[], ttl=1, clock=clock)
    first = listing.get()
    assert first.items == ["a"] and first.error is None and first.taken is not None
    clock.t = 2
    listing.get()
    for _ in range(100):
        if listing.get().error:
            break
        threading.Event().wait(0.02)
    snapshot = listing.get()
    assert snapshot.items == ["a"] and snapshot.error == "pods: connection refused" and snapshot.taken == first.taken
