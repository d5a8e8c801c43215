"""The ground truth of a fault scenario, and the figures that judge the operator against it.

- `Truth` writes every kill of a scenario into pod status, as a kubelet does (`oomtuner_lab.inject`),
  and keeps it: pod, container, finishedAt and the container's memory limit at the kill. A kill is in
  the truth once its status write returned, or once the pod shows it after a write whose answer was
  lost to the fault (`settle`). Kills of one container are at least a second apart: finishedAt has
  second precision, and two kills in one second would be one kill to anyone reading the pod.
- `TemplateWatch` watches the workload and keeps every version of its pod template's memory limits,
  so each raise can be judged: a raise from L is justified only by a kill at L (a kill at the
  then-current limit). A version the watch missed shows as a gap in the generations, and is said.
- `judge` compares what the operator counted (the recommendation's `totalKills` and ledger, or in
  Observe mode its metric and events) with the truth: injected, recorded, lost, double-counted,
  spurious raises.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import datetime
import json
import re
import threading
import time
from collections.abc import Iterable, Sequence
from typing import Any

import kubernetes

from oomtuner.domain import quantity
from oomtuner.kube import api
from oomtuner_lab import inject

UTC = datetime.timezone.utc


def _stamp(t: datetime.datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _limit(pod: dict[str, Any], container: str) -> int | None:
    for c in (pod.get("spec") or {}).get("containers") or []:
        if c.get("name") == container:
            text = ((c.get("resources") or {}).get("limits") or {}).get("memory")
            return quantity.parse_bytes(text) if text is not None else None
    return None


@dataclasses.dataclass(frozen=True)
class Kill:
    pod: str
    container: str
    at: str  # finishedAt as written: RFC 3339, second precision
    limit: int | None  # the container's memory limit in the pod spec at the kill, bytes
    written: float  # time.monotonic() when the status write returned (or when `settle` found it)

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.pod, self.container, self.at)


class Truth:
    """Every kill a scenario injects into one workload's pods."""

    def __init__(self, core_v1: Any, *, namespace: str, workload: str):
        self.core_v1 = core_v1
        self.namespace = namespace
        self.workload = workload
        self.kills: list[Kill] = []
        self.uncertain: list[Kill] = []  # a write whose answer was lost: in the pod or not?
        self.errors: list[str] = []  # why those writes failed
        self._last: dict[tuple[str, str], datetime.datetime] = {}
        self._lock = threading.Lock()

    def _when(self, pod: str, container: str, skew: datetime.timedelta) -> datetime.datetime:
        with self._lock:
            now = datetime.datetime.now(UTC).replace(microsecond=0) + skew
            last = self._last.get((pod, container))
            at = max(now, last + datetime.timedelta(seconds=1)) if last else now
            self._last[(pod, container)] = at
            return at

    def kill(self, pod: dict[str, Any], container: str = "app", *,
             skew: datetime.timedelta = datetime.timedelta(0)) -> Kill | None:
        """OOM-kill `container` of `pod` now (+ `skew`, a node clock off by that much). Returns the
        kill, or None when the pod is gone (a rollout removed it: nothing was killed)."""
        found = self.kill_together(pod, [container], skew=skew)
        return found[0] if found else None

    def kill_together(self, pod: dict[str, Any], containers: Sequence[str], *,
                      skew: datetime.timedelta = datetime.timedelta(0)) -> list[Kill]:
        """OOM-kill several containers of `pod` in one status write (they died together). Returns the
        kills, or [] when the pod is gone; raises when the write failed (the kills are then uncertain)."""
        name = pod["metadata"]["name"]
        at = max(self._when(name, c, skew) for c in containers)
        wanted = [Kill(pod=name, container=c, at=_stamp(at), limit=_limit(pod, c), written=0.0) for c in containers]
        try:
            inject.oom_kill_containers(self.core_v1, namespace=self.namespace, pod=name, containers=list(containers),
                                       at=at)
        except kubernetes.client.ApiException as exc:
            if exc.status == 404:
                return []
            with self._lock:  # a 5xx or a timeout: maybe written, maybe not
                self.uncertain.extend(wanted)
                self.errors.append(f"{exc.status} {exc.reason}")
            raise
        except Exception as exc:  # the answer was lost (the API server went away): maybe written, maybe not
            with self._lock:
                self.uncertain.extend(wanted)
                self.errors.append(f"{type(exc).__name__}: {str(exc)[:200]}")
            raise
        now = time.monotonic()
        done = [dataclasses.replace(k, written=now) for k in wanted]
        with self._lock:
            self.kills.extend(done)
        return done

    def burst(self, pods: Sequence[dict[str, Any]], *, containers: Sequence[str] = ("app",), threads: int = 16,
              skew: datetime.timedelta = datetime.timedelta(0)) -> list[Kill]:
        """Kill `containers` in every pod at once, from `threads` threads (a pod's containers in one
        status write); returns the kills written. A write that fails (the fault) is left uncertain,
        for `settle`, and the burst goes on."""
        def one_pod(pod: dict[str, Any]) -> list[Kill]:
            try:
                return self.kill_together(pod, containers, skew=skew)
            except Exception:  # noqa: BLE001 - kept in `uncertain`
                return []

        with concurrent.futures.ThreadPoolExecutor(max_workers=threads) as pool:
            return [k for found in pool.map(one_pod, pods) for k in found]

    def settle(self, kube: api.Client) -> int:
        """Decide the uncertain writes from the pods as they are now; returns how many were written."""
        found = 0
        for kill in list(self.uncertain):
            body = kube.get_or_none(f"/api/v1/namespaces/{self.namespace}/pods/{kill.pod}")
            shown = set()
            for cs in ((body or {}).get("status") or {}).get("containerStatuses") or []:
                if cs.get("name") == kill.container:
                    for key in ("state", "lastState"):
                        term = (cs.get(key) or {}).get("terminated") or {}
                        shown.add((term.get("reason"), term.get("finishedAt")))
            if ("OOMKilled", kill.at) in shown:
                self.kills.append(dataclasses.replace(kill, written=time.monotonic()))
                found += 1
            self.uncertain.remove(kill)
        return found

    def at_limit(self, container: str, limit: int | None, *, before: float) -> list[Kill]:
        return [k for k in self.kills if k.container == container and k.limit == limit and k.written <= before]


