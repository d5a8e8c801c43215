"""The kube layer against a real API server (the lab's, or the cluster KUBECONFIG names).

Real: kube-apiserver with the CRDs from crds/, the controller-manager (Deployments get ReplicaSets
and Pods, Jobs get Pods) and admission (ValidatingAdmissionPolicy for a dry-run rejection).
Nothing is faked; the operator process is not involved: these tests call owners, store, patching
and events directly.
"""

from __future__ import annotations

import threading
from typing import Any

import pytest

from oomtuner.api import recommendation, types
from oomtuner.domain import patch
from oomtuner.kube import api, events, owners, patching, store
from tests.e2e.kit import container, deployment, wait_for

pytestmark = pytest.mark.integration

MI = 1024 * 1024


def _pods(kube: api.Client, namespace: str, selector: str, count: int = 1) -> list[dict[str, Any]]:
    def found() -> list[dict[str, Any]] | None:
        pods = kube.list(f"/api/v1/namespaces/{namespace}/pods", query={"labelSelector": selector})
        return pods if len(pods) >= count else None

    return wait_for(found, timeout=60, what=f"pods {selector} in {namespace}")


def test_owner_resolution_for_every_kind(kube: api.Client, namespace: str) -> None:
    kube.create(f"/apis/apps/v1/namespaces/{namespace}/deployments", deployment("web"))
    pod = _pods(kube, namespace, "app=web")[0]
    chains = owners.Chains()
    wl = owners.resolve(kube, pod, chains=chains)
    assert (wl.kind, wl.name, wl.api_version) == ("Deployment", "web", "apps/v1")
    assert wl.uid and wl.template_labels == {"app": "web"}
    assert [c.name for c in wl.containers()] == ["app"]
    # The ReplicaSet → Deployment link is remembered: the second resolution reads the Deployment only.
    gets = api.REQUESTS.labels(verb="GET")
    before = gets._value.get()
    again = owners.resolve(kube, pod, chains=chains)
    assert gets._value.get() - before == 1
    assert (again.kind, again.name, again.uid) == (wl.kind, wl.name, wl.uid)

    labels = {"app": "db"}
    kube.create(f"/apis/apps/v1/namespaces/{namespace}/statefulsets", {
        "apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "db"},
        "spec": {"serviceName": "db", "replicas": 1, "selector": {"matchLabels": labels},
                 "template": {"metadata": {"labels": labels}, "spec": {"containers": [container()]}}}})
    assert owners.resolve(kube, _pods(kube, namespace, "app=db")[0]).display == "StatefulSet/db"

    labels = {"app": "agent"}
    kube.create(f"/apis/apps/v1/namespaces/{namespace}/daemonsets", {
        "apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": "agent"},
        "spec": {"selector": {"matchLabels": labels},
                 "template": {"metadata": {"labels": labels}, "spec": {
                     "containers": [container()],
                     "tolerations": [{"operator": "Exists"}]}}}})
    assert owners.resolve(kube, _pods(kube, namespace, "app=agent")[0]).display == "DaemonSet/agent"

    cron = kube.create(f"/apis/batch/v1/namespaces/{namespace}/cronjobs", {
        "apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": "nightly"},
        "spec": {"schedule": "0 3 * * *", "jobTemplate": {"spec": {"template": {
            "metadata": {"labels": {"app": "nightly"}},
            "spec": {"restartPolicy": "Never", "containers": [container()]}}}}}})
    # A run of the CronJob, as its controller would create it.
    kube.create(f"/apis/batch/v1/namespaces/{namespace}/jobs", {
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": "nightly-1", "ownerReferences": [{
            "apiVersion": "batch/v1", "kind": "CronJob", "name": "nightly", "uid": cron["metadata"]["uid"],
            "controller": True}]},
        "spec": {"template": {"metadata": {"labels": {"app": "nightly"}},
                              "spec": {"restartPolicy": "Never", "containers": [container()]}}}})
    wl = owners.resolve(kube, _pods(kube, namespace, "app=nightly")[0])
    assert wl.display == "CronJob/nightly"
    assert wl.patchable

    bare = kube.create(f"/api/v1/namespaces/{namespace}/pods", {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "solo", "labels": {"app": "solo"}},
        "spec": {"containers": [container()]}})
    wl = owners.resolve(kube, bare)
    assert wl.display == "Pod/solo" and not wl.patchable


