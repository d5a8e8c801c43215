"""Nodes: each node's memory capacity and allocatable, as the Node watch reports them.

The Node watch runs on kopf's event loop while kills are recorded in worker threads, so the table is
guarded by a lock and never iterated outside it. A node the watch has not brought yet is read once,
when a kill on it needs its capacity (for `oom_score_adj`).
"""

from __future__ import annotations

import dataclasses
import logging
import threading

from oomtuner.api import core
from oomtuner.domain import resources
from oomtuner.kube import api

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class NodeMemory:
    capacity: int | None = None
    allocatable: int | None = None


class Nodes:
    def __init__(self, client: api.Client):
        self._client = client
        self._known: dict[str, NodeMemory] = {}
        self._lock = threading.Lock()

    def update(self, node: core.Node, *, deleted: bool = False) -> None:
        """Take a Node from the watch (or a read); forget it when it was deleted."""
        name = node.metadata.name
        if not name:
            return
        with self._lock:
            if deleted:
                self._known.pop(name, None)
                return
            self._known[name] = NodeMemory(
                capacity=resources.bytes_of(node.status.capacity),
                allocatable=resources.bytes_of(node.status.allocatable),
            )

    def capacity(self, name: str | None) -> int | None:
        """The node's memory capacity; reads the Node once when the watch has not seen it yet.
        None for no node, a node that does not exist, or one without a readable capacity."""
        if not name:
            return None
        with self._lock:
            known = self._known.get(name)
        if known is None:
            body = self._client.get_or_none(api.cluster(group="", version="v1", plural="nodes", name=name))
            if body is None:
                return None
            try:
                self.update(core.parse_node(body))
            except core.InvalidObject as exc:
                logger.warning("node %s cannot be read: %s", name, exc)
                return None
            with self._lock:
                known = self._known.get(name)
        return known.capacity if known else None

    def largest_capacity(self) -> int | None:
        """The largest memory capacity of the nodes the watch knows: no working set can exceed it."""
        with self._lock:
            found = [n.capacity for n in self._known.values() if n.capacity]
        return max(found) if found else None

    def largest_allocatable(self) -> int | None:
        with self._lock:
            found = [n.allocatable for n in self._known.values() if n.allocatable]
        return max(found) if found else None

    def count(self) -> int:
        with self._lock:
            return len(self._known)
