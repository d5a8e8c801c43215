"""The bounded OOM bump: how much memory a container should get after being OOM-killed, and why.

This is the default strategy (README, "How a recommendation is computed"). It is deliberately simple, explainable and
bounded rather than clever: each recommendation carries the arithmetic that produced it as text, so a
reader of the OOMRecommendation can check it.

- A Limit kill raises the limit: max(L × increaseFactor, L + minIncrease, peak × (1 + margin)),
  rounded up to a MiB; the request follows `requestPolicy`.
- A Node kill raises the request towards what the container really uses, so the scheduler reserves
  it, and gives a limit to a container that has none so it cannot take the node down again.
- Caps (policy maxLimit, LimitRange max, ResourceQuota headroom, largest node allocatable;
  `domain.caps`) bound the result; at a cap the phase is Capped and `capped_by` says which one.
  Nothing is ever recommended above `quantity.MAX_MEMORY`, the largest whole MiB a quantity (int64)
  holds.
- A kill never lowers resources, below either the current values or an earlier recommendation.
  Lowering the operator's own raises once usage since is known is settle's (`domain.settle`).
- Three or more Limit kills at successively raised limits, each after a similar lifetime, or a steady
  growth of the working set, make the phase SuspectedLeak: more memory only delays a leak. Lives that
  are start-up, or kills that follow a daily cycle, do not count (`leak.suspected`).

All arithmetic is exact (integers and fractions); the same inputs always give the same output.
"""

from __future__ import annotations

import dataclasses
import datetime
import fractions
import functools
import math
from collections.abc import Sequence

from oomtuner.api import policy, types
from oomtuner.domain import caps as domain_caps
from oomtuner.domain import classify, kills, leak, quantity

DEFAULT_MIN_INCREASE = 64 * quantity.MIB
# A Node-killed container without a limit gets one at this multiple of its request.
NODE_LIMIT_TO_REQUEST = 2
_EPOCH = datetime.datetime.min.replace(tzinfo=datetime.timezone.utc)

# Observed memory use: defined with the leak rules that read it, used here for the bump.
Usage = leak.Usage


@dataclasses.dataclass(frozen=True)
class ContainerResources:
    """A container's memory request and limit in bytes; None means not set."""

    name: str
    type: types.ContainerType
    request: int | None
    limit: int | None


@dataclasses.dataclass(frozen=True)
class ContainerRecommendation:
    """What one container should get, with the evidence (`reason`) and the bound that stopped it."""

    name: str
    type: types.ContainerType
    current: ContainerResources
    request: int | None
    limit: int | None
    classification: types.Classification
    phase: types.Phase
    reason: str
    capped_by: str | None
    kills: int
    last_oom_at: datetime.datetime | None


@functools.lru_cache(maxsize=256)
def _fraction(value: float) -> fractions.Fraction:
    """The decimal the user wrote (1.5, 0.15), not the binary float nearest to it."""
    return fractions.Fraction(repr(value))


def _ceil(value: fractions.Fraction) -> int:
    return math.ceil(value)


def _max_present(*values: int | None) -> int | None:
    present = [v for v in values if v is not None]
    return max(present) if present else None


def _h(n: int) -> str:
    return quantity.humanize(n)


def _number(value: fractions.Fraction) -> str:
    return f"{float(value):g}"


def _min_increase(settings: policy.MemorySettings, notes: list[str]) -> int:
    try:
        value = quantity.parse_bytes(settings.minIncrease)
    except quantity.QuantityError as exc:
        notes.append(f"policy minIncrease ignored ({exc}); using {_h(DEFAULT_MIN_INCREASE)}")
        return DEFAULT_MIN_INCREASE
    return max(value, 0)


def _summary(classified: Sequence[tuple[kills.OOMKill, types.Classification]], classification: types.Classification) -> str:
    count = len(classified)
    limits = {k.limit_at_kill for k, _c in classified}
    if len(limits) == 1:
        (only,) = limits
        at = f" at limit {_h(only)}" if only is not None else " without a memory limit"
        return f"OOM-killed {count}×{at} ({classification.value})"
    latest = _latest(classified)[0]
    at = f"latest at limit {_h(latest.limit_at_kill)}" if latest.limit_at_kill is not None else "latest without a limit"
    return f"OOM-killed {count}×, {at} ({classification.value})"


