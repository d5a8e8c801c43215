"""`oomtuner agent` as a child process (`python -m oomtuner.agent`, the command the DaemonSet
runs), with its log in a file and its /metrics on a free port."""

from __future__ import annotations

import os
import pathlib
import re
import socket
import subprocess
import sys
import urllib.request

import pytest

from tests.e2e.kit import wait_for

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class AgentProcess:
    def __init__(self, *, kubeconfig: str, cgroup_root: pathlib.Path, state_dir: pathlib.Path, log: pathlib.Path,
                 node_name: str) -> None:
        self.args = [sys.executable, "-m", "oomtuner.agent", "--node-name", node_name, "--cgroup-root", str(cgroup_root),
                     "--interval", "0.2", "--state-dir", str(state_dir), "--log-format", "text",
                     "--kubeconfig", kubeconfig]
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0

    def start(self, *, watching: int = 1) -> None:
        """Start it and wait until it has polled and watches at least `watching` container cgroups
        (0: once it has polled, so that every cgroup born from then on is new to it)."""
        self.port = _free_port()
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen([*self.args, "--metrics-port", str(self.port)], stdout=log,
                                         stderr=subprocess.STDOUT, cwd=ROOT, env={**os.environ})
        wait_for(lambda: self.watched() >= watching, timeout=60,
                 what=f"the agent to poll and watch {watching} container cgroup(s)")

    def watched(self) -> int:
        """The container cgroups it watches; -1 before its first poll."""
        found = re.search(r"^oomtuner_agent_cgroups_watched (\S+)$", self.metrics(), re.MULTILINE)
        return int(float(found[1])) if found else -1

    def metrics(self) -> str:
        if self.proc is not None and self.proc.poll() is not None:
            pytest.fail(f"the agent exited with {self.proc.returncode}:\n{self.log.read_text()}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=2) as response:
                return str(response.read().decode())
        except OSError:
            return ""

    def stop(self) -> int:
        assert self.proc is not None
        self.proc.terminate()
        try:
            return self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
            raise
