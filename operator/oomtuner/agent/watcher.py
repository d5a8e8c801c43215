"""Turning cgroup OOM kill counters into "N new kills in this container" reports.

The watcher polls: every interval it finds the node's container cgroups (`cgroups.discover`), reads
their counters and compares each with the last value it saw. Polling, not inotify: cgroup v1's
`memory.oom_control` only notifies through an eventfd registered per cgroup, v2's `memory.events`
through inotify per file, and both need one registration per container that must follow cgroups
coming and going; a scan of a few hundred small files every couple of seconds costs less than that
bookkeeping and cannot miss a cgroup created between two registrations.

Where counting starts (the baseline) is the trade-off. A counter only ever grows within one cgroup
and starts at 0 when the cgroup is created, so:

- a cgroup that appears after the watcher has looked once (or after the last saved state) is new:
  every kill its counter shows is reported (baseline 0). A worker killed in the first second of a
  container's life is not lost between two polls;
- a cgroup in the saved state (`--state-dir`) continues from the saved value: an agent restarted by a
  rollout or a crash reports the kills that happened while it was down, and does not recount old ones;
- only on the very first start of the agent on a node (no state file) are the counters of the
  cgroups already there taken as they are (baseline = current value): their kills may be days old,
  and the agent cannot tell when they happened, so reporting them "now" would be wrong. Those kills
  are not reported. Without `--state-dir`, every restart of the agent is such a first start.

A counter lower than last time (a cgroup path reused; never seen with real runtimes, whose
container IDs are unique) is a new cgroup: its whole value is new. A cgroup that vanishes is
forgotten. A cgroup whose files cannot be read this time keeps its last value and is read again
next time. The state holds the OOM kill counters only and is written atomically (temporary file,
then rename) after every poll that changed one; if it cannot be written the agent logs that and
keeps going. The "hit the limit" counter is not saved (v1's `failcnt` moves on nearly every poll),
so right after a restart whether a kill came from the container's own limit reads as unknown.

A report is made before it is delivered: if the agent dies between the two, that report is lost
(the counter value is already saved). The window is one poll; the alternative, saving only after
delivery, recounts kills after every API outage.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import logging
import os
import pathlib
import tempfile
from typing import Any

from oomtuner.agent import cgroups

logger = logging.getLogger(__name__)

STATE_FILE = "counters.json"
_STATE_VERSION = 1


@dataclasses.dataclass(frozen=True)
class Increase:
    """The OOM kill counter of one container cgroup rose by `new_kills` (≥ 1).

    `counters` is the reading that showed it. `limit_hits` is how much the cgroup's own "hit the
    limit" counter rose over the same time, None when either reading lacked it. `seen_at` is when
    the rise was read; the kills happened after `previous_at` (None when counting from 0).
    """

    cgroup: cgroups.ContainerCgroup
    counters: cgroups.Counters
    new_kills: int
    limit_hits: int | None
    seen_at: datetime.datetime
    previous_at: datetime.datetime | None

    @property
    def hit_limit(self) -> bool | None:
        """Whether the container's own cgroup reached its limit since the last reading; None if unknown."""
        return None if self.limit_hits is None else self.limit_hits > 0


@dataclasses.dataclass(frozen=True)
class _Seen:
    container_id: str
    oom_kill: int
    limit_hits: int | None
    at: datetime.datetime | None


