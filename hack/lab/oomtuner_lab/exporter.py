"""A stand-in for cAdvisor (and a little of kube-state-metrics) for the lab's pods.

kwok runs no containers, so nothing in the lab uses memory. This exporter serves the series a
kubelet's cAdvisor and kube-state-metrics would, from usage traces that tests (or a person trying
the lab) set, so that Prometheus stores real samples and the operator runs real PromQL on them:

- `container_memory_working_set_bytes{namespace,pod,container,id}`: one series per container life
  (cAdvisor's `id` is the container's cgroup, new at every restart);
- `kube_pod_container_status_restarts_total{namespace,pod,container}`: the lives that ended;
- `kube_pod_container_status_last_terminated_reason{namespace,pod,container,reason}`: 1 for the
  reason the last ended life had.

A `Trace` is a container's lives, each a straight line: `base` bytes at its start, growing by
`bytes_per_s` (0: constant), never above `max`. Times are Unix seconds, so the same trace gives the
live samples (`exposition`) and history in OpenMetrics for `promtool tsdb create-blocks-from
openmetrics` (`openmetrics`): the past is backfilled, the present is scraped, and they line up.

Control over HTTP, so tests and `oomtuner lab exporter set` can drive a running exporter:
`PUT /traces` with a trace as JSON (replaces the container's trace), `GET /traces`,
`DELETE /traces?namespace=NS` (or all), and `GET /metrics` for Prometheus.

With a kubeconfig, every Running pod of the lab that has no trace gets a constant one at its
container's memory request (or 16Mi), so the lab looks like a cluster where everything is scraped.
"""

from __future__ import annotations

import argparse
import dataclasses
import http.server
import json
import logging
import math
import sys
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import click

logger = logging.getLogger(__name__)

WORKING_SET = "container_memory_working_set_bytes"
RESTARTS = "kube_pod_container_status_restarts_total"
LAST_TERMINATED = "kube_pod_container_status_last_terminated_reason"
DEFAULT_USAGE = 16 * 1024 * 1024


@dataclasses.dataclass(frozen=True)
class Life:
    """One container instance: from `start` to `end` (None: still running), `base` bytes at the
    start, growing by `bytes_per_s`, capped at `max`. `reason` is why it ended."""

    id: str
    start: float
    end: float | None = None
    base: float = 0.0
    bytes_per_s: float = 0.0
    max: float | None = None
    reason: str = "OOMKilled"

    def covers(self, t: float) -> bool:
        return self.start <= t and (self.end is None or t < self.end)

    def value(self, t: float) -> float:
        v = self.base + self.bytes_per_s * max(0.0, t - self.start)
        return min(v, self.max) if self.max is not None else v

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "start": self.start, "end": self.end, "base": self.base,
                "bytesPerSecond": self.bytes_per_s, "max": self.max, "reason": self.reason}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Life:
        return cls(
            id=str(data["id"]), start=float(data["start"]),
            end=None if data.get("end") is None else float(data["end"]),
            base=float(data.get("base", 0)), bytes_per_s=float(data.get("bytesPerSecond", 0)),
            max=None if data.get("max") is None else float(data["max"]),
            reason=str(data.get("reason", "OOMKilled")),
        )


@dataclasses.dataclass(frozen=True)
class Trace:
    """The lives of one container of one pod, in start order."""

    namespace: str
    pod: str
    container: str
    lives: tuple[Life, ...]

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.namespace, self.pod, self.container)

    def life_at(self, t: float) -> Life | None:
        return next((life for life in reversed(self.lives) if life.covers(t)), None)

    def ended_before(self, t: float) -> list[Life]:
        return [life for life in self.lives if life.end is not None and life.end <= t]

    def to_json(self) -> dict[str, Any]:
        return {"namespace": self.namespace, "pod": self.pod, "container": self.container,
                "lives": [life.to_json() for life in self.lives]}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Trace:
        lives = tuple(sorted((Life.from_json(x) for x in data["lives"]), key=lambda life: life.start))
        return cls(namespace=str(data["namespace"]), pod=str(data["pod"]), container=str(data["container"]), lives=lives)

    @classmethod
    def constant(cls, *, namespace: str, pod: str, container: str, value: float, start: float, id: str = "1") -> Trace:
        return cls(namespace, pod, container, (Life(id=id, start=start, base=value),))


