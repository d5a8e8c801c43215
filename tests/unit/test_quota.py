"""ResourceQuota headroom: the room quotas leave each pod, their scopes, the requests that follow the
limit, quotas that cannot be used, and the operator reading quotas (cached, failures logged once).

Quotas are plain dicts as the API server returns them; the recommendations come from the real
`recommend.recommend_container`. Only the API client of the operator is faked (a list of answers per
path). hypothesis checks the promises for every input: reading quotas never raises, the room is the
least (hard − used) / pods over the quotas that apply, and a recommendation capped by it fits the quota.
"""

from __future__ import annotations

import datetime
import logging
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from oomtuner.api import core, policy, types, workloads
from oomtuner.domain import caps as domain_caps
from oomtuner.domain import kills, quota, recommend, workload
from oomtuner.kube import api
from oomtuner.services import caps as caps_service
from oomtuner.services import nodes as nodes_service
from tests.fakes import FakeApi

MI = 1024**2
GI = 1024**3
KEEP_RATIO = types.RequestPolicy.KEEP_RATIO
EQUALS_LIMIT = types.RequestPolicy.EQUALS_LIMIT
UNCHANGED = types.RequestPolicy.UNCHANGED
FROM_USAGE = types.RequestPolicy.FROM_USAGE
PLAIN = core.parse_pod({"spec": {"containers": [{"name": "app"}]}})


def rq(name: str = "mem", *, hard: dict[str, Any] | None = None, used: dict[str, Any] | None = None,
       status_hard: dict[str, Any] | None = None, synced: bool = True, **spec: Any) -> dict[str, Any]:
    """A ResourceQuota body; `synced` gives it the status the resourcequota controller writes."""
    hard = {"limits.memory": "1Gi"} if hard is None else hard
    body: dict[str, Any] = {"apiVersion": "v1", "kind": "ResourceQuota",
                            "metadata": {"name": name, "namespace": "shop"}, "spec": {"hard": hard, **spec}}
    if synced:
        body["status"] = {"hard": hard if status_hard is None else status_hard,
                          "used": {k: "0" for k in hard} if used is None else used}
    return body


def template(**spec: Any) -> core.Pod:
    return core.parse_pod({"spec": {"containers": [{"name": "app"}], **spec}})


def app(request: int | None = 128 * MI, limit: int | None = 256 * MI, name: str = "app") -> recommend.ContainerResources:
    return recommend.ContainerResources(name=name, type=types.ContainerType.CONTAINER, request=request, limit=limit)


# ---- the room -------------------------------------------------------------------------------------


def test_free_room_is_shared_by_the_pods_and_rounded_down_to_a_mib() -> None:
    room = quota.headroom([rq(used={"limits.memory": "768Mi"})], pods=2, template=PLAIN)
    assert room.limits == quota.Room(quota="shop/mem", resource="limits.memory", hard=GI, used=768 * MI, pods=2,
                                     per_pod=128 * MI)
    assert room.requests is None and room.skipped == ()
    assert str(room.limits) == "ResourceQuota shop/mem limits.memory: hard 1Gi − used 768Mi over 2 pod(s) = 128Mi per pod"
    # 100Mi over 3 pods is 33.3Mi each: 33Mi, so the capped limits stay whole MiBs
    room = quota.headroom([rq(used={"limits.memory": "924Mi"})], pods=3, template=PLAIN)
    assert room.limits is not None and room.limits.per_pod == 33 * MI


@pytest.mark.parametrize(
    ("quotas", "expected"),
    [
        ([rq("a", used={"limits.memory": "512Mi"}), rq("b", hard={"limits.memory": "2Gi"}, used={"limits.memory": "1920Mi"})],
         ("shop/b", 128 * MI)),
        # used above hard (the quota was lowered under running pods): no room, never a negative one
        ([rq(used={"limits.memory": "1100Mi"})], ("shop/mem", 0)),
        # a lowered spec.hard counts before the controller copies it into status.hard
        ([rq(hard={"limits.memory": "600Mi"}, status_hard={"limits.memory": "1Gi"}, used={"limits.memory": "512Mi"})],
         ("shop/mem", 88 * MI)),
        # and a status.hard that is still lower than a raised spec.hard is what admission checks
        ([rq(hard={"limits.memory": "2Gi"}, status_hard={"limits.memory": "1Gi"}, used={"limits.memory": "512Mi"})],
         ("shop/mem", 512 * MI)),
        # quantities in any form the API server accepts
        ([rq(hard={"limits.memory": "2G"}, used={"limits.memory": 1_000_000_000})], ("shop/mem", 953 * MI)),
    ],
)
def test_the_quota_with_the_least_room_wins(quotas: list[dict[str, Any]], expected: tuple[str, int]) -> None:
    room = quota.headroom(quotas, pods=1, template=PLAIN)
    assert room.limits is not None and (room.limits.quota, room.limits.per_pod) == expected


