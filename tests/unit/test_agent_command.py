"""The `oomtuner agent` command line: its options and how it refuses bad input.

Real: the click command, invoked in-process with click's runner (and `python -m oomtuner.agent`
for the entry point). Faked: nothing; no test here reaches an API server (the agent against the
lab's real API server is tests/agent/test_agent_lab.py).
"""

from __future__ import annotations

import pathlib
import subprocess
import sys

from click.testing import CliRunner

from oomtuner.agent import command


def test_help_names_every_option() -> None:
    result = CliRunner().invoke(command.agent, ["--help"])

    assert result.exit_code == 0
    for option in ("--node-name", "--cgroup-root", "--interval", "--state-dir", "--metrics-port", "--kubeconfig"):
        assert option in result.output


def test_node_name_is_required(tmp_path: pathlib.Path) -> None:
    result = CliRunner().invoke(command.agent, ["--cgroup-root", str(tmp_path)], env={"NODE_NAME": None})

    assert result.exit_code == 2
    assert "--node-name" in result.output


def test_missing_cgroup_root_is_one_line(tmp_path: pathlib.Path) -> None:
    result = CliRunner().invoke(command.agent, ["--node-name", "n", "--cgroup-root", str(tmp_path / "nope")])

    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        f"oomtuner agent: --cgroup-root {tmp_path / 'nope'}: no such folder (mount the host's /sys/fs/cgroup there)"]


def test_unusable_kubeconfig_is_one_line(tmp_path: pathlib.Path) -> None:
    result = CliRunner().invoke(command.agent, [
        "--node-name", "n", "--cgroup-root", str(tmp_path), "--kubeconfig", str(tmp_path / "missing")])

    assert result.exit_code == 2
    assert result.output.startswith("oomtuner agent: cannot load a kubeconfig")
    assert "Traceback" not in result.output


def test_module_entry_point(tmp_path: pathlib.Path) -> None:
    done = subprocess.run([sys.executable, "-m", "oomtuner.agent", "--node-name", "n", "--cgroup-root",
                           str(tmp_path / "nope")], capture_output=True, text=True, timeout=60)

    assert done.returncode == 2
    assert "no such folder" in done.stderr
