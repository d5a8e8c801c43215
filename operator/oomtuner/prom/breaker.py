"""The circuit breaker in front of Prometheus: after a failed query, none for a back-off period, then
one probe (`prom.usage` says why).
"""

from __future__ import annotations

import datetime
import threading
import time
from collections.abc import Callable


class Breaker:
    """After a failure, let nothing through for `backoff`; then one probe at a time.

    Thread-safe. `clock` is monotonic seconds (injectable for tests).
    """

    def __init__(self, *, backoff: datetime.timedelta, clock: Callable[[], float] = time.monotonic):
        self.backoff = backoff.total_seconds()
        self.clock = clock
        self._lock = threading.Lock()
        self._open_until: float | None = None
        self._failed_at: float | None = None
        self._error = ""

    def allow(self) -> str | None:
        """None when a query may go out; else why not (the last error and when it is retried)."""
        with self._lock:
            now = self.clock()
            if self._open_until is None:
                return None
            if now >= self._open_until:
                self._open_until = now + self.backoff  # this caller probes; the others wait
                return None
            ago = now - (self._failed_at or now)
            wait = self._open_until - now
            return f"not queried: the last query failed {ago:.0f}s ago ({self._error}); next try in {wait:.0f}s"

    def failure(self, error: str) -> None:
        with self._lock:
            now = self.clock()
            self._failed_at = now
            self._open_until = now + self.backoff
            self._error = error

    def success(self) -> None:
        with self._lock:
            self._open_until = None
            self._failed_at = None
            self._error = ""