def _latest(
    classified: Sequence[tuple[kills.OOMKill, types.Classification]],
) -> tuple[kills.OOMKill, types.Classification]:
    return max(classified, key=lambda pair: (pair[0].at is not None, pair[0].at or _EPOCH, pair[0].identity))


def recommend_container(
    *,
    current: ContainerResources,
    kills: Sequence[kills.OOMKill],
    settings: policy.MemorySettings,
    usage: Usage | None = None,
    caps: domain_caps.Caps = domain_caps.NO_CAPS,
    previous: ContainerRecommendation | None = None,
    classifications: Sequence[types.Classification] | None = None,
    in_force: ContainerResources | None = None,
) -> ContainerRecommendation:
    """Recommend memory for one container from its kills, the policy, usage and caps.

    Only a kill at the memory in force raises it (`stale_reason`): the memory in force is the
    current one, or what the operator applied last (`in_force`) where that is higher. A kill below it
    (an old pod of a rollout, a late report) is stale: it is counted and shown, and raises nothing.

    `kills` are this container's kills (others are ignored, by name). `classifications`, when given,
    pairs one classification with each kill (as `classify.classify` found them with node events); when
    omitted, each kill is classified from its own limits alone. The container's classification is its
    most recent kill's. Unknown is handled as Limit when a limit is known, else as Node.

    Limit: L = the larger of the current limit and the limits at the kills; newLimit = max(L × factor,
    L + minIncrease, peak × (1 + margin)) rounded up to a MiB. The request follows requestPolicy:
    KeepRatio (scaled with the limit, never below the current one; none stays none), EqualsLimit,
    Unchanged, FromUsage (p95 × (1 + margin), never below the current one; without usage it falls back
    to KeepRatio and says so).

    Node: newRequest = max(R, p95 × (1 + margin)) (the peak when no p95 is known); without usage, R is raised as a limit would be
    (R × factor or R + minIncrease); with neither, it starts at minIncrease. A limit is never below the
    request; a container without any limit gets one at 2 × the request (at least request +
    minIncrease), unless a pod-level limit already bounds the pod.

    Limit kill without any container limit (the pod-level limit was hit): the container's values do
    not change; the reason says to raise the pod's limit.

    Then caps (see `caps.Caps`; the phase becomes Capped), then never-lower (at least the current values and
    `previous`, which wins over a cap that is below them); an existing request above the limit lifts
    the limit, a new one is held at the limit. Leak suspicion (`leak.suspected`) sets the phase
    SuspectedLeak and keeps the values, for a manual approval. No kills: nothing changes.
    Raises ValueError if `classifications` does not pair up with `kills`.
    """
    if classifications is not None and len(classifications) != len(kills):
        raise ValueError(f"{len(classifications)} classifications for {len(kills)} kills")
    verdicts = (
        list(classifications)
        if classifications is not None
        else [classify.classify(kill, node_ooms=())[0] for kill in kills]
    )
    every = [(kill, verdict) for kill, verdict in zip(kills, verdicts) if kill.container == current.name]
    notes: list[str] = []
    if not every:
        return _finish(
            current=current,
            previous=previous,
            request=current.request,
            limit=current.limit,
            classification=types.Classification.UNKNOWN,
            notes=["no OOM kills recorded; nothing to change"],
            capped_by=None,
            leak=None,
            mine=every,
        )
    floor = memory_in_force(current, in_force)
    stale = [(k, c) for k, c in every if stale_reason(k, c, in_force=floor) is not None]
    mine = [(k, c) for k, c in every if stale_reason(k, c, in_force=floor) is None]
    if not mine:
        latest_kill, latest_class = _latest(every)
        notes.append(_summary(every, latest_class))
        notes.append(f"{_stale_count(stale, every)}: {stale_reason(latest_kill, latest_class, in_force=floor)}; "
                     "a kill at the memory in force raises it, these raise nothing")
        return _finish(
            current=current,
            previous=previous,
            request=current.request,
            limit=current.limit,
            classification=latest_class,
            notes=notes,
            capped_by=None,
            leak=leak.suspected(every, usage=usage, base_limit=floor.limit or current.request),
            mine=every,
        )

    classification = _latest(mine)[1]
    known_limit = _max_present(current.limit, *(kill.limit_at_kill for kill, _c in mine))
    pod_limit = _max_present(*(kill.pod_memory_limit for kill, _c in mine))
    path = classification
    if path == types.Classification.UNKNOWN:
        path = types.Classification.LIMIT if known_limit is not None else types.Classification.NODE
    notes.append(_summary(mine, classification))
    if stale:
        notes.append(f"{_stale_count(stale, every)} ({stale_reason(*_latest(stale), in_force=floor)}): they raise nothing")
    if classification == types.Classification.UNKNOWN:
        notes.append(f"handled as {path.value}: {'a limit is set' if known_limit is not None else 'no limit is set'}")

    factor = _fraction(settings.increaseFactor)
    margin = _fraction(settings.margin)
    min_increase = _min_increase(settings, notes)
    peak = usage.peak if usage is not None else None
    p95 = usage.p95 if usage is not None else None
    limit_bounds = domain_caps.limit_bounds(settings=settings, caps=caps, current_limit=current.limit, notes=notes)
    request_bounds = domain_caps.request_bounds(caps)
    capped_by: str | None = None

    request: int | None
    limit: int | None
    if path == types.Classification.LIMIT and known_limit is None:
        notes.append(
            f"the pod-level memory limit {_h(pod_limit or 0)} was reached: raise the pod's "
            "spec.resources.limits.memory; this container's own values stay as they are"
        )
        request, limit = current.request, current.limit
    elif path == types.Classification.LIMIT:
        assert known_limit is not None
        base = known_limit
        options = [
            (f"limit {_h(base)} × {_number(factor)}", _ceil(base * factor)),
            (f"limit {_h(base)} + minIncrease {_h(min_increase)}", base + min_increase),
        ]
        if peak is not None:
            options.append((f"peak {_h(peak)} × {_number(1 + margin)}", _ceil(peak * (1 + margin))))
        label, raw = max(options, key=lambda option: option[1])
        wanted = quantity.round_up_mib(raw)
        notes.append(f"{label} = {_h(wanted)}" + (" (rounded up to a MiB)" if wanted != raw else ""))
        limit, capped_by = domain_caps.bound(wanted, limit_bounds)
        if capped_by is not None:
            notes.append(f"capped by {capped_by}")
        request = _follow_limit(
            policy_name=settings.requestPolicy,
            current_request=current.request,
            base_limit=current.limit or base,
            new_limit=limit,
            p95=p95,
            margin=margin,
            notes=notes,
        )
        if request is not None and request > limit:
            request = limit
    else:
        request, limit, capped_by = _node_bump(
            current=current,
            peak=peak,
            p95=p95,
            margin=margin,
            factor=factor,
            min_increase=min_increase,
            pod_limit=pod_limit,
            limit_bounds=limit_bounds,
            request_bounds=request_bounds,
            notes=notes,
        )

    suspicion = leak.suspected(every, usage=usage, base_limit=known_limit or current.request)
    return _finish(
        current=current,
        previous=previous,
        request=request,
        limit=limit,
        classification=classification,
        notes=notes,
        capped_by=capped_by,
        leak=suspicion,
        mine=every,
    )


