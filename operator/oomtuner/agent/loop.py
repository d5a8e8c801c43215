"""One poll after another: read the counters, report the rises, deliver what can be delivered.

Kept apart from the click command so a test can run the real loop in a thread, with a fake pod
resolver and a recording event sink, against a real cgroup tree. The loop never ends on an error:
the agent's job is to keep watching, so an unexpected failure is logged, counted
(`oomtuner_agent_poll_errors_total`) and the next poll comes on time.
"""

from __future__ import annotations

import datetime
import logging
import threading
import time
from collections.abc import Callable

from oomtuner.agent import metrics, reporter, watcher

logger = logging.getLogger(__name__)

Clock = Callable[[], datetime.datetime]


def utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def tick(*, poller: watcher.Watcher, sender: reporter.Reporter, now: datetime.datetime) -> list[watcher.Increase]:
    """One poll: read every counter, hand the rises to the reporter, try to deliver. Returns the rises."""
    increases = poller.poll(now=now)
    for increase in increases:
        logger.debug(
            "oom_kill of cgroup %s rose by %d to %d (pod uid %s, container id %s)",
            increase.cgroup.key, increase.new_kills, increase.counters.oom_kill,
            increase.cgroup.pod_uid, increase.cgroup.container_id,
        )
    sender.submit(increases)
    sender.deliver(now=now)
    sender.forget_gone_pods(poller.pod_uids)
    metrics.CGROUPS_WATCHED.set(poller.watched)
    metrics.LAST_POLL.set(now.timestamp())
    return increases


def run(
    *,
    poller: watcher.Watcher,
    sender: reporter.Reporter,
    interval: float,
    stop: threading.Event,
    clock: Clock = utcnow,
) -> None:
    """Poll every `interval` seconds until `stop` is set. Never raises."""
    while not stop.is_set():
        started = time.monotonic()
        try:
            tick(poller=poller, sender=sender, now=clock())
        except Exception:
            metrics.POLL_ERRORS.inc()
            logger.exception("poll failed; polling again in %gs", interval)
        stop.wait(max(0.0, interval - (time.monotonic() - started)))
