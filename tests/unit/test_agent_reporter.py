"""Naming the pod of a killed container and reporting it (oomtuner.agent.reporter, .loop, .metrics).

Real: the reporter, the event bodies it builds (read back with the operator's own
`child_kills.kill_from_event`), its retries and give-up, the Prometheus registry and its HTTP
endpoint, and the loop that ties watcher and reporter together.
Faked: the API server. Pods are in-memory (`FixedPods`) or come from a stand-in client that records
the request; events go to a recording sink or to a sink that fails on purpose. Cgroups are files in
tmp_path. The same code against a real API server and real kernel OOM kills is in tests/agent/.
"""

from __future__ import annotations

import datetime
import pathlib
import socket
import threading
import time
import urllib.request
from collections.abc import Mapping
from typing import Any

import pytest

from oomtuner.agent import cgroups, loop, metrics, reporter, watcher
from oomtuner.api import core, types
from oomtuner.domain import child_kills
from oomtuner.kube import api
from tests.agent import trees

MIB = 1 << 20
T0 = datetime.datetime(2025, 3, 1, 12, 0, tzinfo=datetime.timezone.utc)
SECOND = datetime.timedelta(seconds=1)
UID = "0b9a3c52-1d2e-4f5a-8b6c-7d8e9f0a1b2c"


def pod_body(*, name: str = "web-0", uid: str = UID, app_id: str | None = None, **extra: Any) -> dict[str, Any]:
    statuses = [{"name": "app", "restartCount": 0, "containerID": f"containerd://{app_id}"}] if app_id else []
    return {
        "metadata": {"name": name, "namespace": "shop", "uid": uid},
        "spec": {"nodeName": "node-a", "containers": [{"name": "app"}]},
        "status": {"containerStatuses": statuses, **extra},
    }


def increase(cid: str, *, new_kills: int = 1, oom_kill: int = 1, seen_at: datetime.datetime = T0,
             limit: int | None = 32 * MIB, uid: str = UID) -> watcher.Increase:
    cgroup = cgroups.ContainerCgroup(
        path=pathlib.Path("/x"), key=f"kubepods/burstable/pod{uid}/{cid}", pod_uid=uid, container_id=cid,
        qos_class=types.QOSClass.BURSTABLE, driver=cgroups.Driver.CGROUPFS,
    )
    counters = cgroups.Counters(version=cgroups.Version.V1, oom_kill=oom_kill, oom_group_kill=0, limit_hits=5, limit=limit)
    return watcher.Increase(cgroup=cgroup, counters=counters, new_kills=new_kills, limit_hits=5,
                            seen_at=seen_at, previous_at=None)


def kills_metric(pod: str, container: str = "app") -> float:
    return metrics.REGISTRY.get_sample_value(
        "oomtuner_agent_oom_kills_total", {"namespace": "shop", "pod": pod, "container": container}) or 0.0


def sample(name: str) -> float:
    return metrics.REGISTRY.get_sample_value(name) or 0.0


# ---- pods ------------------------------------------------------------------------------------------


def test_index_covers_every_kind_of_container_and_earlier_instances() -> None:
    ids = {name: trees.new_container_id() for name in ("app", "old-app", "init", "proxy", "debug")}
    pod = core.parse_pod({
        "metadata": {"name": "web-0", "namespace": "shop", "uid": UID},
        "spec": {"containers": [{"name": "app"}],
                 "initContainers": [{"name": "init"}, {"name": "proxy", "restartPolicy": "Always"}]},
        "status": {
            "containerStatuses": [{"name": "app", "containerID": f"containerd://{ids['app']}",
                                   "lastState": {"terminated": {"reason": "OOMKilled",
                                                                "containerID": f"containerd://{ids['old-app']}"}}}],
            "initContainerStatuses": [
                {"name": "init", "state": {"terminated": {"reason": "Completed", "containerID": f"cri-o://{ids['init']}"}}},
                {"name": "proxy", "containerID": f"docker://{ids['proxy']}"},
            ],
            "ephemeralContainerStatuses": [{"name": "debug", "containerID": f"containerd://{ids['debug']}"}],
        },
    })

    index = reporter.index_pods([pod])

    assert {cid: (ref.container, ref.container_type) for cid, ref in index.items()} == {
        ids["app"]: ("app", types.ContainerType.CONTAINER),
        ids["old-app"]: ("app", types.ContainerType.CONTAINER),
        ids["init"]: ("init", types.ContainerType.INIT),
        ids["proxy"]: ("proxy", types.ContainerType.SIDECAR),
        ids["debug"]: ("debug", types.ContainerType.EPHEMERAL),
    }
    assert {(ref.namespace, ref.pod, ref.pod_uid) for ref in index.values()} == {("shop", "web-0", UID)}


