"""Cgroup trees shaped like the kubelet's, written as plain files, for tests of the node agent.

The kernel's cgroup files are text files; a copy written into a temporary folder reads the same way.
`write_container` writes the files the agent reads for cgroup v1 or v2; the path helpers give the
folder a kubelet with the cgroupfs or the systemd driver would create for a pod's container.
"""

from __future__ import annotations

import os
import pathlib
import secrets
import uuid
from typing import Literal

Version = Literal["v1", "v2"]
Driver = Literal["cgroupfs", "systemd"]
QOS = Literal["guaranteed", "burstable", "besteffort"]

V1_UNLIMITED = 9223372036854771712


def new_pod_uid() -> str:
    return str(uuid.uuid4())


def new_container_id() -> str:
    return secrets.token_hex(32)


def pod_dir(kubepods: pathlib.Path, *, driver: Driver, qos: QOS, uid: str, prefix: str = "kubepods") -> pathlib.Path:
    """The pod's cgroup under a kubepods cgroup (`kubepods` or `<prefix>.slice`)."""
    if driver == "cgroupfs":
        parent = kubepods if qos == "guaranteed" else kubepods / qos
        return parent / f"pod{uid}"
    escaped = uid.replace("-", "_")
    if qos == "guaranteed":
        return kubepods / f"{prefix}-pod{escaped}.slice"
    return kubepods / f"{prefix}-{qos}.slice" / f"{prefix}-{qos}-pod{escaped}.slice"


def container_dir(pod: pathlib.Path, *, driver: Driver, container_id: str, runtime: str = "cri-containerd") -> pathlib.Path:
    if driver == "cgroupfs":
        return pod / container_id
    return pod / f"{runtime}-{container_id}.scope"


def write_container(
    path: pathlib.Path,
    *,
    version: Version,
    oom_kill: int = 0,
    oom_group_kill: int = 0,
    limit_hits: int = 0,
    limit: int | None = None,
) -> pathlib.Path:
    """Write (or overwrite) the memory files of one cgroup, as the kernel shows them."""
    path.mkdir(parents=True, exist_ok=True)
    # Each file is replaced whole, and the OOM counter last, so a reader polling meanwhile (as the agent
    # does in loop tests) sees old or new content, never half a file: the kernel's files behave so.
    if version == "v2":
        _replace(path / "memory.max", f"{limit}\n" if limit is not None else "max\n")
        _replace(
            path / "memory.events",
            f"low 0\nhigh 0\nmax {limit_hits * 3}\noom {limit_hits}\noom_kill {oom_kill}\noom_group_kill {oom_group_kill}\n",
        )
    else:
        _replace(path / "memory.limit_in_bytes", f"{limit if limit is not None else V1_UNLIMITED}\n")
        _replace(path / "memory.failcnt", f"{limit_hits}\n")
        _replace(path / "memory.oom_control", f"oom_kill_disable 0\nunder_oom 0\noom_kill {oom_kill}\n")
    return path


def _replace(path: pathlib.Path, text: str) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(text)
    os.replace(temporary, path)


def hierarchy(root: pathlib.Path, version: Version) -> pathlib.Path:
    """Where the kubepods tree goes under a fake `/sys/fs/cgroup`: `memory/` on v1, the root on v2."""
    if version == "v2":
        root.mkdir(parents=True, exist_ok=True)
        (root / "cgroup.controllers").write_text("cpuset cpu io memory hugetlb pids rdma misc\n")
        return root
    return root / "memory"


def kubepods_dir(base: pathlib.Path, driver: Driver) -> pathlib.Path:
    return base / ("kubepods" if driver == "cgroupfs" else "kubepods.slice")
