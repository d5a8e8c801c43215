"""kopf handlers: thin wiring from watch events to `reconcile.Operator`.

Pods are watched with `@kopf.on.event` only, which stores nothing on the object: the operator never
writes annotations, finalizers or anything else to pods. The same holds for Nodes and Events. Each
handler hands the raw body to the Operator in a worker thread, so API calls never block the loop.
Errors are counted and logged; kopf does not retry event handlers, and the next status update of
the same pod (or the resume listing after a restart) brings the kill back, still uncounted.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
from typing import Any

import kopf

from oomtuner import memory, reconcile
from oomtuner.api import policy, recommendation
from oomtuner.kube import api
from oomtuner.prom import metrics

logger = logging.getLogger(__name__)

# Set by `oomtuner run` before kopf starts.
OPERATOR: reconcile.Operator | None = None


def _operator() -> reconcile.Operator:
    if OPERATOR is None:
        raise kopf.PermanentError("the operator state was not initialised (start it with `oomtuner run`)")
    return OPERATOR


async def _run(kind: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
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


# Worker threads for the blocking API calls. asyncio's default pool has cpu+4 threads; a burst of
# kills of one workload queues on that workload's lock, and must not starve the other workloads.
WORKER_THREADS = 32


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    asyncio.get_running_loop().set_default_executor(
        concurrent.futures.ThreadPoolExecutor(max_workers=WORKER_THREADS, thread_name_prefix="oomtuner")
    )
    # Nothing of kopf's bookkeeping on the objects the operator watches.
    settings.persistence.progress_storage = kopf.MultiProgressStorage([])  # type: ignore[arg-type]
    settings.persistence.diffbase_storage = kopf.MultiDiffBaseStorage([])  # type: ignore[arg-type]
    settings.posting.enabled = False
    settings.watching.server_timeout = 300
    # The initial listing of every pod arrives in pages, not as one document the size of the cluster.
    settings.watching.chunk_size = 500
    # No cap on kopf's per-object workers: a capped pool holds each worker for its idle timeout (5s)
    # after its event, so a burst of kills in many pods would wait in steps of 5 seconds.
    settings.batching.worker_limit = None
    settings.batching.idle_timeout = 2.0
    settings.networking.request_timeout = 60


DEFERRED_INTERVAL = 5.0  # seconds between looks at patches held back by a cooldown


async def _apply_deferred(stop: asyncio.Event) -> None:
    """Every few seconds: apply patches whose cooldown ended, and give freed memory back."""
    while not stop.is_set():
        try:
            await asyncio.wait_for(stop.wait(), timeout=DEFERRED_INTERVAL)
        except asyncio.TimeoutError:
            pass
        if OPERATOR is not None and not stop.is_set():
            await _run("deferred patch", OPERATOR.apply_due)
        memory.trim()


_STOP = asyncio.Event()
_TASKS: list[asyncio.Task[None]] = []


@kopf.on.startup()
async def start_background(**_: Any) -> None:
    _TASKS.append(asyncio.create_task(_apply_deferred(_STOP), name="oomtuner-deferred-patches"))


@kopf.on.cleanup()
async def stop_background(**_: Any) -> None:
    _STOP.set()
    for task in _TASKS:
        await task
    if OPERATOR is not None:  # events still queued go out before the process ends (a few seconds at most)
        await asyncio.to_thread(OPERATOR.events.flush, 5.0)


def _oom_visible(body: Any, **_: Any) -> bool:
    return reconcile.has_oom_status(body)


@kopf.on.event("", "v1", "pods", when=_oom_visible)
async def pod_event(body: kopf.Body, type: str | None, **_: Any) -> None:
    if type == "DELETED":
        return
    await _run("pod", _operator().on_pod, dict(body))


@kopf.on.event("", "v1", "nodes")
async def node_event(body: kopf.Body, type: str | None, **_: Any) -> None:
    _operator().on_node(dict(body), deleted=type == "DELETED")


# Node-wide OOMs (kubelet, node-problem-detector) and the node agent's kills of child processes.
_OOM_EVENT_REASONS = frozenset({"SystemOOM", "OOMKilling", "OOMKillChildProcess"})


def _node_oom(body: Any, **_: Any) -> bool:
    return body.get("reason") in _OOM_EVENT_REASONS


@kopf.on.event("", "v1", "events", when=_node_oom)
async def oom_event(body: kopf.Body, type: str | None, **_: Any) -> None:
    if type == "DELETED":
        return
    await _run("event", _operator().on_event, dict(body))


@kopf.on.event(policy.GROUP, policy.VERSION, policy.PLURAL)
async def policy_event(body: kopf.Body, type: str | None, **_: Any) -> None:
    await _run("policy", _operator().on_policy, dict(body), deleted=type == "DELETED")


@kopf.on.event(recommendation.GROUP, recommendation.VERSION, recommendation.PLURAL)
async def recommendation_event(body: kopf.Body, type: str | None, **_: Any) -> None:
    if type == "DELETED":
        return
    await _run("recommendation", _operator().on_recommendation, dict(body))
