"""HTTP to Prometheus with a bound on the whole request and on the size of its answer.

requests' timeout bounds the connect and each read from the socket, not the request: a Prometheus
(or a proxy in front of it) that drips one byte a second never trips it, and would hold the
operator's worker thread, and the workload's lock with it, for as long as the answer lasts. And
prometheus-api-client reads the whole answer into memory and parses it, whatever its size. `Session`
is the requests Session that prometheus-api-client sends every query through, with both bounds:

- **A deadline per request.** The connect, the wait for the headers and every read of the body share
  one `timeout`. urllib3's own timeouts are set to what is left of it; when it passes, a timer shuts
  the connection's socket down, which ends a read blocked on it at once, however slowly the bytes
  come. The request then raises `DeadlineExceeded`.
- **A size bound.** An answer whose Content-Length is more than `max_bytes` is refused before its body
  is read; an answer without one is refused as soon as more than `max_bytes` have arrived. The bytes
  counted are the decoded ones (a gzip answer is judged by what it would take to parse). The request
  raises `AnswerTooLarge`; nothing of the answer is parsed.

Both are `requests.RequestException`s, so a caller that degrades on any requests failure degrades on
them too. The timer needs the connection's socket: `Session` mounts an adapter whose connections
hand it over. Through an HTTP proxy (HTTP(S)_PROXY) the sockets are urllib3's own, and only the
per-read timeouts and the size bound apply.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from typing import Any

import requests
import requests.adapters
import urllib3
import urllib3.connection
import urllib3.connectionpool
from urllib3.util import retry as urllib3_retry

from oomtuner.domain import quantity

CHUNK = 64 * 1024


class DeadlineExceeded(requests.Timeout):
    """No complete answer within the request's timeout."""


class AnswerTooLarge(requests.RequestException):
    """The answer is larger than the size bound; it was not read further, nor parsed."""


class _Deadline:
    """One request's deadline: when it passes, the sockets handed over are shut down."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.at = time.monotonic() + seconds
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._done = False
        self.expired = False
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True

    def remaining(self) -> float:
        return max(0.001, self.at - time.monotonic())

    def passed(self) -> bool:
        return self.expired or time.monotonic() >= self.at

    def watch(self, sock: socket.socket | None) -> None:
        if sock is None:
            return
        with self._lock:
            if self.expired:
                _shut(sock)
            elif sock not in self._sockets:
                self._sockets.append(sock)

    def start(self) -> None:
        self._timer.start()

    def finish(self) -> None:
        """The request is over: the timer may no longer touch its sockets (they may be reused)."""
        with self._lock:
            self._done = True
            self._sockets.clear()
        self._timer.cancel()

    def _expire(self) -> None:
        with self._lock:
            if self._done:
                return
            self.expired = True
            for sock in self._sockets:
                _shut(sock)


def _shut(sock: socket.socket) -> None:
    # The plain socket's shutdown, also for a TLS socket: it wakes a read blocked on the descriptor
    # in another thread without touching the TLS state that read is using.
    with contextlib.suppress(OSError):
        socket.socket.shutdown(sock, socket.SHUT_RDWR)


_current = threading.local()


class _Watched:
    """A connection that hands its socket to the deadline of the request being sent in this thread,
    when it starts to wait for the answer (on a new connection and on a reused one alike)."""

    sock: socket.socket | None

    def getresponse(self, *args: Any, **kwargs: Any) -> Any:
        deadline: _Deadline | None = getattr(_current, "deadline", None)
        if deadline is not None:
            deadline.watch(self.sock)
        return super().getresponse(*args, **kwargs)  # type: ignore[misc]


class _HTTPConnection(_Watched, urllib3.connection.HTTPConnection):
    pass


class _HTTPSConnection(_Watched, urllib3.connection.HTTPSConnection):
    pass


class _HTTPPool(urllib3.connectionpool.HTTPConnectionPool):
    ConnectionCls = _HTTPConnection


class _HTTPSPool(urllib3.connectionpool.HTTPSConnectionPool):
    ConnectionCls = _HTTPSConnection


class _Adapter(requests.adapters.HTTPAdapter):
    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {"http": _HTTPPool, "https": _HTTPSPool}


class Session(requests.Session):
    """A requests Session whose requests end within `timeout` seconds, with at most `max_bytes` of
    answer, read into memory before anyone parses it."""

    def __init__(self, *, timeout: float, max_bytes: int):
        super().__init__()
        self.timeout = timeout
        self.max_bytes = max_bytes
        self.mount_bounded("http://")
        self.mount_bounded("https://")

    def mount_bounded(self, prefix: str) -> None:
        """Send requests to URLs that start with `prefix` through the bounded adapter (mount it
        again after anything else mounted its own there), never retried."""
        self.mount(prefix, _Adapter(max_retries=urllib3_retry.Retry(total=0, redirect=False)))

    def request(self, method: str, url: str, *args: Any, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        given = kwargs.pop("timeout", None)
        seconds = float(given) if isinstance(given, (int, float)) and given > 0 else self.timeout
        kwargs["stream"] = True
        deadline = _Deadline(seconds)
        _current.deadline = deadline
        deadline.start()
        try:
            kwargs["timeout"] = (deadline.remaining(), deadline.remaining())
            response = super().request(method, url, *args, **kwargs)
            body = self._read(response, deadline)
        except (requests.RequestException, urllib3.exceptions.HTTPError, OSError) as exc:
            if isinstance(exc, AnswerTooLarge) or not deadline.passed():
                raise
            raise DeadlineExceeded(f"timed out: no complete answer within {seconds:g}s") from None
        finally:
            _current.deadline = None
            deadline.finish()
        if deadline.expired:  # a body cut short by the timer can end without an error
            raise DeadlineExceeded(f"timed out: no complete answer within {seconds:g}s")
        response._content = body
        response._content_consumed = True  # type: ignore[attr-defined]
        response.close()  # gives the connection back to the pool; the body is read
        return response

    def _read(self, response: requests.Response, deadline: _Deadline) -> bytes:
        declared = response.headers.get("Content-Length")
        if declared is not None and declared.strip().isdigit() and int(declared) > self.max_bytes:
            response.close()
            raise AnswerTooLarge(
                f"answer of {quantity.humanize(int(declared))} refused unread: "
                f"more than the {quantity.humanize(self.max_bytes)} allowed"
            )
        chunks: list[bytes] = []
        size = 0
        for chunk in response.iter_content(CHUNK):
            size += len(chunk)
            if size > self.max_bytes:
                response.close()
                raise AnswerTooLarge(
                    f"answer refused after {quantity.humanize(size)}: "
                    f"more than the {quantity.humanize(self.max_bytes)} allowed"
                )
            chunks.append(chunk)
            if deadline.passed():
                raise DeadlineExceeded(f"timed out: no complete answer within {deadline.seconds:g}s")
        return b"".join(chunks)
