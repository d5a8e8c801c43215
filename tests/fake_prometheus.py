"""A fake Prometheus HTTP API for tests: real HTTP/1.1 over a socket, in a thread of the test process.

It answers /api/v1/query with `summary` and /api/v1/query_range with `series` (rows as Prometheus
returns them), and misbehaves as told: an HTTP error, a delay before answering (a hung server), a
drip of one byte per `drip` seconds (from the body, or from the status line with `drip_head`),
no listener at all (`refuse`, then `listen` again on the same port), garbage, a Content-Length larger than anything it will send (`declared`), a chunked answer of
`stream_bytes` bytes that never ends sooner, a gzip-encoded answer. Connections are kept alive, as
Prometheus keeps them. It writes every answer byte by byte or chunk by chunk and counts what it
sent (`sent`), so a test can tell how much of an answer the client read before it gave up.

Used by the unit tests of `prom.usage`, by `oomtuner report`'s tests, and by the fault-injection
suite (as the operator's Prometheus).
"""

from __future__ import annotations

import contextlib
import gzip
import http.server
import json
import socket
import threading
import time
import urllib.parse
from typing import Any

_ROW = b'{"metric":{"container":"app","oomtuner_stat":"peak"},"value":[1767614400,"314572800"]},'


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that hung up in the middle of an answer: expected here, not worth a traceback


class FakePrometheus:
    """Answers as its attributes say at the time of each request; they may change between requests."""

    def __init__(self, *, summary: list[dict[str, Any]] | None = None, series: list[dict[str, Any]] | None = None):
        self.requests: list[tuple[str, dict[str, str], dict[str, str]]] = []
        self.status = 200
        self.delay = 0.0
        self.body: Any = None  # a dict (JSON), str or bytes sent instead of the rows
        self.summary: list[dict[str, Any]] = summary or []
        self.series: list[dict[str, Any]] = series or []
        self.drip = 0.0
        self.drip_head = False
        self.declared: int | None = None
        self.stream_bytes = 0
        self.gzip = False
        self.sent = 0
        self._lock = threading.Lock()
        self._connections: set[socket.socket] = set()
        fake = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def setup(self) -> None:
                super().setup()
                with fake._lock:
                    fake._connections.add(self.connection)

            def finish(self) -> None:
                with fake._lock:
                    fake._connections.discard(self.connection)
                super().finish()

            def do_GET(self) -> None:  # noqa: N802
                parsed = urllib.parse.urlparse(self.path)
                params = {k: v[0] for k, v in urllib.parse.parse_qs(parsed.query).items()}
                fake.requests.append((parsed.path, params, dict(self.headers)))
                try:
                    fake._answer(self, parsed.path)
                except OSError:  # the client gave up: that is what many tests want
                    self.close_connection = True

        self._handler = Handler
        self._listen(0)
        self.port = int(self.server.server_address[1])

    def _listen(self, port: int) -> None:
        self.server = _Server(("127.0.0.1", port), self._handler)
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def refuse(self) -> None:
        """Stop listening and drop the kept-alive connections: new ones are refused, as by a host
        where Prometheus is down."""
        self.close()
        with self._lock:
            for connection in self._connections:
                with contextlib.suppress(OSError):
                    connection.shutdown(socket.SHUT_RDWR)

    def listen(self) -> None:
        """Listen again, on the same port."""
        self._listen(self.port)

    def behave(self) -> None:
        """Answer normally again."""
        self.status, self.delay, self.body, self.drip, self.drip_head = 200, 0.0, None, 0.0, False
        self.declared, self.stream_bytes, self.gzip = None, 0, False

    def _count(self, n: int) -> None:
        with self._lock:
            self.sent += n

    def _body(self, path: str) -> bytes:
        if self.body is not None:
            body = self.body
        else:
            result = self.summary if path.endswith("/query") else self.series
            body = {"status": "success", "data": {"resultType": "vector", "result": result}}
        if isinstance(body, bytes):
            return body
        return (body if isinstance(body, str) else json.dumps(body)).encode()

    def _answer(self, handler: http.server.BaseHTTPRequestHandler, path: str) -> None:
        if self.delay:
            time.sleep(self.delay)
        out = handler.wfile
        head = [f"HTTP/1.1 {self.status} {'OK' if self.status == 200 else 'Error'}", "Content-Type: application/json"]
        if self.stream_bytes:
            head.append("Transfer-Encoding: chunked")
            out.write(("\r\n".join(head) + "\r\n\r\n").encode())
            self._stream(out)
            return
        data = self._body(path)
        if self.gzip:
            data = gzip.compress(data)
            head.append("Content-Encoding: gzip")
        head.append(f"Content-Length: {self.declared if self.declared is not None else len(data)}")
        raw = ("\r\n".join(head) + "\r\n\r\n").encode()
        if self.declared is not None and self.declared > len(data):
            out.write(raw)
            self._count(len(raw))
            self._filler(out, self.declared)
            return
        raw += data
        if not self.drip:
            out.write(raw)
            self._count(len(raw))
            return
        start = 0 if self.drip_head else len(raw) - len(data)
        out.write(raw[:start])
        out.flush()
        for i in range(start, len(raw)):
            out.write(raw[i:i + 1])
            out.flush()
            self._count(1)
            time.sleep(self.drip)

    def _stream(self, out: Any) -> None:
        """A chunked answer that looks like rows of a vector, `stream_bytes` long, never closed."""
        first = b'{"status":"success","data":{"resultType":"vector","result":['
        chunk = first + _ROW * (65536 // len(_ROW))
        written = 0
        while written < self.stream_bytes:
            out.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
            out.flush()
            written += len(chunk)
            self._count(len(chunk))
            chunk = _ROW * (65536 // len(_ROW))
        out.write(b"0\r\n\r\n")

    def _filler(self, out: Any, size: int) -> None:
        """`size` bytes of rows, after headers that announced them."""
        block = _ROW * (65536 // len(_ROW))
        written = 0
        while written < size:
            part = block[: size - written]
            out.write(part)
            written += len(part)
            self._count(len(part))
