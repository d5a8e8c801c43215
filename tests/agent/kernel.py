"""Real memory cgroups shaped like a kubelet's, and processes the kernel OOM-kills in them.

`KubeletCgroups` makes a tree like a kubelet's (cgroupfs driver, cgroup v1:
`<root>/kubepods/burstable/pod<uid>/<64-hex container id>`) inside the real memory cgroup hierarchy,
under the memory cgroup this test process runs in (or the hierarchy's root when that is not
writable), and removes it afterwards. Processes started in it are killed (by their own pid) before
the cgroups are removed.
"""

from __future__ import annotations

import contextlib
import pathlib
import secrets
import select
import subprocess
import sys
import uuid

import pytest

from oomtuner_lab import nodehost

MEMORY_MOUNT = pathlib.Path("/sys/fs/cgroup/memory")
MIB = 1 << 20
# Allocates a MiB at a time until the kernel kills it.
GREEDY_CHILD = "b=[]\nwhile True: b.append(bytearray(1<<20))"


def _own_memory_cgroup() -> pathlib.Path | None:
    try:
        lines = pathlib.Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if "memory" in controllers.split(","):
            return MEMORY_MOUNT / path.lstrip("/")
    return None


def make_test_root() -> pathlib.Path:
    """A fresh `oomtuner-test-<random>` memory cgroup we may write; skips the test if there is none."""
    if not (MEMORY_MOUNT / "memory.oom_control").exists():
        pytest.skip(f"no cgroup v1 memory hierarchy at {MEMORY_MOUNT}: real OOM kills need it here")
    name = f"oomtuner-test-{secrets.token_hex(4)}"
    errors = []
    for parent in (_own_memory_cgroup(), MEMORY_MOUNT):
        if parent is None:
            continue
        try:
            (parent / name).mkdir()
            return parent / name
        except OSError as exc:
            errors.append(f"{parent}: {exc.strerror}")
    pytest.skip("the cgroup v1 memory hierarchy is not writable here (" + "; ".join(errors) + ")")


def _write(path: pathlib.Path, value: str) -> None:
    with open(path, "w") as file:
        file.write(value)


class KubeletCgroups:
    """A kubelet-shaped tree in the real memory hierarchy, with processes started in its containers."""

    def __init__(self, root: pathlib.Path) -> None:
        self.root = root  # what the agent's --cgroup-root points at
        self.created: list[pathlib.Path] = [root]
        self.processes: list[subprocess.Popen[str]] = []

    def _mkdir(self, path: pathlib.Path) -> pathlib.Path:
        path.mkdir()
        self.created.append(path)
        return path

    def pod(self, *, uid: str | None = None, qos: str = "burstable", limit: int | None = None) -> tuple[str, pathlib.Path]:
        """A pod cgroup; returns its UID and path."""
        uid = uid or str(uuid.uuid4())
        parent = self.root / "kubepods"
        if not parent.exists():
            self._mkdir(parent)
        if qos != "guaranteed":
            parent = parent / qos
            if not parent.exists():
                self._mkdir(parent)
        path = self._mkdir(parent / f"pod{uid}")
        if limit is not None:
            _write(path / "memory.limit_in_bytes", str(limit))
        return uid, path

    def container(self, pod: pathlib.Path, *, limit: int) -> tuple[str, pathlib.Path]:
        """A container cgroup with a memory limit; returns its ID and path."""
        container_id = secrets.token_hex(32)
        path = self._mkdir(pod / container_id)
        _write(path / "memory.limit_in_bytes", str(limit))
        return container_id, path

    def start_parent(self, container: pathlib.Path) -> subprocess.Popen[str]:
        """A shell that moves itself into the container's cgroup and waits for a line on stdin.

        Like a container's PID 1 that runs workers: on `spawn()` it starts a greedy child the kernel
        kills when the cgroup runs out, prints `child exit <status>`, and lives on.
        """
        script = (
            f'echo $$ > "{container}/cgroup.procs" || exit 3; echo ready; '
            'while read cmd; do "$0" -c "$1"; echo "child exit $?"; done'
        )
        proc = subprocess.Popen(
            ["sh", "-c", script, sys.executable, GREEDY_CHILD],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        )  # stderr: the shell's "Killed" notice
        self.processes.append(proc)
        first = read_line(proc, timeout=10)
        assert first == "ready", f"could not move the shell into {container} (exit code {proc.poll()})"
        return proc

    def cleanup(self) -> None:
        for proc in self.processes:
            if proc.poll() is None:
                proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=10)
            for pipe in (proc.stdin, proc.stdout):
                if pipe is not None:
                    with contextlib.suppress(OSError):
                        pipe.close()
        for path in reversed(self.created):
            nodehost.rmdir_cgroup(path)


def spawn_greedy_child(parent: subprocess.Popen[str], *, timeout: float = 30) -> str:
    """Ask the parent for one greedy child; return what the parent said when the child ended."""
    assert parent.stdin is not None
    parent.stdin.write("spawn\n")
    parent.stdin.flush()
    return read_line(parent, timeout=timeout)


def read_line(proc: subprocess.Popen[str], *, timeout: float) -> str:
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    if not ready:
        pytest.fail(f"process {proc.pid} wrote nothing within {timeout:g}s")
    return proc.stdout.readline().strip()


def cgroup_of(pid: int) -> str | None:
    """The memory cgroup path of a live process, relative to the hierarchy; None once it is gone."""
    try:
        lines = pathlib.Path(f"/proc/{pid}/cgroup").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if "memory" in controllers.split(","):
            return path
    return None


def relative_to_mount(path: pathlib.Path) -> str:
    return "/" + path.relative_to(MEMORY_MOUNT).as_posix()

