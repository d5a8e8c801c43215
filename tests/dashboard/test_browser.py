"""Every page of `oomtuner dashboard` in headless Chromium, against recommendations the real operator
wrote on the lab (see conftest.py for what is real and what is played).

Each page is checked against the custom resources it shows (rows, numbers, kill markers, the
ledger, the reasons), must load with no console error, no uncaught exception and no
Content-Security-Policy violation, and leaves one screenshot in the test's tmp folder (the path is
printed). Tenant strings with `<script>` in them (an annotation, a process name in a SystemOOM, a
search) must show as text.
"""

from __future__ import annotations

from typing import Any

import pytest

from oomtuner import report
from oomtuner.dashboard import views
from oomtuner.domain import quantity, timestamps
from oomtuner.kube import api
from tests.dashboard import scenario
from tests.dashboard.cdp import Browser
from tests.dashboard.conftest import DashboardProcess, Shots
from tests.e2e import kit

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300), pytest.mark.writes_pod_status]


def recs(kube: api.Client, made: scenario.Made) -> dict[str, dict[str, Any]]:
    return {name: kit.recommendation(kube, made.namespace, name) or {} for name in made.names}


def no_errors(browser: Browser) -> None:
    errors = browser.settle()
    browser.errors.clear()
    assert errors == [], f"the browser reported: {errors}"


def cells(browser: Browser, selector: str) -> list[dict[str, str]]:
    """Each row's cells by their data-col (or index), and the row's data attributes."""
    return browser.js(f"""Array.from(document.querySelectorAll({selector!r})).map(tr => {{
        const out = Object.assign({{}}, tr.dataset);
        tr.querySelectorAll('td').forEach((td, i) => out[td.dataset.col || ('c' + i)] = td.textContent.trim());
        return out; }})""")


def kills_since(rec: dict[str, Any], container: str, hours: float) -> int:
    now = timestamps.parse(kit.utc().strftime("%Y-%m-%dT%H:%M:%SZ"))
    assert now is not None
    return sum(1 for k in rec["status"]["kills"] if k["container"] == container
               and (now - (timestamps.parse(k["at"]) or now)).total_seconds() <= hours * 3600)


def test_namespaces_page(browser: Browser, dashboard: DashboardProcess, made: scenario.Made, kube: api.Client,
                         shots: Shots) -> None:
    browser.open(dashboard.url + "/")
    row = next(r for r in cells(browser, "#namespaces tbody tr") if r.get("namespace") == made.namespace)
    found = recs(kube, made)
    assert (row["c1"], row["c2"]) == ("3", "3")
    assert row["c3"] == str(sum(kills_since(r, "app", 24) for r in found.values()))
    assert row["c5"] == str(sum(r["status"]["totalKills"] for r in found.values()))
    shots.take(browser, "namespaces")
    no_errors(browser)


def test_workloads_page_matches_the_recommendations(browser: Browser, dashboard: DashboardProcess, made: scenario.Made,
                                                    kube: api.Client, shots: Shots) -> None:
    browser.open(f"{dashboard.url}/workloads?namespace={made.namespace}&sort=workload")
    rows = cells(browser, "#workloads tbody tr")
    assert [r["name"] for r in rows] == ["deployment-api", "deployment-batch", "deployment-cart"]
    for row in rows:
        rec = kit.recommendation(kube, made.namespace, row["name"])
        assert rec is not None
        container = next(c for c in rec["status"]["containers"] if c["name"] == row["container"])
        assert row["day"] == str(kills_since(rec, row["container"], 24))
        assert row["total"] == str(container["oomKills"])
        limit = views.parse_bytes(container["current"].get("limit"))
        assert row["limit"] == (quantity.humanize(limit) if limit else "—")
        assert row["recommended"] == quantity.humanize(views.parse_bytes(container["recommended"]["limit"]) or 0)
        assert row["mode"] == rec["status"]["mode"]
    shots.take(browser, "workloads")
    # Sorting by a header link, then filtering with the form, as a person would.
    browser.js("document.querySelector('th a[href*=\"sort=workload\"]').click()")
    browser.wait("location.search.includes('order=desc') && document.readyState === 'complete'")
    assert [r["name"] for r in cells(browser, "#workloads tbody tr")] == ["deployment-cart", "deployment-batch", "deployment-api"]
    browser.js("document.querySelector('input[name=q]').value = 'batch'; document.querySelector('form.filter').submit()")
    browser.wait("location.search.includes('q=batch') && document.readyState === 'complete'")
    assert [r["name"] for r in cells(browser, "#workloads tbody tr")] == ["deployment-batch"]
    no_errors(browser)


