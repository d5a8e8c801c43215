"""Starting, watching and stopping the lab's processes.

Each process runs in its own session (so it outlives `oomtuner lab up` and a signal to it
reaches its whole process group), logs to one file, and has a pid file.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path


class LabError(RuntimeError):
    """Something in the lab did not start or stop as it should."""


@dataclass(frozen=True)
class Proc:
    name: str
    pid_file: Path
    log_file: Path

    def pid(self) -> int | None:
        try:
            return int(self.pid_file.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None

    def alive(self) -> bool:
        pid = self.pid()
        return pid is not None and pid_alive(pid, self.name)

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_file.read_text(errors="replace")
        except FileNotFoundError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])


def _reap(pid: int) -> None:
    """Collect `pid` if it is our own dead child, so it does not stay a zombie."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def pid_alive(pid: int, name: str | None = None) -> bool:
    """True if `pid` runs (not a zombie) and, when `name` is given, is that program."""
    _reap(pid)
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    state = stat.rsplit(")", 1)[1].split()[0]
    if state in ("Z", "X"):
        return False
    if name is None:
        return True
    try:
        argv0 = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0", 1)[0].decode()
    except (FileNotFoundError, ProcessLookupError):
        return False
    if not argv0:
        # Empty while the process is between fork and exec (and for kernel threads): it exists,
        # and a recycled pid would show a command line.
        return True
    return Path(argv0).name == name  # guards against a recycled pid


def start(proc: Proc, argv: Sequence[str], *, env: dict[str, str] | None = None) -> int:
    """Start `argv` detached, appending stdout and stderr to the log; write the pid file."""
    proc.log_file.parent.mkdir(parents=True, exist_ok=True)
    proc.pid_file.parent.mkdir(parents=True, exist_ok=True)
    with open(proc.log_file, "ab") as log:
        log.write(f"\n=== {time.strftime('%Y-%m-%dT%H:%M:%S')} {' '.join(argv)}\n".encode())
        log.flush()
        child = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            close_fds=True,
            env={**os.environ, **(env or {})},
        )
    proc.pid_file.write_text(f"{child.pid}\n")
    # Popen warns (ResourceWarning) when a child is collected while still running; the lab's
    # processes are meant to outlive this object, so forget it and reap through pid_alive.
    child.returncode = 0
    return child.pid


def stop(proc: Proc, *, timeout: float = 15.0) -> bool:
    """SIGTERM the process group, then SIGKILL it after `timeout`. True if something ran."""
    pid = proc.pid()
    if pid is None:
        return False
    was_alive = pid_alive(pid, proc.name)
    if was_alive:
        _signal_group(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if pid_alive(pid):
            _signal_group(pid, signal.SIGKILL)
            deadline = time.monotonic() + 5
            while pid_alive(pid) and time.monotonic() < deadline:
                time.sleep(0.05)
    # Anything left in its group (children it spawned) goes too.
    _signal_group(pid, signal.SIGKILL)
    proc.pid_file.unlink(missing_ok=True)
    return was_alive


def _signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)  # pgid == pid: started with start_new_session
    except (ProcessLookupError, PermissionError):
        pass


def wait_until(
    what: str,
    check: Callable[[], bool],
    *,
    timeout: float,
    proc: Proc | None = None,
    interval: float = 0.2,
) -> float:
    """Poll `check` until it is true; fail early if `proc` dies. Returns the seconds waited."""
    start = time.monotonic()
    last_error: Exception | None = None
    while True:
        try:
            if check():
                return time.monotonic() - start
            last_error = None
        except Exception as exc:  # noqa: BLE001 - any failure means "not ready yet"
            last_error = exc
        # A death is looked at twice: a process caught in the middle of its exec looks gone.
        if proc is not None and not proc.alive() and not (time.sleep(0.5) or proc.alive()):
            raise LabError(f"{proc.name} exited while waiting for {what}; {proc.log_file}:\n{proc.log_tail()}")
        if time.monotonic() - start > timeout:
            detail = f" (last error: {last_error})" if last_error else ""
            logs = f"; {proc.log_file}:\n{proc.log_tail()}" if proc else ""
            raise LabError(f"timed out after {timeout:.0f}s waiting for {what}{detail}{logs}")
        time.sleep(interval)


def port_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def free_port(exclude: frozenset[int] | set[int] = frozenset(), host: str = "127.0.0.1") -> int:
    """A port the kernel hands out now (not guaranteed to stay free, but close enough)."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind((host, 0))
            port = int(s.getsockname()[1])
        if port not in exclude:
            return port