def memory_in_force(current: ContainerResources, in_force: ContainerResources | None) -> ContainerResources:
    """The memory in force: the current values, or what the operator applied last where higher."""
    if in_force is None:
        return current
    return dataclasses.replace(current, request=_max_present(current.request, in_force.request),
                               limit=_max_present(current.limit, in_force.limit))


def stale_reason(kill: kills.OOMKill, classification: types.Classification, *,
                 in_force: ContainerResources) -> str | None:
    """Why the kill raises nothing (`stale: killed at 256Mi, template already 384Mi`), or None when it
    was a kill at the memory in force.

    A Limit kill (or an Unknown one with a limit) is stale when its limit at the kill is below the
    limit in force; a Node kill when its request at the kill is below the request in force. A kill
    whose memory at the kill is unknown is never stale.
    """
    limit_path = classification == types.Classification.LIMIT or (
        classification == types.Classification.UNKNOWN and kill.limit_at_kill is not None)
    if limit_path:
        if kill.limit_at_kill is not None and in_force.limit is not None and kill.limit_at_kill < in_force.limit:
            return f"stale: killed at {_h(kill.limit_at_kill)}, template already {_h(in_force.limit)}"
        return None
    if kill.request is not None and in_force.request is not None and kill.request < in_force.request:
        return f"stale: killed with a request of {_h(kill.request)}, template already {_h(in_force.request)}"
    return None