# ---- the workload's memory over time ------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Version:
    generation: int
    seen: float  # time.monotonic()
    limits: dict[str, int | None]


@dataclasses.dataclass(frozen=True)
class Raise:
    container: str
    old: int | None
    new: int | None
    seen: float

    def __str__(self) -> str:
        return f"{self.container}: {show(self.old)} → {show(self.new)}"


def show(limit: int | None) -> str:
    return quantity.humanize(limit) if limit is not None else "none"


class TemplateWatch:
    """Every version of a Deployment's pod template memory limits, from a watch in a thread that
    outlives API server restarts (it resumes from the last resourceVersion, and lists again on 410)."""

    def __init__(self, kubeconfig: str, *, namespace: str, name: str):
        configuration = kubernetes.client.Configuration()
        kubernetes.config.load_kube_config(config_file=kubeconfig, client_configuration=configuration)
        self.apps = kubernetes.client.AppsV1Api(kubernetes.client.ApiClient(configuration))
        self.namespace = namespace
        self.name = name
        self.versions: list[Version] = []
        self.relists = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"template-watch-{name}", daemon=True)
        self._watch: kubernetes.watch.Watch | None = None

    def start(self) -> TemplateWatch:
        self._thread.start()
        deadline = time.monotonic() + 30
        while not self.versions and time.monotonic() < deadline:
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._watch is not None:
            self._watch.stop()
        self._thread.join(timeout=30)
        self.apps.api_client.close()

    def _record(self, body: dict[str, Any]) -> None:
        generation = int((body.get("metadata") or {}).get("generation") or 0)
        if self.versions and generation <= self.versions[-1].generation:
            return
        limits = {}
        for c in (((body.get("spec") or {}).get("template") or {}).get("spec") or {}).get("containers") or []:
            text = ((c.get("resources") or {}).get("limits") or {}).get("memory")
            limits[c["name"]] = quantity.parse_bytes(text) if text is not None else None
        self.versions.append(Version(generation=generation, seen=time.monotonic(), limits=limits))

    def _run(self) -> None:
        version: str | None = None
        while not self._stop.is_set():
            try:
                if version is None:
                    body = self.apps.read_namespaced_deployment(self.name, self.namespace, _preload_content=False,
                                                                _request_timeout=10)
                    raw = json.loads(body.data)
                    self._record(raw)
                    version = raw["metadata"]["resourceVersion"]
                self._watch = kubernetes.watch.Watch()
                for event in self._watch.stream(self.apps.list_namespaced_deployment, self.namespace,
                                                field_selector=f"metadata.name={self.name}", resource_version=version,
                                                timeout_seconds=20, _request_timeout=30):
                    raw = event["raw_object"]
                    if event["type"] == "ERROR":
                        version, self.relists = None, self.relists + 1
                        break
                    self._record(raw)
                    version = raw["metadata"]["resourceVersion"]
                    if self._stop.is_set():
                        return
            except kubernetes.client.ApiException as exc:
                if exc.status == 410:
                    version, self.relists = None, self.relists + 1
                else:
                    self._stop.wait(0.5)
            except Exception:  # noqa: BLE001 - the API server is away: try again
                self._stop.wait(0.5)

    def limit(self, container: str = "app") -> int | None:
        return self.versions[-1].limits.get(container) if self.versions else None

    def raises(self) -> list[Raise]:
        found = []
        for before, after in zip(self.versions, self.versions[1:]):
            for container, new in after.limits.items():
                old = before.limits.get(container)
                if new is not None and (old is None or new > old):
                    found.append(Raise(container=container, old=old, new=new, seen=after.seen))
        return found

    def gaps(self) -> list[tuple[int, int]]:
        """Generations the watch never saw (between two it saw): a memory change there is unjudged."""
        return [(a.generation, b.generation) for a, b in zip(self.versions, self.versions[1:])
                if b.generation > a.generation + 1]


