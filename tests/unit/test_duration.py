"""Durations as written in an OOMPolicy (Go's syntax plus days): parsing, errors, and printing back.

Pure functions; hypothesis checks that `format` writes what `parse` reads back exactly.
"""

from __future__ import annotations

import datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from oomtuner.domain import duration

td = datetime.timedelta


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("30s", td(seconds=30)),
        ("10m", td(minutes=10)),
        ("1h30m", td(hours=1, minutes=30)),
        ("7d", td(days=7)),
        ("500ms", td(milliseconds=500)),
        ("1.5h", td(minutes=90)),
        ("0.1s", td(milliseconds=100)),
        ("1d2h3m4s5ms", td(days=1, hours=2, minutes=3, seconds=4, milliseconds=5)),
        ("1m30s", td(seconds=90)),
        ("1m1m", td(minutes=2)),
        ("0s", td(0)),
        ("0", td(0)),
        ("0.5ms", td(microseconds=500)),
    ],
)
def test_parse(text: str, expected: datetime.timedelta) -> None:
    assert duration.parse(text) == expected


@pytest.mark.parametrize("text", ["", "10", "-5m", "5 m", " 5m", "1.h", ".5h", "1w", "10M", "1h-30m", "ms"])
def test_parse_rejects_and_names_the_value(text: str) -> None:
    with pytest.raises(duration.DurationError) as caught:
        duration.parse(text)
    assert f'"{text}"' in str(caught.value)
    assert isinstance(caught.value, ValueError)


def test_parse_rejects_a_duration_too_long_for_timedelta() -> None:
    with pytest.raises(duration.DurationError, match="too long"):
        duration.parse("99999999999d")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (td(minutes=90), "1h30m"),
        (td(days=7), "7d"),
        (td(hours=36), "1d12h"),
        (td(milliseconds=500), "500ms"),
        (td(microseconds=1500), "1.5ms"),
        (td(seconds=30), "30s"),
        (td(0), "0s"),
        (td(minutes=-10), "-10m"),
    ],
)
def test_format(value: datetime.timedelta, expected: str) -> None:
    assert duration.format(value) == expected


@given(st.timedeltas(min_value=td(0), max_value=td(days=100_000)))
def test_format_round_trips(value: datetime.timedelta) -> None:
    assert duration.parse(duration.format(value)) == value
