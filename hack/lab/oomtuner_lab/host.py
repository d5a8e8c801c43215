"""What the host of a real node shows: the kernel's OOM kills (/dev/kmsg) and a container's processes
(/proc). The real-node tests compare what oomtuner recorded with these; the demo prints the kill.

On the lab the node's processes are this machine's; on kind they are too (kind's nodes are
containers on the machine the tests run on), and reading /dev/kmsg there needs root or
`kernel.dmesg_restrict=0`.
"""

from __future__ import annotations

import dataclasses
import datetime
import errno
import os
import pathlib
import re
import time

# The kernel's report of one OOM kill, one record of it:
#   oom-kill:constraint=CONSTRAINT_MEMCG,...,oom_memcg=/…,task_memcg=/…/pod<uid>/<id>,task=memhog,pid=2933,uid=0
_OOM_KILL = re.compile(r"^oom-kill:.*?\btask_memcg=(?P<memcg>[^,]*),task=(?P<task>[^,]*),pid=(?P<pid>\d+)")
#   Memory cgroup out of memory: Killed process 2933 (memhog) total-vm:…, UID:0 pgtables:…kB oom_score_adj:999
_KILLED = re.compile(r"Killed process (?P<pid>\d+) \((?P<task>[^)]*)\).*\boom_score_adj:(?P<adj>-?\d+)")


@dataclasses.dataclass
class KernelKill:
    """One OOM kill the kernel logged. `at` is the kernel's timestamp, on CLOCK_MONOTONIC (the
    clock of `time.monotonic()`); `memcg` is the victim's cgroup."""

    at: float
    pid: int
    task: str
    memcg: str
    oom_score_adj: int | None = None

    def of_pod(self, uid: str) -> bool:
        """True when the victim was in the pod's cgroup (cgroupfs `pod<uid>`, systemd `pod<uid_>`)."""
        return f"pod{uid}" in self.memcg or f"pod{uid.replace('-', '_')}" in self.memcg

    def container_id(self) -> str:
        return self.memcg.rstrip("/").rpartition("/")[2].removeprefix("cri-containerd-").removesuffix(".scope")


class KernelLog:
    """The kernel log's records from the moment this is made on: read /dev/kmsg without blocking."""

    def __init__(self) -> None:
        self.fd = os.open("/dev/kmsg", os.O_RDONLY | os.O_NONBLOCK)
        os.lseek(self.fd, 0, os.SEEK_END)
        self.kills: list[KernelKill] = []

    def read(self) -> list[KernelKill]:
        """Read what is new; return every kill seen so far."""
        while True:
            try:
                record = os.read(self.fd, 16384).decode(errors="replace")
            except BlockingIOError:
                return self.kills
            except OSError as exc:
                if exc.errno == errno.EPIPE:  # records were overwritten before we read them: go on
                    continue
                raise
            header, _, message = record.partition(";")
            message = message.split("\n", 1)[0]
            at = int(header.split(",")[2]) / 1e6
            if found := _OOM_KILL.match(message):
                self.kills.append(KernelKill(at=at, pid=int(found["pid"]), task=found["task"], memcg=found["memcg"]))
            elif found := _KILLED.search(message):
                for kill in reversed(self.kills):
                    if kill.pid == int(found["pid"]) and kill.oom_score_adj is None:
                        kill.oom_score_adj = int(found["adj"])
                        break

    def kills_of_pod(self, uid: str) -> list[KernelKill]:
        return [k for k in self.read() if k.of_pod(uid)]

    def close(self) -> None:
        os.close(self.fd)


def wall_clock(monotonic: float) -> str:
    """A CLOCK_MONOTONIC time (a kernel log timestamp) as UTC wall-clock time, to the millisecond."""
    at = time.time() - (time.monotonic() - monotonic)
    return datetime.datetime.fromtimestamp(at, datetime.timezone.utc).strftime("%H:%M:%S.%f")[:-3]


def container_pids(container_id: str) -> list[int]:
    """The processes in the container's cgroup (its ID is in their /proc/<pid>/cgroup), oldest first."""
    found = []
    for entry in pathlib.Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if container_id in (entry / "cgroup").read_text():
                found.append(int(entry.name))
        except OSError:
            continue
    return sorted(found)


def read_cmdline(pid: int) -> str:
    """The process's command line, words joined by spaces ("" once it is gone)."""
    try:
        return pathlib.Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def oom_score_adj(pid: int) -> int:
    return int(pathlib.Path(f"/proc/{pid}/oom_score_adj").read_text())


def wait_pids(container_id: str, *, timeout: float = 10) -> list[int]:
    """The container's processes, once there are any (its first process may still be starting)."""
    deadline = time.monotonic() + timeout
    while True:
        pids = container_pids(container_id)
        if pids or time.monotonic() > deadline:
            return pids
        time.sleep(0.05)
