"""kopf handlers: thin wiring from watch events to the operator's services (`oomtuner.app`).

Pods are watched with `@kopf.on.event` only, which stores nothing on the object: the operator never
writes annotations, finalizers or anything else to pods. The same holds for Nodes and Events. The
`App` comes in kopf's memo (`oomtuner run` passes it to kopf). Each handler hands the raw body to the
app in a worker thread, so API calls never block the loop. Errors are counted and logged; kopf does
not retry event handlers, and the next status update of the same pod (or the resume listing after a
restart) brings the kill back, still uncounted.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import time
from typing import Any, Callable

import kopf

from oomtuner import app as app_mod
from oomtuner import memory
from oomtuner.api import core, policy, recommendation
from oomtuner.kube import api
from oomtuner.prom import metrics

logger = logging.getLogger(__name__)

# Worker threads for the blocking API calls. asyncio's default pool has cpu+4 threads; a burst of
# kills of one workload queues on that workload's lock, and must not starve the other workloads.
WORKER_THREADS = 32
TICK_INTERVAL = 1.0  # seconds between rounds of the background task (each only looks at what is due)
TRIM_INTERVAL = 5.0  # seconds between giving freed memory back
PRIME_RETRY = 5.0  # seconds before the start-up listing is tried again


def _app(memo: Any) -> app_mod.App:
    found = getattr(memo, "app", None)
    if not isinstance(found, app_mod.App):
        raise kopf.PermanentError("the operator was not started with its app in the memo (start it with `oomtuner run`)")
    return found


async def _run(kind: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    try:
        return await asyncio.to_thread(fn, *args, **kwargs)
    except api.ApiError as exc:  # the API server said no (a namespace being deleted, RBAC): one line
        metrics.RECONCILE_ERRORS.labels(kind=kind).inc()
        logger.warning("handling a %s failed: %s", kind, exc)
        return None
    except Exception:
        metrics.RECONCILE_ERRORS.labels(kind=kind).inc()
        logger.exception("handling a %s failed", kind)
        return None


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    asyncio.get_running_loop().set_default_executor(
        concurrent.futures.ThreadPoolExecutor(max_workers=WORKER_THREADS, thread_name_prefix="oomtuner")
    )
    # Nothing of kopf's bookkeeping on the objects the operator watches.
    settings.persistence.progress_storage = kopf.MultiProgressStorage([])
    settings.persistence.diffbase_storage = kopf.MultiDiffBaseStorage([])
    settings.posting.enabled = False
    settings.watching.server_timeout = 300
    # The initial listing of every pod arrives in pages, not as one document the size of the cluster.
    settings.watching.chunk_size = 500
    # No cap on kopf's per-object workers: a capped pool holds each worker for its idle timeout (5s)
    # after its event, so a burst of kills in many pods would wait in steps of 5 seconds.
    settings.batching.worker_limit = None
    settings.batching.idle_timeout = 2.0
    settings.networking.request_timeout = 60


async def _background(app: app_mod.App, stop: asyncio.Event) -> None:
    """Every second: write again the kills whose write failed, apply the patches and settles that are
    due; every few seconds, give freed memory back."""
    trimmed = time.monotonic()
    while not stop.is_set():
        try:
            await asyncio.wait_for(stop.wait(), timeout=TICK_INTERVAL)
        except asyncio.TimeoutError:
            pass
        if not stop.is_set():
            await _run("background round", app.tick)
        if time.monotonic() - trimmed >= TRIM_INTERVAL:
            memory.trim()
            trimmed = time.monotonic()


_STOP = asyncio.Event()
_TASKS: list[asyncio.Task[None]] = []


@kopf.on.startup()
async def prime(memo: kopf.Memo, logger: logging.Logger | logging.LoggerAdapter[Any], **_: Any) -> None:
    """Policies, nodes and recommendations are listed once before kopf starts watching (it runs the
    startup handlers first), so kills replayed at start-up are judged with them."""
    try:
        said = await asyncio.to_thread(_app(memo).prime)
    except Exception as exc:  # noqa: BLE001 - the API server is not there yet: kopf tries again
        raise kopf.TemporaryError(f"listing policies, nodes and recommendations failed: {exc}", delay=PRIME_RETRY) from None
    logger.info("start-up: %s", said)


@kopf.on.startup()
async def start_background(memo: kopf.Memo, **_: Any) -> None:
    _TASKS.append(asyncio.create_task(_background(_app(memo), _STOP), name="oomtuner-background"))


@kopf.on.cleanup()
async def stop_background(memo: kopf.Memo, **_: Any) -> None:
    _STOP.set()
    for task in _TASKS:
        await task
    # Events still queued go out before the process ends (a few seconds at most).
    await asyncio.to_thread(_app(memo).flush, 5.0)


def _oom_visible(body: Any, **_: Any) -> bool:
    return core.shows_oom_kill(body)


@kopf.on.event("", "v1", "pods", when=_oom_visible)
async def pod_event(body: kopf.Body, type: str | None, memo: kopf.Memo, **_: Any) -> None:
    if type == "DELETED":
        return
    await _run("pod", _app(memo).on_pod, dict(body))


@kopf.on.event("", "v1", "nodes")
async def node_event(body: kopf.Body, type: str | None, memo: kopf.Memo, **_: Any) -> None:
    _app(memo).on_node(dict(body), deleted=type == "DELETED")


def _oom_event(body: Any, **_: Any) -> bool:
    return core.reason_of(body) in app_mod.EVENT_REASONS


@kopf.on.event("", "v1", "events", when=_oom_event)
async def oom_event(body: kopf.Body, type: str | None, memo: kopf.Memo, **_: Any) -> None:
    if type == "DELETED":
        return
    await _run("event", _app(memo).on_event, dict(body))


@kopf.on.event(policy.GROUP, policy.VERSION, policy.PLURAL)
async def policy_event(body: kopf.Body, type: str | None, memo: kopf.Memo, **_: Any) -> None:
    await _run("policy", _app(memo).on_policy, dict(body), deleted=type == "DELETED")


@kopf.on.event(policy.GROUP, policy.VERSION, policy.CLUSTER_PLURAL)
async def cluster_policy_event(body: kopf.Body, type: str | None, memo: kopf.Memo, **_: Any) -> None:
    await _run("cluster policy", _app(memo).on_cluster_policy, dict(body), deleted=type == "DELETED")


@kopf.on.event(recommendation.GROUP, recommendation.VERSION, recommendation.PLURAL)
async def recommendation_event(body: kopf.Body, type: str | None, memo: kopf.Memo, **_: Any) -> None:
    if type == "DELETED":
        _app(memo).on_recommendation_deleted(dict(body))
        return
    await _run("recommendation", _app(memo).on_recommendation, dict(body))
