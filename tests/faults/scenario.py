"""One fault scenario: its namespace, workloads, operators, ground truth, and the figures it reports.

Every scenario ends with `Scenario.report`, which writes its figures to `build/faults/<name>.json`
(`OOMTUNER_FAULTS_RESULTS` moves them; `python -m tests.faults.table` prints them as the table of
bench/README.md) and returns what missed the target: 0 lost, 0 double-counted, 0 spurious raises,
no patch lost, and recovery within the scenario's bound. The test asserts that list is empty, with
the operator's log lines that show why when it is not.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import subprocess
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from oomtuner.kube import api
from tests.e2e import kit
from tests.e2e.conftest import ROOT, OperatorProcess
from tests.faults import truth as truth_mod
from tests.faults.proxy import FaultProxy
from tests.faults.table import RESULTS

RECOVERY_TARGET_S = 30.0
RECOVERY_WAIT_S = 35.0  # the target and a margin: what is not counted by then is lost


@dataclasses.dataclass
class Result:
    scenario: str
    title: str
    injected: int
    recorded: int
    lost: int
    double_counted: int
    spurious_bumps: int | None  # None: the scenario patches nothing (Recommend or Observe mode)
    patches_lost: int | None
    recovery_s: float | None  # None: not recovered within the scenario's wait
    recovery_target_s: float
    recovery_basis: str  # what the recovery time runs from and to
    notes: list[str]
    failures: list[str]
    log: list[str]
    wall_s: float
    when: str
    commit: str

    def write(self, directory: Path = RESULTS) -> Path:
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"{self.scenario}.json"
        path.write_text(json.dumps(dataclasses.asdict(self), indent=2) + "\n")
        return path

    def message(self) -> str:
        lines = [f"{self.scenario}: {'; '.join(self.failures)}"]
        lines += [f"  note: {n}" for n in self.notes]
        if self.log:
            lines.append("  operator log:")
            lines += [f"    {line}" for line in self.log]
        return "\n".join(lines)


def _commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


class Scenario:
    def __init__(self, *, kube: api.Client, core_v1: Any, kubeconfig: str, log_dir: Path):
        self.kube = kube
        self.core_v1 = core_v1
        self.kubeconfig = kubeconfig
        self.log_dir = log_dir
        self.started = time.monotonic()
        self.namespace = f"faults-{uuid.uuid4().hex[:8]}"
        self.operators: list[OperatorProcess] = []
        self.watches: list[truth_mod.TemplateWatch] = []
        self.proxies: list[FaultProxy] = []
        kube.create("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": self.namespace}})
        # After an API server restart, the controller-manager's informers take a while to come back.
        kit.wait_for(lambda: kube.get_or_none(f"/api/v1/namespaces/{self.namespace}/serviceaccounts/default"),
                     timeout=90, what="the default ServiceAccount")

    # ---- building the scene ----

    def operator(self, *, env: dict[str, str] | None = None, name: str = "operator", kubeconfig: str | None = None,
                 command: tuple[str, ...] | None = None) -> OperatorProcess:
        """`oomtuner run` on this scenario's namespace only, standalone unless `command` says otherwise;
        started, and stopped when the scenario ends."""
        op = OperatorProcess(
            kubeconfig=kubeconfig or self.kubeconfig, log_dir=self.log_dir, name=name,
            extra_env={"OOMTUNER_COOLDOWN": "1h", **(env or {})},
            command=command or ("-m", "oomtuner", "run", "--standalone", "--namespace", self.namespace),
        )
        self.operators.append(op)
        op.start()
        return op

    def policy(self, *, mode: str = "Auto", cooldown: str = "1h", name: str = "policy") -> None:
        """An OOMPolicy for every workload of the namespace; waits for an operator to report it Valid."""
        path = f"/apis/oomtuner.dev/v1alpha1/namespaces/{self.namespace}/oompolicies"
        self.kube.create(path, {"apiVersion": "oomtuner.dev/v1alpha1", "kind": "OOMPolicy", "metadata": {"name": name},
                                "spec": {"mode": mode, "cooldown": cooldown}})
        kit.wait_for(lambda: any(c.get("type") == "Valid" and c.get("status") == "True"
                                 for c in (self.kube.get(f"{path}/{name}").get("status") or {}).get("conditions") or []),
                     timeout=30, what=f"policy {name} Valid")

    def deployment(self, name: str = "web", *, replicas: int = 1, containers: Sequence[str] = ("app",),
                   request: str = "128Mi", limit: str = "256Mi", cpu: str = "50m", paused: bool = False,
                   timeout: float = 120) -> list[dict[str, Any]]:
        """A Deployment and its Running pods. `paused`: paused once its pods run (a paused Deployment
        rolls nothing out, not even its first ReplicaSet), so a new template reaches no pod."""
        body = kit.deployment(name, replicas=replicas,
                              containers=[kit.container(c, request=request, limit=limit) for c in containers])
        for c in body["spec"]["template"]["spec"]["containers"]:
            c["resources"]["requests"]["cpu"] = cpu
        body["spec"]["revisionHistoryLimit"] = 100
        path = f"/apis/apps/v1/namespaces/{self.namespace}/deployments"
        self.kube.create(path, body)
        pods = kit.running_pods(self.kube, self.namespace, name, count=replicas, timeout=timeout)
        if paused:
            self.kube.merge_patch(f"{path}/{name}", {"spec": {"paused": True}})
        return pods

    def auto_workload(self, replicas: int, *, cooldown: str = "1h", **deployment: Any,
                      ) -> tuple[list[dict[str, Any]], truth_mod.TemplateWatch, truth_mod.Truth]:
        """An Auto policy with `cooldown`, a paused Deployment `web` (its pods stay at their limit
        whatever the operator patches), the watch on its template and the truth of its kills. An
        operator must run: it reports the policy Valid."""
        self.policy(mode="Auto", cooldown=cooldown)
        pods = self.deployment(replicas=replicas, paused=True, **deployment)
        return pods, self.watch(), self.truth()

    def pods(self, app: str = "web", *, limit: int | None = None) -> list[dict[str, Any]]:
        """The workload's Running pods (at `limit` for their first container, when given), by name."""
        found = []
        for p in self.kube.list(f"/api/v1/namespaces/{self.namespace}/pods", query={"labelSelector": f"app={app}"}):
            if (p.get("status") or {}).get("phase") != "Running" or p["metadata"].get("deletionTimestamp"):
                continue
            if not (p.get("status") or {}).get("containerStatuses"):
                continue
            if limit is not None and truth_mod._limit(p, p["spec"]["containers"][0]["name"]) != limit:
                continue
            found.append(p)
        return sorted(found, key=lambda p: p["metadata"]["name"])

    def truth(self, workload: str = "web") -> truth_mod.Truth:
        return truth_mod.Truth(self.core_v1, namespace=self.namespace, workload=workload)

    def watch(self, name: str = "web") -> truth_mod.TemplateWatch:
        watch = truth_mod.TemplateWatch(self.kubeconfig, namespace=self.namespace, name=name).start()
        self.watches.append(watch)
        return watch

    def proxy(self) -> FaultProxy:
        from oomtuner_lab import config

        paths = config.Paths()
        proxy = FaultProxy(upstream=paths.server(), ca=paths.pki.ca_crt, cert=paths.pki.client_crt("admin"),
                           key=paths.pki.client_key("admin")).start()
        self.proxies.append(proxy)
        return proxy

    # ---- watching the operator ----

    @staticmethod
    def wait(predicate: Callable[[], Any], *, timeout: float, interval: float = 0.1) -> float | None:
        """Poll until `predicate()` is truthy; the time.monotonic() it was, or None on timeout.
        An API error counts as not yet (the API server may be the fault)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if predicate():
                    return time.monotonic()
            except (api.ApiError, OSError):
                pass
            time.sleep(interval)
        return None

    def counted(self, name: str = "deployment-web") -> truth_mod.Counted:
        return truth_mod.counted(self.kube, self.namespace, name)

    def wait_counted(self, at_least: int, *, name: str = "deployment-web", timeout: float = 60) -> float | None:
        return self.wait(lambda: self.counted(name).total >= at_least, timeout=timeout, interval=0.1)

    def wait_raised(self, watch: truth_mod.TemplateWatch, *, above: int, timeout: float) -> bool:
        """Wait until the template's limit is above `above` (the patch a kill at `above` asks for)."""
        return self.wait(lambda: (watch.limit() or 0) > above, timeout=timeout) is not None

    def recovery(self, truth: truth_mod.Truth, *, ended: float, wait: float = RECOVERY_WAIT_S) -> float | None:
        """Seconds from `ended` (the fault's end) until every kill of `truth` so far is counted; None
        when that does not happen within `wait` seconds of now."""
        recovered = self.wait_counted(len(truth.kills), timeout=wait)
        return recovered - ended if recovered else None

    def kill_again(self, truth: truth_mod.Truth, pods: Sequence[dict[str, Any]]) -> truth_mod.Counted:
        """Kill every pod once more (the operator goes on counting after the fault), wait until it is
        done, and return its final count."""
        truth.burst(pods, threads=8)
        self.wait_counted(len(truth.kills), timeout=30)
        self.quiet()
        return self.counted()

    def quiet(self, name: str = "deployment-web", *, still: float = 3.0, timeout: float = 60) -> None:
        """Wait until the recommendation has not changed for `still` seconds (the operator is done)."""
        last: list[Any] = [None, time.monotonic()]

        def settled() -> bool:
            rec = truth_mod.recommendation(self.kube, self.namespace, name)
            version = (rec or {}).get("metadata", {}).get("resourceVersion")
            if version != last[0]:
                last[0], last[1] = version, time.monotonic()
            return time.monotonic() - last[1] >= still

        self.wait(settled, timeout=timeout, interval=0.25)

    def log(self, lines: int = 25) -> list[str]:
        """The operator log lines that tell what went wrong: warnings, errors and tracebacks, and
        what it said about this namespace."""
        keep = []
        for op in self.operators:
            try:
                text = op.log_path.read_text(errors="replace").splitlines()
            except OSError:
                continue
            for line in text:
                ours = "] oomtuner" in line and any(level in line for level in ("[WARNING", "[ERROR"))
                if ours or line.startswith("==== start") or any(w in line for w in ("patched", "rejected", "stale")):
                    keep.append(f"[{op.log_path.stem}] {line.strip()[:300]}")
                elif line.startswith(("urllib3.exceptions.", "oomtuner.", "requests.exceptions.", "RuntimeError")):
                    keep.append(f"[{op.log_path.stem}]   {line.strip()[:300]}")  # what a traceback ended with
        return keep[-lines:]

    # ---- the figures ----

    def report(
        self, name: str, title: str, *, truth: truth_mod.Truth, total: int,
        records: list[dict[str, Any]] | None = None, watch: truth_mod.TemplateWatch | None = None,
        patched: bool | None = None, patch_basis: str = "", recovery_s: float | None, recovery_basis: str,
        recovery_target_s: float = RECOVERY_TARGET_S, notes: Sequence[str] = (), failures: Sequence[str] = (),
    ) -> Result:
        verdict = truth_mod.judge(truth, total, records)
        problems = list(failures)
        notes = list(notes) + verdict.detail
        spurious: int | None = None
        lost_patches: int | None = None
        if watch is not None:
            bad = truth_mod.spurious(truth, watch)
            spurious = len(bad)
            problems += [f"spurious raise {b}" for b in bad]
            gaps = watch.gaps()
            if gaps:
                notes.append(f"the template watch missed generations {gaps} (relisted {watch.relists}×)")
            first = next(iter(watch.versions[0].limits), "app") if watch.versions else "app"
            notes.append(f"template memory of {first}: " + " → ".join(
                truth_mod.show(v.limits.get(first)) for v in watch.versions) if watch.versions else "no version seen")
        if patched is not None:  # None: no patch was due (not Auto, or nothing to raise)
            lost_patches = 0 if patched else 1
            if not patched:
                problems.append(f"patch lost: kills at the template's limit, an Auto policy, and no raise ({patch_basis})")
        if verdict.lost:
            problems.append(f"{verdict.lost} of {verdict.injected} kill(s) lost")
        if verdict.double_counted:
            problems.append(f"{verdict.double_counted} kill(s) counted twice ({total} counted, {verdict.injected} injected)")
        if recovery_s is None:
            problems.append(f"no recovery ({recovery_basis}) within the scenario's wait")
        elif recovery_s > recovery_target_s:
            problems.append(f"recovery took {recovery_s:.1f}s, more than {recovery_target_s:g}s ({recovery_basis})")
        result = Result(
            scenario=name, title=title, injected=verdict.injected, recorded=verdict.recorded, lost=verdict.lost,
            double_counted=verdict.double_counted, spurious_bumps=spurious, patches_lost=lost_patches,
            recovery_s=round(recovery_s, 2) if recovery_s is not None else None, recovery_target_s=recovery_target_s,
            recovery_basis=recovery_basis, notes=notes, failures=problems, log=self.log() if problems else [],
            wall_s=round(time.monotonic() - self.started, 1),
            when=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), commit=_commit(),
        )
        result.write()
        self.started = time.monotonic()  # the next report of this scenario times its own part
        return result

    def close(self) -> None:
        for op in self.operators:
            try:
                op.stop()
            except Exception:  # noqa: BLE001 - a SIGKILLed one is gone already
                pass
        for watch in self.watches:
            watch.stop()
        for proxy in self.proxies:
            proxy.stop()
        try:
            self.kube.delete(f"/api/v1/namespaces/{self.namespace}")
        except api.ApiError:
            pass
