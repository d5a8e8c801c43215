"""Kubernetes Events the operator posts, on workloads and on recommendations.

Events are core/v1 Events, so `kubectl describe` and `kubectl get events` show them. Posting an
event is best effort: a failure is logged and never stops a reconcile.
"""

from __future__ import annotations

import collections
import datetime
import enum
import itertools
import logging
import threading
import time
import uuid
from typing import Any, Callable, Hashable

from oomtuner.kube import api

logger = logging.getLogger(__name__)

COMPONENT = "oomtuner"


class Reason(str, enum.Enum):
    OOM_KILL_DETECTED = "OOMKillDetected"
    RECOMMENDATION_UPDATED = "RecommendationUpdated"
    RESOURCES_PATCHED = "ResourcesPatched"
    RESOURCES_SETTLED = "ResourcesSettled"
    PATCH_FAILED = "PatchFailed"
    PATCH_CONFLICT = "PatchConflict"
    RECOMMENDATION_CAPPED = "RecommendationCapped"
    SUSPECTED_LEAK = "SuspectedLeak"
    POLICY_INVALID = "PolicyInvalid"
    RECOMMENDATION_UNREADABLE = "RecommendationUnreadable"


WARNINGS = {
    Reason.OOM_KILL_DETECTED,
    Reason.PATCH_FAILED,
    Reason.PATCH_CONFLICT,
    Reason.RECOMMENDATION_CAPPED,
    Reason.SUSPECTED_LEAK,
    Reason.POLICY_INVALID,
    Reason.RECOMMENDATION_UNREADABLE,
}


# The API server refuses an Event whose message has more than 1024 bytes (Go counts bytes, so a
# message of 1024 characters with an arrow in it is refused).
MESSAGE_BYTES = 1024


def _at_most(text: str, size: int) -> str:
    """`text` cut to at most `size` bytes of UTF-8, never inside a character."""
    return text.encode("utf-8")[:size].decode("utf-8", errors="ignore")


