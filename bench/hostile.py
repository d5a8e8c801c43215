"""Time and peak memory of `oomtuner explain` on the largest and most hostile inputs.

Each case writes one input file (JSON or YAML), runs the real CLI on it as a child process
(`oomtuner explain -f FILE -o json --node-memory 16Gi`, output to /dev/null) under GNU time, which
reports the child's peak RSS (a child forked from this script would inherit the script's own
memory in that figure) and its wall and CPU time. It prints one JSON object per case on stdout and a
table on stderr:

    .venv/bin/python bench/hostile.py [--dir DIR] [--only NAME ...]

`expect` is the exit code the case must give: 0 where the input is fine (a 10 MB List of pods), 2
where it must be refused in one line (a 50 MB file, an alias bomb, nesting 100,000 levels deep);
`ok` says whether the exit code and the one-line stderr held.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import subprocess
import sys
import tempfile
from typing import Any, Callable

import yaml

ROOT = pathlib.Path(__file__).resolve().parents[1]
OOMTUNER = [sys.executable, "-m", "oomtuner.cli"] if not (ROOT / ".venv/bin/oomtuner").exists() else [str(ROOT / ".venv/bin/oomtuner")]
MB = 1_000_000


def pod(i: int, *, containers: int = 3) -> dict[str, Any]:
    """A pod as `kubectl get pod -o json` prints it, with managed fields, and an OOM kill."""
    names = [f"c{j}" for j in range(containers)]
    spec_containers = [{
        "name": n, "image": f"registry.example.com/team/app-{n}:1.2.{i}",
        "args": ["--port=8080", "--log-level=info"], "env": [{"name": "MODE", "value": "production"}],
        "resources": {"requests": {"cpu": "250m", "memory": "256Mi"}, "limits": {"memory": "512Mi"}},
        "ports": [{"containerPort": 8080, "protocol": "TCP"}],
        "volumeMounts": [{"name": "kube-api-access", "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount", "readOnly": True}],
        "terminationMessagePath": "/dev/termination-log", "terminationMessagePolicy": "File", "imagePullPolicy": "IfNotPresent",
    } for n in names]
    statuses = [{
        "name": n, "ready": True, "restartCount": 2, "image": f"registry.example.com/team/app-{n}:1.2.{i}",
        "imageID": "registry.example.com/team/app@sha256:" + "ab" * 32,
        "containerID": "containerd://" + f"{i:08x}{j:08x}" * 4, "started": True,
        "state": {"running": {"startedAt": "2026-11-26T10:05:00Z"}},
        "lastState": {"terminated": {"reason": "OOMKilled", "exitCode": 137, "startedAt": "2026-11-26T10:01:00Z",
                                     "finishedAt": "2026-11-26T10:04:59Z", "containerID": "containerd://" + "cd" * 32}},
    } for j, n in enumerate(names)]
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {
            "name": f"web-{i}", "namespace": "shop", "uid": f"00000000-0000-0000-0000-{i:012d}",
            "resourceVersion": str(1000 + i), "creationTimestamp": "2026-11-26T10:00:00Z",
            "labels": {"app": "web", "pod-template-hash": "7d9f8c6b5"},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-7d9f8c6b5",
                                 "uid": "11111111-2222-3333-4444-555555555555", "controller": True, "blockOwnerDeletion": True}],
            "managedFields": [{"manager": "kube-controller-manager", "operation": "Update", "apiVersion": "v1",
                               "time": "2026-11-26T10:00:00Z", "fieldsType": "FieldsV1",
                               "fieldsV1": {"f:metadata": {"f:labels": {".": {}, "f:app": {}}},
                                            "f:spec": {"f:containers": {f"k:{{\"name\":\"{n}\"}}": {".": {}, "f:image": {}, "f:resources": {".": {}, "f:limits": {".": {}, "f:memory": {}}}} for n in names}}}}],
        },
        "spec": {"nodeName": f"node-{i % 50}", "containers": spec_containers, "restartPolicy": "Always",
                 "serviceAccountName": "default", "tolerations": [{"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}]},
        "status": {"phase": "Running", "qosClass": "Burstable", "hostIP": "10.0.0.1", "podIP": f"10.1.{i % 250}.{i % 200}",
                   "startTime": "2026-11-26T10:00:00Z", "containerStatuses": statuses},
    }


def pod_list(size: int, *, as_yaml: bool = False) -> str:
    """A v1 List of pods of about `size` bytes."""
    one = len(json.dumps(pod(0)))
    count = max(1, size // (one + 2))
    doc = {"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": ""}, "items": [pod(i) for i in range(count)]}
    return yaml.safe_dump(doc, sort_keys=False) if as_yaml else json.dumps(doc)


def wide_pod() -> str:
    """One pod with 400 containers and 400 sidecars, every one OOM-killed."""
    body = pod(0, containers=400)
    sidecars = [{**c, "name": f"s{j}", "restartPolicy": "Always"} for j, c in enumerate(body["spec"]["containers"])]
    body["spec"]["initContainers"] = sidecars
    body["status"]["initContainerStatuses"] = [{**s, "name": f"s{j}"} for j, s in enumerate(body["status"]["containerStatuses"])]
    return json.dumps(body)


def alias_bomb() -> str:
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for prev, name in zip("abcdefgh", "bcdefghi"):
        lines.append(f"{name}: &{name} [" + ",".join([f"*{prev}"] * 9) + "]")
    return "\n".join(lines + ["kind: Pod"]) + "\n"


CASES: dict[str, tuple[Callable[[], str | bytes], str, int]] = {
    "list-10MB-json": (lambda: pod_list(10 * MB), "json", 0),
    "list-1MB-yaml": (lambda: pod_list(int(0.9 * MB), as_yaml=True), "yaml", 0),
    "list-10MB-yaml": (lambda: pod_list(10 * MB, as_yaml=True), "yaml", 2),
    "pod-400-containers-400-sidecars": (wide_pod, "json", 0),
    "list-50MB-json": (lambda: pod_list(50 * MB), "json", 2),
    "alias-bomb-yaml": (alias_bomb, "yaml", 2),
    "nested-10MB-json": (lambda: "[" * (5 * MB) + "]" * (5 * MB), "json", 2),
    "nested-10MB-yaml": (lambda: "a: " + "[" * (5 * MB) + "]" * (5 * MB), "yaml", 2),
    "quantity-10MB-digits": (lambda: json.dumps({**pod(0), "spec": {"containers": [{"name": "c", "resources": {"limits": {"memory": "1" * (10 * MB - 200)}}}]}}), "json", 2),
    "integer-10MB-digits": (lambda: '{"kind": "Pod", "x": ' + "9" * (10 * MB - 30) + "}", "json", 2),
    "string-10MB": (lambda: json.dumps({"kind": "Pod", "metadata": {"name": "x" * (10 * MB - 50)}}), "json", 0),
    "dev-zero": (lambda: b"", "/dev/zero", 2),
}


def run_case(name: str, directory: pathlib.Path) -> dict[str, Any]:
    make, suffix, expect = CASES[name]
    if suffix == "/dev/zero":
        path = pathlib.Path("/dev/zero")
    else:
        path = directory / f"{name}.{suffix}"
        content = make()
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
        del content
    size = path.stat().st_size if path.is_file() else None
    timing = directory / "time.txt"
    proc = subprocess.run(["/usr/bin/time", "-o", str(timing), "-f", "%M %e %U %S",
                           *OOMTUNER, "explain", "-f", str(path), "-o", "json", "--node-memory", "16Gi"],
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=False)
    rss_kib, wall, user, system = timing.read_text().split()[-4:]
    lines = proc.stderr.decode(errors="replace").splitlines()
    ok = proc.returncode == expect and (len(lines) == 0 if expect == 0 else len(lines) == 1)
    return {"case": name, "bytes": size, "exit": proc.returncode, "expect": expect, "ok": ok,
            "seconds": float(wall), "cpu_seconds": round(float(user) + float(system), 2),
            "peak_rss_mib": round(int(rss_kib) / 1024, 1), "stderr": lines[0][:160] if lines else ""}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=pathlib.Path, help="Where to write the inputs (default: a temporary folder).")
    parser.add_argument("--only", nargs="*", choices=sorted(CASES), help="Only these cases.")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        directory = args.dir or pathlib.Path(tmp)
        directory.mkdir(parents=True, exist_ok=True)
        for name in args.only or CASES:
            result = run_case(name, directory)
            print(json.dumps(result), flush=True)
            print(f"{name:34} {result['bytes'] or '-':>10} exit {result['exit']} ({'ok' if result['ok'] else 'NOT OK'}) "
                  f"{result['seconds']:6.2f} s ({result['cpu_seconds']:5.2f} s CPU) {result['peak_rss_mib']:7.1f} MiB  "
                  f"{result['stderr'][:60]}", file=sys.stderr)
            if args.dir is None:
                for leftover in directory.iterdir():
                    leftover.unlink()


if __name__ == "__main__":
    main()
