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
    """An aware datetime in UTC, or None for an empty or unreadable text, or one outside the years 1 to
    9999 once in UTC (`9999-12-31T23:59:59-23:59`). Never raises."""
    if not text:
        return None
    try:
        parsed = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
        if parsed.tzinfo is None:
            return parsed.replace(tzinfo=datetime.timezone.utc)
        return parsed.astimezone(datetime.timezone.utc)
    except (ValueError, OverflowError):
        return None
