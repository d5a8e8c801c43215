"""Stopping, hanging and restarting the lab's own processes, for fault injection.

Only the lab of `OOMTUNER_LAB_DIR` is touched: its pid files say which processes are its own, and
its state file gives the ports and the command lines (`oomtuner_lab.config.argv`, as `lab up` starts
them). A component is stopped as `lab down` stops it (SIGTERM, then SIGKILL), hung with SIGSTOP and
let go with SIGCONT, and started again with the same command line, ports and data.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import signal
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from oomtuner_lab import binaries, config, processes


class Component:
    """One process of the lab (`etcd`, `kube-apiserver`, ...)."""

    def __init__(self, name: str, paths: config.Paths | None = None):
        if name not in config.COMPONENTS:
            raise ValueError(f"unknown lab component {name!r}")
        self.name = name
        self.paths = paths or config.Paths()
        self.proc = self.paths.proc(name)

    def pid(self) -> int:
        pid = self.proc.pid()
        if pid is None or not self.proc.alive():
            raise RuntimeError(f"{self.name} of the lab in {self.paths.root} is not running")
        return pid

    def stopped(self) -> bool:
        """True while the process is held by SIGSTOP."""
        pid = self.proc.pid()
        if pid is None:
            return False
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return False
        return stat.rsplit(")", 1)[1].split()[0] == "T"

    def healthy(self) -> bool:
        ports = self.paths.load_ports()
        if self.name == "etcd":
            status, body = _get(f"http://127.0.0.1:{ports.etcd_client}/health")
            return status == 200 and json.loads(body).get("health") == "true"
        if self.name == "kube-apiserver":
            return _get(f"{self.paths.server(ports)}/readyz", admin=True)[0] == 200
        return self.proc.alive()

    def wait_healthy(self, timeout: float = 60) -> float:
        return processes.wait_until(f"{self.name} to be healthy", self.healthy, timeout=timeout, proc=self.proc)

    def stop(self) -> None:
        """Stop it as `lab down` does: SIGTERM, SIGKILL after 15 s."""
        if self.stopped():
            os.kill(self.pid(), signal.SIGCONT)
        processes.stop(self.proc)

    def kill(self) -> None:
        """SIGKILL: gone at once, nothing drained (as when its machine dies)."""
        os.kill(self.pid(), signal.SIGKILL)
        processes.stop(self.proc)  # reaps it and drops the pid file

    def start(self, timeout: float = 60) -> float:
        """Start it again with the command line `lab up` uses; returns the seconds until healthy."""
        started = time.monotonic()
        argv = config.argv(self.name, binaries.bin_dir(), self.paths, self.paths.load_ports(),
                           kwok_stages=binaries.kwok_stages_dir())
        processes.start(self.proc, argv, env=config.env(self.name, self.paths))
        self.wait_healthy(timeout)
        return time.monotonic() - started

    def pause(self) -> None:
        os.kill(self.pid(), signal.SIGSTOP)

    def resume(self) -> None:
        os.kill(self.pid(), signal.SIGCONT)

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """SIGSTOP for the block, SIGCONT after it whatever happens."""
        self.pause()
        try:
            yield
        finally:
            self.resume()


def _admin_tls() -> ssl.SSLContext:
    paths = config.Paths()
    context = ssl.create_default_context(cafile=str(paths.pki.ca_crt))
    context.load_cert_chain(str(paths.pki.client_crt("admin")), str(paths.pki.client_key("admin")))
    return context


def _get(url: str, *, admin: bool = False) -> tuple[int, bytes]:
    """GET `url` (with the lab's admin certificate when `admin`): the status and body, 0 when
    unreachable. Every answer is closed here, an error answer too: the suite takes every warning,
    an unclosed socket's included, for an error."""
    try:
        with urllib.request.urlopen(url, context=_admin_tls() if admin else None, timeout=2) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.read()
    except OSError:
        return 0, b""


def restore() -> list[str]:
    """Put the lab back as `lab up` left it: every held component let go, every dead one started.
    Returns what was done (empty when nothing was needed)."""
    done = []
    for name in config.COMPONENTS:
        component = Component(name)
        if component.stopped():
            component.resume()
            done.append(f"SIGCONT {name}")
        elif not component.proc.alive():
            component.start()
            done.append(f"started {name}")
    for name in ("etcd", "kube-apiserver"):
        Component(name).wait_healthy()
    return done


# ---- etcd ------------------------------------------------------------------------------------------


def _etcd(path: str, body: dict[str, object]) -> dict[str, object]:
    port = config.Paths().load_ports().etcd_client
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(request, timeout=10) as r:
        return dict(json.loads(r.read()))


def etcd_revision() -> int:
    """etcd's current revision (what the API server's resourceVersions count)."""
    answer = _etcd("/v3/kv/range", {"key": base64.b64encode(b"/oomtuner-faults/none").decode()})
    return int(answer["header"]["revision"])  # type: ignore[index]


def compact_etcd(revision: int | None = None) -> int:
    """Compact etcd's history up to `revision` (default: now): watches from an older resourceVersion
    then get 410 Gone. Returns the revision compacted to."""
    revision = revision or etcd_revision()
    _etcd("/v3/kv/compaction", {"revision": str(revision), "physical": True})
    return revision


def watch_gone(path: str, resource_version: str) -> bool:
    """Does a watch of `path` (e.g. /api/v1/namespaces/x/pods) from `resource_version` get 410 Gone?
    That is what a client resuming its watch from there meets."""
    url = f"{config.Paths().server()}{path}?watch=true&resourceVersion={resource_version}&timeoutSeconds=1"
    status, body = _get(url, admin=True)
    if status == 410:
        return True
    events = [json.loads(line) for line in body.splitlines() if line.strip()]
    return any(e.get("type") == "ERROR" and e.get("object", {}).get("code") == 410 for e in events)
