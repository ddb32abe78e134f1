"""StoreRegistry against a real redis-server: the operator reads what shards heartbeat through
gameserver.fleet.store.FleetStore, asks them to drain, and purges the fleet's keys."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator

import pytest
import redis
from gamefleet_operator.autoscale import ShardLoad, ShardState
from gamefleet_operator.registry import (
    RegistryUnavailable,
    StoreRegistries,
    StoreRegistry,
    redis_url,
    shard_name,
)
from gamefleet_operator.spec import Fleet

from gameserver.fleet.store import FleetStore

from .harness import free_port


@pytest.fixture(scope="module")
def redis_port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    port = free_port()
    server = shutil.which("redis-server") or "/usr/bin/redis-server"
    options = ["--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    options += ["--dir", str(tmp_path_factory.mktemp("redis"))]
    process = subprocess.Popen([server, *options], stdout=subprocess.DEVNULL)
    try:
        client = redis.Redis(port=port)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                assert time.monotonic() < deadline and process.poll() is None, "redis-server did not start"
                time.sleep(0.02)
        yield port
    finally:
        process.kill()
        process.wait()


def fleet(name: str, port: int) -> Fleet:
    spec = {"image": "i", "redis": {"address": f"127.0.0.1:{port}"}, "durability": {"ttlSeconds": 600}}
    return Fleet.from_body({"metadata": {"name": name, "namespace": "games"}, "spec": spec})


def address(shard: str) -> str:
    return f"{shard}.f-shards.games.svc:50051"


def test_loads_map_heartbeats_to_shards_and_drain_states(redis_port: int) -> None:
    f = fleet("f", redis_port)
    shards = FleetStore(redis_url(f, None), f.fleet_id, 600)  # what the shard processes write
    shards.heartbeat(address("f-shard-0"), 40, 100)
    shards.heartbeat(address("f-shard-1"), 7, 100, "DRAINING")
    shards.heartbeat(address("f-shard-2"), 0, 100, "DRAINING")
    registry = StoreRegistries()(f, None)
    assert sorted(registry.loads(), key=lambda load: load.shard) == [
        ShardLoad("f-shard-0", 40, ShardState.SERVING),
        ShardLoad("f-shard-1", 7, ShardState.DRAINING),
        ShardLoad("f-shard-2", 0, ShardState.DRAINED),
    ]


def test_drain_requests_are_a_hash_the_shards_read(redis_port: int) -> None:
    f = fleet("g", redis_port)
    registry = StoreRegistries()(f, None)
    registry.request_drain("g-shard-3", 1234.5)
    registry.request_drain("g-shard-2", 1240.0)
    registry.cancel_drain("g-shard-2")
    client = redis.Redis(port=redis_port)
    key = f"gamefleet:{f.fleet_id}:drain"
    assert client.hgetall(key) == {b"g-shard-3": b"1234.5"}
    assert 0 < client.ttl(key) <= 600


def test_purge_removes_only_this_fleets_keys(redis_port: int) -> None:
    client = redis.Redis(port=redis_port)
    mine, other = fleet("p", redis_port), fleet("q", redis_port)
    FleetStore(redis_url(mine, None), mine.fleet_id, 600).heartbeat(address("p-shard-0"), 1, 10)
    FleetStore(redis_url(other, None), other.fleet_id, 600).heartbeat(address("q-shard-0"), 1, 10)
    registry = StoreRegistries()(mine, None)
    registry.request_drain("p-shard-0", 1.0)
    assert registry.purge() == 3  # shards, heartbeats, drain
    assert not client.keys(f"gamefleet:{mine.fleet_id}:*")
    assert client.keys(f"gamefleet:{other.fleet_id}:*")
    assert registry.purge() == 0


def test_unreachable_redis_is_registry_unavailable() -> None:
    f = fleet("down", free_port())
    registry = StoreRegistries()(f, None)
    for call in (registry.loads, registry.purge, lambda: registry.request_drain("down-shard-0", 1.0)):
        with pytest.raises(RegistryUnavailable, match="Redis"):
            call()


def test_registries_are_reused_per_fleet_and_password(redis_port: int) -> None:
    registries = StoreRegistries()
    f = fleet("r", redis_port)
    assert registries(f, "pw") is registries(f, "pw")
    assert registries(f, "pw") is not registries(f, "other")
    assert isinstance(registries(f, None), StoreRegistry)


@pytest.mark.parametrize(
    ("password", "url"),
    [(None, "redis://h:6379/2"), ("p@ss/w:rd", "redis://:p%40ss%2Fw%3Ard@h:6379/2")],
)
def test_redis_url_quotes_the_password(password: str | None, url: str) -> None:
    spec = {"image": "i", "redis": {"address": "h:6379", "database": 2}}
    assert redis_url(Fleet.from_body({"metadata": {"name": "f"}, "spec": spec}), password) == url


@pytest.mark.parametrize(
    ("registered", "shard"),
    [
        ("f-shard-3.f-shards.games.svc:50051", "f-shard-3"),
        ("f-shard-0:50051", "f-shard-0"),
        ("f-shard-1", "f-shard-1"),
    ],
)
def test_shard_name_from_its_registered_address(registered: str, shard: str) -> None:
    assert shard_name(registered) == shard
