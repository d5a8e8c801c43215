"""`oomtuner report` and `approve` when the cluster is unusable: one line on stderr, exit 1 for the
cluster (refused, hung, HTML, errors) and exit 2 for a kubeconfig that cannot be loaded, never a
traceback, never a urllib3 warning, never a credential.

The servers are real sockets on 127.0.0.1 that misbehave on purpose (a closed port, a listener that
never answers, an HTTP server that answers HTML or JSON of the wrong shape, a TLS server with a
self-signed certificate). Most cases run the CLI in-process; those about what reaches stderr run it
as a child process, so that Python's own last-resort logging and warnings would show.
"""

from __future__ import annotations

import base64
import contextlib
import http.server
import json
import os
import pathlib
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from oomtuner import cli

ROOT = pathlib.Path(__file__).resolve().parents[2]


def kubeconfig(tmp_path: pathlib.Path, server: str, **cluster: Any) -> str:
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "c",
        "clusters": [{"name": "c", "cluster": {"server": server, **cluster}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
        "users": [{"name": "u", "user": {"token": "secret-token"}}],
    }))
    return str(path)


def run(args: list[str], env: dict[str, str] | None = None) -> Any:
    environment = {"OOMTUNER_PROMETHEUS_URL": "", **(env or {})}
    return CliRunner(env=environment).invoke(cli.main, args, catch_exceptions=False)


def assert_one_line(stderr: str, *, fragment: str) -> None:
    lines = stderr.splitlines()
    assert len(lines) == 1, stderr[:2000]
    assert lines[0].startswith("oomtuner: ") and fragment in lines[0], lines[0]
    assert "Traceback" not in stderr and "Warning" not in stderr and "secret-token" not in stderr


def assert_clean(result: Any, *, code: int, fragment: str) -> None:
    assert result.exit_code == code, (result.exit_code, result.stderr[:1000])
    assert_one_line(result.stderr, fragment=fragment)


# ---- misbehaving servers ----------------------------------------------------------------------------

