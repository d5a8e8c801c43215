"""A real Prometheus for the lab: Debian's `prometheus` binary scraping the lab exporter.

So usage history in the lab is real PromQL over a real TSDB (README, "The local lab"). A `Server`
is one Prometheus process with its own folder (config, data, log, pid file) and port; it scrapes the
given targets every second. History longer than a test can wait for is backfilled: the exporter's
traces are written as OpenMetrics, `promtool tsdb create-blocks-from openmetrics` turns them into
TSDB blocks, and the blocks go into the data folder before Prometheus starts (checked with 2.42,
Debian 12's version: the blocks are loaded at start, and scraped samples continue the same series
because the backfill carries the scrape's `job` and `instance` labels).

`oomtuner lab prometheus up|down|status` runs one shared Server and exporter next to the lab; tests
start their own in a temporary folder.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import yaml

from oomtuner_lab import config as lab_config
from oomtuner_lab import processes
from oomtuner_lab.processes import LabError

JOB = "lab-exporter"
INSTALL_HINT = "install Debian's prometheus package: bash hack/install-deps.sh (or apt-get install prometheus)"


def find(name: str) -> str:
    """The path of `prometheus` or `promtool`; LabError when the package is missing."""
    found = shutil.which(name) or (f"/usr/bin/{name}" if Path(f"/usr/bin/{name}").exists() else None)
    if not found:
        raise LabError(f"{name} not found: {INSTALL_HINT}")
    return found


def config_text(*, targets: Sequence[str], scrape_interval: str = "1s") -> str:
    """prometheus.yml: one job scraping `targets` (host:port) every `scrape_interval`."""
    return yaml.safe_dump({
        "global": {"scrape_interval": scrape_interval, "evaluation_interval": scrape_interval},
        "scrape_configs": [{
            "job_name": JOB,
            "scrape_interval": scrape_interval,
            "scrape_timeout": scrape_interval,
            "static_configs": [{"targets": list(targets)}],
        }],
    }, sort_keys=False)


class Server:
    """One Prometheus process: folder `root`, port `port` (a free one when 0)."""

    def __init__(self, root: Path, *, port: int = 0, targets: Sequence[str] = (), scrape_interval: str = "1s",
                 retention: str = "30d"):
        self.root = root
        self.port = port or processes.free_port()
        self.targets = list(targets)
        self.scrape_interval = scrape_interval
        self.retention = retention
        self.proc = processes.Proc(name="prometheus", pid_file=root / "prometheus.pid", log_file=root / "prometheus.log")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def config_file(self) -> Path:
        return self.root / "prometheus.yml"

    def running(self) -> bool:
        return self.proc.alive()

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=1) as r:
                return bool(r.status == 200)
        except OSError:
            return False

    def start(self, *, timeout: float = 60) -> None:
        """Start Prometheus (nothing happens if it runs) and wait until it is ready."""
        if self.running():
            return
        self.root.mkdir(parents=True, exist_ok=True)
        self.data.mkdir(parents=True, exist_ok=True)
        self.config_file.write_text(config_text(targets=self.targets, scrape_interval=self.scrape_interval))
        processes.start(self.proc, [
            find("prometheus"),
            f"--config.file={self.config_file}",
            f"--storage.tsdb.path={self.data}",
            f"--storage.tsdb.retention.time={self.retention}",
            f"--web.listen-address=127.0.0.1:{self.port}",
        ])
        processes.wait_until("Prometheus to be ready", self.ready, timeout=timeout, proc=self.proc)
        if self.targets:
            # The scrape manager applies new targets on a 5s tick: wait for the first scrape, so
            # that what a caller sets in the exporter from now on is in the TSDB.
            processes.wait_until("Prometheus' first scrape", self.targets_up, timeout=timeout, proc=self.proc)

    def stop(self) -> bool:
        """Stop Prometheus (SIGTERM, then SIGKILL). True if it ran."""
        self.resume()  # a stopped (SIGSTOP) process cannot handle SIGTERM
        return processes.stop(self.proc)

    def pause(self) -> None:
        """Freeze the process (SIGSTOP): connections are accepted by the kernel but never answered,
        which is what a hung or overloaded Prometheus looks like to a client."""
        self._signal(signal.SIGSTOP)

    def resume(self) -> None:
        self._signal(signal.SIGCONT)

    def _signal(self, sig: int) -> None:
        pid = self.proc.pid()
        if pid is not None and processes.pid_alive(pid):
            os.kill(pid, sig)

    def backfill(self, openmetrics: str) -> int:
        """Turn OpenMetrics text into TSDB blocks in the data folder; returns how many blocks.

        Prometheus must be stopped (blocks are read at start). Raises LabError when promtool fails.
        """
        if self.running():
            raise LabError("stop Prometheus before backfilling: it reads new blocks only at start")
        self.data.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=self.root) as tmp:
            source = Path(tmp) / "history.om"
            source.write_text(openmetrics)
            out = Path(tmp) / "blocks"
            done = subprocess.run(
                [find("promtool"), "tsdb", "create-blocks-from", "openmetrics", str(source), str(out)],
                capture_output=True, text=True, check=False,
            )
            if done.returncode != 0:
                raise LabError(f"promtool failed ({done.returncode}): {done.stderr.strip() or done.stdout.strip()}")
            blocks = [p for p in out.iterdir() if p.is_dir()] if out.exists() else []
            for block in blocks:
                shutil.move(str(block), str(self.data / block.name))
        return len(blocks)

    def reset(self, *, history: str | None = None, timeout: float = 60) -> None:
        """Stop, forget every sample, backfill `history` (OpenMetrics) if given, start again."""
        self.stop()
        shutil.rmtree(self.data, ignore_errors=True)
        if history:
            self.backfill(history)
        self.start(timeout=timeout)

    def query(self, promql: str) -> list[dict[str, Any]]:
        """An instant query's result (for tests and status output)."""
        url = f"{self.url}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
        with urllib.request.urlopen(url, timeout=5) as r:
            body = json.loads(r.read())
        return list(body["data"]["result"])

    def targets_up(self) -> bool:
        with urllib.request.urlopen(f"{self.url}/api/v1/targets", timeout=5) as r:
            active = json.loads(r.read())["data"]["activeTargets"]
        return bool(active) and all(t.get("health") == "up" for t in active)