def test_workload_reads_are_shared_for_their_ttl_and_fresh_reads_past_them(kube: api.Client, namespace: str) -> None:
    kube.create(f"/apis/apps/v1/namespaces/{namespace}/deployments", deployment("cache"))
    pod = _pods(kube, namespace, "app=cache")[0]
    now = [100.0]
    reads = owners.Workloads(kube, ttl=2.0, clock=lambda: now[0])
    gets = api.REQUESTS.labels(verb="GET")
    first = reads.of_pod(pod, kind="Deployment", name="cache")
    assert [c.limit for c in first.containers()] == [256 * MI]

    # Someone raises the limit; within the TTL the shared read (and no request) answers.
    path = f"/apis/apps/v1/namespaces/{namespace}/deployments/cache"

    def set_limit(value: str) -> None:
        kube.request("PATCH", path, content_type="application/strategic-merge-patch+json", body={
            "spec": {"template": {"spec": {"containers": [{"name": "app", "resources": {"limits": {"memory": value}}}]}}}})

    set_limit("512Mi")
    before = gets._value.get()
    now[0] += 1.9
    assert [c.limit for c in reads.of_pod(pod, kind="Deployment", name="cache").containers()] == [256 * MI]
    assert gets._value.get() == before
    # A patch is computed from `fresh`, which reads past the cache and refreshes it.
    fresh = reads.fresh(first)
    assert fresh is not None and [c.limit for c in fresh.containers()] == [512 * MI]
    assert [c.limit for c in reads.of_pod(pod, kind="Deployment", name="cache").containers()] == [512 * MI]

    # After the TTL, or once forgotten (after the operator's own patch), it is read again.
    set_limit("768Mi")
    now[0] += 2.1
    assert [c.limit for c in reads.of_pod(pod, kind="Deployment", name="cache").containers()] == [768 * MI]
    set_limit("1Gi")
    reads.forget(first)
    assert [c.limit for c in reads.of_pod(pod, kind="Deployment", name="cache").containers()] == [1024 * MI]

    # A deleted workload: `fresh` says so, and the pod stands in for it when recording.
    kube.delete(path)
    wait_for(lambda: kube.get_or_none(path) is None, timeout=30, what="the Deployment to go")
    assert reads.fresh(first) is None
    assert reads.of_pod(pod, kind="Deployment", name="cache").kind == "Pod"