def test_quotas_without_memory_bound_nothing() -> None:
    room = quota.headroom([rq(hard={"requests.cpu": "4", "pods": "10"}), rq("objects", hard={"count/configmaps": "5"})],
                          pods=1, template=PLAIN)
    assert room == quota.Headroom()
    assert quota.headroom([], pods=1, template=PLAIN) == quota.Headroom()


def test_requests_memory_and_memory_are_the_same_resource() -> None:
    room = quota.headroom([rq("r", hard={"requests.memory": "1Gi"}, used={"requests.memory": "900Mi"}),
                           rq("m", hard={"memory": "1Gi"}, used={"memory": "1000Mi"})], pods=1, template=PLAIN)
    assert room.limits is None
    assert room.requests is not None and (room.requests.quota, room.requests.resource, room.requests.per_pod) == (
        "shop/m", "memory", 24 * MI)


def test_zero_or_negative_pods_count_as_one() -> None:
    for pods in (0, -3):
        room = quota.headroom([rq(used={"limits.memory": "768Mi"})], pods=pods, template=PLAIN)
        assert room.limits is not None and room.limits.per_pod == 256 * MI and room.limits.pods == 1


# ---- quotas that cannot be used ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        (rq(synced=False), "ResourceQuota shop/mem: status.used.limits.memory is not reported yet"),
        ({**rq(), "status": {}}, "ResourceQuota shop/mem: status.used.limits.memory is not reported yet"),
        ({**rq(), "status": {"hard": {"limits.memory": "1Gi"}}}, "status.used.limits.memory is not reported yet"),
        (rq(hard={"limits.memory": "12Qi"}), 'ResourceQuota shop/mem: spec.hard.limits.memory: invalid quantity "12Qi"'),
        (rq(status_hard={"limits.memory": "1.2.3"}), 'status.hard.limits.memory: invalid quantity "1.2.3"'),
        (rq(used={"limits.memory": "lots"}), 'ResourceQuota shop/mem: status.used.limits.memory: invalid quantity "lots"'),
        # one bad resource makes the whole quota suspect
        (rq(hard={"requests.memory": "1Gi", "limits.memory": "1Gi"},
            used={"requests.memory": "12Qi", "limits.memory": "0"}), "status.used.requests.memory"),
        ({**rq(), "spec": {"hard": ["limits.memory"]}}, "ResourceQuota shop/mem: spec.hard: "),
        ({**rq(), "spec": {"hard": {"limits.memory": True}}}, "ResourceQuota shop/mem: spec.hard.limits.memory: "),
        ({**rq(), "status": "synced"}, "ResourceQuota shop/mem: status: "),
        ("not an object", "ResourceQuota: expected an object, got str"),  # type: ignore[dict-item]
    ],
)
def test_a_quota_that_cannot_be_used_is_skipped_and_named(body: dict[str, Any], problem: str) -> None:
    good = rq("other", hard={"limits.memory": "2Gi"}, used={"limits.memory": "1Gi"})
    room = quota.headroom([body, good], pods=1, template=PLAIN)
    assert room.limits is not None and room.limits.quota == "shop/other" and room.requests is None
    (skipped,) = room.skipped
    assert problem in skipped and skipped.endswith("no cap from it")


# ---- scopes -------------------------------------------------------------------------------------------


def _selector(scope: str, operator: str = "Exists", *values: str) -> dict[str, Any]:
    requirement: dict[str, Any] = {"scopeName": scope, "operator": operator}
    if values:
        requirement["values"] = list(values)
    return {"scopeSelector": {"matchExpressions": [requirement]}}


