"""The dashboard's web app: Starlette routes, Jinja2 templates, static files, security headers.

Every route reads the `cache` listings (never the API server; the first read of a listing waits
for its list), builds its view with `views` and `workload`, and renders a template. Templates
autoescape everything: names, annotations, reasons and messages are tenant input. Every answer
carries a Content-Security-Policy that allows scripts, styles and fetches from this origin only and
no inline script or style; the one script (`static/memchart.js`) draws the workload charts from
`chart.json`. Handlers are plain functions: Starlette runs them in its thread pool.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import urllib.parse
from collections.abc import Callable
from typing import Any

import jinja2
from starlette import applications, concurrency, requests, responses, routing, staticfiles, templating
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from oomtuner import __version__, report
from oomtuner.api import recommendation, types
from oomtuner.dashboard import approve, cache, history, views, workload
from oomtuner.domain import classify, quantity, timestamps
from oomtuner.prom import usage as prom_usage

CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",  # not no-referrer: with it, a form post says `Origin: null`
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}
RESOURCES = __package__ or "oomtuner.dashboard"
WORKLOAD_PATH = "/namespaces/{namespace}/recommendations/{name}"


@dataclasses.dataclass
class Dashboard:
    """What the routes share: the listings, the usage source and the approvals."""

    cluster: cache.Cluster
    usage: prom_usage.Source
    approvals: approve.Approvals
    min_step: datetime.timedelta
    top: int = 5
    now: Callable[[], datetime.datetime] = lambda: datetime.datetime.now(datetime.timezone.utc)
    victims: cache.Listing[tuple[list[dict[str, Any]], dict[str, Any]]] = dataclasses.field(init=False)

    def __post_init__(self) -> None:
        self.victims = cache.Listing("next victims", self._rank, empty=([], {"basis": "request", "message": "not ranked yet"}),
                                     ttl=self.cluster.pods.ttl)

    def _rank(self) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        nodes = self.cluster.nodes.get().items
        placed = [(*where, pod) for pod in self.cluster.pods.get().items if (where := report.placement(pod, nodes))]
        return report.next_victims(nodes, placed, top=self.top, usage=self.usage, at=self.now())

    def rows(self) -> tuple[tuple[views.Row, ...], cache.Snapshot[cache.Recommendations]]:
        """The workloads table's rows of the latest snapshot (made when it was listed)."""
        snapshot = self.cluster.recommendations.get()
        return snapshot.items.rows, snapshot