def cgroup_id(trace: Trace, life: Life) -> str:
    """cAdvisor's `id` label: the container's cgroup path, new for every life."""
    return f"/kubepods/{trace.namespace}/{trace.pod}/{trace.container}/{life.id}"


def _labels(**labels: str) -> str:
    return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items()) + "}"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _samples(trace: Trace, t: float, extra: dict[str, str]) -> Iterator[tuple[str, str, float]]:
    """(metric, labels, value) of one trace at time t."""
    ids = {"namespace": trace.namespace, "pod": trace.pod, "container": trace.container}
    life = trace.life_at(t)
    if life is not None:
        yield WORKING_SET, _labels(**extra, **ids, id=cgroup_id(trace, life)), life.value(t)
    ended = trace.ended_before(t)
    if life is not None or ended:
        yield RESTARTS, _labels(**extra, **ids), float(len(ended))
    if ended:
        yield LAST_TERMINATED, _labels(**extra, **ids, reason=ended[-1].reason), 1.0


_HELP = {
    WORKING_SET: ("gauge", "Current working set of the container in bytes (lab stand-in for cAdvisor)."),
    RESTARTS: ("counter", "The number of container restarts per container (lab stand-in for kube-state-metrics)."),
    LAST_TERMINATED: ("gauge", "Describes the last reason the container was in terminated state."),
}


def exposition(traces: Iterable[Trace], now: float) -> str:
    """The Prometheus text format of every trace at `now`, as a scrape sees it."""
    by_metric: dict[str, list[str]] = {name: [] for name in _HELP}
    for trace in traces:
        for metric, labels, value in _samples(trace, now, {}):
            by_metric[metric].append(f"{metric}{labels} {_number(value)}")
    lines: list[str] = []
    for metric, rows in by_metric.items():
        kind, text = _HELP[metric]
        lines += [f"# HELP {metric} {text}", f"# TYPE {metric} {kind}", *rows]
    return "\n".join(lines) + "\n"


def openmetrics(
    traces: Sequence[Trace], *, start: float, end: float, interval: float, labels: dict[str, str] | None = None
) -> str:
    """History of the traces in OpenMetrics, one sample per `interval` seconds in [start, end), for
    `promtool tsdb create-blocks-from openmetrics`. `labels` (e.g. the scrape's job and instance)
    are added to every series, so backfilled and scraped samples form the same series."""
    extra = dict(labels or {})
    by_metric: dict[str, list[str]] = {name: [] for name in _HELP}
    steps = max(0, math.ceil((end - start) / interval))
    for trace in traces:
        for i in range(steps):
            t = start + i * interval
            for metric, lbls, value in _samples(trace, t, extra):
                by_metric[metric].append(f"{metric}{lbls} {_number(value)} {t:.3f}")
    lines: list[str] = []
    for metric, rows in by_metric.items():
        if not rows:
            continue
        kind, text = _HELP[metric]
        family = metric[: -len("_total")] if kind == "counter" and metric.endswith("_total") else metric
        # OpenMetrics wants a metric family's samples together; sorting by labels keeps each
        # series' samples in time order after the family header.
        rows.sort(key=lambda row: (row.rsplit(" ", 2)[0], float(row.rsplit(" ", 1)[1])))
        lines += [f"# HELP {family} {text}", f"# TYPE {family} {kind}", *rows]
    lines.append("# EOF")
    return "\n".join(lines) + "\n"


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


