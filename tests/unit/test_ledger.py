"""The kill ledger in a recommendation's status: each kill counted once, capped, restart-safe.
Pure domain logic."""

from __future__ import annotations

import datetime

from oomtuner.api import recommendation, types
from oomtuner.domain import classify, kills, ledger

T0 = datetime.datetime(2026, 11, 26, 10, 0, tzinfo=datetime.timezone.utc)


def _kill(minute: int, *, container: str = "app", uid: str = "u1", limit: int | None = 256 << 20) -> kills.OOMKill:
    return kills.OOMKill(
        namespace="ns", pod="p", pod_uid=uid, container=container, container_type=types.ContainerType.CONTAINER,
        node="n", at=T0 + datetime.timedelta(minutes=minute), started_at=T0, restart_count=minute, exit_code=137,
        container_id=None, request=128 << 20, limit_at_kill=limit, qos_class=types.QOSClass.BURSTABLE,
        oom_score_adj=990, pod_memory_limit=None,
    )


def _classified(k: kills.OOMKill) -> ledger.Classified:
    return ledger.Classified(kill=k, classification=types.Classification.LIMIT, reason="hit its limit")


def test_new_kills_are_counted_once() -> None:
    first = [_kill(1), _kill(2)]
    records = ledger.append([], [_classified(k) for k in first])
    assert ledger.unseen(records, first) == []
    again = [_kill(2), _kill(3), _kill(3)]
    assert [k.at for k in ledger.unseen(records, again)] == [_kill(3).at]


def test_record_round_trip_keeps_what_leak_detection_needs() -> None:
    k = _kill(7)
    record = ledger.to_record(_classified(k))
    back = ledger.from_record(record, namespace="ns")
    assert back.kill.identity == k.identity
    assert (back.kill.at, back.kill.started_at, back.kill.limit_at_kill) == (k.at, k.started_at, k.limit_at_kill)
    assert back.classification == types.Classification.LIMIT


def test_capped_ledger_does_not_recount_old_kills() -> None:
    capacity = recommendation.MAX_KILLS
    all_kills = [_kill(i) for i in range(capacity + 5)]
    records = ledger.append([], [_classified(k) for k in all_kills], capacity=capacity)
    assert len(records) == capacity
    assert records[-1].id == all_kills[-1].identity
    # The five oldest fell out of the ledger, but are older than everything kept: still seen.
    assert ledger.unseen(records, all_kills[:5], capacity=capacity) == []
    newer = _kill(capacity + 10)
    assert ledger.unseen(records, [newer], capacity=capacity) == [newer]


def test_identity_is_stable_between_state_and_last_state() -> None:
    a = _kill(3)
    b = kills.OOMKill(**{**a.__dict__, "restart_count": a.restart_count + 1})
    assert a.identity == b.identity


def test_agent_kill_and_status_kill_of_one_restart_count_once() -> None:
    from oomtuner.domain import child_kills

    status_kill = _kill(5)
    child = child_kills.ChildOOMKill(**{**status_kill.__dict__, "at": status_kill.at + datetime.timedelta(seconds=2)},
                                     oom_kill_counter=1, hit_own_limit=True)
    assert child.identity != status_kill.identity
    # Agent first, then the pod status.
    records = ledger.append([], [_classified(child)])
    assert ledger.unseen(records, [status_kill]) == []
    # Pod status first, then the agent.
    records = ledger.append([], [_classified(status_kill)])
    assert ledger.unseen(records, [child]) == []
    # A status kill long after the agent's is another kill.
    later = _kill(30)
    assert ledger.unseen(ledger.append([], [_classified(child)]), [later]) == [later]


def test_a_culprit_finding_becomes_the_kill_records_culprit() -> None:
    found = classify.Culprit(namespace="ns", pod="hog", container="app", usage_bytes=1 << 30, request_bytes=128 << 20,
                             excess_bytes=(1 << 30) - (128 << 20))
    record = ledger.culprit_record(classify.CulpritFinding(culprit=found, reason="likely culprit: ns/hog/app uses 1Gi"))
    assert record == recommendation.Culprit(namespace="ns", pod="hog", container="app", usage="1Gi", request="128Mi",
                                            reason="likely culprit: ns/hog/app uses 1Gi")
    nobody = ledger.culprit_record(classify.no_culprit("no usage data: down"))
    assert nobody.model_dump(exclude_none=True) == {"reason": "no culprit named: no usage data: down"}
