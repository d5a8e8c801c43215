"""What an OOMPolicy's schema cannot check: quantities and durations that parse but make no sense.

The operator (an `Invalid` condition) and `oomtuner explain --policy` (exit 2) ask the same question.
"""

from __future__ import annotations

import datetime

from oomtuner.api import policy
from oomtuner.domain import duration, quantity

# The smallest maxLimit that makes sense: recommendations are whole MiB, so a cap below one MiB would
# hold every container below anything the operator could recommend.
MIN_MAX_LIMIT = quantity.MIB


def problem(parsed: policy.OOMPolicy) -> str | None:
    """`field: what is wrong` for the first problem found, or None."""
    mem = parsed.spec.memory
    for field, value in (("spec.memory.minIncrease", mem.minIncrease), ("spec.memory.maxLimit", mem.maxLimit)):
        if value is None:
            continue
        found = quantity.problem(field, value)
        if found:
            return found
        amount = quantity.parse_bytes(value)
        if field.endswith("maxLimit") and amount < MIN_MAX_LIMIT:
            return (f"{field}: {value!r} is {amount} byte(s), less than 1Mi: recommendations are whole MiB, "
                    "so no recommendation could stay under it")
    durations = (
        ("spec.cooldown", parsed.spec.cooldown),
        ("spec.prometheus.lookback", parsed.spec.prometheus.lookback),
        ("spec.memory.settle.after", mem.settle.after),
    )
    for field, text in durations:
        try:
            length = duration.parse(text)
        except duration.DurationError as exc:
            return f"{field}: {exc}"
        if field.endswith("settle.after") and length <= datetime.timedelta(0):
            return f"{field}: must be longer than 0"
    return None
