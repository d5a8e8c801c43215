"""The kill ledger in a recommendation's status: each kill counted once, exactly, across restarts,
bursts of any size and skewed clocks; the evidence records capped. Pure domain logic."""

from __future__ import annotations

import dataclasses
import datetime

import pytest

from oomtuner.api import recommendation, types
from oomtuner.domain import child_kills, classify, kills, ledger

T0 = datetime.datetime(2026, 11, 26, 10, 0, tzinfo=datetime.timezone.utc)


def _kill(minute: int, *, container: str = "app", uid: str = "u1", limit: int | None = 256 << 20,
          at: datetime.datetime | None = None) -> kills.OOMKill:
    return kills.OOMKill(
        namespace="ns", pod="p", pod_uid=uid, container=container, container_type=types.ContainerType.CONTAINER,
        node="n", at=at or T0 + datetime.timedelta(minutes=minute), started_at=T0, restart_count=minute, exit_code=137,
        container_id=None, request=128 << 20, limit_at_kill=limit, qos_class=types.QOSClass.BURSTABLE,
        oom_score_adj=990, pod_memory_limit=None,
    )


def _classified(k: kills.OOMKill) -> ledger.Classified:
    return ledger.Classified(kill=k, classification=types.Classification.LIMIT, reason="hit its limit")


def _status(*recorded: kills.OOMKill) -> recommendation.OOMRecommendationStatus:
    """A status that has counted `recorded` (oldest first), as the recorder writes it."""
    return recommendation.OOMRecommendationStatus(kills=ledger.append([], [_classified(k) for k in recorded]),
                                                  counted=ledger.count([], recorded))


def test_new_kills_are_counted_once() -> None:
    first = [_kill(1), _kill(2)]
    status = _status(*first)
    assert ledger.unseen(status, first) == []
    again = [_kill(2), _kill(3), _kill(3)]
    assert [k.at for k in ledger.unseen(status, again)] == [_kill(3).at]


def test_a_burst_of_any_size_in_one_second_is_counted_once_after_a_restart() -> None:
    """1,000 pods killed in the same second: the evidence keeps 20, the count keeps every pod."""
    burst = [_kill(0, uid=f"pod-{i}") for i in range(1000)]
    status = _status(*burst)
    assert len(status.kills) == recommendation.MAX_KILLS and len(status.counted) == 1000
    assert ledger.unseen(status, burst) == []  # a restart replays every pod's status: nothing new
    assert ledger.unseen(status, [_kill(1, uid="pod-7")]) == [_kill(1, uid="pod-7")]


@pytest.mark.parametrize("skew", [-3600, -300, 0, 300, 3600])
def test_a_node_clock_ahead_or_behind_loses_no_kill(skew: int) -> None:
    """Kills of many pods fill the evidence; a pod on a node whose clock is off by `skew` seconds is
    counted all the same, once."""
    status = _status(*[_kill(10, uid=f"pod-{i}") for i in range(50)])
    skewed = _kill(11, uid="late", at=T0 + datetime.timedelta(minutes=11, seconds=skew))
    assert ledger.unseen(status, [skewed]) == [skewed]
    counted = status.model_copy(update={"counted": ledger.count(status.counted, [skewed])})
    assert ledger.unseen(counted, [skewed]) == []


def test_a_container_keeps_its_two_newest_kills_which_is_all_its_status_can_show() -> None:
    kills_ = [_kill(m) for m in range(5)]
    counted = ledger.count([], kills_)
    (entry,) = counted
    assert entry.kills == [kills_[3].identity.split("/", 2)[2], kills_[4].identity.split("/", 2)[2]]
    status = recommendation.OOMRecommendationStatus(counted=counted)
    # the status shows the newest two (state and lastState): both counted; a new one is not
    assert ledger.unseen(status, kills_[3:]) == []
    assert ledger.unseen(status, [_kill(5)]) == [_kill(5)]


def test_the_agents_counter_counts_each_child_kill_once() -> None:
    base = _kill(5)
    child = [child_kills.ChildOOMKill(**{**base.__dict__, "container_id": "abc123abc123", "at": base.at},
                                      oom_kill_counter=n, hit_own_limit=True) for n in (1, 2, 3)]
    status = recommendation.OOMRecommendationStatus(counted=ledger.count([], child[:2]))
    assert ledger.unseen(status, child) == [child[2]]
    # a newer instance of the container starts its counter again
    fresh = child_kills.ChildOOMKill(**{**base.__dict__, "container_id": "def456def456", "at": base.at},
                                     oom_kill_counter=1, hit_own_limit=True)
    assert ledger.unseen(status, [fresh]) == [fresh]