def build(
    *,
    involved: dict[str, Any],
    reason: Reason,
    message: str,
    now: datetime.datetime,
    instance: str = "",
) -> dict[str, Any]:
    """The body of a core/v1 Event about `involved` ({apiVersion, kind, name, namespace, uid})."""
    stamp = now.astimezone(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    micro = now.astimezone(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    name = f"{involved['name']}.{uuid.uuid4().hex[:16]}"[-253:].lstrip(".-")
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": name, "namespace": involved["namespace"]},
        "involvedObject": {k: v for k, v in involved.items() if v is not None},
        "reason": reason.value,
        "message": _at_most(message, MESSAGE_BYTES),
        "type": "Warning" if reason in WARNINGS else "Normal",
        "source": {"component": COMPONENT},
        "reportingComponent": COMPONENT,
        "reportingInstance": instance or COMPONENT,
        "firstTimestamp": stamp,
        "lastTimestamp": stamp,
        "eventTime": micro,
        "action": reason.value,
        "count": 1,
    }


def post(client: api.Client, body: dict[str, Any]) -> None:
    """Create the event; logs and swallows API errors."""
    namespace = body["metadata"]["namespace"]
    try:
        client.create(api.namespaced(group="", version="v1", plural="events", namespace=namespace), body)
    except api.ApiError as exc:
        logger.warning("could not post event %s on %s/%s: %s", body["reason"], namespace,
                       body["involvedObject"].get("name"), exc)


# Events that describe the current state of their object: a newer one makes a queued older one moot.
STATE_REASONS = frozenset({Reason.RECOMMENDATION_UPDATED.value})


class Poster:
    """Posts events from a few threads of its own, so no reconcile waits on them (best effort).

    In a burst the same state event is due again and again: a recommendation rewritten five times
    within a second. An event whose reason is in `STATE_REASONS` therefore waits `linger` seconds
    before it goes out; a newer one for the same object within that time replaces it, and the one
    posted carries the newest message, with `count` and `firstTimestamp` covering the copies it
    stands for, as the kubelet's recorder aggregates. Every other event goes out at once, in the
    order given. Threads start when there is work and end after `idle_timeout` without any.
    """

    def __init__(self, client: api.Client, *, workers: int = 4, linger: float = 0.5, idle_timeout: float = 10.0,
                 name: str = "oomtuner-events", clock: Callable[[], float] = time.monotonic):
        self.client = client
        self.workers = workers
        self.linger = linger
        self.idle_timeout = idle_timeout
        self.name = name
        self.clock = clock
        self._queue: collections.OrderedDict[Hashable, dict[str, Any]] = collections.OrderedDict()
        self._lingering: dict[Hashable, tuple[float, dict[str, Any]]] = {}
        self._ready = threading.Condition()
        self._live = 0  # threads started and not yet ended
        self._idle = 0  # of them, waiting for an event
        self._busy = 0  # of them, posting one
        self._serial = itertools.count()

    @staticmethod
    def _key(body: dict[str, Any]) -> tuple[str, ...] | None:
        if body.get("reason") not in STATE_REASONS:
            return None
        involved = body.get("involvedObject") or {}
        return (str(body["metadata"].get("namespace")), str(involved.get("kind")), str(involved.get("name")),
                str(involved.get("uid")), str(body["reason"]))

    @staticmethod
    def _merge(older: dict[str, Any], newer: dict[str, Any]) -> dict[str, Any]:
        return {**newer, "count": int(older.get("count") or 1) + int(newer.get("count") or 1),
                "firstTimestamp": older.get("firstTimestamp") or newer.get("firstTimestamp")}

    def submit(self, body: dict[str, Any]) -> None:
        key = self._key(body)
        with self._ready:
            if key is None:
                self._queue[("event", next(self._serial))] = body
            elif key in self._lingering:
                due, older = self._lingering[key]
                self._lingering[key] = (due, self._merge(older, body))
            else:
                self._lingering[key] = (self.clock() + self.linger, body)
            if self._idle == 0 and self._live < self.workers:
                self._live += 1
                threading.Thread(target=self._work, name=self.name, daemon=True).start()
            self._ready.notify_all()

    def pending(self) -> int:
        """Events waiting, lingering or being posted."""
        with self._ready:
            return len(self._queue) + len(self._lingering) + self._busy

    def threads(self) -> int:
        """Posting threads alive now."""
        with self._ready:
            return self._live

    def flush(self, timeout: float | None = None) -> bool:
        """Post everything now, lingering events too, and wait until it went out (or `timeout`
        passed). True when nothing is left."""
        with self._ready:
            self._promote(float("inf"))
            self._ready.notify_all()
            return self._ready.wait_for(lambda: not self._queue and not self._lingering and not self._busy,
                                        timeout=timeout)

    def _promote(self, now: float) -> float | None:
        """Move lingering events that are due to the queue; return when the next one is due."""
        due = sorted((when, key) for key, (when, _) in self._lingering.items())
        for when, key in due:
            if when > now:
                return when
            self._queue[key] = self._lingering.pop(key)[1]
        return None

    def _take(self) -> dict[str, Any] | None:
        """The next event to post; None when the thread has had no work for idle_timeout."""
        with self._ready:
            idle_since = self.clock()
            self._idle += 1
            try:
                while True:
                    now = self.clock()
                    next_due = self._promote(now)
                    if self._queue:
                        self._busy += 1
                        return self._queue.popitem(last=False)[1]
                    if next_due is None and now - idle_since >= self.idle_timeout:
                        self._live -= 1
                        return None
                    wait = (next_due - now) if next_due is not None else self.idle_timeout - (now - idle_since)
                    self._ready.wait(timeout=max(wait, 0.001))
            finally:
                self._idle -= 1

    def _work(self) -> None:
        while (body := self._take()) is not None:
            try:
                post(self.client, body)
            except Exception:  # a bug must not end the thread: the next event still goes out
                logger.exception("posting event %s failed", body.get("reason"))
            finally:
                with self._ready:
                    self._busy -= 1
                    self._ready.notify_all()
