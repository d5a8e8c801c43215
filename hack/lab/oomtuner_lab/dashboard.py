"""`oomtuner dashboard` beside the lab: started by `make demo`, stopped by `oomtuner lab down`.

It runs as a lab process (its own session, a pid file and a log in the lab directory), so it
outlives the demo that started it, and it reads the lab's Prometheus when that runs.
"""

from __future__ import annotations

import sys
import urllib.request
from collections.abc import Callable
from pathlib import Path

from oomtuner_lab import config as lab_config
from oomtuner_lab import processes, prometheus

DEFAULT_PORT = 8090


def _proc() -> processes.Proc:
    root = lab_config.lab_dir()
    return processes.Proc(name=Path(sys.executable).name, pid_file=root / "dashboard.pid", log_file=root / "logs" / "dashboard.log")


def _healthy(url: str) -> bool:
    with urllib.request.urlopen(f"{url}/healthz", timeout=1) as r:
        return bool(r.status == 200)


def start(*, kubeconfig: str, allow_approve: bool = False) -> tuple[str, Path]:
    """Start the dashboard on 127.0.0.1 (port 8090, or a free one), or restart it; its URL and log."""
    proc = _proc()
    processes.stop(proc)
    port = DEFAULT_PORT if processes.port_free(DEFAULT_PORT) else processes.free_port()
    server = prometheus.lab_server()
    argv = [sys.executable, "-m", "oomtuner", "dashboard", "--port", str(port), "--kubeconfig", kubeconfig,
            f"--prometheus-url={server.url if server.running() else ''}"] + (["--allow-approve"] if allow_approve else [])
    processes.start(proc, argv)
    url = f"http://127.0.0.1:{port}"
    processes.wait_until("the dashboard", lambda: _healthy(url), timeout=60, proc=proc)
    return url, proc.log_file


def stop(*, echo: Callable[[str], None] = print) -> None:
    if processes.stop(_proc()):
        echo("dashboard stopped")
