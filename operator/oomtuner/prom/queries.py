"""What a usage source is asked and what it answers: the three queries (history over the lookback,
the node's pods at a node OOM, a workload since the raise), their answers, the `Source` protocol and
`Disabled`, the source when no Prometheus is configured. `prom.usage` says how Prometheus answers
them; `prom.promql` builds the PromQL and reads the answers.
"""

from __future__ import annotations

import dataclasses
import datetime
import enum
from collections.abc import Mapping, Sequence
from typing import Protocol

from oomtuner.domain import duration, kills, recommend, settle

# How far back from a node OOM the working set of the node's containers is read, for its culprit: a
# few scrape intervals, so the last samples before the kill are in it.
CULPRIT_WINDOW = datetime.timedelta(minutes=5)


class Outcome(str, enum.Enum):
    """What the usage lookup gave: the reason of the recommendation's UsageHistory condition."""

    USED = "Prometheus"
    NO_DATA = "NoUsageData"
    UNAVAILABLE = "PrometheusUnavailable"
    NOT_CONFIGURED = "NotConfigured"


@dataclasses.dataclass(frozen=True)
class Query:
    """What to look up: a workload's containers over a lookback, with the kills known so far
    (their pods and times tell the instances apart)."""

    namespace: str
    workload_kind: str
    workload_name: str
    containers: tuple[str, ...]
    kills: tuple[kills.OOMKill, ...]
    lookback: datetime.timedelta
    now: datetime.datetime
    # The most memory a container can use: the memory capacity of the largest node. None where it is
    # not known; then only MAX_PLAUSIBLE_MEMORY bounds the values.
    memory_bound: int | None = None


@dataclasses.dataclass(frozen=True)
class History:
    """The answer: usage per container that had data, and how it went (`outcome`, `message`).

    `discarded` says in words which values of the answer could not be memory and were left out
    (empty when none were); `message` says it too."""

    outcome: Outcome
    message: str
    lookback: datetime.timedelta | None = None
    usage: Mapping[str, recommend.Usage] = dataclasses.field(default_factory=dict)
    discarded: str = ""

    @property
    def ok(self) -> bool:
        return self.outcome == Outcome.USED

    @property
    def data_source(self) -> str:
        """`status.dataSource`: "kills", or "prometheus (7d)" when usage history was used."""
        if self.usage and self.lookback is not None:
            return f"prometheus ({duration.format(self.lookback)})"
        return "kills"


NOT_CONFIGURED_MESSAGE = "no Prometheus is configured (OOMTUNER_PROMETHEUS_URL)"
NOT_CONFIGURED = History(
    outcome=Outcome.NOT_CONFIGURED,
    message=f"{NOT_CONFIGURED_MESSAGE}; computed from the kills alone",
)


@dataclasses.dataclass(frozen=True)
class NodeQuery:
    """What to look up for the culprit of a node OOM: the containers of the pods on the node, at the
    kill. Pods are matched by namespace and name, which every setup labels alike (the node shows up
    as `node` or as `instance` depending on how cAdvisor is scraped)."""

    node: str
    pods: tuple[tuple[str, str], ...]  # (namespace, pod)
    at: datetime.datetime
    window: datetime.timedelta = CULPRIT_WINDOW
    memory_bound: int | None = None  # the node's memory capacity, where known


@dataclasses.dataclass(frozen=True)
class NodeUsage:
    """The answer: the working set per (namespace, pod, container) that had data, and how it went;
    with data, `message` says what the numbers are (the basis of the culprit's evidence). Both
    `node_usage` (the peak near a kill) and `current_usage` (now) answer with it."""

    outcome: Outcome
    message: str
    usage: Mapping[tuple[str, str, str], int] = dataclasses.field(default_factory=dict)
    discarded: str = ""  # as History.discarded

    @property
    def ok(self) -> bool:
        return self.outcome == Outcome.USED


@dataclasses.dataclass(frozen=True)
class SinceQuery:
    """What settle looks up: the working set of a workload's containers, all its pods, since `since`
    (oomtuner's last raise) up to `now`."""

    namespace: str
    workload_kind: str
    workload_name: str
    containers: tuple[str, ...]
    since: datetime.datetime
    now: datetime.datetime


@dataclasses.dataclass(frozen=True)
class SinceRaise:
    """The answer: usage since the raise per container that had data, and how it went."""

    outcome: Outcome
    message: str
    usage: Mapping[str, settle.UsageSinceRaise] = dataclasses.field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.outcome == Outcome.USED


class Source(Protocol):
    def history(self, query: Query) -> History: ...

    def since_raise(self, query: SinceQuery) -> SinceRaise: ...

    def node_usage(self, query: NodeQuery) -> NodeUsage: ...

    def current_usage(
        self, pods: Sequence[tuple[str, str]], *, at: datetime.datetime, memory_bound: int | None = None
    ) -> NodeUsage: ...


class Disabled:
    """No Prometheus configured: every answer says so."""

    def history(self, query: Query) -> History:
        return NOT_CONFIGURED

    def since_raise(self, query: SinceQuery) -> SinceRaise:
        return SinceRaise(outcome=Outcome.NOT_CONFIGURED, message=f"{NOT_CONFIGURED_MESSAGE}; settle needs usage history")

    def node_usage(self, query: NodeQuery) -> NodeUsage:
        return NodeUsage(outcome=Outcome.NOT_CONFIGURED, message=NOT_CONFIGURED_MESSAGE)

    def current_usage(
        self, pods: Sequence[tuple[str, str]], *, at: datetime.datetime, memory_bound: int | None = None
    ) -> NodeUsage:
        return NodeUsage(outcome=Outcome.NOT_CONFIGURED, message=NOT_CONFIGURED_MESSAGE)


# ---- pure helpers ------------------------------------------------------------------------------