def test_pods_that_are_gone_leave_the_record() -> None:
    counted = ledger.count([], [_kill(1, uid="a"), _kill(1, uid="b")])
    assert [c.podUID for c in ledger.prune(counted, gone={"a"})] == ["b"]


def test_a_recommendation_written_before_the_record_keeps_the_old_rule_once() -> None:
    """No `counted` yet (an older operator wrote it): a kill older than the oldest of a full ledger
    was counted."""
    capacity = recommendation.MAX_KILLS
    all_kills = [_kill(i) for i in range(capacity + 5)]
    legacy = recommendation.OOMRecommendationStatus(kills=ledger.append([], [_classified(k) for k in all_kills]))
    assert ledger.unseen(legacy, all_kills[:5]) == []
    newer = _kill(capacity + 10)
    assert ledger.unseen(legacy, [newer]) == [newer]


def test_record_round_trip_keeps_what_leak_detection_needs() -> None:
    k = _kill(7)
    record = ledger.to_record(_classified(k))
    back = ledger.from_record(record, namespace="ns")
    assert back.kill.identity == k.identity
    assert (back.kill.at, back.kill.started_at, back.kill.limit_at_kill) == (k.at, k.started_at, k.limit_at_kill)
    assert back.classification == types.Classification.LIMIT


def test_identity_is_stable_between_state_and_last_state() -> None:
    a = _kill(3)
    b = kills.OOMKill(**{**a.__dict__, "restart_count": a.restart_count + 1})
    assert a.identity == b.identity


def test_agent_kill_and_status_kill_of_one_restart_count_once() -> None:
    status_kill = _kill(5)
    child = child_kills.ChildOOMKill(**{**status_kill.__dict__, "at": status_kill.at + datetime.timedelta(seconds=2)},
                                     oom_kill_counter=1, hit_own_limit=True)
    assert child.identity != status_kill.identity
    # Agent first, then the pod status; pod status first, then the agent.
    assert ledger.unseen(_status(child), [status_kill]) == []
    assert ledger.unseen(_status(status_kill), [child]) == []
    # The same without the evidence records (a burst pushed them out): the per-container record decides.
    assert ledger.unseen(recommendation.OOMRecommendationStatus(counted=ledger.count([], [child])), [status_kill]) == []
    assert ledger.unseen(recommendation.OOMRecommendationStatus(counted=ledger.count([], [status_kill])), [child]) == []
    # A status kill long after the agent's is another kill.
    later = _kill(30)
    assert ledger.unseen(_status(child), [later]) == [later]


def test_a_culprit_finding_becomes_the_kill_records_culprit() -> None:
    found = classify.Culprit(namespace="ns", pod="hog", container="app", usage_bytes=1 << 30, request_bytes=128 << 20,
                             excess_bytes=(1 << 30) - (128 << 20))
    record = ledger.culprit_record(classify.CulpritFinding(culprit=found, reason="likely culprit: ns/hog/app uses 1Gi"))
    assert record == recommendation.Culprit(namespace="ns", pod="hog", container="app", usage="1Gi", request="128Mi",
                                            reason="likely culprit: ns/hog/app uses 1Gi")
    nobody = ledger.culprit_record(classify.no_culprit("no usage data: down"))
    assert nobody.model_dump(exclude_none=True) == {"reason": "no culprit named: no usage data: down"}


def _numbered(instance: int, minute: int, uid: str = "u1") -> kills.OOMKill:
    return dataclasses.replace(_kill(minute, uid=uid), instance=instance, restart_count=instance)


def test_kills_the_status_no_longer_shows_are_inferred_from_the_instance_numbers() -> None:
    """Counted up to instance 3; the operator was away while 4, 5 and 6 died: the status shows 5 and 6."""
    status = recommendation.OOMRecommendationStatus(counted=ledger.count([], [_numbered(3, 3)]))
    assert status.counted[0].instance == 3
    (gone,) = ledger.missed(status, [_numbered(5, 5), _numbered(6, 6)])
    assert (gone.instance, gone.at, gone.identity) == (4, None, "u1/app/restart-4")
    # Once counted, nothing is inferred again; a first sighting infers nothing.
    after = recommendation.OOMRecommendationStatus(counted=ledger.count(status.counted, [gone, _numbered(5, 5), _numbered(6, 6)]))
    assert after.counted[0].instance == 6 and ledger.missed(after, [_numbered(7, 7)]) == []
    assert ledger.missed(recommendation.OOMRecommendationStatus(), [_numbered(9, 9)]) == []
    # Another pod, or a container the status does not number, infers nothing either.
    assert ledger.missed(status, [_numbered(8, 8, uid="u2")]) == []
    assert ledger.missed(status, [_kill(8)]) == []