def spurious(truth: Truth, watch: TemplateWatch) -> list[str]:
    """The raises with no kill at the then-current limit before them."""
    return [f"{r} with no kill at {quantity.humanize(r.old) if r.old else 'no limit'}"
            for r in watch.raises() if not truth.at_limit(r.container, r.old, before=r.seen)]


# ---- what the operator counted ------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Counted:
    total: int
    records: list[dict[str, Any]]  # status.kills as the operator keeps them (may be a window)


def recommendation(kube: api.Client, namespace: str, name: str) -> dict[str, Any] | None:
    return kube.get_or_none(f"/apis/oomtuner.dev/v1alpha1/namespaces/{namespace}/oomrecommendations/{name}")


def counted(kube: api.Client, namespace: str, name: str) -> Counted:
    rec = recommendation(kube, namespace, name) or {}
    status = rec.get("status") or {}
    return Counted(total=int(status.get("totalKills") or 0), records=list(status.get("kills") or []))


def event_kills(kube: api.Client, namespace: str, workload: str) -> int:
    """Kills named by the operator's OOMKillDetected events on the workload (`30 OOM kills: …` is 30)."""
    total = 0
    for ev in kube.list(f"/api/v1/namespaces/{namespace}/events"):
        if ev.get("reason") != "OOMKillDetected" or (ev.get("involvedObject") or {}).get("name") != workload:
            continue
        many = re.match(r"(\d+) OOM kills: ", ev.get("message") or "")
        total += int(many.group(1)) if many else 1
    return total


def metric_kills(metrics_text: str, namespace: str) -> int:
    """The operator's `oomtuner_oom_kills_total` for one namespace (one process' count)."""
    total = 0.0
    for line in metrics_text.splitlines():
        if line.startswith("oomtuner_oom_kills_total{") and f'namespace="{namespace}"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return int(total)


@dataclasses.dataclass
class Verdict:
    injected: int
    recorded: int
    lost: int
    double_counted: int
    detail: list[str]


def judge(truth: Truth, total: int, records: Iterable[dict[str, Any]] | None = None) -> Verdict:
    """The operator's count against the truth. With the operator's own records (when they hold every
    kill it counted) each kill is matched by pod, container and time; otherwise by the totals."""
    injected = len(truth.kills)
    known = {k.key for k in truth.kills}
    detail: list[str] = []
    records = list(records or [])
    ids = [r.get("id") for r in records]
    repeated = len(ids) - len(set(ids))
    if repeated:
        detail.append(f"{repeated} kill id(s) held twice in the ledger")
    if records and len(records) == total:
        seen = [(r.get("pod"), r.get("container"), r.get("at")) for r in records]
        matched = {s for s in seen if s in known}
        strangers = [s for s in seen if s not in known]
        if strangers:
            detail.append(f"{len(strangers)} recorded kill(s) never injected, e.g. {strangers[0]}")
        missing = sorted(known - matched)
        if missing:
            detail.append(f"{len(missing)} injected kill(s) not recorded, e.g. {missing[0]}")
        recorded = len(matched)
        return Verdict(injected=injected, recorded=recorded, lost=injected - recorded,
                       double_counted=total - recorded, detail=detail)
    recorded = min(total, injected)
    return Verdict(injected=injected, recorded=recorded, lost=max(0, injected - total),
                   double_counted=max(0, total - injected) + repeated, detail=detail)
