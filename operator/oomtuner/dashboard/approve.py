"""The dashboard's one write: approving a recommendation, as `oomtuner approve` does.

Off unless the dashboard runs with `--allow-approve`, and then offered only where its own
ServiceAccount may patch OOMRecommendations in that namespace (a SelfSubjectAccessReview, asked once
a minute per namespace): the button never promises what the API server would refuse. Whoever
reaches the dashboard approves with its ServiceAccount's rights, which is why it is off by default.

A form post carries a token bound to the recommendation (an HMAC with a key made at start-up), and
a post from another origin is refused, so another site cannot make a visitor's browser approve.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from collections.abc import Callable

from oomtuner.api import recommendation
from oomtuner.kube import api

ACCESS_TTL = 60.0


class Refused(Exception):
    """An approval that was not made; the message says why, for the page."""


class Approvals:
    def __init__(self, client: api.Client, *, enabled: bool, clock: Callable[[], float] = time.monotonic):
        self.client = client
        self.enabled = enabled
        self._clock = clock
        self._key = secrets.token_bytes(32)
        self._lock = threading.Lock()
        self._access: dict[str, tuple[float, bool]] = {}

    def allowed(self, namespace: str) -> bool:
        """Whether approving in `namespace` is on and the API server would let this ServiceAccount."""
        if not self.enabled:
            return False
        now = self._clock()
        with self._lock:
            cached = self._access.get(namespace)
        if cached is not None and now < cached[0]:
            return cached[1]
        review = {"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
                  "spec": {"resourceAttributes": {"verb": "patch", "group": recommendation.GROUP,
                                                  "resource": recommendation.PLURAL, "namespace": namespace}}}
        try:
            answer = self.client.create("/apis/authorization.k8s.io/v1/selfsubjectaccessreviews", review)
            allowed = bool((answer.get("status") or {}).get("allowed"))
        except (api.ApiError, OSError):
            allowed = False
        with self._lock:
            self._access[namespace] = (now + ACCESS_TTL, allowed)
        return allowed

    def token(self, namespace: str, name: str) -> str:
        return hmac.new(self._key, f"{namespace}/{name}".encode(), hashlib.sha256).hexdigest()

    def approve(self, namespace: str, name: str, *, token: str) -> int | None:
        """Set `spec.approved: true`; returns the generation the operator will apply. Raises Refused."""
        if not hmac.compare_digest(token, self.token(namespace, name)):
            raise Refused("the form is out of date or not this dashboard's: reload the page")
        if not self.allowed(namespace):
            raise Refused(f"approving in namespace {namespace} is not allowed to this dashboard")
        path = api.namespaced(group=recommendation.GROUP, version=recommendation.VERSION,
                              plural=recommendation.PLURAL, namespace=namespace, name=name)
        try:
            body = self.client.merge_patch(path, {"spec": {"approved": True}})
        except api.NotFound:
            raise Refused(f"OOMRecommendation {namespace}/{name} not found") from None
        except (api.ApiError, OSError) as exc:
            raise Refused(str(exc)[:300]) from None
        generation = (body.get("metadata") or {}).get("generation")
        return generation if isinstance(generation, int) else None