def _stale_count(stale: Sequence[tuple[kills.OOMKill, types.Classification]],
                 every: Sequence[tuple[kills.OOMKill, types.Classification]]) -> str:
    if len(stale) == len(every):
        return "every kill is stale" if len(every) > 1 else "the kill is stale"
    return f"{len(stale)} of {len(every)} kills are stale"


def _follow_limit(
    *,
    policy_name: types.RequestPolicy,
    current_request: int | None,
    base_limit: int,
    new_limit: int,
    p95: int | None,
    margin: fractions.Fraction,
    notes: list[str],
) -> int | None:
    """The request after a limit bump, per requestPolicy (never below the current request).

    KeepRatio keeps the ratio the user chose between the current request and `base_limit` (the current
    limit, or the limit at the kills when the container has none now).
    """
    if policy_name == types.RequestPolicy.FROM_USAGE:
        if p95 is not None:
            wanted = quantity.round_up_mib(_ceil(p95 * (1 + margin)))
            result = _max_present(wanted, current_request)
            assert result is not None
            notes.append(f"request from usage: p95 {_h(p95)} × {_number(1 + margin)} = {_h(wanted)}")
            return result
        notes.append("no usage history for FromUsage: the request keeps its ratio to the limit instead")
        policy_name = types.RequestPolicy.KEEP_RATIO
    if policy_name == types.RequestPolicy.EQUALS_LIMIT:
        notes.append(f"request equals the limit ({_h(new_limit)})")
        return new_limit
    if policy_name == types.RequestPolicy.UNCHANGED or current_request is None:
        return current_request
    if base_limit <= 0:
        notes.append("no limit to keep the request's ratio to: the request stays")
        return current_request
    scaled = quantity.round_up_mib(_ceil(fractions.Fraction(current_request * new_limit, base_limit)))
    result = max(scaled, current_request)
    if result != current_request:
        notes.append(f"request keeps its ratio to the limit: {_h(current_request)} → {_h(result)}")
    return result


def _node_bump(
    *,
    current: ContainerResources,
    peak: int | None,
    p95: int | None,
    margin: fractions.Fraction,
    factor: fractions.Fraction,
    min_increase: int,
    pod_limit: int | None,
    limit_bounds: Sequence[tuple[int, str]],
    request_bounds: Sequence[tuple[int, str]],
    notes: list[str],
) -> tuple[int | None, int | None, str | None]:
    """The request (and limit) after a Node kill, with the cap that bound, if any.

    The request is what the scheduler reserves, so it follows sustained use: p95 × (1 + margin)
    (the peak when no p95 is known). A recommended limit, where there was none, also covers the
    observed peak × (1 + margin).
    """
    have = current.request
    basis, basis_name = (p95, "p95") if p95 is not None else (peak, "peak")
    if basis is not None:
        from_usage = quantity.round_up_mib(_ceil(basis * (1 + margin)))
        wanted = max(from_usage, have or 0)
        if have is not None and from_usage <= have:
            notes.append(
                f"{basis_name} {_h(basis)} × {_number(1 + margin)} = {_h(from_usage)} fits in the request {_h(have)}: "
                "this container was a victim, not the cause"
            )
        else:
            notes.append(f"request from usage: {basis_name} {_h(basis)} × {_number(1 + margin)} = {_h(from_usage)}")
    elif have:
        by_factor, by_step = _ceil(have * factor), have + min_increase
        wanted = quantity.round_up_mib(max(by_factor, by_step))
        how = f"× {_number(factor)}" if by_factor >= by_step else f"+ minIncrease {_h(min_increase)}"
        notes.append(f"no usage history: request {_h(have)} {how} = {_h(wanted)}")
    else:
        wanted = quantity.round_up_mib(min_increase)
        notes.append(f"no request and no usage history: request starts at minIncrease {_h(wanted)}")

    capped_by: str | None = None
    request, capped_by = domain_caps.bound(wanted, request_bounds)
    limit: int | None
    if current.limit is not None:
        limit = max(current.limit, request)
        if limit != current.limit:
            notes.append(f"limit raised to the request ({_h(limit)})")
    elif pod_limit is not None:
        limit = None
        notes.append(f"no container limit added: the pod-level limit {_h(pod_limit)} already bounds the pod")
    else:
        above_peak = quantity.round_up_mib(_ceil(peak * (1 + margin))) if peak is not None else 0
        proposed = quantity.round_up_mib(max(NODE_LIMIT_TO_REQUEST * request, request + min_increase, above_peak))
        limit = proposed
        why = (f"peak {_h(peak)} × {_number(1 + margin)}" if above_peak == proposed and peak is not None
               else f"{NODE_LIMIT_TO_REQUEST} × request")
        notes.append(f"no memory limit: recommending {_h(proposed)} ({why}) so it can no longer take the node down")
    if limit is not None:
        limit, limit_capped = domain_caps.bound(limit, limit_bounds)
        capped_by = capped_by or limit_capped
        if request > limit:
            request = limit
    if capped_by is not None:
        notes.append(f"capped by {capped_by}")
    return request, limit, capped_by


