"""Finding the memory cgroups of a node's pod containers, and reading their OOM kill counters.

The kubelet lays out one cgroup per pod and, under it, one per container (plus the sandbox's). Where
depends on the cgroup version and the kubelet's cgroup driver:

- cgroupfs: `kubepods/pod<uid>/<id>` (Guaranteed), `kubepods/burstable/pod<uid>/<id>`,
  `kubepods/besteffort/pod<uid>/<id>`; CRI-O may write `crio-<id>` for the container;
- systemd: `kubepods.slice/kubepods-pod<uid_with_underscores>.slice/cri-containerd-<id>.scope`,
  `kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<uid>.slice/<runtime>-<id>.scope`
  (runtime `cri-containerd`, `docker`, `crio`); CRI-O's `crio-conmon-<id>.scope` is not a container.

On cgroup v1 that tree lives under the memory controller's mount (`/sys/fs/cgroup/memory`), on v2 at
the unified root (`/sys/fs/cgroup`). A kubelet with `--cgroup-root` (kind does this) nests it one or
two levels deeper, e.g. `kubelet/kubepods` or `kubelet.slice/kubelet-kubepods.slice`, so the tree is
searched for a few levels rather than expected at one place.

Counters: v2 `memory.events` (`oom_kill`, `oom_group_kill`, `oom`), v1 `memory.oom_control`
(`oom_kill`, kernel 4.13+) and `memory.failcnt`. The kernel counts a kill in the victim's own cgroup
whichever cgroup ran out (its own limit, the pod's, kubepods', or the whole machine), which is why the
container's own "hit the limit" counter (`oom` on v2, `failcnt` on v1) is read too.

A node's cgroups come and go all the time, and a cgroup removed mid-read gives ENOENT or ENODEV. So
nothing here raises on I/O: a file that cannot be read or makes no sense reads as None, and the
caller skips that cgroup this round. Mapping a container ID to a pod name is not done here (the
cgroup knows only the pod UID and the container ID); `reporter` asks the API server.
"""

from __future__ import annotations

import dataclasses
import enum
import logging
import os
import pathlib
import re
from collections.abc import Iterator

from oomtuner.api import types

logger = logging.getLogger(__name__)

DEFAULT_ROOT = pathlib.Path("/sys/fs/cgroup")
# How deep under the hierarchy's root the kubepods cgroup may sit (`kubelet.slice/kubelet-kubepods.slice`).
SEARCH_DEPTH = 3
# The kernel writes "unlimited" as PAGE_COUNTER_MAX pages (9223372036854771712 with 4 KiB pages).
_V1_UNLIMITED = 1 << 60

_POD_DIR = re.compile(r"^(?:[A-Za-z0-9_.]+-)*pod(?P<uid>[0-9a-fA-F][0-9a-fA-F_-]{30,35})(?:\.slice)?$")
_CONTAINER_DIR = re.compile(
    r"^(?:(?P<runtime>cri-containerd|containerd|docker|crio|cri-o)-)?(?P<id>[0-9a-f]{64})(?:\.scope)?$"
)
_QOS_DIRS: dict[str, types.QOSClass] = {
    "burstable": types.QOSClass.BURSTABLE,
    "besteffort": types.QOSClass.BEST_EFFORT,
}


class Version(str, enum.Enum):
    V1 = "v1"
    V2 = "v2"


class Driver(str, enum.Enum):
    CGROUPFS = "cgroupfs"
    SYSTEMD = "systemd"


@dataclasses.dataclass(frozen=True)
class ContainerCgroup:
    """The memory cgroup of one container of one pod.

    `pod_uid` has dashes (the systemd driver writes underscores; a static pod's UID is a bare hash).
    `container_id` is the runtime's bare ID. `key` is the path relative to the searched root: it names
    the cgroup across polls and in the agent's state file.
    """

    path: pathlib.Path
    key: str
    pod_uid: str
    container_id: str
    qos_class: types.QOSClass
    driver: Driver


