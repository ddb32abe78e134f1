"""How many shards a fleet needs, and which leave when it needs fewer. Pure functions.

Sizing follows Agones' FleetAutoscaler and the HPA: utilisation = active games / capacity,
desired = ceil(games / (capacity per shard x target)), clamped to [min, max] and never below
what the active games need at full capacity. Scaling up acts at once; scaling down goes to
the highest recommendation inside the stabilisation window, so a dip in load does not send
shards (and their games) away only to bring them back a minute later.

Draining follows the StatefulSet: it removes the highest ordinals, so those leave; a leaving
shard is asked to drain, and replicas drop past it only once it reports drained (or its
drain timed out).
"""

from __future__ import annotations

import enum
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field


class ShardState(enum.StrEnum):
    """A shard's registry state: the drain contract between operator and shard."""

    SERVING = "serving"  # takes new games
    DRAINING = "draining"  # asked to leave: takes no new games, hands its games over through Redis
    DRAINED = "drained"  # holds no games; its pod may go


@dataclass(frozen=True)
class ShardLoad:
    """What a shard last reported to the registry."""

    shard: str  # ring member name == pod name, e.g. "fleet-shard-3"
    games: int
    state: ShardState = ShardState.SERVING


@dataclass(frozen=True)
class Policy:
    """spec.autoscaling plus the shard capacity, as the policy needs them."""

    min_shards: int
    max_shards: int
    target_utilisation: float
    stabilisation_seconds: float
    capacity_per_shard: int

    @classmethod
    def from_spec(cls, spec: Mapping) -> Policy:
        a = spec["autoscaling"]
        return cls(
            a["minShards"],
            a["maxShards"],
            a["targetUtilisation"],
            a["scaleDownStabilisationSeconds"],
            spec["game"]["capacityPerShard"],
        )


@dataclass(frozen=True)
class Recommendation:
    shards: int
    at: float  # unix seconds


@dataclass(frozen=True)
class Decision:
    shards: int
    reason: str
    history: tuple[Recommendation, ...] = ()  # the window's candidate maxima, newest (lowest) last


def utilisation(games: int, shards: int, capacity_per_shard: int) -> float:
    return games / (shards * capacity_per_shard) if shards else 0.0


def desired_shards(
    current: int, loads: Iterable[ShardLoad], policy: Policy, history: Iterable[Recommendation], now: float
) -> Decision:
    """The shard count to run now, and why; `history` is the previous Decision's."""
    loads = list(loads)
    window = tuple(r for r in history if now - r.at < policy.stabilisation_seconds)
    if not loads:
        return Decision(current, "holding: no shard reported load", window)
    games = sum(load.games for load in loads)
    needed = math.ceil(games / policy.capacity_per_shard)  # at 100%: the floor of any scale-down
    raw = max(math.ceil(games / (policy.capacity_per_shard * policy.target_utilisation)), needed)
    raw = min(max(raw, policy.min_shards), policy.max_shards)
    # an older recommendation no higher than this one can never be the window's maximum again
    window = (*(r for r in window if r.shards > raw), _latest(window, raw, now, policy))
    used = f"utilisation {utilisation(games, current, policy.capacity_per_shard):.2f}"
    target = f"target {policy.target_utilisation:.2f}"
    if raw > current:
        return Decision(raw, f"scale up: {games} games, {used} > {target}", window)
    stable = min(max(r.shards for r in window), current, policy.max_shards)
    if stable < current:
        return Decision(stable, f"scale down: {games} games, {used} < {target}", window)
    if raw < current:
        return Decision(current, f"holding: scale-down to {raw} stabilising", window)
    return Decision(current, f"steady: {games} games, {used}", window)


def _latest(window: tuple[Recommendation, ...], raw: int, now: float, policy: Policy) -> Recommendation:
    """This round's recommendation. The same count as the newest one keeps that one's time until
    it is a tenth of the window old: a steady fleet's status (which carries the window) is then
    not rewritten every sync, at the cost of a window that may close up to a tenth early."""
    newest = window[-1] if window else None
    if newest is not None and newest.shards == raw and now - newest.at < policy.stabilisation_seconds / 10:
        return newest
    return Recommendation(raw, now)


@dataclass(frozen=True)
class DrainPlan:
    replicas: int  # StatefulSet replicas to set now
    drain: tuple[str, ...]  # leaving shards to mark draining (highest ordinal first)
    resume: tuple[str, ...]  # shards asked to drain earlier that stay after all (scaled back up)
    requested: dict[str, float] = field(default_factory=dict)  # drain requests still open -> when made
    gone: tuple[str, ...] = ()  # leave the StatefulSet this round: their drain requests are done
    timed_out: tuple[str, ...] = ()  # of those, the ones removed without reporting drained


def drain_order(
    names: list[str],
    desired: int,
    loads: Iterable[ShardLoad],
    requested: Mapping[str, float],
    now: float,
    timeout: float | None,
) -> DrainPlan:
    """Scale the StatefulSet whose pods are `names` (ordinal order) towards `desired` shards.

    Scale-up is immediate. On scale-down the shards at ordinals >= desired leave, highest
    first; replicas only drop past a leaving shard once it reported DRAINED, or once its drain
    request (`requested`: shard -> when asked) is older than `timeout`. `timeout` None: shards
    are not asked to drain (no Redis to move games through, or drainTimeoutSeconds 0) and leave
    at once, which is not a drain that timed out.
    """
    drained = {load.shard for load in loads if load.state is ShardState.DRAINED}
    staying, leaving = names[:desired], names[desired:]
    resume = tuple(name for name in staying if name in requested)
    if not leaving:
        return DrainPlan(desired, (), resume)
    if timeout is None:
        return DrainPlan(desired, (), resume, gone=tuple(reversed(leaving)))
    open_requests = {name: requested.get(name, now) for name in leaving}
    gone = [name for name in leaving if name in drained or now - open_requests[name] >= timeout]
    replicas = len(names)
    while replicas > desired and names[replicas - 1] in gone:
        replicas -= 1
    still, gone = names[desired:replicas], tuple(reversed(names[replicas:]))
    return DrainPlan(
        replicas,
        tuple(reversed(still)),
        resume,
        {name: open_requests[name] for name in still},
        gone,
        tuple(name for name in gone if name not in drained),
    )