def _finish(
    *,
    current: ContainerResources,
    previous: ContainerRecommendation | None,
    request: int | None,
    limit: int | None,
    classification: types.Classification,
    notes: list[str],
    capped_by: str | None,
    leak: str | None,
    mine: Sequence[tuple[kills.OOMKill, types.Classification]],
) -> ContainerRecommendation:
    """Apply never-lower and request ≤ limit, pick the phase, and assemble the result."""
    wanted_request, wanted_limit = request, limit
    request = _max_present(request, current.request, previous.request if previous else None)
    limit = _max_present(limit, current.limit, previous.limit if previous else None)
    if limit is not None and wanted_limit is not None and limit > wanted_limit:
        notes.append(f"keeping the limit at {_h(limit)}: resources are never lowered")
    elif request is not None and wanted_request is not None and request > wanted_request:
        notes.append(f"keeping the request at {_h(request)}: resources are never lowered")
    if limit is not None and request is not None and request > limit:
        # An existing request (current or recommended before) forces the limit up; a new one yields.
        floor = _max_present(current.request, previous.request if previous else None)
        if floor is not None and floor > limit:
            limit = floor
            notes.append(f"limit raised to the existing request ({_h(limit)})")
        if request > limit:
            request = limit
            notes.append(f"request held at the limit ({_h(request)})")
    if leak is not None:
        notes.append(leak)
        phase = types.Phase.SUSPECTED_LEAK
    elif capped_by is not None:
        phase = types.Phase.CAPPED
    else:
        phase = types.Phase.PENDING
    times = [kill.at for kill, _c in mine if kill.at is not None]
    return ContainerRecommendation(
        name=current.name,
        type=current.type,
        current=current,
        request=request,
        limit=limit,
        classification=classification,
        phase=phase,
        reason="; ".join(notes),
        capped_by=capped_by,
        kills=len(mine),
        last_oom_at=max(times) if times else None,
    )


def overall_phase(containers: Sequence[ContainerRecommendation]) -> types.Phase:
    """The workload's phase from its containers': SuspectedLeak over Capped over Pending.

    An empty list is Pending. Applied, Conflict and Dismissed are decided by the caller, not here.
    """
    phases = {c.phase for c in containers}
    for phase in (types.Phase.SUSPECTED_LEAK, types.Phase.CAPPED):
        if phase in phases:
            return phase
    return types.Phase.PENDING


def cooldown_remaining(
    *, last_applied: datetime.datetime | None, cooldown: datetime.timedelta, now: datetime.datetime
) -> datetime.timedelta:
    """How long until the next patch is allowed; zero when none is left or nothing was applied.

    A `last_applied` in the future (clock skew) never makes the wait longer than one cooldown.
    """
    if last_applied is None:
        return datetime.timedelta(0)
    remaining = last_applied + cooldown - now
    return max(datetime.timedelta(0), min(remaining, cooldown))


def needs_change(rec: ContainerRecommendation) -> bool:
    """Whether the recommended request or limit differs from the container's current one."""
    return rec.request != rec.current.request or rec.limit != rec.current.limit
