"""Prometheus fails under the operator: down, hung, dripping a byte a second, answering garbage, or
answering 200 MB.

Real: the lab's API server, `oomtuner run` as a process with its Prometheus client
(`OOMTUNER_PROMETHEUS_TIMEOUT=3s`, `OOMTUNER_PROMETHEUS_BACKOFF=5s`). Played: the kubelet (kills
written into pod status) and Prometheus: a fake Prometheus HTTP API in the test process
(`tests.fake_prometheus`) that answers well, or misbehaves as each fault says.

For each fault: a kill while Prometheus misbehaves must be counted within the timeout and a few
seconds (the usage lookup runs under the workload's lock: a lookup that never ends would hold every
later kill of the workload), with the UsageHistory condition saying why there is no usage; once
Prometheus answers well again, kills every 2 s until one gets usage history — within the back-off
(5 s) and a kill.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.fake_prometheus import FakePrometheus
from tests.faults import truth as truth_mod
from tests.faults.scenario import Scenario

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(420)]

MI = 1024 * 1024
TIMEOUT_S = 3
BACKOFF_S = 5
MARGIN_S = 5  # beyond the timeout, for the status write and the watch


def _row(stat: str, value: int) -> dict[str, Any]:
    return {"metric": {"container": "app", "oomtuner_stat": stat}, "value": [time.time(), str(value)]}


def _garbage(fake: FakePrometheus) -> None:
    fake.body = b"\x1f\x8b\x08\x00 not JSON, not anything \xff\xfe"


# name, title, how to break it, what the condition must say
FAULTS: list[tuple[str, str, Callable[[FakePrometheus], None], str]] = [
    ("down", "Prometheus down (connection refused)", lambda f: f.refuse(), "Connection refused"),
    ("hung", "Prometheus hung (accepts, never answers)", lambda f: setattr(f, "delay", 600.0), "timed out"),
    ("drip", "Prometheus dripping one byte a second", lambda f: setattr(f, "drip", 1.0), "timed out"),
    ("garbage", "Prometheus answering garbage", _garbage, "JSONDecodeError"),
    ("huge", "Prometheus answering 200 MB", lambda f: setattr(f, "stream_bytes", 200 * MI), "AnswerTooLarge"),
]


def _usage_condition(s: Scenario) -> dict[str, Any]:
    rec = truth_mod.recommendation(s.kube, s.namespace, "deployment-web") or {}
    return next((c for c in (rec.get("status") or {}).get("conditions") or [] if c.get("type") == "UsageHistory"), {})


def _size(n: int) -> str:
    return f"{n / MI:.1f} MiB" if n >= MI else f"{n} bytes"


def _peak_rss(pid: int) -> str:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return line.split(":", 1)[1].strip()
    return "unknown"


def test_prometheus_down_hung_dripping_garbage_and_huge(faults: Scenario) -> None:
    s = faults
    fake = FakePrometheus(summary=[_row("peak", 200 * MI), _row("p95", 150 * MI)])
    try:
        op = s.operator(env={"OOMTUNER_PROMETHEUS_URL": fake.url, "OOMTUNER_PROMETHEUS_TIMEOUT": f"{TIMEOUT_S}s",
                             "OOMTUNER_PROMETHEUS_BACKOFF": f"{BACKOFF_S}s"})
        s.policy(mode="Recommend")
        pods = s.deployment(replicas=8)
        turn = [0]

        def next_pod() -> dict[str, Any]:
            turn[0] += 1
            return pods[turn[0] % len(pods)]

        warm = s.truth()
        warm.kill(next_pod())
        s.wait_counted(1, timeout=30)
        assert _usage_condition(s).get("status") == "True", f"the fake Prometheus is not used: {_usage_condition(s)}"
        failed = []
        for name, title, breaks, needle in FAULTS:
            result = _one_fault(s, fake, name=name, title=title, breaks=breaks, needle=needle, next_pod=next_pod,
                                pid=op.proc.pid if op.proc else 0)
            if result.failures:
                failed.append(result.message())
        assert not failed, "\n".join(failed)
    finally:
        fake.close()


def _one_fault(s: Scenario, fake: FakePrometheus, *, name: str, title: str, breaks: Callable[[FakePrometheus], None],
               needle: str, next_pod: Callable[[], dict[str, Any]], pid: int) -> Any:
    base = s.counted().total
    truth = s.truth()
    sent = fake.sent
    breaks(fake)
    kill = truth.kill(next_pod())
    assert kill is not None
    counted_at = s.wait_counted(base + 1, timeout=60)
    waited = counted_at - kill.written if counted_at else None
    during = _usage_condition(s)
    sent = fake.sent - sent
    problems = []
    if waited is None or waited > TIMEOUT_S + MARGIN_S:
        problems.append(f"the kill during the fault was counted after {waited if waited is None else round(waited, 1)}s, "
                        f"more than the {TIMEOUT_S}s timeout and {MARGIN_S}s")
    if during.get("status") != "False" or needle not in (during.get("message") or ""):
        problems.append(f"UsageHistory during the fault does not say {needle!r}: {during.get('status')} "
                        f"{during.get('reason')}: {during.get('message')}")
    if name == "down":
        fake.listen()
    fake.behave()
    ended = time.monotonic()
    recovered = None
    while time.monotonic() < ended + 30 and recovered is None:
        if truth.kill(next_pod()) is not None:
            s.wait_counted(base + len(truth.kills), timeout=15)
            if _usage_condition(s).get("status") == "True":
                recovered = time.monotonic()
        time.sleep(2)
    s.quiet(still=2)
    return s.report(
        f"prometheus-{name}", title, truth=truth, total=s.counted().total - base,
        recovery_s=recovered - ended if recovered else None,
        recovery_basis=f"from the fault's end until a kill gets usage history (back-off {BACKOFF_S} s, a kill every 2 s)",
        notes=[f"the kill during the fault was counted {waited:.1f}s after it" if waited is not None else
               "the kill during the fault was not counted within 60 s",
               f"UsageHistory then: {during.get('reason')}: {(during.get('message') or '')[:200]}",
               f"the fake sent {_size(sent)} during the fault; operator peak RSS {_peak_rss(pid)}"],
        failures=problems,
    )
