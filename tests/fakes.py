"""One fake of the API server for unit tests: an in-memory store of objects by REST path.

It speaks the small protocol the operator's `kube.api.Client` offers (get, get_or_none, list,
create, replace, merge_patch, apply, request, delete) with the semantics the code relies on:
404 as `api.NotFound`, a create of an existing name and a status write with a stale
resourceVersion as `api.Conflict`, label and field selectors of the equality kind, and paged-less
lists. Every request is recorded in `calls` ("GET /api/v1/…"), and `fail` makes requests whose
path starts with a prefix raise the given error — the faults a real server cannot be made to show on
demand. Tests that need the real server's behaviour run against the lab (tests/integration, e2e).
"""

from __future__ import annotations

import copy
import itertools
import json
from typing import Any, Callable, Mapping

from oomtuner.kube import api


def _error(status: int, method: str, path: str, message: str = "") -> api.ApiError:
    cls = api.NotFound if status == 404 else api.Conflict if status == 409 else api.ApiError
    return cls(status=status, reason=message or str(status), body={"message": message} if message else None,
               method=method, path=path)


def _merge(base: Any, patch: Any) -> Any:
    if not isinstance(base, dict) or not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(base)
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = _merge(out.get(key), value)
    return out


class FakeApi:
    """Objects by path, e.g. `/apis/apps/v1/namespaces/shop/deployments/web`."""

    def __init__(self, objects: Mapping[str, Mapping[str, Any]] | None = None):
        self.objects: dict[str, dict[str, Any]] = {}
        self.calls: list[str] = []
        # path prefix → the error raised by any request under it (or a callable deciding per request)
        self.fail: dict[str, api.ApiError | Callable[[str, str], api.ApiError | None]] = {}
        self._versions = itertools.count(1)
        for path, body in (objects or {}).items():
            self.put(path, body)

    # ---- setting up -------------------------------------------------------------------------------

    def put(self, path: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """Store `body` at `path` as the server would have it (resourceVersion, uid, generation)."""
        stored = copy.deepcopy(dict(body))
        meta = stored.setdefault("metadata", {})
        meta.setdefault("name", path.rsplit("/", 1)[-1])
        meta.setdefault("uid", f"uid-{meta['name']}")
        meta.setdefault("generation", 1)
        meta["resourceVersion"] = str(next(self._versions))
        self.objects[path] = stored
        return copy.deepcopy(stored)

    def body(self, path: str) -> dict[str, Any]:
        return copy.deepcopy(self.objects[path])

    def count(self, prefix: str) -> int:
        """How many recorded calls start with `prefix` (e.g. "GET /api/v1/nodes")."""
        return sum(1 for c in self.calls if c.startswith(prefix))

    # ---- the client protocol ------------------------------------------------------------------------

    def _enter(self, method: str, path: str) -> None:
        self.calls.append(f"{method} {path}")
        for prefix, error in self.fail.items():
            if path.startswith(prefix):
                found = error(method, path) if callable(error) else error
                if found is not None:
                    raise found

    def get(self, path: str, *, query: Mapping[str, Any] | None = None) -> dict[str, Any]:
        self._enter("GET", path)
        if path not in self.objects:
            raise _error(404, "GET", path, "not found")
        return copy.deepcopy(self.objects[path])

    def get_or_none(self, path: str) -> dict[str, Any] | None:
        try:
            return self.get(path)
        except api.NotFound:
            return None

    def list(self, path: str, *, query: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
        self._enter("LIST", path)
        query = query or {}
        found = []
        for stored_path, body in self.objects.items():
            if not _in_collection(stored_path, path):
                continue
            if not _selected(body, labels=query.get("labelSelector"), fields=query.get("fieldSelector")):
                continue
            found.append(copy.deepcopy(body))
        return found

    def create(self, path: str, body: Mapping[str, Any], *, dry_run: bool = False) -> dict[str, Any]:
        self._enter("POST", path)
        name = (body.get("metadata") or {}).get("name")
        target = f"{path}/{name}"
        if target in self.objects:
            raise _error(409, "POST", path, f"{name} already exists")
        return copy.deepcopy(body) if dry_run else self.put(target, body)

    def replace(self, path: str, body: Mapping[str, Any]) -> dict[str, Any]:
        self._enter("PUT", path)
        whole, _, sub = path.rpartition("/")
        if sub != "status":
            whole, sub = path, ""
        if whole not in self.objects:
            raise _error(404, "PUT", path, "not found")
        current = self.objects[whole]
        version = (body.get("metadata") or {}).get("resourceVersion")
        if version and version != current["metadata"]["resourceVersion"]:
            raise _error(409, "PUT", path, "the object has been modified")
        updated = copy.deepcopy(current)
        if sub == "status":
            updated["status"] = copy.deepcopy(body.get("status"))
        else:
            updated = {**copy.deepcopy(dict(body)), "metadata": {**current["metadata"], **(body.get("metadata") or {})}}
        updated["metadata"]["resourceVersion"] = str(next(self._versions))
        self.objects[whole] = updated
        return copy.deepcopy(updated)

    def merge_patch(self, path: str, body: Mapping[str, Any], *, dry_run: bool = False) -> dict[str, Any]:
        return self.request("PATCH", path, body=body, query={"dryRun": "All" if dry_run else None})

    def apply(self, path: str, body: Mapping[str, Any], *, field_manager: str, force: bool = False,
              dry_run: bool = False) -> dict[str, Any]:
        return self.request("PATCH", path, body=json.dumps(body), query={"dryRun": "All" if dry_run else None})

    def request(self, method: str, path: str, *, query: Mapping[str, Any] | None = None, body: Any = None,
                content_type: str = api.JSON) -> dict[str, Any]:
        self._enter(method, path)
        if method != "PATCH":
            raise _error(405, method, path, "the fake answers PATCH through request() only")
        whole = path[: -len("/status")] if path.endswith("/status") else path
        if whole.endswith("/resize"):
            whole = whole[: -len("/resize")]
        if whole not in self.objects:
            raise _error(404, method, path, "not found")
        patch = json.loads(body) if isinstance(body, (str, bytes)) else body
        merged = _merge(self.objects[whole], patch)
        if (query or {}).get("dryRun"):
            return copy.deepcopy(merged)
        merged["metadata"]["resourceVersion"] = str(next(self._versions))
        self.objects[whole] = merged
        return copy.deepcopy(merged)

    def delete(self, path: str) -> None:
        self._enter("DELETE", path)
        self.objects.pop(path, None)


def _in_collection(stored: str, collection: str) -> bool:
    """Whether the object at `stored` is an item of `collection` (cluster-wide lists of namespaced
    kinds included: `/api/v1/pods` holds `/api/v1/namespaces/x/pods/y`)."""
    if stored.rsplit("/", 1)[0] == collection:
        return True
    parts, wanted = stored.split("/"), collection.split("/")
    if "namespaces" in parts and "namespaces" not in wanted:
        i = parts.index("namespaces")
        return parts[:i] + parts[i + 2:-1] == wanted
    return False


def _selected(body: Mapping[str, Any], *, labels: str | None, fields: str | None) -> bool:
    meta = body.get("metadata") or {}
    for term in (labels or "").split(","):
        if term:
            key, _, value = term.partition("=")
            if (meta.get("labels") or {}).get(key) != value:
                return False
    for term in (fields or "").split(","):
        if term:
            key, _, value = term.partition("=")
            node: Any = body
            for part in key.split("."):
                node = node.get(part) if isinstance(node, Mapping) else None
            if node != value:
                return False
    return True
