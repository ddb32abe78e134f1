"""FleetRegistry (gameserver/fleet/registry.py): the fleet's Redis access without game records, so
the operator, whose pod cannot write numba's cache, never loads the engine."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from gameserver.fleet import store
from gameserver.fleet.registry import FleetRegistry, ShardInfo, StoreUnavailableError

ROOT = Path(__file__).resolve().parents[1]
ENGINE_SIDE = ("numba", "gameserver.engine", "gameserver.fleet.records", "gameserver.fleet.store")


def loaded_after(code: str) -> list[str]:
    """sys.modules after running `code` in a fresh interpreter (this one has imported everything)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "operator")])}
    run = subprocess.run(
        [sys.executable, "-c", f"{code}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout.splitlines()[-1])


def engine_side(modules: list[str]) -> list[str]:
    return [m for m in modules if m.startswith(ENGINE_SIDE)]


def test_the_registry_and_the_operators_use_of_it_load_no_engine(redis_server):
    code = f"""
import gamefleet_operator.registry
from gameserver.fleet import registry
from gamefleet_operator.spec import Fleet
spec = {{"image": "i", "redis": {{"address": "127.0.0.1:{redis_server.port}"}}}}
fleet = Fleet.from_body({{"metadata": {{"name": "f", "namespace": "games"}}, "spec": spec}})
shards = gamefleet_operator.registry.StoreRegistries()(fleet, None)
shards.request_drain("f-shard-0", 1.0)
assert shards.loads() == [] and shards.purge() == 1
"""
    loaded = loaded_after(code)
    assert [m for m in loaded if m.startswith("gameserver")] == [
        "gameserver",
        "gameserver.fleet",
        "gameserver.fleet.breaker",
        "gameserver.fleet.fencing",
        "gameserver.fleet.registry",
    ]
    assert not [m for m in loaded if m.startswith(("numba", "numpy"))]


def test_the_operators_handlers_load_no_engine():
    loaded = loaded_after("import gamefleet_operator.handlers, gamefleet_operator.registry")
    assert engine_side(loaded) == []


def test_the_store_builds_on_the_registry_and_still_exports_its_names():
    assert issubclass(store.FleetStore, FleetRegistry)
    assert store.StoreUnavailableError is StoreUnavailableError and store.ShardInfo is ShardInfo


@pytest.fixture
def registry(redis_server) -> FleetRegistry:
    return FleetRegistry(redis_server.url, "fleet-r", ttl_s=300)


def test_drain_requests_round_trip_with_a_ttl(registry):
    registry.request_drain("shard-0", 12.5)
    assert registry.drain_requested("shard-0") and not registry.drain_requested("shard-1")
    assert 0 < registry.redis.ttl(registry.key("drain")) <= 300
    registry.cancel_drain("shard-0")
    assert not registry.drain_requested("shard-0")


def test_orphans_are_owners_that_stopped_heartbeating(registry):
    registry.redis.sadd(registry.key("owners"), "a", "b")  # what FleetStore.put_games registers
    registry.heartbeat("b", load=1, capacity=10)
    assert registry.owners() == ["a", "b"]
    assert registry.orphaned_shards(alive_within_s=30) == ["a"]


def test_a_claim_has_one_holder_until_released(registry):
    assert registry.claim("recover:a", "b", ttl_s=30)
    assert registry.claim("recover:a", "b", ttl_s=30)  # the holder again
    assert not registry.claim("recover:a", "c", ttl_s=30)
    registry.release_claim("recover:a", "c")  # not the holder: nothing happens
    assert not registry.claim("recover:a", "c", ttl_s=30)
    registry.release_claim("recover:a", "b")
    assert registry.claim("recover:a", "c", ttl_s=30)


def test_the_generation_changes_only_when_redis_lost_the_fleets_data(registry):
    first = registry.generation(None)
    assert not first.lost and 0 <= first.age_s < 5
    again = registry.generation(first.id)
    assert again.id == first.id and again.started == first.started and again.age_s >= first.age_s
    registry.redis.flushdb()
    after = registry.generation(first.id)
    assert after.id != first.id and after.lost  # a shard remembered the one before
    registry.redis.flushdb()
    assert not registry.generation(None).lost  # a newcomer cannot tell


def test_holding_a_shard_fences_its_earlier_holder_and_a_fence_stands_until_held_anew(registry):
    old = FleetRegistry(registry.redis, registry.fleet, ttl_s=60)
    old_token = old.hold("a")
    new_token = registry.hold("a")  # the shard restarted: the new process takes the slot
    assert new_token != old_token and registry.holder_token("a") == new_token
    assert not old.reclaim("a")  # the old process cannot take it back
    registry.fence("a", by="b")
    assert registry.holder_token("a") == "FENCED by b"
    assert not registry.reclaim("a")  # a fence stands through a reclaim
    renewed = registry.hold("a", renew=True)
    assert renewed != new_token and registry.holder_token("a") == renewed
    registry.redis.flushdb()
    assert registry.reclaim("a") and registry.holder_token("a") == renewed  # Redis lost the slot


def test_an_unreachable_redis_is_store_unavailable(redis_server):
    registry = FleetRegistry(redis_server.url, "fleet-r", ttl_s=60, timeout_s=0.5)
    redis_server.kill()
    with pytest.raises(StoreUnavailableError) as error:
        registry.list_shards(alive_within_s=5)
    assert error.value.status_code == "UNAVAILABLE" and "changed nothing" in error.value.status_details