def test_recommendation_is_created_once_owned_and_status_survives_races(kube: api.Client, namespace: str) -> None:
    dep = kube.create(f"/apis/apps/v1/namespaces/{namespace}/deployments", deployment("api"))
    target = recommendation.TargetRef(apiVersion="apps/v1", kind="Deployment", name="api")
    name = recommendation.name_for(kind="Deployment", name="api")
    first = store.ensure_recommendation(kube, namespace=namespace, name=name, target=target, owner_uid=dep["metadata"]["uid"])
    again = store.ensure_recommendation(kube, namespace=namespace, name=name, target=target, owner_uid=dep["metadata"]["uid"])
    assert first.metadata.uid == again.metadata.uid
    # Create-first finds the existing one through the refused create.
    posts = api.REQUESTS.labels(verb="POST")
    before = posts._value.get()
    third = store.ensure_recommendation(kube, namespace=namespace, name=name, target=target,
                                        owner_uid=dep["metadata"]["uid"], create_first=True)
    assert third.metadata.uid == first.metadata.uid and posts._value.get() - before == 1
    # ... and creates a missing one with a single request.
    other = recommendation.name_for(kind="Deployment", name="other")
    requests = sum(api.REQUESTS.labels(verb=v)._value.get() for v in ("GET", "POST"))
    created = store.ensure_recommendation(kube, namespace=namespace, name=other, target=target, owner_uid=None,
                                          create_first=True)
    assert created.metadata.name == other
    assert sum(api.REQUESTS.labels(verb=v)._value.get() for v in ("GET", "POST")) - requests == 1
    raw = kube.get(f"/apis/oomtuner.dev/v1alpha1/namespaces/{namespace}/oomrecommendations/{name}")
    assert raw["metadata"]["ownerReferences"][0]["uid"] == dep["metadata"]["uid"]
    assert raw["metadata"]["ownerReferences"][0]["kind"] == "Deployment"

    # Two writers race from the same stale copy; each change must survive.
    def add_kill(kill_id: str) -> None:
        def mutate(obj: recommendation.OOMRecommendation) -> store.Edit[None]:
            obj.status.kills.append(recommendation.Kill(id=kill_id, pod="p", container="app"))
            obj.status.totalKills = len(obj.status.kills)
            return store.Edit(obj, None)

        store.update_recommendation_status(kube, current=first, mutate=mutate)

    threads = [threading.Thread(target=add_kill, args=(f"k{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    final = store.get_recommendation(kube, namespace=namespace, name=name)
    assert final is not None
    assert sorted(k.id for k in final.status.kills) == ["k0", "k1", "k2", "k3"]
    assert final.status.totalKills == 4
    # The status subresource leaves the spec alone.
    assert final.spec.targetRef.name == "api" and final.spec.approved is None


def _changes() -> list[patch.MemoryChange]:
    return [patch.MemoryChange(container="app", type=types.ContainerType.CONTAINER, request=192 * MI, limit=384 * MI)]


def _template_memory(kube: api.Client, namespace: str, name: str) -> dict[str, Any]:
    dep = kube.get(f"/apis/apps/v1/namespaces/{namespace}/deployments/{name}")
    return dep["spec"]["template"]["spec"]["containers"][0]["resources"]


def test_apply_takes_over_fields_from_an_updating_manager(kube: api.Client, namespace: str) -> None:
    kube.request("POST", f"/apis/apps/v1/namespaces/{namespace}/deployments", body=deployment("web"),
                 query={"fieldManager": "some-script"})
    wl = owners.read_workload(kube, kind="Deployment", namespace=namespace, name="web")
    assert wl is not None
    out = patching.apply_memory(kube, target=wl, changes=_changes(), field_manager="oomtuner", respected_managers={"helm"})
    assert out.result == patching.Result.APPLIED, out.message
    res = _template_memory(kube, namespace, "web")
    assert res["limits"]["memory"] == "384Mi" and res["requests"]["memory"] == "192Mi"
    assert res["requests"]["cpu"] == "50m"  # untouched fields stay
    dep = kube.get(f"/apis/apps/v1/namespaces/{namespace}/deployments/web")
    assert any(m["manager"] == "oomtuner" and m["operation"] == "Apply" for m in dep["metadata"]["managedFields"])


def test_apply_does_not_fight_a_declaring_manager(kube: api.Client, namespace: str) -> None:
    body = deployment("web")
    kube.apply(f"/apis/apps/v1/namespaces/{namespace}/deployments/web", body, field_manager="helm")
    wl = owners.read_workload(kube, kind="Deployment", namespace=namespace, name="web")
    assert wl is not None
    out = patching.apply_memory(kube, target=wl, changes=_changes(), field_manager="oomtuner", respected_managers={"helm"})
    assert out.result == patching.Result.CONFLICT
    assert "helm" in out.managers and "helm" in out.message
    assert "384Mi" in out.patch_yaml and "kind: Deployment" in out.patch_yaml
    assert _template_memory(kube, namespace, "web")["limits"]["memory"] == "256Mi"


def test_dry_run_rejection_changes_nothing(kube: api.Client, namespace: str) -> None:
    policy_name = f"max-memory-{namespace}"
    kube.create("/apis/admissionregistration.k8s.io/v1/validatingadmissionpolicies", {
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": policy_name},
        "spec": {"failurePolicy": "Fail",
                 "matchConstraints": {"resourceRules": [{"apiGroups": ["apps"], "apiVersions": ["v1"],
                                                         "operations": ["UPDATE"], "resources": ["deployments"]}]},
                 "validations": [{"expression": "object.spec.template.spec.containers.all(c, !has(c.resources.limits) || "
                                                "!('memory' in c.resources.limits) || quantity(c.resources.limits.memory)"
                                                ".compareTo(quantity('300Mi')) <= 0)",
                                  "message": "memory limit above 300Mi is not allowed here"}]}})
    kube.create("/apis/admissionregistration.k8s.io/v1/validatingadmissionpolicybindings", {
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": {"name": policy_name},
        "spec": {"policyName": policy_name, "validationActions": ["Deny"],
                 "matchResources": {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}}}}})
    try:
        kube.create(f"/apis/apps/v1/namespaces/{namespace}/deployments", deployment("web"))
        wl = owners.read_workload(kube, kind="Deployment", namespace=namespace, name="web")
        assert wl is not None

        probe = patch.apply_body(api_version="apps/v1", kind="Deployment", name="web", namespace=namespace, changes=_changes())

        def policy_active() -> bool:
            try:
                kube.apply(f"/apis/apps/v1/namespaces/{namespace}/deployments/web", probe, field_manager="probe",
                           dry_run=True, force=True)
            except api.ApiError as exc:
                return "300Mi" in exc.message
            return False

        wait_for(policy_active, timeout=30, what="the admission policy to take effect")
        out = patching.apply_memory(kube, target=wl, changes=_changes(), field_manager="oomtuner", respected_managers=set())
        assert out.result == patching.Result.REJECTED
        assert "300Mi" in out.message and out.message.startswith("dry run rejected")
        assert _template_memory(kube, namespace, "web")["limits"]["memory"] == "256Mi"
    finally:
        kube.delete(f"/apis/admissionregistration.k8s.io/v1/validatingadmissionpolicybindings/{policy_name}")
        kube.delete(f"/apis/admissionregistration.k8s.io/v1/validatingadmissionpolicies/{policy_name}")


def test_events_are_posted_on_the_workload(kube: api.Client, namespace: str) -> None:
    dep = kube.create(f"/apis/apps/v1/namespaces/{namespace}/deployments", deployment("web"))
    involved = {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web", "namespace": namespace,
                "uid": dep["metadata"]["uid"]}
    import datetime

    body = events.build(involved=involved, reason=events.Reason.SUSPECTED_LEAK, message="leak?", now=datetime.datetime.now(datetime.timezone.utc))
    events.post(kube, body)
    found = [e for e in kube.list(f"/api/v1/namespaces/{namespace}/events") if e.get("reason") == "SuspectedLeak"]
    assert len(found) == 1
    assert found[0]["type"] == "Warning" and found[0]["involvedObject"]["uid"] == dep["metadata"]["uid"]
    assert found[0]["source"]["component"] == "oomtuner"


def test_a_burst_of_state_events_goes_out_once_with_its_count(kube: api.Client, namespace: str) -> None:
    import datetime

    now = datetime.datetime.now(datetime.timezone.utc)
    rec = {"apiVersion": "oomtuner.dev/v1alpha1", "kind": "OOMRecommendation", "name": "deployment-web",
           "namespace": namespace, "uid": "0d3a0000-0000-4000-8000-000000000001"}
    web = {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web", "namespace": namespace,
           "uid": "0d3a0000-0000-4000-8000-000000000002"}
    poster = events.Poster(kube, workers=2, linger=3.0, idle_timeout=1.0)
    for i in range(50):
        poster.submit(events.build(involved=rec, reason=events.Reason.RECOMMENDATION_UPDATED, message=f"update {i}", now=now))
    for i in range(3):
        poster.submit(events.build(involved=web, reason=events.Reason.OOM_KILL_DETECTED, message=f"kill {i}", now=now))
    # Events that are not about a state go out at once, each; the state event lingers.
    wait_for(lambda: len([e for e in kube.list(f"/api/v1/namespaces/{namespace}/events")
                          if e["reason"] == "OOMKillDetected"]) == 3, timeout=2.5, what="the kill events, before the linger ends")
    assert poster.pending() == 1
    # It goes out once, with the newest message and the count of the copies it stands for.
    wait_for(lambda: poster.pending() == 0, timeout=30, what="the lingering event to go out")
    posted = kube.list(f"/api/v1/namespaces/{namespace}/events")
    updates = [e for e in posted if e["reason"] == "RecommendationUpdated"]
    assert [(e["message"], e["count"]) for e in updates] == [("update 49", 50)]
    assert sorted(e["message"] for e in posted if e["reason"] == "OOMKillDetected") == ["kill 0", "kill 1", "kill 2"]
    # flush() does not wait for a linger: the operator calls it when it stops.
    poster.submit(events.build(involved=rec, reason=events.Reason.RECOMMENDATION_UPDATED, message="final", now=now))
    assert poster.flush(timeout=2.0)
    assert "final" in {e["message"] for e in kube.list(f"/api/v1/namespaces/{namespace}/events")}
    # Idle threads end; the next event starts one again.
    wait_for(lambda: poster.threads() == 0, timeout=10, what="idle event threads to end")
    poster.submit(events.build(involved=web, reason=events.Reason.OOM_KILL_DETECTED, message="kill 3", now=now))
    assert poster.flush(timeout=30)
    assert "kill 3" in {e["message"] for e in kube.list(f"/api/v1/namespaces/{namespace}/events")}


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({"memory": {"increaseFactor": 1}}, "increaseFactor"),
        ({"memory": {"increaseFactor": 0.5}}, "increaseFactor"),
        ({"memory": {"margin": 2}}, "margin"),
        ({"memory": {"maxLimit": "12Qi"}}, "maxLimit"),
        ({"memory": {"minIncrease": "-5Mi"}}, "minIncrease"),
        ({"mode": "Yolo"}, "mode"),
        ({"applyMethod": "Sometimes"}, "applyMethod"),
        ({"cooldown": "ten minutes"}, "cooldown"),
        ({"memory": {"requestPolicy": "Whatever"}}, "requestPolicy"),
        ({"selector": {"matchExpressions": [{"key": "a", "operator": "In"}]}}, "matchExpressions"),
        # size bounds: nothing grows without one
        ({"memory": {"maxLimit": "1e1000000"}}, "maxLimit"),
        ({"memory": {"maxLimit": "8Ei"}}, "maxLimit"),
        ({"cooldown": "1s" * 100}, "cooldown"),
        ({"selector": {"matchLabels": {f"k{i}": "v" for i in range(65)}}}, "matchLabels"),
        ({"selector": {"matchLabels": {"k" * 318: "v"}}}, "matchLabels"),
        ({"selector": {"matchLabels": {"app": "v" * 64}}}, "matchLabels"),
        ({"selector": {"matchExpressions": [{"key": "a", "operator": "Exists"}] * 33}}, "matchExpressions"),
        ({"selector": {"matchExpressions": [{"key": "a", "operator": "In", "values": ["x"] * 65}]}}, "values"),
    ],
)
def test_api_server_rejects_bad_policies_naming_the_field(kube: api.Client, namespace: str, spec: dict[str, Any], field: str) -> None:
    body = {"apiVersion": "oomtuner.dev/v1alpha1", "kind": "OOMPolicy", "metadata": {"name": "bad"}, "spec": spec}
    with pytest.raises(api.ApiError) as err:
        kube.create(f"/apis/oomtuner.dev/v1alpha1/namespaces/{namespace}/oompolicies", body)
    assert err.value.status == 422
    assert field in err.value.message


