"""Finding pod container cgroups and reading their OOM counters (oomtuner.agent.cgroups).

Real: the agent's discovery and parsing code, reading real files and folders.
Faked: the cgroup filesystem. The trees are written into tmp_path with the names and file contents
the kernel and the kubelet produce (cgroup v1 and v2, cgroupfs and systemd drivers, kind's nested
root); `tests/agent/test_real_oom.py` reads the real v1 filesystem with real kernel OOM kills.
"""

from __future__ import annotations

import os
import pathlib

import pytest

from oomtuner.agent import cgroups
from oomtuner.api import types
from tests.agent import trees

MIB = 1 << 20


@pytest.mark.parametrize("version", ["v1", "v2"])
@pytest.mark.parametrize("driver", ["cgroupfs", "systemd"])
@pytest.mark.parametrize(
    ("qos", "expected_qos"),
    [
        ("guaranteed", types.QOSClass.GUARANTEED),
        ("burstable", types.QOSClass.BURSTABLE),
        ("besteffort", types.QOSClass.BEST_EFFORT),
    ],
)
def test_discovers_each_layout(
    tmp_path: pathlib.Path, version: trees.Version, driver: trees.Driver, qos: trees.QOS, expected_qos: types.QOSClass
) -> None:
    base = trees.hierarchy(tmp_path, version)
    uid, cid = trees.new_pod_uid(), trees.new_container_id()
    pod = trees.pod_dir(trees.kubepods_dir(base, driver), driver=driver, qos=qos, uid=uid)
    trees.write_container(pod, version=version, oom_kill=9)  # the pod-level cgroup has counters too
    path = trees.write_container(trees.container_dir(pod, driver=driver, container_id=cid), version=version, oom_kill=2)

    found = cgroups.discover(tmp_path)

    assert found == [
        cgroups.ContainerCgroup(
            path=path,
            key=path.relative_to(base).as_posix(),
            pod_uid=uid,
            container_id=cid,
            qos_class=expected_qos,
            driver=cgroups.Driver(driver),
        )
    ]


def test_systemd_names_of_each_runtime(tmp_path: pathlib.Path) -> None:
    base = trees.hierarchy(tmp_path, "v2")
    uid = trees.new_pod_uid()
    pod = trees.pod_dir(base / "kubepods.slice", driver="systemd", qos="burstable", uid=uid)
    ids = {runtime: trees.new_container_id() for runtime in ("cri-containerd", "docker", "crio")}
    for runtime, cid in ids.items():
        trees.write_container(pod / f"{runtime}-{cid}.scope", version="v2")
    trees.write_container(pod / f"crio-conmon-{trees.new_container_id()}.scope", version="v2")  # not a container

    found = cgroups.discover(tmp_path)

    assert sorted(c.container_id for c in found) == sorted(ids.values())
    assert {c.pod_uid for c in found} == {uid}


def test_kind_nested_kubelet_root_and_crio_cgroupfs(tmp_path: pathlib.Path) -> None:
    """kind runs its kubelet with a cgroup root of its own: `kubelet.slice/kubelet-kubepods.slice/...`."""
    base = trees.hierarchy(tmp_path, "v2")
    uid, cid = trees.new_pod_uid(), trees.new_container_id()
    kubepods = base / "kubelet.slice" / "kubelet-kubepods.slice"
    pod = trees.pod_dir(kubepods, driver="systemd", qos="besteffort", uid=uid, prefix="kubelet-kubepods")
    trees.write_container(trees.container_dir(pod, driver="systemd", container_id=cid), version="v2")
    uid2, cid2 = trees.new_pod_uid(), trees.new_container_id()
    trees.write_container(base / "kubelet" / "kubepods" / "burstable" / f"pod{uid2}" / f"crio-{cid2}", version="v2")

    found = {c.container_id: c for c in cgroups.discover(tmp_path)}

    assert found[cid].pod_uid == uid and found[cid].qos_class == types.QOSClass.BEST_EFFORT
    assert found[cid2].pod_uid == uid2 and found[cid2].driver == cgroups.Driver.CGROUPFS