def chart_of(browser: Browser, container: str = "app") -> dict[str, Any]:
    browser.wait("document.body.getAttribute('data-charts')")
    assert browser.js("document.body.getAttribute('data-charts')") == "drawn"
    return browser.js(f"""(() => {{ const svg = document.querySelector('.chart[data-container="{container}"] svg');
        return {{ ...svg.dataset, markers: Array.from(svg.querySelectorAll('circle.kill')).map(c => ({{
            id: c.dataset.killId, kind: c.dataset.kind, limit: c.dataset.limit, stale: c.classList.contains('stale'),
            title: c.querySelector('title').textContent }})) }}; }})()""")


def test_workload_page_draws_the_kills_and_the_steps(browser: Browser, dashboard: DashboardProcess, made: scenario.Made,
                                                     kube: api.Client, shots: Shots) -> None:
    rec = kit.recommendation(kube, made.namespace, "deployment-cart")
    assert rec is not None
    browser.open(f"{dashboard.url}/namespaces/{made.namespace}/recommendations/deployment-cart?range=15m")
    chart = chart_of(browser)
    kills = rec["status"]["kills"]
    assert sorted(m["id"] for m in chart["markers"]) == sorted(k["id"] for k in kills)
    assert sorted(m["kind"] for m in chart["markers"]) == sorted(views.kill_kind(recommendation_kill(k)) for k in kills)
    assert {m["kind"] for m in chart["markers"]} == {"limit", "child"}
    app = rec["status"]["containers"][0]
    assert int(chart["limitNow"]) == views.parse_bytes(app["current"]["limit"]) == 384 * scenario.MI
    assert int(chart["workingSetPoints"]) >= 2, "Prometheus' working set is drawn"
    assert browser.js("document.querySelectorAll('.chart svg path.ws').length") >= 1
    assert browser.js("document.getElementById('usage-note').textContent").startswith("Working set: the highest")
    assert browser.js("document.querySelector('.container-block .reason-text').textContent") == app["reason"]
    ledger = cells(browser, "#ledger tbody tr")
    assert [r["kill"] for r in ledger] == [k["id"] for k in sorted(kills, key=lambda k: k["at"], reverse=True)]
    assert {r["kind"] for r in ledger} == {"limit", "child"}
    shots.take(browser, "workload")
    no_errors(browser)


def recommendation_kill(body: dict[str, Any]) -> Any:
    from oomtuner.api import recommendation

    return recommendation.Kill.model_validate(body)


def test_stale_and_node_kills_and_tenant_strings_show_as_text(browser: Browser, dashboard: DashboardProcess,
                                                              made: scenario.Made, kube: api.Client, shots: Shots) -> None:
    browser.open(f"{dashboard.url}/namespaces/{made.namespace}/recommendations/deployment-api")
    chart = chart_of(browser)
    assert [(m["kind"], m["stale"]) for m in chart["markers"]] == [("limit", True)]
    assert browser.js("document.querySelector('#ledger tbody tr').classList.contains('stale')")
    annotation = browser.js("Array.from(document.querySelectorAll('#metadata td.value')).map(td => td.textContent)")
    assert scenario.SCRIPT in annotation, "the annotation shows as text"
    assert browser.js("document.scripts.length") == 1 and browser.js("document.title") != "owned"
    assert browser.js("document.querySelectorAll('img').length") == 0
    shots.take(browser, "workload-stale")
    no_errors(browser)

    browser.open(f"{dashboard.url}/namespaces/{made.namespace}/recommendations/deployment-batch")
    chart = chart_of(browser)
    assert [m["kind"] for m in chart["markers"]] == ["node"]
    batch = kit.recommendation(kube, made.namespace, "deployment-batch")
    assert batch is not None
    assert cells(browser, "#ledger tbody tr")[0]["c10"] == batch["status"]["kills"][0]["culprit"]["reason"]
    no_errors(browser)

    browser.open(f"{dashboard.url}/workloads?q={scenario.SCRIPT}")
    assert browser.js("document.querySelector('input[name=q]').value") == scenario.SCRIPT
    assert browser.js("document.scripts.length") == 0 and browser.js("document.title") != "owned"
    no_errors(browser)


