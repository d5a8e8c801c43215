"""Recommendations: the OOMRecommendations the operator writes, one lock per workload, and a cache.

Every change to a recommendation's status goes through `write_status`, under the lock of its key
(`namespace/name`), which `hold` hands out. The locks live only while someone holds or waits for
them, so their number is bounded by the work in flight, not by every recommendation ever seen.
The cache keeps the copy each write returned, so the next kill of the same workload starts from it
without reading it again; a stale copy costs one 409 and a re-read (`kube.store`).
"""

from __future__ import annotations

import contextlib
import logging
import threading
from typing import Iterator, TypeVar

from oomtuner.api import recommendation, types
from oomtuner.domain import status, workload
from oomtuner.kube import api, store

logger = logging.getLogger(__name__)

CACHE_SIZE = 20_000
ADOPTED = "Adopted"


class NotAdopted(Exception):
    """The workload's recommendation names are taken by objects that do not belong to it."""

_T = TypeVar("_T")


def key_of(rec: recommendation.OOMRecommendation) -> str:
    return f"{rec.metadata.namespace}/{rec.metadata.name}"


class KeyedLocks:
    """One lock per key, created on first use and dropped when nobody holds or waits for it."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._locks: dict[str, tuple[threading.Lock, int]] = {}

    @contextlib.contextmanager
    def hold(self, key: str) -> Iterator[None]:
        with self._guard:
            lock, users = self._locks.get(key, (threading.Lock(), 0))
            self._locks[key] = (lock, users + 1)
        try:
            with lock:
                yield
        finally:
            with self._guard:
                lock, users = self._locks[key]
                if users <= 1:
                    del self._locks[key]
                else:
                    self._locks[key] = (lock, users - 1)

    def __len__(self) -> int:
        with self._guard:
            return len(self._locks)


class Recommendations:
    def __init__(self, client: api.Client, *, cache_size: int = CACHE_SIZE):
        self._client = client
        self._cache_size = cache_size
        self._cache: dict[str, recommendation.OOMRecommendation] = {}
        self._lock = threading.Lock()
        self.locks = KeyedLocks()

    def hold(self, key: str) -> contextlib.AbstractContextManager[None]:
        """The lock of one recommendation: every read-compute-write of it happens under it."""
        return self.locks.hold(key)

    def cached(self, key: str) -> recommendation.OOMRecommendation | None:
        with self._lock:
            return self._cache.get(key)

    def get(self, key: str) -> recommendation.OOMRecommendation | None:
        """The recommendation read now; None when it does not exist."""
        namespace, name = key.split("/", 1)
        return store.get_recommendation(self._client, namespace=namespace, name=name)

    def latest(self, key: str) -> recommendation.OOMRecommendation | None:
        """The copy this process wrote last, else the one read now."""
        return self.cached(key) or self.get(key)

    def for_workload(self, target: workload.Workload, *, now: str) -> recommendation.OOMRecommendation:
        """The workload's recommendation: the copy written last, or the one in the cluster, or a new
        one (spec only). Not among the recommendations this process wrote is most often a workload's
        first kill, so it creates first (after a restart an existing one costs one refused create).

        A recommendation under the workload's name that it does not own (`workload.adopts`: created by
        someone else, or left from an earlier object of that name) is not adopted: a condition on it
        says so, and the workload's kills go to `<kind>-<name>-<uid prefix>` instead.
        """
        name = recommendation.name_for(kind=target.kind, name=target.name)
        alternate = recommendation.alternate_name_for(kind=target.kind, name=target.name, uid=target.uid or "")
        for candidate in (name, alternate):
            cached = self.cached(f"{target.namespace}/{candidate}")
            if cached is not None and workload.adopts(target, cached):
                return cached
        found = store.ensure_recommendation(self._client, namespace=target.namespace, name=name, target=target.ref,
                                            owner_uid=target.uid, create_first=True)
        if workload.adopts(target, found):
            return found
        self._refuse(found, target=target, alternate=alternate, now=now)
        other = store.ensure_recommendation(self._client, namespace=target.namespace, name=alternate, target=target.ref,
                                            owner_uid=target.uid, create_first=True)
        if workload.adopts(target, other):
            return other
        raise NotAdopted(f"OOMRecommendations {target.namespace}/{name} and {alternate} both belong to something other "
                         f"than {target.display} (uid {target.uid}); its kills cannot be recorded until one is removed")

    def _refuse(self, rec: recommendation.OOMRecommendation, *, target: workload.Workload, alternate: str, now: str) -> None:
        """Say on a recommendation that it is not adopted (once: the condition stays)."""
        message = (f"not adopted: this recommendation is named for {target.display} but its targetRef or owner "
                   f"reference does not match it (uid {target.uid}); its kills are recorded in {alternate}")
        logger.warning("OOMRecommendation %s: %s", key_of(rec), message)
        if any(c.type == ADOPTED and c.message == message for c in rec.status.conditions):
            return

        def mutate(obj: recommendation.OOMRecommendation) -> store.Edit[None]:
            status.set_condition(obj.status, types.Condition(type=ADOPTED, status="False", reason="NotAdopted",
                                                             message=message, lastTransitionTime=now))
            return store.Edit(obj, None)

        self.write_status(rec, mutate)

    def write_status(self, rec: recommendation.OOMRecommendation,
                     mutate: store.Mutation[_T]) -> tuple[recommendation.OOMRecommendation, _T | None]:
        """Write the status through `mutate` (`kube.store.update_recommendation_status`) and remember
        the result. A recommendation deleted meanwhile is created again."""
        key = key_of(rec)
        try:
            written, result = store.update_recommendation_status(self._client, current=rec, mutate=mutate)
        except api.NotFound:
            self.forget(key)
            fresh = store.ensure_recommendation(
                self._client, namespace=rec.metadata.namespace or "", name=rec.metadata.name,
                target=rec.spec.targetRef,
                owner_uid=next((o.uid for o in rec.metadata.ownerReferences if o.uid), None),
            )
            written, result = store.update_recommendation_status(self._client, current=fresh, mutate=mutate)
        with self._lock:
            self._cache.pop(key, None)
            self._cache[key] = written
            while len(self._cache) > self._cache_size:
                self._cache.pop(next(iter(self._cache)))
        return written, result

    def forget(self, key: str) -> None:
        with self._lock:
            self._cache.pop(key, None)
