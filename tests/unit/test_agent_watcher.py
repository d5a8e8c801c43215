"""Counters over time (oomtuner.agent.watcher): baselines, new kills, vanishing cgroups, saved state.

Real: the watcher, its discovery and its state file on disk.
Faked: the cgroup filesystem (files in tmp_path that a test rewrites between polls, as the kernel
would change them) and the clock (`now` is passed in).
"""

from __future__ import annotations

import datetime
import json
import logging
import pathlib

import pytest

from oomtuner.agent import watcher
from tests.agent import trees

T0 = datetime.datetime(2025, 3, 1, 12, 0, tzinfo=datetime.timezone.utc)
SECOND = datetime.timedelta(seconds=1)


class Node:
    """A fake node's cgroup root with helpers to add containers and bump their counters."""

    def __init__(self, root: pathlib.Path, version: trees.Version = "v1") -> None:
        self.root = root
        self.version: trees.Version = version
        self.base = trees.hierarchy(root, version)
        self.paths: dict[str, pathlib.Path] = {}

    def add(self, *, oom_kill: int = 0, limit_hits: int = 0) -> str:
        cid = trees.new_container_id()
        pod = trees.pod_dir(self.base / "kubepods", driver="cgroupfs", qos="burstable", uid=trees.new_pod_uid())
        self.paths[cid] = trees.write_container(pod / cid, version=self.version, oom_kill=oom_kill, limit_hits=limit_hits)
        return cid

    def set(self, cid: str, *, oom_kill: int, limit_hits: int = 0) -> None:
        trees.write_container(self.paths[cid], version=self.version, oom_kill=oom_kill, limit_hits=limit_hits)

    def remove(self, cid: str) -> None:
        path = self.paths.pop(cid)
        for child in path.iterdir():
            child.unlink()
        path.rmdir()


def kills(increases: list[watcher.Increase]) -> dict[str, int]:
    return {increase.cgroup.container_id: increase.new_kills for increase in increases}


def test_first_sight_is_the_baseline_then_rises_are_reported(tmp_path: pathlib.Path) -> None:
    node = Node(tmp_path)
    old = node.add(oom_kill=5)  # kills from before the agent started: not reported
    w = watcher.Watcher(root=tmp_path)

    assert w.poll(now=T0) == []
    assert w.watched == 1
    node.set(old, oom_kill=7)
    increases = w.poll(now=T0 + 2 * SECOND)
    assert kills(increases) == {old: 2}
    assert increases[0].counters.oom_kill == 7
    assert increases[0].seen_at == T0 + 2 * SECOND and increases[0].previous_at == T0
    assert w.poll(now=T0 + 4 * SECOND) == []


def test_a_cgroup_born_after_the_first_poll_counts_from_zero(tmp_path: pathlib.Path) -> None:
    """A worker killed before the agent first saw its container is still reported."""
    node = Node(tmp_path, "v2")
    w = watcher.Watcher(root=tmp_path)
    w.poll(now=T0)
    new = node.add(oom_kill=1, limit_hits=1)

    increases = w.poll(now=T0 + SECOND)

    assert kills(increases) == {new: 1}
    assert increases[0].previous_at is None
    assert increases[0].hit_limit is True


def test_hit_limit_follows_the_cgroups_own_limit_counter(tmp_path: pathlib.Path) -> None:
    node = Node(tmp_path, "v2")
    cid = node.add()
    w = watcher.Watcher(root=tmp_path)
    w.poll(now=T0)
    node.set(cid, oom_kill=1, limit_hits=0)  # killed, but the container never hit its own limit
    assert [i.hit_limit for i in w.poll(now=T0 + SECOND)] == [False]
    node.set(cid, oom_kill=2, limit_hits=1)
    assert [i.hit_limit for i in w.poll(now=T0 + 2 * SECOND)] == [True]


def test_vanishing_and_unreadable_cgroups(tmp_path: pathlib.Path) -> None:
    node = Node(tmp_path)
    a, b = node.add(oom_kill=1), node.add(oom_kill=1)
    w = watcher.Watcher(root=tmp_path)
    w.poll(now=T0)

    node.remove(a)
    (node.paths[b] / "memory.oom_control").write_text("garbage")  # unreadable this time
    assert w.poll(now=T0 + SECOND) == []
    assert w.watched == 1  # a is forgotten, b kept with its last value
    node.set(b, oom_kill=3)
    assert kills(w.poll(now=T0 + 2 * SECOND)) == {b: 2}