def test_api_server_accepts_a_full_policy(kube: api.Client, namespace: str) -> None:
    body = {"apiVersion": "oomtuner.dev/v1alpha1", "kind": "OOMPolicy", "metadata": {"name": "good"},
            "spec": {"selector": {"matchLabels": {"app": "web"}, "matchExpressions": [{"key": "tier", "operator": "Exists"}]},
                     "mode": "Auto", "applyMethod": "InPlaceAndRollout",
                     "memory": {"increaseFactor": 2, "minIncrease": 134217728, "margin": 0.2, "maxLimit": "2Gi",
                                "requestPolicy": "EqualsLimit"},
                     "cooldown": "1h30m", "prometheus": {"lookback": "7d"}}}
    created = kube.create(f"/apis/oomtuner.dev/v1alpha1/namespaces/{namespace}/oompolicies", body)
    assert created["spec"] == body["spec"]  # no defaults written, nothing pruned


def _recommendation(**status: Any) -> dict[str, Any]:
    return {"apiVersion": "oomtuner.dev/v1alpha1", "kind": "OOMRecommendation", "metadata": {"name": "bounded"},
            "spec": {"targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"}}, "status": status}


def _kill(i: int, **changes: Any) -> dict[str, Any]:
    return {"id": f"uid/app/{i}", "pod": "web-0", "container": "app", "at": "2026-11-26T10:04:59Z", **changes}