def test_static_pod_uid_is_a_bare_hash(tmp_path: pathlib.Path) -> None:
    base = trees.hierarchy(tmp_path, "v1")
    cid = trees.new_container_id()
    uid = "6a1c2b3d4e5f60718293a4b5c6d7e8f9"  # the kubelet's config hash of a static pod
    trees.write_container(base / "kubepods" / "burstable" / f"pod{uid}" / cid, version="v1")

    assert [(c.pod_uid, c.container_id) for c in cgroups.discover(tmp_path)] == [(uid, cid)]


def test_only_the_memory_controller_on_v1(tmp_path: pathlib.Path) -> None:
    """v1 has one tree per controller; only memory/ has OOM counters, and unified/ (hybrid) has no memory."""
    uid, cid = trees.new_pod_uid(), trees.new_container_id()
    for controller in ("cpu", "pids", "unified"):
        (tmp_path / controller / "kubepods" / "burstable" / f"pod{uid}" / cid).mkdir(parents=True)
    trees.write_container(tmp_path / "memory" / "kubepods" / "burstable" / f"pod{uid}" / cid, version="v1")

    found = cgroups.discover(tmp_path)

    assert [c.path for c in found] == [tmp_path / "memory" / "kubepods" / "burstable" / f"pod{uid}" / cid]


def test_root_may_be_the_kubepods_cgroup_itself(tmp_path: pathlib.Path) -> None:
    uid, cid = trees.new_pod_uid(), trees.new_container_id()
    trees.write_container(tmp_path / "kubepods" / f"pod{uid}" / cid, version="v1")

    assert [c.container_id for c in cgroups.discover(tmp_path / "kubepods")] == [cid]


def test_ignores_what_is_not_a_pod_container(tmp_path: pathlib.Path) -> None:
    base = trees.hierarchy(tmp_path, "v2")
    kubepods = base / "kubepods.slice"
    (base / "system.slice" / "containerd.service").mkdir(parents=True)
    (kubepods / "kubepods-burstable.slice" / "not-a-pod.slice").mkdir(parents=True)
    pod = trees.pod_dir(kubepods, driver="systemd", qos="burstable", uid=trees.new_pod_uid())
    (pod / "cri-containerd-tooshort.scope").mkdir(parents=True)
    (pod / "system.slice").mkdir()
    (pod / f"cri-containerd-{trees.new_container_id()}.scope.file").write_text("")
    (pod / trees.new_container_id()).write_text("a file, not a cgroup")  # a file with a container-like name

    assert cgroups.discover(tmp_path) == []


def test_missing_root_and_depth_limit(tmp_path: pathlib.Path) -> None:
    assert cgroups.discover(tmp_path / "nowhere") == []
    deep = tmp_path / "a" / "b" / "c" / "d" / "kubepods" / f"pod{trees.new_pod_uid()}" / trees.new_container_id()
    trees.write_container(deep, version="v1")
    assert cgroups.discover(tmp_path) == []  # deeper than SEARCH_DEPTH: not searched


def test_symlinks_are_not_followed(tmp_path: pathlib.Path) -> None:
    base = trees.hierarchy(tmp_path, "v2")
    uid, cid = trees.new_pod_uid(), trees.new_container_id()
    real = trees.write_container(base / "elsewhere" / cid, version="v2")
    (base / "kubepods" / "burstable" / f"pod{uid}").mkdir(parents=True)
    os.symlink(real, base / "kubepods" / "burstable" / f"pod{uid}" / cid)
    os.symlink(base, base / "kubepods" / "burstable" / "loop")

    assert cgroups.discover(tmp_path) == []


# ---- counters ----------------------------------------------------------------------------------


def test_reads_v2_counters(tmp_path: pathlib.Path) -> None:
    path = trees.write_container(tmp_path / "c", version="v2", oom_kill=3, oom_group_kill=1, limit_hits=2, limit=256 * MIB)

    assert cgroups.read_counters(path) == cgroups.Counters(
        version=cgroups.Version.V2, oom_kill=3, oom_group_kill=1, limit_hits=2, limit=256 * MIB
    )


