"""Print the fault-injection suite's figures as the Markdown table of bench/README.md.

    .venv/bin/python -m tests.faults.table            # from build/faults/*.json (OOMTUNER_FAULTS_RESULTS)
    .venv/bin/python -m tests.faults.table DIR

Each scenario of `pytest tests/faults` writes one JSON file; the rows follow the suite's order.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

RESULTS = Path(os.environ.get("OOMTUNER_FAULTS_RESULTS") or Path(__file__).resolve().parents[2] / "build" / "faults")

ORDER = [
    "apiserver-restart", "apiserver-hang", "etcd-restart", "watch-410", "conflict-storm",
    "sigkill-after-create", "sigkill-after-status-write", "sigkill-before-apply", "patch-refused-transiently",
    "peering-pause", "burst-1000-restart", "stale-rollout", "clock-skew", "observe-restart",
    "prometheus-down", "prometheus-hung", "prometheus-drip", "prometheus-garbage", "prometheus-huge",
]


def _cell(value: Any) -> str:
    return "—" if value is None else str(value)


def _recovery(row: dict[str, Any]) -> str:
    if row["recovery_s"] is None:
        return f"none in time (≤ {row['recovery_target_s']:g} s)"
    return f"{row['recovery_s']:.1f} s (≤ {row['recovery_target_s']:g} s)"


def _why(row: dict[str, Any]) -> list[str]:
    """The failure's kinds, in a word each (the JSON has the sentences)."""
    kinds = {"lost": row["lost"], "counted twice": row["double_counted"], "spurious raise": row["spurious_bumps"],
             "patch lost": row["patches_lost"]}
    found = [name for name, n in kinds.items() if n]
    if row["recovery_s"] is None or row["recovery_s"] > row["recovery_target_s"]:
        found.append("slow recovery")
    counted = ("lost", "counted twice", "spurious raise", "patch lost", "no recovery", "recovery took")
    if any(not f.startswith(counted) and "kill(s) lost" not in f and "counted twice" not in f for f in row["failures"]):
        found.append("see notes")
    return found


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| scenario | kills injected | recorded | lost | counted twice | spurious raises | patches lost | recovery (target) | result |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        result = "pass" if not row["failures"] else "FAIL (" + ", ".join(_why(row)) + ")"
        lines.append(
            f"| {row['title']} | {row['injected']} | {row['recorded']} | {row['lost']} | {row['double_counted']} | "
            f"{_cell(row['spurious_bumps'])} | {_cell(row['patches_lost'])} | {_recovery(row)} | {result} |"
        )
    return "\n".join(lines)


def load(directory: Path) -> list[dict[str, Any]]:
    rows = [json.loads(p.read_text()) for p in directory.glob("*.json")]
    rank = {name: i for i, name in enumerate(ORDER)}
    return sorted(rows, key=lambda r: (rank.get(r["scenario"], len(ORDER)), r["scenario"]))


def main(argv: list[str]) -> int:
    directory = Path(argv[0]) if argv else RESULTS
    rows = load(directory)
    if not rows:
        print(f"no results in {directory}: run `pytest tests/faults` first", file=sys.stderr)
        return 1
    print(table(rows))
    commits = sorted({r["commit"] for r in rows})
    whens = sorted(r["when"] for r in rows)
    print(f"\n{len(rows)} scenarios, {whens[0]} to {whens[-1]}, commit {', '.join(commits)}; "
          f"wall time of the scenarios {sum(r['wall_s'] for r in rows):.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