def test_a_lower_counter_is_a_new_cgroup(tmp_path: pathlib.Path) -> None:
    node = Node(tmp_path)
    cid = node.add(oom_kill=4)
    w = watcher.Watcher(root=tmp_path)
    w.poll(now=T0)
    node.set(cid, oom_kill=1)

    assert kills(w.poll(now=T0 + SECOND)) == {cid: 1}


def test_several_containers_each_reported_once(tmp_path: pathlib.Path) -> None:
    node = Node(tmp_path, "v2")
    ids = [node.add() for _ in range(3)]
    w = watcher.Watcher(root=tmp_path)
    w.poll(now=T0)
    node.set(ids[0], oom_kill=1)
    node.set(ids[2], oom_kill=5)

    assert kills(w.poll(now=T0 + SECOND)) == {ids[0]: 1, ids[2]: 5}


# ---- saved state ---------------------------------------------------------------------------------


def test_restart_with_state_neither_misses_nor_recounts(tmp_path: pathlib.Path) -> None:
    root, state = tmp_path / "cgroup", tmp_path / "state"
    node = Node(root)
    running = node.add(oom_kill=3)
    first = watcher.Watcher(root=root, state_dir=state)
    first.poll(now=T0)
    node.set(running, oom_kill=4)
    assert kills(first.poll(now=T0 + SECOND)) == {running: 1}

    # The agent is down: one more kill in the running container, and a new container with two.
    node.set(running, oom_kill=5)
    born = node.add(oom_kill=2)
    second = watcher.Watcher(root=root, state_dir=state)

    increases = second.poll(now=T0 + 60 * SECOND)
    assert kills(increases) == {running: 1, born: 2}
    assert all(i.hit_limit is None for i in increases if i.cgroup.container_id == running)
    assert second.poll(now=T0 + 62 * SECOND) == []


def test_state_file_content(tmp_path: pathlib.Path) -> None:
    node = Node(tmp_path / "cgroup")
    cid = node.add(oom_kill=2)
    watcher.Watcher(root=tmp_path / "cgroup", state_dir=tmp_path / "state").poll(now=T0)

    body = json.loads((tmp_path / "state" / watcher.STATE_FILE).read_text())

    assert body["root"] == str(tmp_path / "cgroup")
    assert [(v["containerID"], v["oomKill"]) for v in body["cgroups"].values()] == [(cid, 2)]
    assert [p.name for p in (tmp_path / "state").iterdir()] == [watcher.STATE_FILE]  # no temporary left


@pytest.mark.parametrize(
    "content",
    ["{not json", '{"version": 1, "root": "/elsewhere", "cgroups": {}}', '{"version": 99}', '[]',
     '{"version": 1, "root": "ROOT", "cgroups": {"k": {"oomKill": "x"}}}'],
)
def test_unusable_state_means_a_fresh_start(
    tmp_path: pathlib.Path, content: str, caplog: pytest.LogCaptureFixture
) -> None:
    root, state = tmp_path / "cgroup", tmp_path / "state"
    node = Node(root)
    cid = node.add(oom_kill=3)
    state.mkdir()
    (state / watcher.STATE_FILE).write_text(content.replace("ROOT", str(root)))

    with caplog.at_level(logging.WARNING):
        w = watcher.Watcher(root=root, state_dir=state)
        assert w.poll(now=T0) == []  # the old kills are a baseline, not new kills
    node.set(cid, oom_kill=4)
    assert kills(w.poll(now=T0 + SECOND)) == {cid: 1}
    assert "saved counters" in caplog.text


def test_unwritable_state_dir_is_logged_not_fatal(tmp_path: pathlib.Path, caplog: pytest.LogCaptureFixture) -> None:
    node = Node(tmp_path / "cgroup")
    cid = node.add()
    (tmp_path / "state").write_text("a file where the folder should be")
    w = watcher.Watcher(root=tmp_path / "cgroup", state_dir=tmp_path / "state")

    with caplog.at_level(logging.WARNING):
        w.poll(now=T0)
        node.set(cid, oom_kill=1)
        assert kills(w.poll(now=T0 + SECOND)) == {cid: 1}
    assert "cannot save" in caplog.text
