"""kopf handlers: feed the pure functions what the cluster and the registry say, apply the result.

  apply_fleet  (create/update/resume)  reconcile at once when the spec changes
  sync_fleet   (timer)                 autoscale, then reconcile: level-triggered, so a child deleted
                                       or edited by hand is back to its rendered state within a sync
  cleanup      (delete, finalizer)     stop the shards, then remove the fleet's keys from Redis

A reconcile renders every child for where the drains stand, server-side applies each (fields a
spec change drops are removed), deletes the optional children the spec no longer renders (a
ServiceMonitor, a managed Redis or the NetworkPolicies switched off), and writes status only where
it changed. A child that cannot be applied makes the fleet Degraded (ApplyFailed) for as long as it
fails, with one Event per distinct failure; the other children are applied all the same.

The memo carries the two outside connections: `kube` (Kube, opened at startup) and
`registries` (fleet, password -> ShardRegistry; tests pass an in-memory one); and
`operator_namespace`, where the operator's pods run (a managed Redis's NetworkPolicy admits them).
"""

from __future__ import annotations

import base64
import dataclasses
import secrets
import threading
import time
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import kopf

from . import GROUP, PLURAL, VERSION, metrics
from .autoscale import Decision, DrainPlan, Policy, Recommendation, desired_shards, drain_order
from .kube import ApiError, Kube, own_namespace
from .registry import HEARTBEAT_ALIVE_SECONDS, RegistryUnavailable, ShardRegistry
from .render import (
    TEMPLATE_HASH_ANNOTATION,
    Manifest,
    optional_children,
    render,
    shard_names,
    shard_set_name,
    shard_stateful_set,
    termination_grace_seconds,
)
from .spec import Fleet, SpecError
from .status import Observed, degraded_status, fleet_status

FINALIZER = f"{GROUP}/cleanup"
CLEANUP_RETRIES = 3  # then the keys are left to expire (durability.ttlSeconds): deletion never hangs
CLEANUP_RETRY_DELAY = 5.0
TIMER_EXIT_WAIT = 2.0  # seconds between checks that a deleted fleet's sync has returned


def _timestamp(now: float) -> str:
    return datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _update_status(patch: kopf.Patch, status: Mapping, new: Mapping[str, Any]) -> None:
    """Patch only what changed: a steady fleet costs the API server no writes."""
    patch.status.update({key: value for key, value in new.items() if status.get(key) != value})


def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    """Keep kopf's bookkeeping in annotations (status has a strict schema), connect, and make sure
    the peering object the replicas elect their leader in exists."""
    settings.persistence.finalizer = FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=GROUP, key="last-handled-configuration"
    )
    # a fleet deleted mid-sync waits for that sync before its finalizer runs: kopf re-checks a
    # busy timer every minute by default; a sync takes seconds
    settings.background.instant_exit_timeout = TIMER_EXIT_WAIT
    settings.background.cancellation_polling = TIMER_EXIT_WAIT
    memo.kube = Kube.connect()
    memo.operator_namespace = own_namespace()
    if not settings.peering.standalone:
        for manifest in peering_objects(settings.peering.name, memo.get("namespaces") or []):
            memo.kube.apply(manifest)


