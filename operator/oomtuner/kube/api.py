"""A thin JSON client for the Kubernetes API, on top of the `kubernetes` package's ApiClient.

The generated typed client turns every response into its own models; the operator parses bodies into
its own pydantic models at the edge instead (`api.core`, `api.policy`, `api.recommendation`). So this
module sends requests through `ApiClient` (which owns authentication, TLS and proxies from the
kubeconfig or the in-cluster service account) and hands back plain dicts. It also counts requests
per verb (`oomtuner_api_requests_total`), which `bench/` reads.

Every call is synchronous; async callers run it with `asyncio.to_thread`. Whatever goes wrong on
the way (no connection, a timeout, a TLS failure, an answer that is not JSON, such as a proxy's HTML
page with status 200) is an ApiError with one readable line, never urllib3's exceptions.
"""

from __future__ import annotations

import json
import urllib.parse
from typing import Any, Mapping

import kubernetes
import prometheus_client
import urllib3

from oomtuner.domain import redaction

JSON = "application/json"
MERGE_PATCH = "application/merge-patch+json"
APPLY_PATCH = "application/apply-patch+yaml"

# Every request this client sends (kopf's own watch streams are not counted here).
REQUESTS = prometheus_client.Counter(
    "oomtuner_api_requests_total", "Requests the operator sent to the API server, outside kopf's watches.", ["verb"]
)


class ApiError(Exception):
    """An error answer from the API server, with its status code and Status message."""

    def __init__(self, *, status: int, reason: str, body: Mapping[str, Any] | None, method: str, path: str):
        self.status = status
        self.reason = reason
        self.body: Mapping[str, Any] = body or {}
        self.method = method
        self.path = path
        message = self.body.get("message") if isinstance(self.body, Mapping) else None
        super().__init__(f"{method} {path}: {status} {message or reason}")

    @property
    def message(self) -> str:
        msg = self.body.get("message")
        return str(msg) if msg else self.reason

    @property
    def causes(self) -> list[Mapping[str, Any]]:
        details = self.body.get("details") or {}
        causes = details.get("causes") if isinstance(details, Mapping) else None
        return list(causes or [])


class NotFound(ApiError):
    pass


def passing(error: BaseException) -> bool:
    """Whether a failed request is worth trying again later: throttling (429), a server error (5xx),
    a conflict (409: the object changed meanwhile), or no answer at all (a timeout, a refused or
    broken connection)."""
    if isinstance(error, ApiError):
        return error.status in (0, 409, 429) or error.status >= 500
    return isinstance(error, (OSError, urllib3.exceptions.HTTPError))


class Unreachable(ApiError):
    """No usable answer at all: the connection failed or timed out, or the answer was not JSON."""

    def __init__(self, *, why: str, method: str, path: str, server: str):
        self.server = redaction.url(server)
        super().__init__(status=0, reason=why, body=None, method=method, path=path)
        Exception.__init__(self, f"{method} {path}: no answer from the API server at {self.server}: {why}")


class Conflict(ApiError):
    pass