class StandInClient:
    """Answers `list` and `create` like api.Client, and records what was asked."""

    def __init__(self, pods: list[dict[str, Any]], *, create_error: Exception | None = None) -> None:
        self.pods = pods
        self.lists: list[tuple[str, Mapping[str, Any] | None]] = []
        self.created: list[tuple[str, Mapping[str, Any]]] = []
        self.create_error = create_error

    def list(self, path: str, *, query: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
        self.lists.append((path, query))
        return self.pods

    def create(self, path: str, body: Mapping[str, Any], *, dry_run: bool = False) -> dict[str, Any]:
        self.created.append((path, body))
        if self.create_error is not None:
            raise self.create_error
        return dict(body)


def test_node_pods_lists_the_nodes_pods_and_skips_bad_ones(caplog: pytest.LogCaptureFixture) -> None:
    cid = trees.new_container_id()
    client = StandInClient([pod_body(app_id=cid), {"metadata": {"name": "bad", "namespace": "x"}, "spec": "nonsense"}])
    resolver = reporter.NodePods(client, node_name="node-a")  # type: ignore[arg-type]

    assert resolver.lookup(cid) is None  # nothing is known before a refresh
    resolver.refresh()

    assert client.lists == [("/api/v1/pods", {"fieldSelector": "spec.nodeName=node-a"})]
    ref = resolver.lookup(cid)
    assert ref is not None and (ref.pod, ref.container) == ("web-0", "app")
    assert "does not parse" in caplog.text


def test_node_pods_remembers_pods_that_are_gone() -> None:
    cid = trees.new_container_id()
    client = StandInClient([pod_body(app_id=cid)])
    resolver = reporter.NodePods(client, node_name="node-a")  # type: ignore[arg-type]
    resolver.refresh()
    client.pods = []
    resolver.refresh()

    assert resolver.lookup(cid) is not None


def test_api_events_posts_to_the_namespace_and_takes_409_as_done() -> None:
    ok = StandInClient([])
    reporter.ApiEvents(ok).post({"metadata": {"name": "e", "namespace": "shop"}})  # type: ignore[arg-type]
    assert ok.created[0][0] == "/api/v1/namespaces/shop/events"

    exists = StandInClient([], create_error=api.Conflict(status=409, reason="AlreadyExists", body=None,
                                                         method="POST", path="/api/v1/namespaces/shop/events"))
    reporter.ApiEvents(exists).post({"metadata": {"name": "e", "namespace": "shop"}})  # type: ignore[arg-type]

    failing = StandInClient([], create_error=api.ApiError(status=403, reason="Forbidden", body=None,
                                                          method="POST", path="/api/v1/namespaces/shop/events"))
    with pytest.raises(api.ApiError):
        reporter.ApiEvents(failing).post({"metadata": {"name": "e", "namespace": "shop"}})  # type: ignore[arg-type]


# ---- the event -------------------------------------------------------------------------------------


def test_event_body_reads_back_as_the_kill() -> None:
    cid = trees.new_container_id()
    pod = core.parse_pod(pod_body(app_id=cid))
    [ref] = reporter.index_pods([pod]).values()
    seen = T0 + datetime.timedelta(microseconds=123456)

    body = reporter.build_event(ref=ref, increase=increase(cid, oom_kill=4, new_kills=2, seen_at=seen), node_name="node-a")

    assert body["metadata"] == {"name": f"web-0.{cid[:12]}.4", "namespace": "shop"}
    assert body["involvedObject"] == {"apiVersion": "v1", "kind": "Pod", "name": "web-0", "namespace": "shop",
                                      "uid": UID, "fieldPath": "spec.containers{app}"}
    assert (body["reason"], body["type"]) == ("OOMKillChildProcess", "Warning")
    assert body["source"] == {"component": "oomtuner-agent", "host": "node-a"}
    assert body["eventTime"] == "2025-03-01T12:00:00.123456Z"
    assert "Kernel OOM-killed 2 processes in container app" in body["message"]
    found = child_kills.kills_from_event(body, pod=pod)
    assert [(k.container, k.container_id, k.oom_kill_counter, k.limit_at_kill, k.at) for k in found] == [
        ("app", cid, 3, 32 * MIB, seen), ("app", cid, 4, 32 * MIB, seen)]
    assert all(k.hit_own_limit for k in found)


def test_event_name_fits_in_253_characters() -> None:
    name = reporter.event_name(pod="p" * 253, container_id="ab" * 32, counter=12345)

    assert len(name) == 253 and name.endswith(".abababababab.12345")


# ---- delivery ----------------------------------------------------------------------------------------


def test_delivers_event_and_counts_the_metric_once() -> None:
    cid = trees.new_container_id()
    sink = reporter.RecordedEvents()
    r = reporter.Reporter(resolver=reporter.FixedPods([core.parse_pod(pod_body(name="deliver-0", app_id=cid))]),
                          sink=sink, node_name="node-a")
    before = kills_metric("deliver-0")

    r.submit([increase(cid, new_kills=2, oom_kill=2)])
    assert r.deliver(now=T0) == 1

    assert r.pending == 0
    assert [b["involvedObject"]["name"] for b in sink.bodies] == ["deliver-0"]
    assert kills_metric("deliver-0") == before + 2
    assert r.deliver(now=T0 + SECOND) == 0 and len(sink.bodies) == 1


class LearningPods:
    """A resolver that learns a pod only on its n-th refresh, like a pod status written late."""

    def __init__(self, pod: core.Pod, *, known_after: int) -> None:
        self.pod = pod
        self.known_after = known_after
        self.refreshes = 0
        self._index: dict[str, reporter.ContainerRef] = {}

    def lookup(self, container_id: str) -> reporter.ContainerRef | None:
        return self._index.get(container_id)

    def refresh(self) -> None:
        self.refreshes += 1
        if self.refreshes == 1:
            raise api.ApiError(status=503, reason="Unavailable", body=None, method="GET", path="/api/v1/pods")
        if self.refreshes >= self.known_after:
            self._index = reporter.index_pods([self.pod])


def test_waits_for_the_pod_status_then_delivers() -> None:
    cid = trees.new_container_id()
    resolver = LearningPods(core.parse_pod(pod_body(name="late-0", app_id=cid)), known_after=3)
    sink = reporter.RecordedEvents()
    r = reporter.Reporter(resolver=resolver, sink=sink, node_name="node-a")
    r.submit([increase(cid)])

    assert r.deliver(now=T0) == 0  # the API server fails
    assert r.deliver(now=T0 + SECOND) == 0  # the pod does not name the container yet
    assert r.deliver(now=T0 + 2 * SECOND) == 1
    assert resolver.refreshes == 3
    assert [b["involvedObject"]["name"] for b in sink.bodies] == ["late-0"]
    r.submit([increase(cid, oom_kill=2)])
    r.deliver(now=T0 + 3 * SECOND)
    assert resolver.refreshes == 3  # a known container needs no listing


def test_gives_up_on_a_container_no_pod_claims(caplog: pytest.LogCaptureFixture) -> None:
    sink = reporter.RecordedEvents()
    r = reporter.Reporter(resolver=reporter.FixedPods([]), sink=sink, node_name="node-a",
                          give_up_after=datetime.timedelta(seconds=10))
    before = sample("oomtuner_agent_unattributed_oom_kills_total")
    r.submit([increase(trees.new_container_id(), new_kills=3, oom_kill=3)])

    r.deliver(now=T0 + 9 * SECOND)
    assert r.pending == 1
    r.deliver(now=T0 + 10 * SECOND)

    assert r.pending == 0 and sink.bodies == []
    assert sample("oomtuner_agent_unattributed_oom_kills_total") == before + 3
    assert "gave up naming the pod" in caplog.text


class FlakySink:
    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.bodies: list[Mapping[str, Any]] = []

    def post(self, body: Mapping[str, Any]) -> None:
        if self.failures:
            self.failures -= 1
            raise ConnectionRefusedError("connection refused")
        self.bodies.append(body)


def test_retries_posting_and_counts_the_kill_once() -> None:
    cid = trees.new_container_id()
    sink = FlakySink(failures=2)
    r = reporter.Reporter(resolver=reporter.FixedPods([core.parse_pod(pod_body(name="flaky-0", app_id=cid))]),
                          sink=sink, node_name="node-a")
    errors = sample("oomtuner_agent_event_errors_total")
    r.submit([increase(cid)])

    assert [r.deliver(now=T0 + n * SECOND) for n in range(3)] == [0, 0, 1]
    assert len(sink.bodies) == 1 and kills_metric("flaky-0") == 1
    assert sample("oomtuner_agent_event_errors_total") == errors + 2


def test_gives_up_posting_after_the_deadline() -> None:
    cid = trees.new_container_id()
    r = reporter.Reporter(resolver=reporter.FixedPods([core.parse_pod(pod_body(name="down-0", app_id=cid))]),
                          sink=FlakySink(failures=100), node_name="node-a", give_up_after=datetime.timedelta(seconds=5))
    r.submit([increase(cid)])
    r.deliver(now=T0)
    r.deliver(now=T0 + 5 * SECOND)

    assert r.pending == 0 and kills_metric("down-0") == 1  # the metric still counts the kill


# ---- the loop and /metrics ---------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_loop_reports_a_rise_and_metrics_are_served(tmp_path: pathlib.Path) -> None:
    base = trees.hierarchy(tmp_path, "v2")
    cid = trees.new_container_id()
    pod_dir = trees.pod_dir(base / "kubepods.slice", driver="systemd", qos="burstable", uid=UID)
    path = trees.write_container(trees.container_dir(pod_dir, driver="systemd", container_id=cid), version="v2",
                                 oom_kill=4, limit=64 * MIB)
    sink = reporter.RecordedEvents()
    sender = reporter.Reporter(resolver=reporter.FixedPods([core.parse_pod(pod_body(name="loop-0", app_id=cid))]),
                               sink=sink, node_name="node-a")
    stop = threading.Event()
    thread = threading.Thread(target=loop.run, kwargs={
        "poller": watcher.Watcher(root=tmp_path), "sender": sender, "interval": 0.05, "stop": stop})
    port = _free_port()
    metrics.serve(port, addr="127.0.0.1")
    thread.start()
    try:
        time.sleep(0.2)  # a few polls: the baseline (4 old kills) is not reported
        assert sink.bodies == []
        trees.write_container(path, version="v2", oom_kill=5, limit_hits=1, limit=64 * MIB)
        deadline = time.monotonic() + 5
        while not sink.bodies and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(0.2)
    finally:
        stop.set()
        thread.join(timeout=5)
    assert not thread.is_alive()

    assert len(sink.bodies) == 1
    facts = child_kills.parse_message(sink.bodies[0]["message"])
    assert facts is not None and (facts.oom_kill, facts.new_kills, facts.limit, facts.hit_limit) == (5, 1, 64 * MIB, True)
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    assert 'oomtuner_agent_oom_kills_total{container="app",namespace="shop",pod="loop-0"} 1.0' in text
    assert "oomtuner_agent_cgroups_watched 1.0" in text


def test_loop_survives_a_failing_poll(caplog: pytest.LogCaptureFixture) -> None:
    class Broken(watcher.Watcher):
        def poll(self, *, now: datetime.datetime) -> list[watcher.Increase]:
            self.calls = getattr(self, "calls", 0) + 1
            raise RuntimeError("boom")

    broken = Broken(root=pathlib.Path("/nowhere"))
    stop = threading.Event()
    before = sample("oomtuner_agent_poll_errors_total")
    thread = threading.Thread(target=loop.run, kwargs={
        "poller": broken, "sender": reporter.Reporter(resolver=reporter.FixedPods([]), sink=reporter.RecordedEvents(),
                                                      node_name="n"),
        "interval": 0.02, "stop": stop})
    thread.start()
    time.sleep(0.2)
    stop.set()
    thread.join(timeout=5)

    assert broken.calls >= 3
    assert sample("oomtuner_agent_poll_errors_total") >= before + 3
    assert "poll failed" in caplog.text


def test_a_pods_series_go_when_the_pod_is_gone(tmp_path: pathlib.Path) -> None:
    """Pod churn does not pile up series: once a pod's cgroups are gone from the node (and no report of
    it waits), its series leave the kill metric; the pods still there keep theirs."""
    base = trees.hierarchy(tmp_path, "v2")
    gone_uid, kept_uid = "11111111-2222-3333-4444-555555555555", "66666666-7777-8888-9999-000000000000"
    paths, pods = {}, []
    for name, uid in (("churn-gone", gone_uid), ("churn-kept", kept_uid)):
        cid = trees.new_container_id()
        pod_dir = trees.pod_dir(base / "kubepods.slice", driver="systemd", qos="burstable", uid=uid)
        paths[name] = trees.write_container(trees.container_dir(pod_dir, driver="systemd", container_id=cid), version="v2",
                                            oom_kill=0, limit=64 * MIB)
        pods.append(core.parse_pod(pod_body(name=name, uid=uid, app_id=cid)))
    poller = watcher.Watcher(root=tmp_path)
    sender = reporter.Reporter(resolver=reporter.FixedPods(pods), sink=reporter.RecordedEvents(), node_name="node-a")
    loop.tick(poller=poller, sender=sender, now=T0)
    for path in paths.values():
        trees.write_container(path, version="v2", oom_kill=1, limit=64 * MIB)
    loop.tick(poller=poller, sender=sender, now=T0 + SECOND)
    assert (kills_metric("churn-gone"), kills_metric("churn-kept")) == (1.0, 1.0)
    assert poller.pod_uids == {gone_uid, kept_uid}

    import shutil

    shutil.rmtree(paths["churn-gone"].parent)  # the pod's cgroup directory, as the kubelet removes it
    loop.tick(poller=poller, sender=sender, now=T0 + 2 * SECOND)
    assert poller.pod_uids == {kept_uid}
    names = {s.labels.get("pod") for family in metrics.REGISTRY.collect() for s in family.samples
             if s.name == "oomtuner_agent_oom_kills_total"}
    assert "churn-gone" not in names and "churn-kept" in names
    assert kills_metric("churn-kept") == 1.0


def test_a_gone_pod_with_a_waiting_report_keeps_its_series() -> None:
    failing = reporter.Reporter(resolver=reporter.FixedPods([core.parse_pod(pod_body(name="waits-0", app_id="c" * 64))]),
                                sink=FlakySink(failures=100), node_name="node-a")
    failing.submit([increase("c" * 64)])
    failing.deliver(now=T0)
    assert kills_metric("waits-0") == 1.0 and failing.pending == 1
    assert failing.forget_gone_pods(frozenset()) == 0 and kills_metric("waits-0") == 1.0