@dataclasses.dataclass(frozen=True)
class Counters:
    """One reading of a container cgroup.

    `oom_kill`: processes of this cgroup the OOM killer killed, ever. `oom_group_kill`: group kills
    (v2 only, else 0). `limit_hits`: times the cgroup itself hit its limit (v2 `oom`, v1 `failcnt`),
    None when unreadable. `limit`: the memory limit in bytes, None when unlimited or unreadable.
    """

    version: Version
    oom_kill: int
    oom_group_kill: int
    limit_hits: int | None
    limit: int | None


def hierarchy(root: pathlib.Path) -> pathlib.Path:
    """Where to search for kubepods under `root`.

    `root/memory` when it exists (cgroup v1, or hybrid: its `unified` tree then has no memory
    controller); else `root` itself (cgroup v2, or a root that already is a memory cgroup).
    """
    memory = root / "memory"
    try:
        if memory.is_dir():
            return memory
    except OSError:
        pass
    return root


def discover(root: pathlib.Path) -> list[ContainerCgroup]:
    """Every container cgroup of every pod under `root`, sorted by key. Never raises on I/O."""
    base = hierarchy(root)
    found = [
        cgroup
        for kubepods in _kubepods_dirs(base, depth=SEARCH_DEPTH)
        for cgroup in _containers_under(kubepods, base=base)
    ]
    return sorted(found, key=lambda cgroup: cgroup.key)


def _subdirs(path: pathlib.Path) -> list[os.DirEntry[str]]:
    try:
        with os.scandir(path) as entries:
            return [entry for entry in entries if _is_dir(entry)]
    except OSError:
        return []


def _is_dir(entry: os.DirEntry[str]) -> bool:
    try:
        return entry.is_dir(follow_symlinks=False)
    except OSError:
        return False


def _is_kubepods(name: str) -> bool:
    return name == "kubepods" or name == "kubepods.slice" or name.endswith("-kubepods.slice")


def _kubepods_dirs(base: pathlib.Path, *, depth: int) -> Iterator[pathlib.Path]:
    """The kubepods cgroups within `depth` levels of `base`, breadth first, not looking inside them."""
    if _is_kubepods(base.name):  # `--cgroup-root /sys/fs/cgroup/memory/kubepods`
        yield base
        return
    level = [base]
    for _ in range(depth):
        below = []
        for path in level:
            for entry in _subdirs(path):
                if _is_kubepods(entry.name):
                    yield pathlib.Path(entry.path)
                else:
                    below.append(pathlib.Path(entry.path))
        level = below


def _containers_under(kubepods: pathlib.Path, *, base: pathlib.Path) -> Iterator[ContainerCgroup]:
    driver = Driver.SYSTEMD if kubepods.name.endswith(".slice") else Driver.CGROUPFS
    for entry in _subdirs(kubepods):
        match = _POD_DIR.match(entry.name)
        if match is not None:
            yield from _containers_of_pod(
                pathlib.Path(entry.path), uid=match["uid"], qos_class=types.QOSClass.GUARANTEED, driver=driver, base=base
            )
            continue
        qos_class = _qos_of(entry.name)
        if qos_class is None:
            continue
        for pod_entry in _subdirs(pathlib.Path(entry.path)):
            pod_match = _POD_DIR.match(pod_entry.name)
            if pod_match is not None:
                yield from _containers_of_pod(
                    pathlib.Path(pod_entry.path), uid=pod_match["uid"], qos_class=qos_class, driver=driver, base=base
                )


def _qos_of(name: str) -> types.QOSClass | None:
    """`burstable`, `kubepods-burstable.slice`, `kubelet-kubepods-besteffort.slice` → the QoS class."""
    stem = name.removesuffix(".slice").rpartition("-")[2]
    if name != stem and not name.endswith(".slice"):
        return None
    return _QOS_DIRS.get(stem)


