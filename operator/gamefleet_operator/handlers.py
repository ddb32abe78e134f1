"""kopf handlers: feed the pure functions what the cluster and the registry say, apply the result.

  apply_fleet  (create/update/resume)  render every child and apply it, owned by the fleet
  sync_fleet   (timer)                 autoscale, drain leaving shards, drop replicas once drained, status
  cleanup      (delete, finalizer)     remove the fleet's keys from Redis

The memo carries the two outside connections: `kube` (Kube, opened at startup) and
`registries` (fleet, password -> ShardRegistry; tests pass an in-memory one).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import kopf

from . import GROUP, PLURAL, VERSION, metrics
from .autoscale import Decision, DrainPlan, Policy, Recommendation, desired_shards, drain_order
from .kube import ApiError, Kube
from .registry import RegistryUnavailable, ShardRegistry
from .render import render, shard_names, shard_set_name
from .spec import Fleet, SpecError
from .status import Observed, degraded_status, fleet_status

FINALIZER = f"{GROUP}/cleanup"
CLEANUP_RETRIES = 3  # then the keys are left to expire (durability.ttlSeconds): deletion never hangs
CLEANUP_RETRY_DELAY = 5.0


def _timestamp(now: float) -> str:
    return datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _update_status(patch: kopf.Patch, status: Mapping, new: Mapping[str, Any]) -> None:
    """Patch only what changed: a steady fleet costs the API server no writes."""
    patch.status.update({key: value for key, value in new.items() if status.get(key) != value})


def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    """Keep kopf's bookkeeping in annotations (status has a strict schema) and connect."""
    settings.persistence.finalizer = FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=GROUP, key="last-handled-configuration"
    )
    memo.kube = Kube.connect()


def _degrade(body: kopf.Body, status: Mapping, patch: kopf.Patch, reason: str, message: str) -> None:
    """Mark the fleet Degraded; an Event too, once per distinct problem."""
    degraded = [c for c in status.get("conditions", []) if c.get("type") == "Degraded"]
    if not degraded or degraded[0].get("message") != message:
        kopf.warn(body, reason=reason, message=message)
    generation = body.get("metadata", {}).get("generation") or 0
    _update_status(
        patch, status, degraded_status(reason, message, generation, status, _timestamp(time.time()))
    )


def valid_fleet(body: kopf.Body, status: Mapping, patch: kopf.Patch) -> Fleet | None:
    """The fleet, or None after marking it Degraded: a bad spec is reported, never raised."""
    try:
        return Fleet.from_body(body)
    except SpecError as e:
        _degrade(body, status, patch, "InvalidSpec", str(e))
        return None


def registry_of(memo: kopf.Memo, fleet: Fleet) -> ShardRegistry | None:
    """The fleet's shard registry, or None when it has no Redis."""
    if fleet.redis_host is None:
        return None
    password = None
    if ref := fleet.spec["redis"].get("passwordSecretRef"):
        password = memo.kube.secret_value(fleet.namespace, ref["name"], ref["key"])
        if password is None:
            raise RegistryUnavailable(f"secret {ref['name']} has no key {ref['key']!r}")
    return memo.registries(fleet, password)


def observe(memo: kopf.Memo, fleet: Fleet) -> tuple[Observed, ShardRegistry | None]:
    """The children's status and the shards' reports (a registry failure is noted, not raised)."""
    shards = memo.kube.get("apps/v1", "StatefulSet", fleet.namespace, shard_set_name(fleet)) or {}
    router = memo.kube.get("apps/v1", "Deployment", fleet.namespace, f"{fleet.name}-router") or {}
    registry, loads, error = None, (), None
    try:
        registry = registry_of(memo, fleet)
        loads = tuple(registry.loads()) if registry else ()
    except RegistryUnavailable as e:
        registry, error = None, str(e)
    seen = Observed(
        shards["spec"]["replicas"] if shards else None,
        shards.get("status", {}).get("readyReplicas") or 0,
        router.get("status", {}).get("readyReplicas") or 0,
        loads,
        error,
    )
    return seen, registry


def autoscale(
    body: kopf.Body, fleet: Fleet, seen: Observed, status: Mapping, patch: kopf.Patch
) -> tuple[Fleet, Decision | None]:
    """The autoscaler's round: (the fleet at its new size, the decision); no decision when it must
    not act (off, suspended, blind). A new size goes to spec.shards, like `kubectl scale`."""
    if not fleet.spec["autoscaling"]["enabled"] or fleet.spec["suspend"] or seen.registry_error:
        return fleet, None
    recommendations = status.get("autoscaler", {}).get("recommendations", [])
    history = [Recommendation(r["shards"], r["at"]) for r in recommendations]
    current = fleet.spec["shards"]
    decision = desired_shards(current, seen.loads, Policy.from_spec(fleet.spec), history, time.time())
    metrics.record_decision(fleet.namespace, fleet.name, current, decision.shards)
    if decision.shards == current:
        return fleet, decision
    patch.spec["shards"] = decision.shards
    kopf.info(body, reason="Autoscaled", message=f"{current} -> {decision.shards} shards: {decision.reason}")
    return dataclasses.replace(fleet, spec={**fleet.spec, "shards": decision.shards}), decision