def victims_on(browser: Browser, node: str) -> list[dict[str, str]]:
    return cells(browser, f'section.node[data-node="{node}"] table.victims tbody tr')


def test_nodes_page_ranks_as_report_does(browser: Browser, dashboard: DashboardProcess, plain_dashboard: DashboardProcess,
                                         made: scenario.Made, kube: api.Client, shots: Shots) -> None:
    browser.open(dashboard.url + "/nodes")
    assert browser.js("document.getElementById('ranking').textContent").startswith("Ranked by working set now, from Prometheus")
    ranked = victims_on(browser, made.node)
    assert ranked[0]["pod"].startswith(f"{made.namespace}/batch-"), "batch uses 900Mi and more: it dies first"
    ooms = browser.js(f"""Array.from(document.querySelectorAll('section.node[data-node="{made.node}"] li.oom'))
        .map(li => li.textContent)""")
    assert len(ooms) == 1 and "SystemOOM" in ooms[0] and scenario.SCRIPT in ooms[0], ooms
    assert browser.js("document.title") != "owned" and browser.js("document.querySelectorAll('img').length") == 0
    shots.take(browser, "nodes")
    no_errors(browser)

    # Without Prometheus both rank by request: the dashboard's table is `oomtuner report`'s.
    browser.open(plain_dashboard.url + "/nodes")
    expected = next(n for n in report.collect(kube, namespace=None, top=5)["nodes"] if n["name"] == made.node)
    shown = victims_on(browser, made.node)
    assert [(r["pod"], r["container"], r["adj"], r["score"]) for r in shown] == [
        (f"{v['namespace']}/{v['pod']}", v["container"], str(v["oomScoreAdj"]), str(v["score"])) for v in expected["nextVictims"]]
    no_errors(browser)


def test_without_prometheus_the_chart_has_kills_and_limits_and_says_why(browser: Browser, plain_dashboard: DashboardProcess,
                                                                         made: scenario.Made, shots: Shots) -> None:
    browser.open(f"{plain_dashboard.url}/namespaces/{made.namespace}/recommendations/deployment-cart?range=15m")
    chart = chart_of(browser)
    assert int(chart["workingSetPoints"]) == 0 and len(chart["markers"]) == 2 and int(chart["limitNow"]) == 384 * scenario.MI
    note = browser.js("document.getElementById('usage-note').textContent")
    assert note.startswith("No working set: no Prometheus is configured"), note
    assert browser.js("document.getElementById('approve')") is None, "no Approve without --allow-approve"
    shots.take(browser, "workload-without-prometheus")
    no_errors(browser)


def test_approve_button_approves_once(browser: Browser, dashboard: DashboardProcess, made: scenario.Made,
                                      kube: api.Client) -> None:
    browser.open(f"{dashboard.url}/namespaces/{made.namespace}/recommendations/deployment-api")
    assert browser.js("document.getElementById('approve') !== null"), "the lab's admin may patch recommendations"
    browser.js("document.getElementById('approve').click()")
    try:
        browser.wait("location.search.includes('approved=') && document.readyState === 'complete'")
    except TimeoutError:
        main = browser.js("document.querySelector('main').innerText")
        pytest.fail(f"no approval: {browser.js('location.href')}: {main}")
    assert "Approved (generation" in browser.js("document.querySelector('.notice').textContent")
    rec = kit.recommendation(kube, made.namespace, "deployment-api")
    assert rec is not None and rec["spec"]["approved"] is True
    no_errors(browser)