def test_reads_v1_counters(tmp_path: pathlib.Path) -> None:
    path = trees.write_container(tmp_path / "c", version="v1", oom_kill=4, limit_hits=17, limit=32 * MIB)

    assert cgroups.read_counters(path) == cgroups.Counters(
        version=cgroups.Version.V1, oom_kill=4, oom_group_kill=0, limit_hits=17, limit=32 * MIB
    )


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_unlimited(tmp_path: pathlib.Path, version: trees.Version) -> None:
    path = trees.write_container(tmp_path / "c", version=version, oom_kill=1, limit=None)

    counters = cgroups.read_counters(path)

    assert counters is not None and counters.limit is None and counters.oom_kill == 1


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("low 0\nhigh 0\nmax 5\noom 2\noom_kill 1\noom_group_kill 0\n", (1, 0, 2)),
        ("oom_kill 7\n", (7, 0, None)),  # before 5.17 there is no oom_group_kill
        ("low 0\nhigh 0\nmax 0\noom 0\n", None),  # no oom_kill at all
        ("oom_kill seven\n", None),
        ("oom_kill -1\n", None),
        ("oom_kill 1 2\n", None),
        ("", None),
        ("\x00\x01garbage", None),
    ],
)
def test_parse_memory_events(text: str, expected: tuple[int, int, int | None] | None) -> None:
    assert cgroups.parse_memory_events(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("oom_kill_disable 0\nunder_oom 0\noom_kill 12\n", 12),
        ("oom_kill_disable 0\nunder_oom 1\n", None),  # kernels before 4.13
        ("oom_kill_disable 0\nunder_oom 0\noom_kill x\n", None),
    ],
)
def test_parse_oom_control(text: str, expected: int | None) -> None:
    assert cgroups.parse_oom_control(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("max\n", None),
        ("268435456\n", 256 * MIB),
        ("9223372036854771712\n", None),  # v1 "unlimited" with 4 KiB pages
        ("9223372036854710272\n", None),  # v1 "unlimited" with 64 KiB pages
        ("0\n", None),
        ("", None),
        ("lots\n", None),
    ],
)
def test_parse_limit(text: str, expected: int | None) -> None:
    assert cgroups.parse_limit(text) == expected


def test_vanished_cgroup_reads_as_none(tmp_path: pathlib.Path) -> None:
    assert cgroups.read_counters(tmp_path / "gone") is None
    (tmp_path / "empty").mkdir()
    assert cgroups.read_counters(tmp_path / "empty") is None


@pytest.mark.parametrize(
    "content",
    [b"oom_kill lots\n", b"\xff\xfe\x00binary", b"oom_kill 3 extra\n", b"half a line"],
)
def test_garbage_counters_read_as_none(tmp_path: pathlib.Path, content: bytes) -> None:
    path = trees.write_container(tmp_path / "c", version="v2", oom_kill=1)
    (path / "memory.events").write_bytes(content)

    assert cgroups.read_counters(path) is None


def test_garbage_v1_counter_reads_as_none(tmp_path: pathlib.Path) -> None:
    path = trees.write_container(tmp_path / "c", version="v1", oom_kill=1)
    (path / "memory.oom_control").write_bytes(b"\xff\xff")

    assert cgroups.read_counters(path) is None


def test_counter_file_that_is_a_folder(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "c"
    (path / "memory.oom_control").mkdir(parents=True)

    assert cgroups.read_counters(path) is None


def test_unreadable_extras_leave_the_counter(tmp_path: pathlib.Path) -> None:
    """The limit and failcnt are extras: without them the kill counter still counts."""
    path = trees.write_container(tmp_path / "c", version="v1", oom_kill=2, limit=32 * MIB)
    (path / "memory.limit_in_bytes").unlink()
    (path / "memory.failcnt").write_text("many\n")

    assert cgroups.read_counters(path) == cgroups.Counters(
        version=cgroups.Version.V1, oom_kill=2, oom_group_kill=0, limit_hits=None, limit=None
    )
