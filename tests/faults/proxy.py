"""A fault proxy between the operator and the lab's kube-apiserver.

The operator gets a kubeconfig that points at this proxy: plain HTTP on loopback, any token. The
proxy forwards every request to the API server over TLS with the lab's admin client certificate, and
streams the answers back as they come (watches included). Rules pick requests by method, path and
query, and change what happens to them:

- `Fail(status)`: answer with a Kubernetes Status of that code (429 with Retry-After, 409, 5xx)
  without forwarding;
- `Delay(seconds)`: forward after a pause;
- `Hang(seconds)`: answer nothing for that long, then drop the connection (a timeout);
- `After(callback)`: forward; once the API server's answer is complete, call
  `callback(request, status)` before the operator sees it. When it returns True the operator never
  gets the answer (the connection is dropped): that is how a test SIGKILLs the operator in a precise
  window, e.g. right after the server applied its status write.

A rule applies to its first `times` matches (all when None), and counts what it matched. The proxy
runs its own event loop in a thread of the test process.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import re
import ssl
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import yaml
from aiohttp import web

# Headers that belong to one connection, not to the message: never passed on.
_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade", "te", "trailer",
        "content-length", "host", "authorization", "accept-encoding", "content-encoding"}


@dataclasses.dataclass(frozen=True)
class Seen:
    """A request as a rule sees it."""

    method: str
    path: str
    query: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body) if self.body else None


@dataclasses.dataclass
class Fail:
    status: int
    retry_after: int | None = None


@dataclasses.dataclass
class Delay:
    seconds: float


@dataclasses.dataclass
class Hang:
    seconds: float


@dataclasses.dataclass
class After:
    callback: Callable[[Seen, int], bool]


Action = Fail | Delay | Hang | After


@dataclasses.dataclass
class Rule:
    method: str | None
    path: str  # a regular expression, searched in the path
    action: Action
    query: dict[str, str] = dataclasses.field(default_factory=dict)  # parameters that must be present
    times: int | None = None
    when: Callable[[Seen], bool] | None = None  # a further test, e.g. on the body
    matched: int = 0

    def matches(self, seen: Seen) -> bool:
        if self.times is not None and self.matched >= self.times:
            return False
        if self.method and self.method != seen.method:
            return False
        if not re.search(self.path, seen.path):
            return False
        if any(seen.query.get(k) != v for k, v in self.query.items()):
            return False
        return self.when is None or self.when(seen)


class FaultProxy:
    def __init__(self, *, upstream: str, ca: Path, cert: Path, key: Path):
        self.upstream = upstream.rstrip("/")
        self._ssl = ssl.create_default_context(cafile=str(ca))
        self._ssl.load_cert_chain(str(cert), str(key))
        self.rules: list[Rule] = []
        self.requests = 0
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="fault-proxy", daemon=True)
        self.port = 0
        self._stopping: asyncio.Event | None = None

    # ---- control, from the test's thread ----

    def start(self) -> FaultProxy:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the fault proxy did not start")
        return self

    def stop(self) -> None:
        if self._stopping is not None:
            self._loop.call_soon_threadsafe(self._stopping.set)
        self._thread.join(timeout=10)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def add(self, rule: Rule) -> Rule:
        with self._lock:
            self.rules.append(rule)
        return rule

    def clear(self) -> None:
        with self._lock:
            self.rules.clear()

    def write_kubeconfig(self, path: Path) -> Path:
        config = {
            "apiVersion": "v1", "kind": "Config",
            "clusters": [{"name": "fault-proxy", "cluster": {"server": self.url}}],
            "users": [{"name": "fault-proxy", "user": {"token": "fault-proxy"}}],
            "contexts": [{"name": "fault-proxy", "context": {"cluster": "fault-proxy", "user": "fault-proxy"}}],
            "current-context": "fault-proxy",
        }
        path.write_text(yaml.safe_dump(config))
        return path

    # ---- the server ----

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self._main())
        finally:
            # Streams still open (watches) end here, so no connection outlives the proxy.
            pending = asyncio.all_tasks(self._loop)
            for task in pending:
                task.cancel()
            self._loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            self._loop.run_until_complete(self._loop.shutdown_asyncgens())
            self._loop.close()

    async def _main(self) -> None:
        self._stopping = asyncio.Event()
        connector = aiohttp.TCPConnector(ssl=self._ssl, limit=0)
        async with aiohttp.ClientSession(connector=connector, auto_decompress=False) as session:
            self._session = session
            app = web.Application(client_max_size=64 * 1024 * 1024)
            app.router.add_route("*", "/{tail:.*}", self._handle)
            runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=1.0)
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
            self._ready.set()
            await self._stopping.wait()
            await runner.cleanup()

    def _rule_for(self, seen: Seen) -> Rule | None:
        with self._lock:
            for rule in self.rules:
                if rule.matches(seen):
                    rule.matched += 1
                    return rule
        return None

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        seen = Seen(method=request.method, path=request.path, query=dict(request.query), body=body)
        self.requests += 1
        rule = self._rule_for(seen)
        action = rule.action if rule else None
        if isinstance(action, Fail):
            return _status(action)
        if isinstance(action, Delay):
            await asyncio.sleep(action.seconds)
        if isinstance(action, Hang):
            await asyncio.sleep(action.seconds)
            _drop(request)
            return web.Response(status=504)
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP}
        watch = request.query.get("watch") in ("true", "1")
        timeout = aiohttp.ClientTimeout(total=None if watch else 90, sock_connect=10)
        try:
            upstream = await self._session.request(request.method, self.upstream + request.path_qs,
                                                   data=body or None, headers=headers, timeout=timeout)
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
            return web.Response(status=503, text=f"fault proxy: the API server is out of reach: {exc}")
        async with upstream:
            answer = {k: v for k, v in upstream.headers.items() if k.lower() not in _HOP}
            if isinstance(action, After):
                data = await upstream.read()
                drop = await asyncio.to_thread(action.callback, seen, upstream.status)
                if drop:
                    _drop(request)
                    return web.Response(status=502)
                return web.Response(status=upstream.status, body=data, headers=answer)
            response = web.StreamResponse(status=upstream.status, headers=answer)
            await response.prepare(request)
            try:
                async for chunk in upstream.content.iter_any():
                    await response.write(chunk)
            except (aiohttp.ClientError, asyncio.TimeoutError, ConnectionResetError):
                _drop(request)  # the API server went away mid-answer: so does the proxy's answer
                return response
            await response.write_eof()
            return response


def _status(fail: Fail) -> web.Response:
    reasons = {409: "Conflict", 429: "TooManyRequests", 500: "InternalError", 503: "ServiceUnavailable",
               504: "Timeout"}
    body = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": f"injected by the fault proxy: {fail.status}", "reason": reasons.get(fail.status, "Unknown"),
            "code": fail.status}
    headers = {"Retry-After": str(fail.retry_after)} if fail.retry_after is not None else None
    return web.json_response(body, status=fail.status, headers=headers)


def _drop(request: web.Request) -> None:
    if request.transport is not None:
        request.transport.abort()