class Traces:
    """The traces an exporter serves; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._traces: dict[tuple[str, str, str], Trace] = {}
        self._defaults: dict[tuple[str, str, str], Trace] = {}

    def set(self, trace: Trace) -> None:
        with self._lock:
            self._traces[trace.key] = trace

    def delete(self, namespace: str | None = None) -> int:
        with self._lock:
            gone = [k for k in self._traces if namespace is None or k[0] == namespace]
            for k in gone:
                del self._traces[k]
            return len(gone)

    def set_defaults(self, traces: Iterable[Trace]) -> None:
        with self._lock:
            self._defaults = {t.key: t for t in traces}

    def all(self) -> list[Trace]:
        with self._lock:
            merged = {**self._defaults, **self._traces}
            return [merged[k] for k in sorted(merged)]

    def explicit(self) -> list[Trace]:
        with self._lock:
            return [self._traces[k] for k in sorted(self._traces)]


class _Handler(http.server.BaseHTTPRequestHandler):
    traces: Traces  # set on the subclass made per server

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's name
        logger.debug("exporter: " + format, *args)

    def _reply(self, code: int, body: str, content_type: str = "application/json") -> None:
        data = body.encode()
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        path = urllib.parse.urlparse(self.path).path
        if path == "/metrics":
            self._reply(200, exposition(self.traces.all(), time.time()), "text/plain; version=0.0.4; charset=utf-8")
        elif path == "/traces":
            self._reply(200, json.dumps([t.to_json() for t in self.traces.explicit()]))
        elif path == "/healthz":
            self._reply(200, "ok\n", "text/plain")
        else:
            self._reply(404, '{"error": "not found"}')

    def do_PUT(self) -> None:  # noqa: N802
        if urllib.parse.urlparse(self.path).path != "/traces":
            self._reply(404, '{"error": "not found"}')
            return
        try:
            length = int(self.headers.get("Content-Length") or 0)
            trace = Trace.from_json(json.loads(self.rfile.read(length)))
        except (ValueError, KeyError, TypeError) as exc:
            self._reply(400, json.dumps({"error": f"not a trace: {exc}"}))
            return
        self.traces.set(trace)
        self._reply(200, json.dumps(trace.to_json()))

    def do_DELETE(self) -> None:  # noqa: N802
        parsed = urllib.parse.urlparse(self.path)
        if parsed.path != "/traces":
            self._reply(404, '{"error": "not found"}')
            return
        namespace = urllib.parse.parse_qs(parsed.query).get("namespace", [None])[0]
        self._reply(200, json.dumps({"deleted": self.traces.delete(namespace)}))


class Exporter:
    """The exporter's HTTP server in a daemon thread of this process."""

    def __init__(self, *, host: str = "127.0.0.1", port: int = 0, traces: Traces | None = None):
        self.traces = traces or Traces()
        handler = type("Handler", (_Handler,), {"traces": self.traces})
        self._server = http.server.ThreadingHTTPServer((host, port), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="lab-exporter", daemon=True)

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> Exporter:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


class Client:
    """Drives a running exporter over HTTP."""

    def __init__(self, url: str):
        self.url = url.rstrip("/")

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.url + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=5) as r:
            return json.loads(r.read())

    def set(self, trace: Trace) -> None:
        self._call("PUT", "/traces", trace.to_json())

    def traces(self) -> list[Trace]:
        return [Trace.from_json(t) for t in self._call("GET", "/traces")]

    def delete(self, namespace: str | None = None) -> int:
        query = "?" + urllib.parse.urlencode({"namespace": namespace}) if namespace else ""
        return int(self._call("DELETE", "/traces" + query)["deleted"])


# ---- defaults for the lab's pods -------------------------------------------------------------------