TERMINATING_POD = template(activeDeadlineSeconds=600)
HIGH = template(priorityClassName="high")


@pytest.mark.parametrize(
    ("spec", "pod", "admitted", "applies"),
    [
        ({}, PLAIN, False, True),
        ({"scopes": ["Terminating"]}, PLAIN, False, False),
        ({"scopes": ["Terminating"]}, TERMINATING_POD, False, True),
        ({"scopes": ["Terminating"]}, template(activeDeadlineSeconds=0), False, True),
        ({"scopes": ["NotTerminating"]}, PLAIN, False, True),
        ({"scopes": ["NotTerminating"]}, TERMINATING_POD, False, False),
        (_selector("Terminating"), TERMINATING_POD, False, True),
        (_selector("NotTerminating"), TERMINATING_POD, False, False),
        # a recommended pod has memory, so it is never BestEffort
        ({"scopes": ["BestEffort"]}, PLAIN, False, False),
        ({"scopes": ["NotBestEffort"]}, PLAIN, False, True),
        # every scope must match
        ({"scopes": ["NotBestEffort", "Terminating"]}, PLAIN, False, False),
        ({"scopes": ["NotBestEffort", "NotTerminating"], **_selector("PriorityClass", "In", "high")}, HIGH, False, True),
        # PriorityClass, decided from the template's class
        (_selector("PriorityClass", "In", "high", "urgent"), HIGH, False, True),
        (_selector("PriorityClass", "In", "low"), HIGH, False, False),
        (_selector("PriorityClass", "NotIn", "low"), HIGH, False, True),
        (_selector("PriorityClass", "NotIn", "high"), HIGH, False, False),
        (_selector("PriorityClass", "Exists"), HIGH, False, True),
        (_selector("PriorityClass", "DoesNotExist"), HIGH, False, False),
        # a template without a class may get the cluster's default one at admission: it may match anything
        (_selector("PriorityClass", "In", "low"), PLAIN, False, True),
        (_selector("PriorityClass", "Exists"), PLAIN, False, True),
        # an admitted pod without a class has none
        (_selector("PriorityClass", "In", "low"), PLAIN, True, False),
        (_selector("PriorityClass", "Exists"), PLAIN, True, False),
        (_selector("PriorityClass", "NotIn", "low"), PLAIN, True, True),
        (_selector("PriorityClass", "DoesNotExist"), PLAIN, True, True),
        # what cannot be decided here applies
        ({"scopes": ["CrossNamespacePodAffinity"]}, PLAIN, False, True),
        ({"scopes": ["SomeFutureScope"]}, PLAIN, False, True),
        (_selector("PriorityClass", "Near", "high"), HIGH, False, True),
        (_selector("Terminating", "DoesNotExist"), PLAIN, False, True),
    ],
)
def test_scopes_decide_whether_a_quota_charges_the_pods(spec: dict[str, Any], pod: core.Pod, admitted: bool,
                                                         applies: bool) -> None:
    body = rq(used={"limits.memory": "1000Mi"}, **spec)
    assert quota.applies(core.parse_resource_quota(body), template=pod, admitted=admitted) is applies
    room = quota.headroom([body], pods=1, template=pod, admitted=admitted)
    assert (room.limits is not None) is applies


# ---- the limit's headroom, through the request where it follows the limit ------------------------------


def _requests_room(per_pod: int) -> quota.Headroom:
    return quota.Headroom(requests=quota.Room(quota="shop/r", resource="requests.memory", hard=GI, used=GI - per_pod,
                                              pods=1, per_pod=per_pod))