def peering_objects(name: str, namespaces: list[str]) -> list[Manifest]:
    """kopf's peering object(s): one cluster-wide, or one per watched namespace."""
    if not namespaces:
        return [{"apiVersion": "kopf.dev/v1", "kind": "ClusterKopfPeering", "metadata": {"name": name}}]
    meta = [{"name": name, "namespace": namespace} for namespace in namespaces]
    return [{"apiVersion": "kopf.dev/v1", "kind": "KopfPeering", "metadata": m} for m in meta]


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
    if ref := fleet.redis_password_ref:
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
    status = shards.get("status", {})
    revisions = status.get("currentRevision"), status.get("updateRevision")
    rolling = bool(shards) and None not in revisions and revisions[0] != revisions[1]
    seen = Observed(
        shards["spec"]["replicas"] if shards else None,
        status.get("readyReplicas") or 0,
        router.get("status", {}).get("readyReplicas") or 0,
        loads,
        error,
        (status.get("updatedReplicas") or 0) if rolling else None,
        shards.get("metadata", {}).get("annotations", {}).get(TEMPLATE_HASH_ANNOTATION),
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
    # Without Redis no shard can report drained, and with drainTimeoutSeconds 0 none is asked to:
    # leaving shards go at once (the pod's own SIGTERM shutdown is all there is), not "timed out".
    drains = fleet.redis_host is not None and fleet.spec["drainTimeoutSeconds"] > 0
    timeout = fleet.spec["drainTimeoutSeconds"] if drains else None
    names = shard_names(fleet, seen.replicas or 0)
    plan = drain_order(names, fleet.shards, seen.loads, requested, time.time(), timeout)
    if registry is not None:
        for shard in plan.drain:
            registry.request_drain(shard, plan.requested[shard])
        # A removed shard's request stays while its pod shuts down (cancelled, the shard would take
        # games again in its preStop); it goes when a scale-up brings a pod back by that name.
        for shard in (*plan.resume, *shard_names(fleet, plan.replicas)[len(names) :]):
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
    failures: list[str],
    status: Mapping,
    patch: kopf.Patch,
) -> None:
    now = time.time()
    new = fleet_status(fleet, seen, plan, decision, failures, status, now, _timestamp(now))
    _update_status(patch, status, new)
    metrics.record_fleet(fleet.namespace, fleet.name, new, fleet.shards)


def generated_password(fleet: Fleet) -> Manifest:
    """Managed Redis without passwordSecretRef: a Secret with a random password (made once)."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": fleet.generated_password_secret, "namespace": fleet.namespace},
        "type": "Opaque",
        "data": {"password": base64.b64encode(secrets.token_urlsafe(32).encode()).decode()},
    }


def ensure_generated_password(kube: Kube, body: kopf.Body, fleet: Fleet) -> None:
    """Create the generated password's Secret unless it exists (never replaced: Redis's data
    and the running pods hold it); owned by the fleet, deleted with it."""
    redis = fleet.spec["redis"]
    if not redis["managed"]["enabled"] or "passwordSecretRef" in redis:
        return
    if kube.get("v1", "Secret", fleet.namespace, fleet.generated_password_secret) is None:
        secret = generated_password(fleet)
        kopf.adopt(secret, owner=body)
        try:
            kube.create(secret)
        except ApiError as e:
            if e.status != 409:  # another reconcile made it meanwhile: theirs stands
                raise


def apply_children(memo: kopf.Memo, body: kopf.Body, fleet: Fleet, replicas: int) -> list[str]:
    """Apply every rendered child and prune the dropped ones; the failures, one line each."""
    failures = []
    try:
        ensure_generated_password(memo.kube, body, fleet)
    except ApiError as e:
        failures.append(f"Secret {fleet.generated_password_secret}: {e}")
    for manifest in render(fleet, replicas, operator_namespace=memo.get("operator_namespace")):
        kopf.adopt(manifest, owner=body)
        try:
            memo.kube.apply(manifest)
        except ApiError as e:
            failures.append(f"{manifest['kind']} {manifest['metadata']['name']}: {e}")
    for manifest in optional_children(fleet):
        try:
            prune(memo.kube, body, manifest)
        except ApiError as e:
            failures.append(f"removing {manifest['kind']} {manifest['metadata']['name']}: {e}")
    return failures


def prune(kube: Kube, body: kopf.Body, manifest: Manifest) -> None:
    """Delete a child the spec no longer renders, if it is this fleet's (its controller owner)."""
    api_version, kind, name = manifest["apiVersion"], manifest["kind"], manifest["metadata"]["name"]
    try:
        child = kube.get(api_version, kind, body.metadata.namespace, name)
    except ApiError as e:
        if e.status == 404:  # its kind is not served (no prometheus-operator CRDs): nothing to remove
            return
        raise
    owners = (child or {}).get("metadata", {}).get("ownerReferences", [])
    mine = any(o.get("uid") == body.metadata.uid and o.get("controller") for o in owners)
    if mine and kube.delete(api_version, kind, body.metadata.namespace, name):  # False: already gone
        kopf.info(body, reason="Removed", message=f"{kind} {name}: the spec no longer renders it")