class SecurityHeaders:
    """Adds `SECURITY_HEADERS` to every HTTP answer (a plain ASGI middleware: no buffering)."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS.items():
                    if name == "Cache-Control" and scope["path"].startswith("/static/"):
                        continue
                    headers[name] = value
            await send(message)

        await self.app(scope, receive, with_headers)


# ---- template helpers ----------------------------------------------------------------------------


def _bytes(n: int | None) -> str:
    return quantity.humanize(n) if n is not None else "—"


def _ago(at: datetime.datetime | None, now: datetime.datetime) -> str:
    if at is None:
        return "—"
    seconds = max(0, int((now - at).total_seconds()))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit} ago"
    return f"{seconds}s ago"


def environment() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.PackageLoader(RESOURCES, "templates"), autoescape=True,
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters["bytes"] = _bytes
    env.filters["ts"] = lambda at: timestamps.format(at) if at is not None else "—"
    env.globals["ago"] = _ago
    return env


TEMPLATES = templating.Jinja2Templates(env=environment())


def row_html(root: str) -> cache.RowHtml:
    """Renders one row of the workloads table, its link under `root` (the dashboard's root path)."""
    template = TEMPLATES.env.get_template("workload_row.html")

    def render_row(row: views.Row, now: datetime.datetime) -> str:
        return template.render(r=row, now=now, workload_link=lambda namespace, name: workload_path(root, namespace, name))

    return render_row


def workload_path(root: str, namespace: str, name: str) -> str:
    """The workload page's path, without the router's lookup (the tables make one per row)."""
    return root + WORKLOAD_PATH.format(namespace=urllib.parse.quote(namespace, safe=""), name=urllib.parse.quote(name, safe=""))


def _state(request: requests.Request) -> Dashboard:
    state: Dashboard = request.app.state.dashboard
    return state


def path_to(request: requests.Request, route: str, **params: str) -> str:
    """A path on this dashboard, under the root path it is served at (`--root-path`)."""
    return f"{request.scope.get('root_path', '')}{request.app.url_path_for(route, **params)}"


def render(request: requests.Request, name: str, context: dict[str, Any], *, status: int = 200) -> responses.Response:
    dash = _state(request)
    root = str(request.scope.get("root_path", ""))

    def link(route: str, **params: str) -> str:
        return path_to(request, route, **params)

    def workload_link(namespace: str, name: str) -> str:
        return workload_path(root, namespace, name)

    base = {"now": dash.now(), "ttl": dash.cluster.recommendations.ttl, "link": link, "workload_link": workload_link,
            "version": __version__,
            "page": name.removesuffix(".html"), "approve_enabled": dash.approvals.enabled, "snapshot": None,
            "parse_ts": timestamps.parse}
    return TEMPLATES.TemplateResponse(request, name, {**base, **context}, status_code=status)


def error(request: requests.Request, message: str, *, status: int) -> responses.Response:
    return render(request, "error.html", {"message": message, "snapshot": None}, status=status)


# ---- pages ---------------------------------------------------------------------------------------


def namespaces_page(request: requests.Request) -> responses.Response:
    rows, snapshot = _state(request).rows()
    return render(request, "namespaces.html", {"namespaces": views.namespaces_of(rows), "snapshot": snapshot})


def workloads_page(request: requests.Request) -> responses.Response:
    rows, snapshot = _state(request).rows()
    chosen = views.Filter.from_query(dict(request.query_params))
    shown = chosen.apply(rows)
    namespaces = sorted({r.namespace for r in rows})
    return render(request, "workloads.html", {
        "rows": shown, "total": len(rows), "filter": chosen, "namespaces": namespaces, "snapshot": snapshot,
        "phases": views.PHASES, "modes": views.MODES, "classifications": views.CLASSIFICATIONS,
        "unreadable": snapshot.items.unreadable,
    })


def _find(request: requests.Request) -> tuple[recommendation.OOMRecommendation | None, cache.Snapshot[cache.Recommendations]]:
    namespace, name = request.path_params["namespace"], request.path_params["name"]
    snapshot = _state(request).cluster.recommendations.get()
    return snapshot.items.find(namespace, name), snapshot


def workload_page(request: requests.Request) -> responses.Response:
    dash = _state(request)
    rec, snapshot = _find(request)
    if rec is None:
        return error(request, f"No OOMRecommendation {request.path_params['namespace']}/{request.path_params['name']} "
                              "(yet: the list is refreshed every few seconds).", status=404)
    now = dash.now()
    chosen = request.query_params.get("range", "")
    chosen = chosen if chosen in workload.RANGES else workload.default_range(rec, now=now)
    namespace, name = rec.metadata.namespace or "", rec.metadata.name
    can_approve = dash.approvals.allowed(namespace)
    return render(request, "workload.html", {
        "rec": rec, "status": rec.status, "ledger": workload.ledger(rec), "snapshot": snapshot,
        "ranges": list(workload.RANGES), "range": chosen,
        "chart_url": f"{path_to(request, 'chart', namespace=namespace, name=name)}?range={chosen}",
        "approve_enabled": dash.approvals.enabled, "can_approve": can_approve,
        "approve_token": dash.approvals.token(namespace, name) if can_approve else "",
        "notice": approved if (approved := request.query_params.get("approved", "")).isdigit() else "",
    })


def chart_data(request: requests.Request) -> responses.Response:
    dash = _state(request)
    rec, _ = _find(request)
    if rec is None:
        return responses.JSONResponse({"error": "not found"}, status_code=404)
    now = dash.now()
    span = workload.RANGES.get(request.query_params.get("range", ""), workload.RANGES[workload.default_range(rec, now=now)])
    start = now - span
    containers = workload.chart(rec, start=start, now=now)
    target = rec.spec.targetRef
    found = history.working_set(dash.usage, namespace=rec.metadata.namespace or "", kind=target.kind, name=target.name,
                                containers=[c["name"] for c in containers], start=start, end=now, min_step=dash.min_step)
    for c in containers:
        c["workingSet"] = found.series.get(c["name"], [])
    body = {"start": start.timestamp(), "end": now.timestamp(), "containers": containers,
            "usage": {"ok": found.ok, "message": found.message}}
    return responses.Response(json.dumps(body), media_type="application/json")


async def _approve(request: requests.Request) -> responses.Response:
    dash = _state(request)
    namespace, name = request.path_params["namespace"], request.path_params["name"]
    origin = request.headers.get("origin")
    if origin is not None and origin != f"{request.url.scheme}://{request.url.netloc}":
        return error(request, "Refused: the approval came from another site.", status=403)
    if request.headers.get("sec-fetch-site", "same-origin") not in ("same-origin", "none"):
        return error(request, "Refused: the approval came from another site.", status=403)
    form = urllib.parse.parse_qs((await request.body())[:4096].decode(errors="replace"))
    token = (form.get("token") or [""])[0]
    try:
        generation = await concurrency.run_in_threadpool(lambda: dash.approvals.approve(namespace, name, token=token))
    except approve.Refused as exc:
        return error(request, f"Not approved: {exc}.", status=403)
    target = path_to(request, "workload", namespace=namespace, name=name)
    return responses.RedirectResponse(f"{target}?approved={generation or 0}", status_code=303)


def nodes_page(request: requests.Request) -> responses.Response:
    dash = _state(request)
    ranked, ranking = dash.victims.get().items
    node_ooms = dash.cluster.node_ooms.get()
    node_kills: dict[str, list[tuple[recommendation.OOMRecommendation, recommendation.Kill]]] = {}
    for rec in dash.cluster.recommendations.get().items.items:
        for kill in rec.status.kills:
            if kill.node and kill.classification == types.Classification.NODE:
                node_kills.setdefault(kill.node, []).append((rec, kill))
    ooms: dict[str, list[classify.NodeOOM]] = {}
    for oom in sorted(node_ooms.items, key=lambda o: o.at, reverse=True):
        ooms.setdefault(oom.node, []).append(oom)
    return render(request, "nodes.html", {"nodes": ranked, "ranking": ranking, "ooms": ooms, "node_kills": node_kills,
                                          "snapshot": dash.cluster.pods.get()})


def healthz(request: requests.Request) -> responses.Response:
    return responses.PlainTextResponse("ok")


def create_app(dashboard: Dashboard) -> ASGIApp:
    routes = [
        routing.Route("/", namespaces_page, name="namespaces"),
        routing.Route("/workloads", workloads_page, name="workloads"),
        routing.Route(WORKLOAD_PATH, workload_page, name="workload"),
        routing.Route(f"{WORKLOAD_PATH}/chart.json", chart_data, name="chart"),
        routing.Route(f"{WORKLOAD_PATH}/approve", _approve, methods=["POST"], name="approve"),
        routing.Route("/nodes", nodes_page, name="nodes"),
        routing.Route("/healthz", healthz, name="healthz"),
        routing.Mount("/static", staticfiles.StaticFiles(packages=[(RESOURCES, "static")]), name="static"),
    ]
    app = applications.Starlette(routes=routes)
    app.state.dashboard = dashboard
    return SecurityHeaders(app)