@pytest.mark.parametrize(
    ("containers", "request_policy", "expected"),
    [
        # KeepRatio: a request half the limit grows by half the limit's growth
        ([app(128 * MI, 256 * MI)], KEEP_RATIO, 64 * MI),
        ([app(128 * MI, 256 * MI), app(256 * MI, 256 * MI, name="side")], KEEP_RATIO, 32 * MI),
        ([app(0, 256 * MI)], KEEP_RATIO, None),
        # EqualsLimit: the request first closes the gap to the limit
        ([app(128 * MI, 256 * MI)], EQUALS_LIMIT, 0),
        ([app(224 * MI, 256 * MI)], EQUALS_LIMIT, 0),
        ([app(240 * MI, 256 * MI)], EQUALS_LIMIT, 16 * MI),
        # the request stays, or comes from usage: the limit is not bound by the request room
        ([app(128 * MI, 256 * MI)], UNCHANGED, None),
        ([app(128 * MI, 256 * MI)], FROM_USAGE, None),
        # no request: the API server gives it one equal to the limit, whatever the policy
        ([app(None, 256 * MI)], UNCHANGED, 32 * MI),
        # no limit: nothing follows it
        ([app(128 * MI, None)], KEEP_RATIO, None),
    ],
)
def test_a_requests_quota_bounds_the_limit_the_request_follows(
    containers: list[recommend.ContainerResources], request_policy: types.RequestPolicy, expected: int | None
) -> None:
    assert quota.limit_headroom(_requests_room(32 * MI), containers=containers, request_policy=request_policy) == expected


def test_the_limits_room_and_the_requests_room_both_bound_the_limit() -> None:
    room = quota.headroom([rq("l", used={"limits.memory": "1000Mi"}),
                           rq("r", hard={"requests.memory": "1Gi"}, used={"requests.memory": "1016Mi"})],
                          pods=1, template=PLAIN)
    assert quota.limit_headroom(room, containers=[app()], request_policy=KEEP_RATIO) == 16 * MI  # 8Mi × 256/128
    assert quota.limit_headroom(room, containers=[app()], request_policy=UNCHANGED) == 24 * MI
    assert quota.limit_headroom(quota.Headroom(), containers=[app()], request_policy=KEEP_RATIO) is None


# ---- what the recommendation makes of it ------------------------------------------------------------------

T0 = datetime.datetime(2024, 5, 1, 10, tzinfo=datetime.timezone.utc)


def limit_kill(current: recommend.ContainerResources) -> kills.OOMKill:
    return kills.OOMKill(
        namespace="shop", pod="web-0", pod_uid="uid-1", container=current.name,
        container_type=types.ContainerType.CONTAINER, node="node-a", at=T0, started_at=T0 - datetime.timedelta(minutes=5),
        restart_count=0, exit_code=137, container_id=None, request=current.request, limit_at_kill=current.limit,
        qos_class=types.QOSClass.BURSTABLE, oom_score_adj=985, pod_memory_limit=None,
    )


def recommend_within(quotas: list[dict[str, Any]], *, current: recommend.ContainerResources, pods: int = 1,
                     request_policy: types.RequestPolicy = KEEP_RATIO) -> recommend.ContainerRecommendation:
    room = quota.headroom(quotas, pods=pods, template=PLAIN)
    cap = quota.limit_headroom(room, containers=[current], request_policy=request_policy)
    return recommend.recommend_container(current=current, kills=[limit_kill(current)],
                                         settings=policy.MemorySettings(requestPolicy=request_policy),
                                         caps=domain_caps.Caps(quota_headroom=cap))


def test_a_quota_with_little_room_caps_the_recommendation() -> None:
    result = recommend_within([rq(hard={"limits.memory": "300Mi"}, used={"limits.memory": "256Mi"})], current=app())
    assert (result.limit, result.request) == (300 * MI, 150 * MI)  # 256Mi + 44Mi, the request keeps its ratio
    assert result.phase == types.Phase.CAPPED and result.capped_by == "ResourceQuota headroom 44Mi"


def test_a_full_quota_leaves_the_limit_where_it_is() -> None:
    result = recommend_within([rq(hard={"limits.memory": "512Mi"}, used={"limits.memory": "600Mi"})], current=app())
    assert (result.limit, result.request) == (256 * MI, 128 * MI)
    assert result.phase == types.Phase.CAPPED and result.capped_by == "ResourceQuota headroom 0"


def test_a_roomy_quota_changes_nothing() -> None:
    result = recommend_within([rq(hard={"limits.memory": "8Gi"}, used={"limits.memory": "256Mi"})], current=app(), pods=4)
    assert result.limit == 384 * MI and result.phase == types.Phase.PENDING and result.capped_by is None