# ---- the lab's shared instance -------------------------------------------------------------------


def lab_root() -> Path:
    return lab_config.lab_dir() / "prometheus"


def _state_file() -> Path:
    return lab_root() / "state.json"


def _exporter_proc() -> processes.Proc:
    root = lab_root()
    return processes.Proc(name=Path(sys.executable).name, pid_file=root / "exporter.pid", log_file=root / "exporter.log")


def _load_ports() -> dict[str, int]:
    try:
        return {k: int(v) for k, v in json.loads(_state_file().read_text()).items()}
    except (FileNotFoundError, ValueError, AttributeError):
        return {}


def lab_server() -> Server:
    ports = _load_ports()
    exporter = ports.get("exporter", 0)
    return Server(lab_root(), port=ports.get("prometheus", 0), targets=[f"127.0.0.1:{exporter}"] if exporter else [])


def exporter_url() -> str | None:
    port = _load_ports().get("exporter")
    return f"http://127.0.0.1:{port}" if port and _exporter_proc().alive() else None


def lab_up(*, kubeconfig: Path | None, echo: Callable[[str], None] = print) -> Server:
    """Start the shared exporter and Prometheus (each only if it is not running); idempotent."""
    root = lab_root()
    root.mkdir(parents=True, exist_ok=True)
    ports = _load_ports()
    taken: set[int] = set()
    for name in ("exporter", "prometheus"):
        port = ports.get(name, 0)
        alive = (_exporter_proc() if name == "exporter" else lab_server().proc).alive()
        if not port or (not alive and not processes.port_free(port)):
            port = processes.free_port(exclude=taken)
        ports[name] = port
        taken.add(port)
    _state_file().write_text(json.dumps(ports) + "\n")
    exporter = _exporter_proc()
    if not exporter.alive():
        argv = [sys.executable, "-m", "oomtuner_lab.exporter", "--port", str(ports["exporter"])]
        if kubeconfig is not None:
            argv += ["--kubeconfig", str(kubeconfig)]
        # The lab's package lives in the checkout (hack/lab), not in the installed oomtuner.
        home = str(Path(__file__).resolve().parents[1])
        path = os.pathsep.join(p for p in (home, os.environ.get("PYTHONPATH", "")) if p)
        processes.start(exporter, argv, env={"PYTHONPATH": path})
        processes.wait_until("the exporter", lambda: _healthy(f"http://127.0.0.1:{ports['exporter']}"), timeout=30, proc=exporter)
        echo(f"exporter: http://127.0.0.1:{ports['exporter']} (log {exporter.log_file})")
    server = lab_server()
    if not server.running():
        server.start()
        echo(f"prometheus: {server.url} (log {server.proc.log_file})")
    else:
        echo(f"prometheus: {server.url} (running)")
    return server


def lab_down(*, echo: Callable[[str], None] = print) -> None:
    server = lab_server()
    if server.stop():
        echo("prometheus stopped")
    if processes.stop(_exporter_proc()):
        echo("exporter stopped")


def lab_status() -> list[str]:
    server = lab_server()
    exporter = _exporter_proc()
    ports = _load_ports()
    return [
        f"prometheus: {'running' if server.running() else 'stopped'} {server.url} (pid {server.proc.pid()})",
        f"exporter: {'running' if exporter.alive() else 'stopped'} http://127.0.0.1:{ports.get('exporter', 0)} "
        f"(pid {exporter.pid()})",
    ]


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/healthz", timeout=1) as r:
            return bool(r.status == 200)
    except OSError:
        return False