@pytest.mark.parametrize(
    ("status", "field"),
    [
        ({"kills": [_kill(i) for i in range(21)]}, "status.kills"),
        ({"kills": [_kill(0, limitAtKill="1" + "0" * 5000)]}, "limitAtKill"),
        ({"kills": [_kill(0, reason="x" * 5000)]}, "reason"),
        ({"kills": [_kill(0, pod="p" * 254)]}, "pod"),
        ({"containers": [{"name": f"c{i}"} for i in range(513)]}, "status.containers"),
        ({"containers": [{"name": "c" * 64}]}, "name"),
        ({"patch": "x" * 70_000}, "patch"),
        ({"conditions": [{"type": f"T{i}", "status": "True"} for i in range(17)]}, "conditions"),
    ],
)
def test_api_server_bounds_what_a_recommendation_holds(kube: api.Client, namespace: str, status: dict[str, Any], field: str) -> None:
    path = f"/apis/oomtuner.dev/v1alpha1/namespaces/{namespace}/oomrecommendations"
    kube.create(path, {**_recommendation(), "status": {}})
    with pytest.raises(api.ApiError) as err:
        kube.replace(f"{path}/bounded/status", {**_recommendation(**status),
                                                "metadata": {"name": "bounded", "resourceVersion": kube.get(f"{path}/bounded")["metadata"]["resourceVersion"]}})
    assert err.value.status == 422, err.value
    assert field in err.value.message, err.value.message