# ---- properties -------------------------------------------------------------------------------------------

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=12,
)
QUANTITY_TEXT = st.sampled_from(["0", "1Gi", "512Mi", "12Qi", "", "1e3", "-1Gi", "1.5Gi", "100m"])
RESOURCE = st.sampled_from(["limits.memory", "requests.memory", "memory", "requests.cpu", "pods"])
RESOURCE_LIST = st.dictionaries(RESOURCE, QUANTITY_TEXT | JSON, max_size=3)
SCOPES = st.lists(st.sampled_from(["Terminating", "NotTerminating", "BestEffort", "NotBestEffort", "Other"]), max_size=2)
MESSY_QUOTAS = st.fixed_dictionaries(
    {"metadata": st.fixed_dictionaries({"name": st.text(max_size=5)}) | JSON},
    optional={"spec": st.fixed_dictionaries({"hard": RESOURCE_LIST}, optional={"scopes": SCOPES | JSON}) | JSON,
              "status": st.fixed_dictionaries({}, optional={"hard": RESOURCE_LIST, "used": RESOURCE_LIST}) | JSON},
) | JSON


@settings(max_examples=300, deadline=None)
@given(bodies=st.lists(MESSY_QUOTAS, max_size=4), pods=st.integers(min_value=-2, max_value=50))
def test_reading_quotas_never_raises_and_never_gives_a_negative_room(bodies: list[Any], pods: int) -> None:
    room = quota.headroom(bodies, pods=pods, template=PLAIN)
    for found in (room.limits, room.requests):
        if found is not None:
            assert found.per_pod >= 0 and found.per_pod % MI == 0
    assert all(isinstance(line, str) and line for line in room.skipped)
    for request_policy in types.RequestPolicy:
        cap = quota.limit_headroom(room, containers=[app(), app(None, GI, name="b")], request_policy=request_policy)
        assert cap is None or cap >= 0


SIZES = st.integers(min_value=0, max_value=64 * GI)
SIMPLE_QUOTAS = st.lists(st.tuples(st.sampled_from(["limits.memory", "requests.memory", "memory"]), SIZES, SIZES),
                         max_size=5)