@pytest.fixture
def refused_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def hung_port() -> Iterator[int]:
    """A listener that accepts connections and never answers."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            with contextlib.suppress(OSError):
                conn, _ = listener.accept()
                held.append(conn)

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield int(listener.getsockname()[1])
    stop.set()
    thread.join()
    for conn in held:
        conn.close()
    listener.close()


class _Answer(http.server.BaseHTTPRequestHandler):
    status = 200
    content_type = "text/html"
    body = b"<html><body><h1>Welcome to nginx!</h1></body></html>"

    def _answer(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.send_response(self.status)
        self.send_header("Content-Type", self.content_type)
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    do_GET = do_PATCH = do_POST = _answer

    def log_message(self, *args: Any) -> None:
        pass


@contextlib.contextmanager
def serving(status: int, content_type: str, body: bytes, *, tls: ssl.SSLContext | None = None) -> Iterator[str]:
    handler = type("Handler", (_Answer,), {"status": status, "content_type": content_type, "body": body})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"{'https' if tls else 'http'}://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def self_signed(tmp_path_factory: pytest.TempPathFactory) -> ssl.SSLContext:
    folder = tmp_path_factory.mktemp("tls")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
                    "-keyout", str(folder / "key.pem"), "-out", str(folder / "cert.pem")],
                   check=True, capture_output=True)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(folder / "cert.pem", folder / "key.pem")
    return context


def _child(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(pathlib.Path(sys.executable).parent / "oomtuner"), *args], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "OOMTUNER_PROMETHEUS_URL": "", **env}, cwd=ROOT)


# ---- the cluster fails: exit 1 ----------------------------------------------------------------------

COMMANDS = [["report"], ["report", "-o", "json"], ["approve", "shop/deployment-web", "--no-wait"], ["approve", "shop/deployment-web"]]
COMMAND_IDS = ["report", "report-json", "approve-no-wait", "approve"]


@pytest.mark.parametrize("args", COMMANDS, ids=COMMAND_IDS)
def test_connection_refused(tmp_path: pathlib.Path, refused_port: int, args: list[str]) -> None:
    config = kubeconfig(tmp_path, f"http://127.0.0.1:{refused_port}")
    assert_clean(run([*args, "--kubeconfig", config]), code=1, fragment="connection refused")


@pytest.mark.parametrize("args", COMMANDS[::2], ids=COMMAND_IDS[::2])
def test_a_hung_server_costs_one_timeout(tmp_path: pathlib.Path, hung_port: int, args: list[str]) -> None:
    config = kubeconfig(tmp_path, f"http://127.0.0.1:{hung_port}")
    started = time.monotonic()
    result = run([*args, "--kubeconfig", config, "--request-timeout", "1s"])
    assert time.monotonic() - started < 6
    assert_clean(result, code=1, fragment="no answer within 1s")


def test_the_request_timeout_comes_from_the_environment_too(tmp_path: pathlib.Path, hung_port: int) -> None:
    config = kubeconfig(tmp_path, f"http://127.0.0.1:{hung_port}")
    started = time.monotonic()
    result = run(["report", "--kubeconfig", config], env={"OOMTUNER_REQUEST_TIMEOUT": "500ms"})
    assert time.monotonic() - started < 5
    assert_clean(result, code=1, fragment="no answer within 0.5s")


ANSWERS = [
    ("html-200", 200, "text/html", b"<html><body>Welcome to nginx!</body></html>", "not JSON (text/html"),
    ("html-502", 502, "text/html", b"<html>Bad Gateway</html>", "502"),
    ("empty-json-list", 200, "application/json", b"[1, 2, 3]", "not a list of objects"),
    ("items-a-string", 200, "application/json", b'{"items": "nope"}', "not a list of objects"),
    ("truncated-json", 200, "application/json", b'{"items": [', "not JSON"),
    ("deep-json", 200, "application/json", b"[" * 100_000 + b"]" * 100_000, "not JSON"),
    ("unauthorized", 401, "application/json", json.dumps({"kind": "Status", "message": "Unauthorized", "code": 401}).encode(), "401 Unauthorized"),
    ("forbidden", 403, "application/json", json.dumps({"kind": "Status", "message": 'pods is forbidden: User "x"', "code": 403}).encode(), "403"),
    ("not-found", 404, "application/json", json.dumps({"kind": "Status", "code": 404}).encode(), "not found"),
    ("server-error-text", 500, "text/plain", b"boom\n" * 1000, "500"),
]


@pytest.mark.parametrize(("status", "content_type", "body", "fragment"), [a[1:] for a in ANSWERS], ids=[a[0] for a in ANSWERS])
@pytest.mark.parametrize("args", COMMANDS[::2], ids=COMMAND_IDS[::2])
def test_answers_that_are_no_use(tmp_path: pathlib.Path, args: list[str], status: int, content_type: str, body: bytes, fragment: str) -> None:
    if args[0] == "report" and fragment == "not found":
        fragment = "404"
    if args[0] == "approve" and fragment == "not a list of objects":
        return  # approve reads one object; a list is read as one (and then has no generation): see below
    with serving(status, content_type, body) as url:
        result = run([*args, "--kubeconfig", kubeconfig(tmp_path, url)])
    assert_clean(result, code=1, fragment=fragment)


def test_approve_of_an_answer_without_status_times_out_in_one_line(tmp_path: pathlib.Path) -> None:
    with serving(200, "application/json", b'{"metadata": {"generation": 2}, "status": "weird"}') as url:
        result = run(["approve", "shop/x", "--timeout", "1", "--kubeconfig", kubeconfig(tmp_path, url)])
    assert result.stdout.startswith("oomrecommendation shop/x approved (generation 2)")
    assert_clean(result, code=1, fragment="did not act on shop/x within 1s")


# ---- what reaches stderr of a real process ----------------------------------------------------------

def test_insecure_skip_tls_verify_prints_no_warning(tmp_path: pathlib.Path, self_signed: ssl.SSLContext) -> None:
    with serving(200, "text/html", b"<html>portal</html>", tls=self_signed) as url:
        config = kubeconfig(tmp_path, url, **{"insecure-skip-tls-verify": True})
        done = _child(["report", "--kubeconfig", config], env={})
    assert done.returncode == 1, done.stderr
    assert_one_line(done.stderr, fragment="not JSON (text/html")


def test_an_untrusted_certificate_is_one_line(tmp_path: pathlib.Path, self_signed: ssl.SSLContext) -> None:
    with serving(200, "application/json", b"{}", tls=self_signed) as url:
        done = _child(["report", "--kubeconfig", kubeconfig(tmp_path, url)], env={})
    assert done.returncode == 1
    assert_one_line(done.stderr, fragment="TLS certificate not trusted")


def test_refused_and_hung_in_a_real_process(tmp_path: pathlib.Path, refused_port: int, hung_port: int) -> None:
    refused = _child(["report", "--kubeconfig", kubeconfig(tmp_path, f"http://127.0.0.1:{refused_port}")], env={})
    assert refused.returncode == 1 and refused.stdout == ""
    assert_one_line(refused.stderr, fragment="connection refused")
    started = time.monotonic()
    hung = _child(["approve", "a/b", "--request-timeout", "1s", "--kubeconfig", kubeconfig(tmp_path, f"http://127.0.0.1:{hung_port}")], env={})
    assert time.monotonic() - started < 10
    assert hung.returncode == 1
    assert_one_line(hung.stderr, fragment="no answer within 1s")


def test_credentials_in_the_server_url_are_not_shown(tmp_path: pathlib.Path, refused_port: int) -> None:
    config = kubeconfig(tmp_path, f"http://admin:hunter2@127.0.0.1:{refused_port}")
    result = run(["report", "--kubeconfig", config])
    assert_clean(result, code=1, fragment="http://REDACTED@127.0.0.1")
    assert "hunter2" not in result.stderr


def test_a_prometheus_url_with_credentials_is_redacted_in_the_report(tmp_path: pathlib.Path) -> None:
    nodes = {"kind": "List", "items": [{"metadata": {"name": "n1"}, "status": {"capacity": {"memory": "1Gi"}}}]}
    pods = {"kind": "List", "items": [{"metadata": {"name": "p", "namespace": "ns"}, "spec": {"nodeName": "n1", "containers": [{"name": "c"}]},
                                       "status": {"phase": "Running"}}]}

    class Cluster(_Answer):
        def do_GET(self) -> None:  # noqa: N802
            body = nodes if self.path.startswith("/api/v1/nodes") else pods if "/pods" in self.path else {"items": []}
            self.body = json.dumps(body).encode()
            self.content_type = "application/json"
            self._answer()

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Cluster)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        config = kubeconfig(tmp_path, f"http://127.0.0.1:{server.server_address[1]}")
        result = run(["report", "-o", "json", "--kubeconfig", config, "--prometheus-url", "http://bob:hunter2@127.0.0.1:1",
                      "--prometheus-timeout", "1s"])
    finally:
        server.shutdown()
        server.server_close()
    assert result.exit_code == 0, result.stderr
    assert_one_line(result.stderr, fragment="Prometheus at http://REDACTED@127.0.0.1:1")
    ranking = json.loads(result.stdout)["ranking"]
    assert ranking["prometheus"] == "http://REDACTED@127.0.0.1:1" and "hunter2" not in result.stdout


# ---- the kubeconfig cannot be loaded: exit 2 --------------------------------------------------------

def _good() -> dict[str, Any]:
    return {
        "apiVersion": "v1", "kind": "Config", "current-context": "c",
        "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:1"}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
        "users": [{"name": "u", "user": {"token": "secret-token"}}],
    }


def _with(**cluster: Any) -> str:
    config = _good()
    config["clusters"][0]["cluster"].update(cluster)
    return yaml.safe_dump(config)


KUBECONFIGS: list[tuple[str, str | bytes, str]] = [
    ("nul-bytes", yaml.safe_dump(_good()).encode() + b"\x00\x00", "cannot load a kubeconfig"),
    ("bad-base64-ca", _with(**{"certificate-authority-data": "!!not base64!!"}), "cannot load a kubeconfig"),
    ("ca-not-a-certificate", _with(**{"certificate-authority-data": base64.b64encode(b"hello").decode()}), ""),
    ("empty", "", "cannot load a kubeconfig"),
    ("a-list", "- 1\n- 2\n", "cannot load a kubeconfig"),
    ("clusters-a-string", yaml.safe_dump({**_good(), "clusters": "c"}), "cannot load a kubeconfig"),
    ("no-current-context", yaml.safe_dump({**_good(), "current-context": "nope"}), "cannot load a kubeconfig"),
    ("server-not-a-url", _with(server="not a url"), ""),
    ("binary", bytes(range(256)), "cannot load a kubeconfig"),
    ("deep-nesting", "a: " + "[" * 5000 + "]" * 5000, "cannot load a kubeconfig"),
    ("yaml-alias-bomb", "a: &a [x,x,x,x,x,x,x,x,x]\n" + "".join(f"a{i}: &a{i} [" + ",".join([f"*{'a' if i == 0 else f'a{i - 1}'}"] * 9) + "]\n" for i in range(8)),
     "cannot load a kubeconfig"),
]


@pytest.mark.parametrize(("content", "fragment"), [k[1:] for k in KUBECONFIGS], ids=[k[0] for k in KUBECONFIGS])
def test_broken_kubeconfigs(tmp_path: pathlib.Path, content: str | bytes, fragment: str) -> None:
    path = tmp_path / "kubeconfig"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    started = time.monotonic()
    result = run(["report", "--kubeconfig", str(path), "--request-timeout", "2s"])
    assert time.monotonic() - started < 20
    # A file that loads but names a bad CA or server fails at the first request: the cluster's turn.
    assert result.exit_code in ((1,) if not fragment else (2,)), result.stderr
    assert_one_line(result.stderr, fragment=fragment)


@pytest.mark.parametrize("where", ["/dev/zero", "DIR", "MISSING"])
def test_kubeconfig_paths_that_cannot_be_read(tmp_path: pathlib.Path, where: str) -> None:
    path = {"DIR": str(tmp_path), "MISSING": str(tmp_path / "nope")}.get(where, where)
    started = time.monotonic()
    result = run(["approve", "a/b", "--kubeconfig", path])
    assert time.monotonic() - started < 10
    assert_clean(result, code=2, fragment="cannot load a kubeconfig")


def test_an_unknown_context(tmp_path: pathlib.Path, refused_port: int) -> None:
    config = kubeconfig(tmp_path, f"http://127.0.0.1:{refused_port}")
    assert_clean(run(["report", "--kubeconfig", config, "--context", "nope"]), code=2, fragment="nope")
