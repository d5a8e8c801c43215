"""Durations as users write them in an OOMPolicy: "30s", "10m", "1h30m", "7d", "500ms", "1.5h".

The syntax is Go's `time.ParseDuration` (what Kubernetes users know) plus a `d` for days, matching
`api.types.DURATION_PATTERN` that the CRD enforces. Parsing is exact (decimal arithmetic down to the
microsecond), so "0.1s" is 100ms, not 99.999ms. Objects that slipped past the schema get a
`DurationError` naming the value instead of a crash.
"""

from __future__ import annotations

import datetime
import decimal
import re

_UNIT_MICROSECONDS = {
    "ms": 1_000,
    "s": 1_000_000,
    "m": 60_000_000,
    "h": 3_600_000_000,
    "d": 86_400_000_000,
}
_TERM = re.compile(r"(?P<number>[0-9]+(?:\.[0-9]+)?)(?P<unit>ms|s|m|h|d)")
_WHOLE = re.compile(r"(?:[0-9]+(?:\.[0-9]+)?(?:ms|s|m|h|d))+")


class DurationError(ValueError):
    """A value that is not a duration; the message quotes the value."""


def parse(text: str) -> datetime.timedelta:
    """Parse "30s", "10m", "1h30m", "7d", "500ms", "1.5h" (units ms, s, m, h, d; terms add up).

    Edge cases: "0" alone is zero, as in Go; a unit may repeat ("1m1m" is 2m); fractions finer than a
    microsecond round to the nearest microsecond. Raises DurationError for "", "10", "-5m", "5 m",
    "1.h", "1w" and anything else.
    """
    if not isinstance(text, str):
        raise DurationError(f"invalid duration {text!r}: expected a string like 10m or 1h30m")
    if text == "0":
        return datetime.timedelta(0)
    if not _WHOLE.fullmatch(text):
        raise DurationError(
            f'invalid duration "{text}": expected numbers with units ms, s, m, h or d, like 10m or 1h30m'
        )
    total = decimal.Decimal(0)
    for term in _TERM.finditer(text):
        total += decimal.Decimal(term["number"]) * _UNIT_MICROSECONDS[term["unit"]]
    microseconds = int(total.to_integral_value(rounding=decimal.ROUND_HALF_EVEN))
    try:
        return datetime.timedelta(microseconds=microseconds)
    except OverflowError:
        raise DurationError(f'invalid duration "{text}": too long') from None


def format(td: datetime.timedelta) -> str:  # noqa: A001 - the module is the namespace: duration.format
    """Write a duration in the shortest form `parse` reads back exactly.

    90 minutes → "1h30m", 7 days → "7d", 36 hours → "1d12h", 0.5 s → "500ms", 1.5 ms → "1.5ms",
    zero → "0s". Negative durations get a leading "-" (which `parse` rejects: a cooldown is never
    negative).
    """
    microseconds = (td.days * 86_400 + td.seconds) * 1_000_000 + td.microseconds
    if microseconds == 0:
        return "0s"
    if microseconds < 0:
        return "-" + format(-td)
    parts = []
    for unit in ("d", "h", "m", "s"):
        size = _UNIT_MICROSECONDS[unit]
        count, microseconds = divmod(microseconds, size)
        if count:
            parts.append(f"{count}{unit}")
    if microseconds:
        millis = decimal.Decimal(microseconds) / 1000
        text = f"{millis:f}"
        if "." in text:
            text = text.rstrip("0").rstrip(".")
        parts.append(f"{text}ms")
    return "".join(parts)