@settings(max_examples=300, deadline=None)
@given(quotas=SIMPLE_QUOTAS, pods=st.integers(min_value=1, max_value=100), more=st.integers(min_value=0, max_value=100))
def test_the_room_is_the_least_free_share_over_the_quotas(quotas: list[tuple[str, int, int]], pods: int, more: int) -> None:
    bodies = [rq(f"q{i}", hard={resource: str(hard)}, used={resource: str(used)})
              for i, (resource, hard, used) in enumerate(quotas)]
    room = quota.headroom(bodies, pods=pods, template=PLAIN)
    for bound, names in (("limits", {"limits.memory"}), ("requests", {"requests.memory", "memory"})):
        shares = [max(hard - used, 0) // pods // MI * MI for resource, hard, used in quotas if resource in names]
        found = getattr(room, bound)
        assert (found.per_pod if found is not None else None) == (min(shares) if shares else None)
    # the order of the quotas does not matter, more pods never leave more room each
    reordered = quota.headroom(bodies[::-1], pods=pods, template=PLAIN)
    assert [r and r.per_pod for r in (reordered.limits, reordered.requests)] == [
        r and r.per_pod for r in (room.limits, room.requests)]
    crowded = quota.headroom(bodies, pods=pods + more, template=PLAIN)
    for bound in ("limits", "requests"):
        before, after = getattr(room, bound), getattr(crowded, bound)
        assert (before is None) == (after is None)
        assert before is None or after.per_pod <= before.per_pod


MIB_SIZES = st.integers(min_value=1, max_value=8 * 1024).map(lambda n: n * MI)
# Free room mostly small enough to bind a bump of a few MiB to a few GiB.
FREE = st.integers(min_value=0, max_value=2 * GI) | SIZES


@settings(max_examples=300, deadline=None)
@given(limit=MIB_SIZES, share=st.fractions(min_value=0, max_value=1), limits_free=st.none() | FREE,
       requests_free=st.none() | FREE, pods=st.integers(min_value=1, max_value=10),
       request_policy=st.sampled_from([KEEP_RATIO, EQUALS_LIMIT, UNCHANGED]), no_request=st.booleans())
def test_a_recommendation_capped_by_the_room_fits_the_quota(
    limit: int, share: Any, limits_free: int | None, requests_free: int | None, pods: int,
    request_policy: types.RequestPolicy, no_request: bool,
) -> None:
    """A Limit kill's raised limit, and the request that follows it, fit in what the quotas leave."""
    request = None if no_request else int(limit * share) // MI * MI
    current = app(request, limit)
    quotas = []
    if limits_free is not None:
        quotas.append(rq("l", hard={"limits.memory": str(64 * GI)}, used={"limits.memory": str(64 * GI - limits_free)}))
    if requests_free is not None:
        quotas.append(rq("r", hard={"requests.memory": str(64 * GI)}, used={"requests.memory": str(64 * GI - requests_free)}))
    result = recommend_within(quotas, current=current, pods=pods, request_policy=request_policy)
    assert result.limit is not None
    if limits_free is not None:
        assert (result.limit - limit) * pods <= limits_free
    if requests_free is not None:
        before = limit if request is None else request  # what the API server charges for a missing request
        after = result.limit if result.request is None else result.request
        # EqualsLimit raises a lower request to the limit even when the limit cannot grow: no cap stops that
        gap = limit - before if request_policy == EQUALS_LIMIT else 0
        assert (after - before - gap) * pods <= requests_free


# ---- the workload's pods -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "body", "pods"),
    [
        ("Deployment", {"spec": {"replicas": 3}}, 3),
        ("Deployment", {"spec": {}}, 1),
        ("StatefulSet", {"spec": {"replicas": 0}}, 0),
        ("ReplicaSet", {"spec": {"replicas": None}}, 1),
        ("Deployment", {"spec": {"replicas": "3"}}, None),
        ("Deployment", {"spec": {"replicas": True}}, None),
        ("Job", {"spec": {"parallelism": 4}}, 4),
        ("Job", {}, 1),
        ("CronJob", {"spec": {"jobTemplate": {"spec": {"parallelism": 2}}}}, 2),
        ("DaemonSet", {"status": {"desiredNumberScheduled": 7}}, 7),
        ("DaemonSet", {"spec": {}}, None),
        ("Pod", {"spec": {}}, 1),
        ("Widget", {"spec": {"replicas": 2}}, None),
    ],
)
def test_desired_pods_per_kind(kind: str, body: dict[str, Any], pods: int | None) -> None:
    assert workload.desired_pods(workloads.parse({"kind": kind, **body})) == pods


def test_a_workload_that_cannot_be_read_says_which_field() -> None:
    with pytest.raises(core.InvalidObject, match="CronJob .*spec.jobTemplate"):
        workloads.parse({"kind": "CronJob", "metadata": {"name": "nightly"}, "spec": {"jobTemplate": "broken"}})


# ---- the operator reads the quotas (services.caps on the fake API server) ---------------------------


QUOTAS = "/api/v1/namespaces/shop/resourcequotas"


def _web(replicas: int = 2) -> workload.Workload:
    return workload.from_body({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "namespace": "shop"},
        "spec": {"replicas": replicas, "template": {"spec": {"containers": [
            {"name": "app", "resources": {"requests": {"memory": "128Mi"}, "limits": {"memory": "256Mi"}}}]}}},
    })