def plan_drain(
    body: kopf.Body, fleet: Fleet, seen: Observed, registry: ShardRegistry | None, status: Mapping
) -> DrainPlan:
    """Where the StatefulSet's replicas stand this round; asks leaving shards to drain."""
    requested = {k: v for k, v in (status.get("draining") or {}).items() if v is not None}
    # without Redis no shard can report drained: the pod's own SIGTERM drain is all there is
    timeout = fleet.spec["drainTimeoutSeconds"] if fleet.redis_host else 0
    names = shard_names(fleet, seen.replicas or 0)
    plan = drain_order(names, fleet.shards, seen.loads, requested, time.time(), timeout)
    if registry is not None:
        for shard in plan.drain:
            registry.request_drain(shard, plan.requested[shard])
        for shard in (*plan.resume, *plan.gone):  # a pod that comes back by that name must serve
            registry.cancel_drain(shard)
    if new := sorted(set(plan.requested) - set(requested)):
        kopf.info(body, reason="Draining", message=f"asked {', '.join(new)} to drain")
    if plan.timed_out:
        kopf.warn(body, reason="DrainTimedOut", message=f"removing {', '.join(plan.timed_out)} undrained")
    return plan


def report(
    fleet: Fleet,
    seen: Observed,
    plan: DrainPlan,
    decision: Decision | None,
    status: Mapping,
    patch: kopf.Patch,
) -> None:
    now = time.time()
    new = fleet_status(fleet, seen, plan, decision, status, now, _timestamp(now))
    _update_status(patch, status, new)
    metrics.record_fleet(fleet.namespace, fleet.name, new, fleet.shards)


@metrics.observed
def apply_fleet(body: kopf.Body, status: Mapping, patch: kopf.Patch, memo: kopf.Memo, **_: Any) -> None:
    """Bring every child to the rendered state (create, or patch what exists)."""
    if (fleet := valid_fleet(body, status, patch)) is None:
        return
    seen, registry = observe(memo, fleet)
    plan = plan_drain(body, fleet, seen, registry, status)
    for manifest in render(fleet, plan.replicas):
        kopf.adopt(manifest, owner=body)
        try:
            memo.kube.apply(manifest)
        except ApiError as e:
            _degrade(
                body, status, patch, "ApplyFailed", f"{manifest['kind']} {manifest['metadata']['name']}: {e}"
            )
            raise kopf.TemporaryError(str(e), delay=15) from e
    report(fleet, seen, plan, None, status, patch)
    kopf.info(body, reason="Applied", message=f"{fleet.shards} shards wanted, StatefulSet at {plan.replicas}")


@metrics.observed
def sync_fleet(body: kopf.Body, status: Mapping, patch: kopf.Patch, memo: kopf.Memo, **_: Any) -> None:
    """Every tick: autoscale, move drains along, refresh status."""
    if (fleet := valid_fleet(body, status, patch)) is None:
        return
    seen, registry = observe(memo, fleet)
    if seen.replicas is None:
        return  # apply_fleet has not created the shards yet
    fleet, decision = autoscale(body, fleet, seen, status, patch)
    plan = plan_drain(body, fleet, seen, registry, status)
    if plan.replicas != seen.replicas:
        scale = {"spec": {"replicas": plan.replicas}}
        memo.kube.patch("apps/v1", "StatefulSet", fleet.namespace, shard_set_name(fleet), scale)
        kopf.info(body, reason="Scaled", message=f"shard StatefulSet {seen.replicas} -> {plan.replicas}")
    report(fleet, seen, plan, decision, status, patch)


@metrics.observed
def cleanup(body: kopf.Body, memo: kopf.Memo, retry: int, **_: Any) -> None:
    """Finalizer: delete the fleet's keys in Redis before the fleet goes."""
    metrics.forget_fleet(body.metadata.namespace, body.metadata.name)
    try:
        fleet = Fleet.from_body(body)
    except SpecError:
        return  # a fleet that never ran wrote nothing
    if fleet.redis_host is None:
        return
    try:
        removed = registry.purge() if (registry := registry_of(memo, fleet)) else 0
    except (RegistryUnavailable, ApiError) as e:  # Redis down, its Secret already deleted, ...
        if retry < CLEANUP_RETRIES:
            raise kopf.TemporaryError(str(e), delay=CLEANUP_RETRY_DELAY) from e
        kopf.warn(body, reason="CleanupSkipped", message=f"{e}; the keys expire on their own")
        return
    kopf.info(body, reason="CleanedUp", message=f"deleted {removed} Redis keys of {fleet.fleet_id}")


def build_registry(sync_interval: float) -> kopf.OperatorRegistry:
    """The operator's handlers, with the timer at `sync_interval` seconds."""
    registry = kopf.OperatorRegistry()
    fleets = {"group": GROUP, "version": VERSION, "plural": PLURAL, "registry": registry}
    kopf.on.login(registry=registry)(kopf.login_via_client)
    kopf.on.startup(registry=registry)(configure)
    for on in (kopf.on.create, kopf.on.update, kopf.on.resume):
        on(**fleets)(apply_fleet)
    kopf.timer(**fleets, interval=sync_interval, initial_delay=sync_interval)(sync_fleet)
    kopf.on.delete(**fleets)(cleanup)
    return registry