class Watcher:
    """Polls the container cgroups under one root and reports rises of their OOM kill counters."""

    def __init__(self, *, root: pathlib.Path, state_dir: pathlib.Path | None = None) -> None:
        self.root = root
        self.state_path = state_dir / STATE_FILE if state_dir is not None else None
        self._seen: dict[str, _Seen] = {}
        # The pod UIDs of the container cgroups the last poll found: a pod not among them is gone from the node.
        self.pod_uids: frozenset[str] = frozenset()
        # Whether a cgroup we have not seen yet was born after we last looked (baseline 0).
        self._looked = False
        self._dirty = False
        if self.state_path is not None:
            loaded = _load_state(self.state_path, root=root)
            if loaded is not None:
                self._seen = loaded
                self._looked = True

    @property
    def watched(self) -> int:
        """How many container cgroups the last poll saw."""
        return len(self._seen)

    def poll(self, *, now: datetime.datetime) -> list[Increase]:
        """Read every container cgroup once; return the rises since the last poll, sorted by cgroup."""
        increases: list[Increase] = []
        present: set[str] = set()
        pods: set[str] = set()
        for cgroup in cgroups.discover(self.root):
            present.add(cgroup.key)
            pods.add(cgroup.pod_uid)
            counters = cgroups.read_counters(cgroup.path)
            if counters is None:
                continue  # vanishing, or unreadable this time: keep the last value, if any
            before = self._seen.get(cgroup.key)
            if before is not None and before.container_id != cgroup.container_id:
                before = None
            if before is None:
                if self._looked:
                    before = _Seen(container_id=cgroup.container_id, oom_kill=0, limit_hits=0, at=None)
                else:
                    logger.debug("baseline %s: oom_kill=%d", cgroup.key, counters.oom_kill)
                    self._remember(cgroup, counters, at=now)
                    continue
            new_kills = counters.oom_kill - before.oom_kill
            previous_at = before.at
            if new_kills < 0:  # a new cgroup at an old path: its counter started again from 0
                new_kills, previous_at = counters.oom_kill, None
            if new_kills > 0:
                increases.append(
                    Increase(
                        cgroup=cgroup,
                        counters=counters,
                        new_kills=new_kills,
                        limit_hits=_rise(before.limit_hits, counters.limit_hits),
                        seen_at=now,
                        previous_at=previous_at,
                    )
                )
            self._remember(cgroup, counters, at=now)
        for key in set(self._seen) - present:
            del self._seen[key]
            self._dirty = True
        self.pod_uids = frozenset(pods)
        self._looked = True
        self._save()
        return increases

    def _remember(self, cgroup: cgroups.ContainerCgroup, counters: cgroups.Counters, *, at: datetime.datetime) -> None:
        before = self._seen.get(cgroup.key)
        if before is None or before.oom_kill != counters.oom_kill or before.container_id != cgroup.container_id:
            self._dirty = True
        self._seen[cgroup.key] = _Seen(
            container_id=cgroup.container_id, oom_kill=counters.oom_kill, limit_hits=counters.limit_hits, at=at
        )

    def _save(self) -> None:
        if self.state_path is None or not self._dirty:
            return
        body = {
            "version": _STATE_VERSION,
            "root": str(self.root),
            "cgroups": {
                key: {"containerID": seen.container_id, "oomKill": seen.oom_kill}
                for key, seen in sorted(self._seen.items())
            },
        }
        try:
            _write_atomically(self.state_path, json.dumps(body, indent=1))
        except OSError as exc:
            logger.warning("cannot save the agent's counters to %s: %s", self.state_path, exc)
            return
        self._dirty = False


def _rise(before: int | None, after: int | None) -> int | None:
    if before is None or after is None:
        return None
    return after - before if after >= before else after


def _write_atomically(path: pathlib.Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            file.write(text)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        pathlib.Path(temporary).unlink(missing_ok=True)
        raise


def _load_state(path: pathlib.Path, *, root: pathlib.Path) -> dict[str, _Seen] | None:
    """The saved counters, or None (with a warning) when there are none, or unusable ones.

    A state saved for another cgroup root is not used: its keys would name other cgroups.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as exc:
        logger.warning("cannot read the agent's saved counters %s: %s; starting from current values", path, exc)
        return None
    try:
        body: Any = json.loads(text)
        if body.get("version") != _STATE_VERSION or body.get("root") != str(root):
            logger.warning("saved counters %s are for another version or cgroup root; not using them", path)
            return None
        return {
            str(key): _Seen(
                container_id=str(value["containerID"]),
                oom_kill=int(value["oomKill"]),
                limit_hits=None,
                at=None,
            )
            for key, value in body["cgroups"].items()
        }
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        logger.warning("saved counters %s are unreadable (%s); starting from current values", path, exc)
        return None