def default_traces(pods: Iterable[dict[str, Any]], *, now: float) -> list[Trace]:
    """A constant trace at the memory request (or 16Mi) for each container of each Running pod."""
    from oomtuner.domain import quantity

    found = []
    for pod in pods:
        meta, spec, status = pod.get("metadata") or {}, pod.get("spec") or {}, pod.get("status") or {}
        if status.get("phase") != "Running":
            continue
        for c in spec.get("containers") or []:
            raw = ((c.get("resources") or {}).get("requests") or {}).get("memory")
            try:
                value = quantity.parse_bytes(raw) if raw is not None else DEFAULT_USAGE
            except quantity.QuantityError:
                value = DEFAULT_USAGE
            found.append(Trace.constant(namespace=str(meta.get("namespace")), pod=str(meta.get("name")),
                                        container=str(c.get("name")), value=value, start=now))
    return found


def _watch_pods(traces: Traces, kubeconfig: str, interval: float, stop: threading.Event) -> None:
    from oomtuner.kube import client as kube_client

    kube = kube_client.connect(kubeconfig=kubeconfig)
    while not stop.is_set():
        try:
            pods = kube.list("/api/v1/pods")
            traces.set_defaults(default_traces(pods, now=time.time()))
        except Exception as exc:  # noqa: BLE001 - the lab may be restarting; try again
            logger.warning("listing the lab's pods failed: %s", exc)
        stop.wait(interval)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="A cAdvisor stand-in for the lab's pods.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--kubeconfig", help="Serve a constant trace for every Running pod of this cluster.")
    parser.add_argument("--pod-interval", type=float, default=10.0, help="Seconds between pod listings.")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    exporter = Exporter(host=args.host, port=args.port).start()
    logger.info("exporter listening on %s:%d", args.host, exporter.port)
    stop = threading.Event()
    if args.kubeconfig:
        threading.Thread(target=_watch_pods, args=(exporter.traces, args.kubeconfig, args.pod_interval, stop),
                         daemon=True).start()
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        stop.set()
        exporter.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())


# ---- `oomtuner lab exporter ...` -------------------------------------------------------------------


@click.group("exporter")
def command() -> None:
    """The lab's cAdvisor stand-in: set the memory usage the lab's containers report."""


def _client() -> Client:
    from oomtuner_lab import prometheus

    url = prometheus.exporter_url()
    if url is None:
        raise click.ClickException("the lab exporter is not running: oomtuner lab prometheus up")
    return Client(url)


@command.command("set")
@click.argument("target", metavar="NAMESPACE/POD")
@click.option("-c", "--container", required=True)
@click.option("--base", default="64Mi", show_default=True, help="Working set when the container (re)starts.")
@click.option("--per-hour", default="0", show_default=True, help="Growth per hour (a leak), e.g. 100Mi.")
@click.option("--max", "max_", help="Never above this (e.g. the limit).")
def _set(target: str, container: str, base: str, per_hour: str, max_: str | None) -> None:
    """Give a container a trace starting now: constant, or growing by --per-hour."""
    from oomtuner.domain import quantity

    namespace, _, pod = target.rpartition("/")
    try:
        life = Life(id=f"{int(time.time())}", start=time.time(), base=quantity.parse_bytes(base),
                    bytes_per_s=quantity.parse_bytes(per_hour) / 3600,
                    max=quantity.parse_bytes(max_) if max_ else None)
    except quantity.QuantityError as exc:
        raise click.ClickException(str(exc)) from exc
    _client().set(Trace(namespace or "default", pod, container, (life,)))
    click.echo(f"{namespace or 'default'}/{pod} {container}: {base} + {per_hour}/h")


@command.command("list")
def _list() -> None:
    """The traces that were set."""
    for trace in _client().traces():
        click.echo(json.dumps(trace.to_json()))


@command.command("clear")
@click.option("-n", "--namespace", help="Only this namespace's traces.")
def _clear(namespace: str | None) -> None:
    """Forget traces (the lab's pods fall back to their memory request)."""
    click.echo(f"{_client().delete(namespace)} trace(s) deleted")


@command.command("serve", context_settings={"ignore_unknown_options": True})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def _serve(args: tuple[str, ...]) -> None:
    """Run an exporter in the foreground (--port, --kubeconfig; see --help of python -m oomtuner_lab.exporter)."""
    sys.exit(main(list(args)))