def test_an_unreadable_recommendation_gets_a_condition_naming_the_field(kube: api.Client, namespace: str) -> None:
    from oomtuner.domain import recommendations

    path = f"/apis/oomtuner.dev/v1alpha1/namespaces/{namespace}/oomrecommendations"
    kube.create(path, _recommendation())
    body = kube.get(f"{path}/bounded")
    body = kube.replace(f"{path}/bounded/status", {**body, "status": {
        "kills": [_kill(0, at="9999-12-31T23:59:59-23:59")],
        "conditions": [{"type": "Applied", "status": "True", "reason": "Patched", "message": "m",
                        "lastTransitionTime": "2026-11-26T10:00:00Z"}]}})
    problem = recommendations.problem(recommendation.read(body))
    assert problem is not None and problem.startswith("status.kills[0].at: ")
    assert store.mark_unreadable(kube, body, problem=f"OOMRecommendation {namespace}/bounded: {problem}", now="2026-11-26T10:05:00Z")
    fresh = kube.get(f"{path}/bounded")
    ready = {c["type"]: c for c in fresh["status"]["conditions"]}
    assert ready["Ready"]["status"] == "False" and ready["Ready"]["reason"] == "Unreadable"
    assert "status.kills[0].at" in ready["Ready"]["message"] and ready["Applied"]["reason"] == "Patched"
    # Its own write comes back as a watch event: marking it again writes nothing.
    assert not store.mark_unreadable(kube, fresh, problem=f"OOMRecommendation {namespace}/bounded: {problem}", now="2026-11-26T10:06:00Z")
    assert kube.get(f"{path}/bounded")["metadata"]["resourceVersion"] == fresh["metadata"]["resourceVersion"]