class Client:
    """Sends JSON requests with the credentials of one ApiClient."""

    def __init__(self, api_client: kubernetes.client.ApiClient, *, timeout: float = 30.0):
        self.api_client = api_client
        self.timeout = timeout

    def request(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, Any] | None = None,
        body: Any = None,
        content_type: str = JSON,
    ) -> dict[str, Any]:
        """Send one request; returns the decoded JSON body. Raises NotFound, Conflict or ApiError."""
        params = [(k, v) for k, v in (query or {}).items() if v is not None]
        headers = {"Accept": JSON, "Content-Type": content_type}
        _, url, headers, _, _ = self.api_client.param_serialize(
            method=method,
            resource_path=path,
            query_params=params,
            header_params=headers,
            auth_settings=["BearerToken"],
        )
        # The REST client JSON-encodes dicts itself (also for +json and yaml content types);
        # strings and bytes go out as they are.
        payload: Any = body
        REQUESTS.labels(verb=method).inc()
        try:
            response = self.api_client.call_api(
                method, url, header_params=headers, body=payload, _request_timeout=self.timeout
            )
            data = response.read()  # type: ignore[no-untyped-call]
        except kubernetes.client.exceptions.ApiException as exc:
            if not exc.status:  # the kubernetes client's wrapping of a TLS failure
                raise self._unreachable(_transport_problem(exc, timeout=self.timeout), method=method, path=path) from None
            raise _error(status=exc.status, reason=exc.reason or "", data=exc.body, method=method, path=path) from None
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise self._unreachable(_transport_problem(exc, timeout=self.timeout), method=method, path=path) from None
        if response.status >= 400:
            raise _error(status=response.status, reason=response.reason or "", data=data, method=method, path=path)
        if not data:
            return {}
        try:
            decoded = json.loads(data)
        except (ValueError, RecursionError):
            kind = (response.headers or {}).get("Content-Type") or "no content type"
            raise self._unreachable(
                f"status {response.status} with an answer that is not JSON ({kind}, {len(data)} bytes)",
                method=method, path=path,
            ) from None
        return decoded if isinstance(decoded, dict) else {"items": decoded}

    def _unreachable(self, why: str, *, method: str, path: str) -> Unreachable:
        return Unreachable(why=why, method=method, path=path, server=str(self.api_client.configuration.host))

    def get(self, path: str, *, query: Mapping[str, Any] | None = None) -> dict[str, Any]:
        return self.request("GET", path, query=query)

    def get_or_none(self, path: str) -> dict[str, Any] | None:
        """GET that returns None on 404."""
        try:
            return self.get(path)
        except NotFound:
            return None

    def list(self, path: str, *, query: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
        """All items of a collection, following `continue` tokens page by page. An answer whose items
        are not objects raises Unreachable."""
        items: list[dict[str, Any]] = []
        params: dict[str, Any] = {"limit": 500, **(query or {})}
        while True:
            page = self.get(path, query=params)
            found = page.get("items") or []
            metadata = page.get("metadata") or {}
            if not isinstance(found, list) or not all(isinstance(i, dict) for i in found) or not isinstance(metadata, dict):
                raise self._unreachable("an answer that is not a list of objects", method="GET", path=path)
            items.extend(found)
            token = metadata.get("continue")
            if not token:
                return items
            params["continue"] = token

    def create(self, path: str, body: Mapping[str, Any], *, dry_run: bool = False) -> dict[str, Any]:
        return self.request("POST", path, body=body, query={"dryRun": "All" if dry_run else None})

    def replace(self, path: str, body: Mapping[str, Any]) -> dict[str, Any]:
        return self.request("PUT", path, body=body)

    def merge_patch(self, path: str, body: Mapping[str, Any], *, dry_run: bool = False) -> dict[str, Any]:
        return self.request(
            "PATCH", path, body=body, content_type=MERGE_PATCH, query={"dryRun": "All" if dry_run else None}
        )

    def apply(
        self,
        path: str,
        body: Mapping[str, Any],
        *,
        field_manager: str,
        force: bool = False,
        dry_run: bool = False,
    ) -> dict[str, Any]:
        """Server-side apply. Raises Conflict (409) when another manager owns a field and not `force`."""
        query = {
            "fieldManager": field_manager,
            "force": "true" if force else None,
            "dryRun": "All" if dry_run else None,
        }
        return self.request("PATCH", path, body=json.dumps(body), content_type=APPLY_PATCH, query=query)

    def delete(self, path: str) -> None:
        try:
            self.request("DELETE", path)
        except NotFound:
            pass


def _transport_problem(exc: BaseException, *, timeout: float) -> str:
    """What went wrong on the way, in a few words: urllib3 wraps the cause (MaxRetryError.reason)."""
    cause: BaseException = getattr(exc, "reason", None) or exc
    if not isinstance(cause, BaseException):
        cause = exc
    text = " ".join(str(cause).split())
    for marker, words in (("Connection refused", "connection refused"), ("Name or service not known", "unknown host"),
                          ("CERTIFICATE_VERIFY_FAILED", "TLS certificate not trusted"), ("No route to host", "no route to host"),
                          ("Connection reset", "connection reset"), ("RemoteDisconnected", "the server closed the connection")):
        if marker in text or marker in type(cause).__name__:
            return words
    if isinstance(cause, urllib3.exceptions.TimeoutError) or "timed out" in text:  # after refused: a subclass of it
        return f"no answer within {timeout:g}s"
    text = redaction.text(text)
    return f"{type(cause).__name__}: {text[:200]}" if text else type(cause).__name__


def _error(*, status: int, reason: str, data: Any, method: str, path: str) -> ApiError:
    body: Mapping[str, Any] | None = None
    if data:
        try:
            decoded = json.loads(data)
            body = decoded if isinstance(decoded, dict) else None
        except (ValueError, TypeError):
            body = {"message": str(data)[:500]}
    cls = NotFound if status == 404 else Conflict if status == 409 else ApiError
    return cls(status=status, reason=reason, body=body, method=method, path=path)


def quote(segment: str) -> str:
    return urllib.parse.quote(segment, safe="")


def namespaced(*, group: str, version: str, plural: str, namespace: str, name: str | None = None, sub: str | None = None) -> str:
    """The REST path of a namespaced resource, its object, or a subresource."""
    base = f"/api/{version}" if not group else f"/apis/{group}/{version}"
    path = f"{base}/namespaces/{quote(namespace)}/{plural}"
    if name is not None:
        path += f"/{quote(name)}"
        if sub:
            path += f"/{sub}"
    return path


def cluster(*, group: str, version: str, plural: str, name: str | None = None) -> str:
    base = f"/api/{version}" if not group else f"/apis/{group}/{version}"
    path = f"{base}/{plural}"
    return f"{path}/{quote(name)}" if name is not None else path
