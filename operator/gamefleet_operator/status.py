"""A fleet's status from what was observed: counts and the Ready/Progressing/Degraded conditions.

Pure (the clock comes in as an argument). A condition keeps its lastTransitionTime while
its status stays the same, as kubectl and `kubectl wait --for=condition=Ready` expect.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .autoscale import Decision, DrainPlan, ShardLoad, utilisation
from .render import selector_string
from .spec import Fleet

# type -> (is true, reason, message)
Verdicts = dict[str, tuple[bool, str, str]]


@dataclass(frozen=True)
class Observed:
    """What the operator saw this round: children's status and the shard registry."""

    replicas: int | None  # the shard StatefulSet's spec.replicas; None while it does not exist
    ready: int  # its status.readyReplicas
    routers: int  # the router Deployment's status.readyReplicas
    loads: tuple[ShardLoad, ...] = ()
    registry_error: str | None = None  # why the registry could not be read
    updated: int | None = None  # shards on the StatefulSet's current template (None: not rolling)
    template: str | None = None  # the shard StatefulSet's template hash as applied last


def conditions(previous: Iterable[Mapping[str, Any]], generation: int, now: str, verdicts: Verdicts) -> list:
    before = {c.get("type"): c for c in previous}
    result = []
    for kind, (true, reason, message) in verdicts.items():
        status = "True" if true else "False"
        old = before.get(kind, {})
        since = old.get("lastTransitionTime", now) if old.get("status") == status else now
        result.append(
            {
                "type": kind,
                "status": status,
                "reason": reason,
                "message": message,
                "lastTransitionTime": since,
                "observedGeneration": generation,
            }
        )
    return result


def _verdicts(fleet: Fleet, seen: Observed, plan: DrainPlan, failures: Sequence[str]) -> Verdicts:
    want = fleet.shards
    if failures:
        degraded = (True, "ApplyFailed", "; ".join(failures))
    elif seen.registry_error:
        degraded = (True, "RegistryUnavailable", seen.registry_error)
    elif plan.timed_out:
        degraded = (True, "DrainTimedOut", f"removed before reporting drained: {', '.join(plan.timed_out)}")
    else:
        degraded = (False, "AsExpected", "")
    rolling = seen.updated is not None and seen.replicas is not None and seen.updated < seen.replicas
    if plan.requested:
        progressing = (True, "Draining", f"waiting for {', '.join(sorted(plan.requested))} to drain")
    elif rolling:
        message = f"{seen.updated}/{seen.replicas} shards updated"
        if not fleet.games_move:
            message += (
                "; their games cannot move (no Redis or durability off): each shard waits at most "
                f"{fleet.spec['drainTimeoutSeconds']} s for its games to close"
            )
        progressing = (True, "RollingShards", message)
    elif seen.ready != want:
        progressing = (True, "Scaling", f"{seen.ready}/{want} shards ready")
    else:
        progressing = (False, "Stable", f"{want} shards ready")
    if fleet.spec["suspend"]:
        ready = (False, "Suspended", "spec.suspend is true")
    elif seen.ready < want:
        ready = (False, "ShardsNotReady", f"{seen.ready}/{want} shards ready")
    elif seen.routers < 1:
        ready = (False, "RouterNotReady", "no router pod is ready")
    else:
        ready = (True, "FleetReady", f"{seen.ready} shards and {seen.routers} routers ready")
    return {"Ready": ready, "Progressing": progressing, "Degraded": degraded}


def fleet_status(
    fleet: Fleet,
    seen: Observed,
    plan: DrainPlan,
    decision: Decision | None,
    failures: Sequence[str],
    previous: Mapping[str, Any],
    now: float,
    now_text: str,
) -> dict[str, Any]:
    """status of a valid fleet; `decision` is the autoscaler's this round (None: it did not run);
    `failures`: the children that could not be applied (Degraded while there are any)."""
    games = sum(load.games for load in seen.loads)
    capacity = plan.replicas * fleet.capacity_per_shard
    status: dict[str, Any] = {
        "shards": plan.replicas,
        "readyShards": seen.ready,
        "routers": seen.routers,
        "games": games,
        "capacity": capacity,
        "utilisation": round(utilisation(games, plan.replicas, fleet.capacity_per_shard), 4),
        "selector": selector_string(fleet),
        "observedGeneration": fleet.generation,
        # a merge patch keeps keys it does not mention: name the finished drains with None
        "draining": dict.fromkeys(previous.get("draining") or {}) | plan.requested,
        "conditions": conditions(
            previous.get("conditions", []), fleet.generation, now_text, _verdicts(fleet, seen, plan, failures)
        ),
    }
    if decision is not None:
        status["autoscaler"] = {
            "desiredShards": decision.shards,
            "reason": decision.reason,
            "recommendations": [{"shards": r.shards, "at": r.at} for r in decision.history],
        }
    return status


def degraded_status(
    reason: str, message: str, generation: int, previous: Mapping[str, Any], now: str
) -> dict:
    """status of a fleet the operator cannot run (bad spec, failing API): Degraded with the reason."""
    verdicts: Verdicts = {
        "Ready": (False, reason, message),
        "Progressing": (False, reason, message),
        "Degraded": (True, reason, message),
    }
    return {
        "observedGeneration": generation,
        "conditions": conditions(previous.get("conditions", []), generation, now, verdicts),
    }
