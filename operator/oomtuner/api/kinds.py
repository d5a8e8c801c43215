"""The workload kinds the operator knows, in one registry.

Everything that depends on a workload's kind reads it here: where the kind lives in the API, where
its pod template sits, whether Auto mode may patch it, which owner a pod's chain follows from it,
and how its pods are named. The owner walk (`kube.owners`), the patch bodies (`domain.patch`), the
workload model (`domain.workload`), the usage queries (`prom.usage`) and the policies' counts of
matched workloads all read this table, so a new kind is added in one place.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class WorkloadKind:
    """One kind of workload.

    - `template_path`: where the pod template sits in an object of this kind (empty for a Pod, which
      is its own template);
    - `patchable`: Auto mode may patch its pod template (a Job's template is immutable, a bare Pod has
      none: those get recommendations only);
    - `owners`: the owner kinds a pod's chain follows upwards from this kind;
    - `top_level`: a policy's count of matched workloads lists objects of this kind (ReplicaSets and
      Jobs are counted through their Deployments and CronJobs).
    """

    kind: str
    group: str
    version: str
    plural: str
    template_path: tuple[str, ...]
    patchable: bool
    owners: frozenset[str] = frozenset()
    top_level: bool = False

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version


POD = "Pod"
REPLICA_SET = "ReplicaSet"
DEPLOYMENT = "Deployment"
STATEFUL_SET = "StatefulSet"
DAEMON_SET = "DaemonSet"
JOB = "Job"
CRON_JOB = "CronJob"

_ALL = (
    WorkloadKind(DEPLOYMENT, "apps", "v1", "deployments", ("spec", "template"), patchable=True, top_level=True),
    WorkloadKind(STATEFUL_SET, "apps", "v1", "statefulsets", ("spec", "template"), patchable=True, top_level=True),
    WorkloadKind(DAEMON_SET, "apps", "v1", "daemonsets", ("spec", "template"), patchable=True, top_level=True),
    WorkloadKind(REPLICA_SET, "apps", "v1", "replicasets", ("spec", "template"), patchable=True,
                 owners=frozenset({DEPLOYMENT})),
    WorkloadKind(CRON_JOB, "batch", "v1", "cronjobs", ("spec", "jobTemplate", "spec", "template"), patchable=True,
                 top_level=True),
    WorkloadKind(JOB, "batch", "v1", "jobs", ("spec", "template"), patchable=False, owners=frozenset({CRON_JOB})),
    WorkloadKind(POD, "", "v1", "pods", (), patchable=False,
                 owners=frozenset({REPLICA_SET, STATEFUL_SET, DAEMON_SET, JOB})),
)

KINDS: dict[str, WorkloadKind] = {k.kind: k for k in _ALL}
# For a CRD pattern: every kind an OOMRecommendation's targetRef may name.
KIND_PATTERN = "^(" + "|".join(k.kind for k in _ALL) + ")$"


# kubectl's short names of the kinds (`kubectl api-resources`).
_SHORT_NAMES = {"deploy": DEPLOYMENT, "sts": STATEFUL_SET, "ds": DAEMON_SET, "rs": REPLICA_SET, "cj": CRON_JOB, "po": POD}


def named(word: str) -> WorkloadKind | None:
    """The kind a user named as kubectl takes it: `Deployment`, `deployment`, `deployments`, `deploy`,
    or with its group (`deployments.apps`); None for a name that is no workload kind."""
    word = word.lower()
    for k in _ALL:
        names = {k.kind.lower(), k.plural} | {short for short, kind in _SHORT_NAMES.items() if kind == k.kind}
        if word in names or (k.group and word in {f"{n}.{k.group}" for n in names}):
            return k
    return None


def get(kind: str) -> WorkloadKind:
    """The kind's entry; raises KeyError for a kind the operator does not know."""
    return KINDS[kind]


def patchable(kind: str) -> bool:
    found = KINDS.get(kind)
    return found is not None and found.patchable


def top_level() -> tuple[WorkloadKind, ...]:
    return tuple(k for k in _ALL if k.top_level)
