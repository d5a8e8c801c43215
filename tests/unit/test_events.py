"""Building the operator's Events (`kube.events.build`). Pure: no API server."""

from __future__ import annotations

import datetime

from oomtuner.kube import events

NOW = datetime.datetime(2026, 1, 5, 12, 0, tzinfo=datetime.timezone.utc)
INVOLVED = {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web", "namespace": "shop", "uid": "u1"}


def test_a_long_message_is_cut_to_the_1024_bytes_the_api_server_takes() -> None:
    # 400 arrows are 1200 bytes in UTF-8: a cut at 1024 characters would still be refused (422).
    message = "web: 256Mi → 384Mi; " * 60
    body = events.build(involved=INVOLVED, reason=events.Reason.RECOMMENDATION_UPDATED, message=message, now=NOW)
    sent = body["message"]
    assert len(sent.encode("utf-8")) <= 1024 and message.startswith(sent)
    assert len(sent.encode("utf-8")) > 1024 - len("→".encode("utf-8"))  # cut at the bound, not before
    short = events.build(involved=INVOLVED, reason=events.Reason.OOM_KILL_DETECTED, message="one kill", now=NOW)
    assert short["message"] == "one kill" and short["type"] == "Warning"