def reconcile(body: kopf.Body, status: Mapping, patch: kopf.Patch, memo: kopf.Memo, *, tick: bool) -> None:
    """Bring the fleet's children and status to what the spec and the registry say (`tick`: the
    timer's round, which also autoscales; else a spec change, announced by an Applied event).
    kopf runs a fleet's timer beside its change handler: one at a time per fleet (the memo is the
    fleet's own), or both would see the old children and both announce the change."""
    with memo.setdefault("reconcile_lock", threading.Lock()):
        _reconcile(body, status, patch, memo, tick=tick)


def _reconcile(body: kopf.Body, status: Mapping, patch: kopf.Patch, memo: kopf.Memo, *, tick: bool) -> None:
    if (fleet := valid_fleet(body, status, patch)) is None:
        return
    seen, registry = observe(memo, fleet)
    decision = None
    if tick and seen.replicas is not None:
        fleet, decision = autoscale(body, fleet, seen, status, patch)
    plan = plan_drain(body, fleet, seen, registry, status)
    announce_restart(body, fleet, seen, plan.replicas)
    failures = apply_children(memo, body, fleet, plan.replicas)
    if failures:
        message = "; ".join(failures)
        if _condition(status, "Degraded").get("message") != message:
            kopf.warn(body, reason="ApplyFailed", message=message)
    elif not tick:
        kopf.info(
            body, reason="Applied", message=f"{fleet.shards} shards wanted, StatefulSet at {plan.replicas}"
        )
    elif seen.replicas is not None and plan.replicas != seen.replicas:
        kopf.info(body, reason="Scaled", message=f"shard StatefulSet {seen.replicas} -> {plan.replicas}")
    report(fleet, seen, plan, decision, failures, status, patch)


def announce_restart(body: kopf.Body, fleet: Fleet, seen: Observed, replicas: int) -> None:
    """A change of the shard pods' template restarts every shard (one at a time): say so, and,
    where their games cannot move, that each shard's games end unless closed within the drain."""
    new = shard_stateful_set(fleet, replicas)["metadata"]["annotations"][TEMPLATE_HASH_ANNOTATION]
    if seen.template is None or seen.template == new or not seen.replicas:
        return
    if fleet.games_move:
        kopf.info(body, reason="RollingShards", message=f"restarting {seen.replicas} shards one at a time; "
                  "each hands its games over through Redis first")  # fmt: skip
    else:
        kopf.warn(body, reason="RollingShards", message=f"restarting {seen.replicas} shards one at a time; "
                  "without Redis (or with durability off) their games cannot move: each shard takes no new "
                  f"games and waits at most {fleet.spec['drainTimeoutSeconds']} s for its games to close, "
                  "then the games still open end")  # fmt: skip


def _condition(status: Mapping, kind: str) -> Mapping[str, Any]:
    return next((c for c in status.get("conditions", []) if c.get("type") == kind), {})


@metrics.observed
def apply_fleet(body: kopf.Body, status: Mapping, patch: kopf.Patch, memo: kopf.Memo, **_: Any) -> None:
    """The spec changed (or the operator started): reconcile now, not at the next tick."""
    reconcile(body, status, patch, memo, tick=False)


@metrics.observed
def sync_fleet(body: kopf.Body, status: Mapping, patch: kopf.Patch, memo: kopf.Memo, **_: Any) -> None:
    """Every tick: autoscale, move drains along, repair children, refresh status."""
    reconcile(body, status, patch, memo, tick=True)


@metrics.observed
def cleanup(body: kopf.Body, memo: kopf.Memo, retry: int, runtime: timedelta, **_: Any) -> None:
    """Finalizer: stop the shards, then delete the fleet's keys in Redis before the fleet goes."""
    metrics.forget_fleet(body.metadata.namespace, body.metadata.name)
    try:
        fleet = Fleet.from_body(body)
    except SpecError:
        return  # a fleet that never ran wrote nothing
    if fleet.redis_host is None:
        return
    try:
        registry = registry_of(memo, fleet)
        stopping = registry.loads() if registry else []
        if stopping:  # a live shard records its games until it stops: purged now, its keys come back
            memo.kube.delete("apps/v1", "StatefulSet", fleet.namespace, shard_set_name(fleet))
            if runtime.total_seconds() < termination_grace_seconds(fleet) + HEARTBEAT_ALIVE_SECONDS:
                names = ", ".join(sorted(load.shard for load in stopping))
                raise kopf.TemporaryError(f"waiting for {names} to stop", delay=CLEANUP_RETRY_DELAY)
        removed = registry.purge() if registry else 0
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