class Clock:
    """A monotonic clock the test moves."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _quotas(*bodies: dict[str, Any]) -> FakeApi:
    return FakeApi({f"{QUOTAS}/{b['metadata']['name']}": b for b in bodies})


def _caps(client: FakeApi, clock: Clock | None = None) -> caps_service.Caps:
    return caps_service.Caps(client, nodes=nodes_service.Nodes(client), clock=clock or Clock())  # type: ignore[arg-type]


def test_the_operator_caps_by_the_quota_and_lists_quotas_once_per_burst() -> None:
    client, clock = _quotas(rq(used={"limits.memory": "512Mi"})), Clock()
    caps = _caps(client, clock)
    assert caps.for_workload(_web(replicas=2), None).quota_headroom == 256 * MI
    assert caps.for_workload(_web(replicas=4), None).quota_headroom == 128 * MI  # the same list, another workload
    assert client.count(f"LIST {QUOTAS}") == 1
    # once the cache has expired, a changed quota is seen
    client.put(f"{QUOTAS}/mem", rq(used={"limits.memory": "1000Mi"}))
    clock.now += caps_service.RESOURCE_QUOTA_TTL
    assert caps.for_workload(_web(replicas=2), None).quota_headroom == 12 * MI
    assert client.count(f"LIST {QUOTAS}") == 2


def test_the_request_policy_of_the_policy_decides_how_a_requests_quota_bounds_the_limit() -> None:
    caps = _caps(_quotas(rq(hard={"requests.memory": "1Gi"}, used={"requests.memory": "992Mi"})))
    chosen = policy.parse({"apiVersion": "oomtuner.dev/v1alpha1", "kind": "OOMPolicy",
                           "metadata": {"name": "p", "namespace": "shop"}, "spec": {"memory": {"requestPolicy": "Unchanged"}}})
    assert caps.for_workload(_web(replicas=1), None).quota_headroom == 64 * MI  # KeepRatio: 32Mi × 256/128
    assert caps.for_workload(_web(replicas=1), chosen).quota_headroom is None


def test_a_failed_list_means_no_cap_and_one_warning(caplog: pytest.LogCaptureFixture) -> None:
    forbidden = api.ApiError(status=403, reason="Forbidden", method="GET", path=QUOTAS,
                             body={"message": 'resourcequotas is forbidden: cannot list resource "resourcequotas"'})
    client, clock = FakeApi(), Clock()
    client.fail["/api/v1/namespaces/"] = lambda method, path: forbidden if path.endswith("/resourcequotas") else None
    caps = _caps(client, clock)
    with caplog.at_level(logging.WARNING, logger="oomtuner.services.caps"):
        for _ in range(3):
            assert caps.for_workload(_web(), None).quota_headroom is None
            clock.now += caps_service.RESOURCE_QUOTA_TTL
        assert caps.for_workload(workload.from_body(_web_body("other")), None).quota_headroom is None
    warnings = [r.getMessage() for r in caplog.records if "ResourceQuotas" in r.getMessage()]
    assert len(warnings) == 1 and "cannot list ResourceQuotas in shop" in warnings[0] and "403" in warnings[0]
    assert client.count(f"LIST {QUOTAS}") == 3


def _web_body(namespace: str) -> dict[str, Any]:
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "namespace": namespace},
            "spec": {"template": {"spec": {"containers": [{"name": "app", "resources": {"limits": {"memory": "256Mi"}}}]}}}}


def test_a_quota_that_cannot_be_used_is_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    caps = _caps(_quotas(rq(hard={"limits.memory": "12Qi"}), rq("new", synced=False)))
    with caplog.at_level(logging.WARNING, logger="oomtuner.services.caps"):
        for _ in range(3):
            assert caps.for_workload(_web(), None).quota_headroom is None
    warnings = sorted(r.getMessage() for r in caplog.records)
    assert len(warnings) == 2
    assert 'ResourceQuota shop/mem: spec.hard.limits.memory: invalid quantity "12Qi"' in warnings[0]
    assert "ResourceQuota shop/new: status.used.limits.memory is not reported yet" in warnings[1]


def test_a_daemonset_not_counted_yet_shares_the_room_with_a_pod_on_every_known_node() -> None:
    client = _quotas(rq(used={"limits.memory": "512Mi"}))
    nodes = nodes_service.Nodes(client)  # type: ignore[arg-type]
    for node in ("a", "b", "c", "d"):
        nodes.update(core.parse_node({"metadata": {"name": node},
                                          "status": {"capacity": {"memory": "16Gi"}, "allocatable": {"memory": "16Gi"}}}))
    caps = caps_service.Caps(client, nodes=nodes)  # type: ignore[arg-type]
    daemons = workload.from_body({**_web_body("shop"), "kind": "DaemonSet"})
    assert daemons.replicas is None
    assert caps.for_workload(daemons, None).quota_headroom == 128 * MI
