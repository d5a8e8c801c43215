"""RFC 3339 timestamps as the API server writes them (metav1.Time: UTC, whole seconds, `Z`)."""

from __future__ import annotations

import datetime


def format(at: datetime.datetime) -> str:  # noqa: A001 - used as timestamps.format
    """`2026-11-26T10:04:59Z`. A naive datetime is taken as UTC."""
    if at.tzinfo is None:
        at = at.replace(tzinfo=datetime.timezone.utc)
    return at.astimezone(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def format_or_none(at: datetime.datetime | None) -> str | None:
    return format(at) if at is not None else None


def parse(text: str | None) -> datetime.datetime | None:
    """An aware datetime, or None for an empty or unreadable text (never raises)."""
    if not text:
        return None
    try:
        parsed = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=datetime.timezone.utc)
