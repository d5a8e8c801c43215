"""Serving the dashboard: the app built from the settings, run by uvicorn in the foreground.

`oomtuner dashboard` (cli) parses the flags and calls `serve`. The web stack is an optional extra
(`pip install 'oomtuner[dashboard]'`, which the chart's image has): without it, `MissingExtra` says
so in one line.
"""

from __future__ import annotations

import datetime
import logging
from typing import Any

from oomtuner import config
from oomtuner.domain import duration
from oomtuner.kube import api
from oomtuner.prom import usage as prom_usage

logger = logging.getLogger("oomtuner.dashboard")


class MissingExtra(RuntimeError):
    """The web stack is not installed."""


def build(*, client: api.Client, settings: config.Settings, refresh: float, top: int, allow_approve: bool,
          root_path: str = "") -> Any:
    """The ASGI app: listings through `client`, usage through the operator's Prometheus settings."""
    try:
        from oomtuner.dashboard import approve, cache, web
    except ImportError as exc:
        raise MissingExtra(f"the dashboard needs its web stack ({exc.name} is missing): "
                           "pip install 'oomtuner[dashboard]'") from None
    dashboard = web.Dashboard(
        cluster=cache.Cluster(client, ttl=refresh, row_html=web.row_html(root_path)),
        usage=prom_usage.from_settings(settings),
        approvals=approve.Approvals(client, enabled=allow_approve),
        min_step=max(duration.parse(settings.prometheus_min_step), datetime.timedelta(seconds=1)),
        top=top,
    )
    return web.create_app(dashboard)


def serve(app: Any, *, host: str, port: int, root_path: str = "", log_level: str = "info") -> None:
    """Run the app until SIGINT or SIGTERM."""
    import uvicorn

    logger.info("oomtuner dashboard on http://%s:%d%s", host, port, root_path)
    uvicorn.run(app, host=host, port=port, root_path=root_path, log_level=log_level.lower(),
                access_log=False, proxy_headers=False, server_header=False)