def _containers_of_pod(
    pod_dir: pathlib.Path, *, uid: str, qos_class: types.QOSClass, driver: Driver, base: pathlib.Path
) -> Iterator[ContainerCgroup]:
    pod_uid = uid.replace("_", "-").lower()
    for entry in _subdirs(pod_dir):
        match = _CONTAINER_DIR.match(entry.name)
        if match is None:
            continue
        path = pathlib.Path(entry.path)
        yield ContainerCgroup(
            path=path,
            key=path.relative_to(base).as_posix(),
            pod_uid=pod_uid,
            container_id=match["id"],
            qos_class=qos_class,
            driver=driver,
        )


# ---- reading ---------------------------------------------------------------------------------------


def read_text(path: pathlib.Path) -> str | None:
    """The file's text, or None when it is missing, unreadable, removed mid-read, or not text."""
    try:
        return path.read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError):
        return None


def parse_flat_keyed(text: str) -> dict[str, int] | None:
    """`key value` lines (memory.events, memory.oom_control) → dict; None when any line is malformed."""
    values: dict[str, int] = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2:
            return None
        try:
            number = int(parts[1])
        except ValueError:
            return None
        if number < 0:
            return None
        values[parts[0]] = number
    return values


def parse_memory_events(text: str) -> tuple[int, int, int | None] | None:
    """v2 `memory.events` → (oom_kill, oom_group_kill, oom); None without `oom_kill` or when malformed.

    `oom_group_kill` (kernel 5.17+) reads 0 when absent, `oom` None.
    """
    values = parse_flat_keyed(text)
    if values is None or "oom_kill" not in values:
        return None
    return values["oom_kill"], values.get("oom_group_kill", 0), values.get("oom")


def parse_oom_control(text: str) -> int | None:
    """v1 `memory.oom_control` → oom_kill; None without that line (kernels before 4.13) or when malformed."""
    values = parse_flat_keyed(text)
    if values is None:
        return None
    return values.get("oom_kill")


def parse_limit(text: str) -> int | None:
    """`memory.max` ("max" or bytes) or `memory.limit_in_bytes` → bytes; None for unlimited or garbage."""
    value = text.strip()
    if value == "max":
        return None
    try:
        number = int(value)
    except ValueError:
        return None
    if number <= 0 or number >= _V1_UNLIMITED:
        return None
    return number


def _read_number(path: pathlib.Path) -> int | None:
    text = read_text(path)
    if text is None:
        return None
    try:
        number = int(text.strip())
    except ValueError:
        return None
    return number if number >= 0 else None


def read_counters(path: pathlib.Path) -> Counters | None:
    """Read one container cgroup; None when it has no readable, well-formed OOM counter (vanished).

    v2 when `memory.events` is there, else v1. The limit and limit-hit counters are extras: when
    they alone cannot be read, they are None and the counters are still returned.
    """
    events = read_text(path / "memory.events")
    if events is not None:
        parsed = parse_memory_events(events)
        if parsed is None:
            logger.debug("cannot parse %s", path / "memory.events")
            return None
        oom_kill, group_kills, limit_hits = parsed
        limit_text = read_text(path / "memory.max")
        return Counters(
            version=Version.V2,
            oom_kill=oom_kill,
            oom_group_kill=group_kills,
            limit_hits=limit_hits,
            limit=parse_limit(limit_text) if limit_text is not None else None,
        )
    control = read_text(path / "memory.oom_control")
    if control is None:
        return None
    oom_kill_v1 = parse_oom_control(control)
    if oom_kill_v1 is None:
        logger.debug("no oom_kill in %s", path / "memory.oom_control")
        return None
    limit_text = read_text(path / "memory.limit_in_bytes")
    return Counters(
        version=Version.V1,
        oom_kill=oom_kill_v1,
        oom_group_kill=0,
        limit_hits=_read_number(path / "memory.failcnt"),
        limit=parse_limit(limit_text) if limit_text is not None else None,
    )
