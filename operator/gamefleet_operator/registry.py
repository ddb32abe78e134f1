"""The shard registry as the operator uses it: read load, ask shards to drain, clean up.

The operator depends on the small ShardRegistry protocol only; tests feed load through an
in-memory one. StoreRegistry is the real one, over the shards' own registry in Redis
(gameserver.fleet.registry.FleetRegistry: no engine, no game records, so nothing here loads
numba, whose cache cannot be written on the operator pod's read-only root filesystem). The
drain contract (FleetRegistry.request_drain, cancel_drain, drain_requested):

  gamefleet:<fleet id>:drain   HASH shard name -> unix time the operator asked it to drain

A shard (named by $GAMEFLEET_SHARD, its pod name) that finds its name there stops taking
games, hands its games over through Redis and heartbeats state DRAINING with its load;
DRAINING with load 0 is "drained": the operator may then remove its pod. A shard whose name
is removed from the hash (the fleet scaled back up) returns to SERVING.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

import redis

from .autoscale import ShardLoad, ShardState
from .spec import Fleet

if TYPE_CHECKING:
    from gameserver.fleet.registry import FleetRegistry

HEARTBEAT_ALIVE_SECONDS = 30.0  # a shard silent this long is not counted (heartbeat's dead_after_s)


class RegistryUnavailable(Exception):
    """The registry could not be reached; the operator holds the fleet's size and says so."""


class ShardRegistry(Protocol):
    def loads(self) -> list[ShardLoad]:
        """The live shards' reports."""
        ...

    def request_drain(self, shard: str, at: float) -> None: ...

    def cancel_drain(self, shard: str) -> None: ...

    def purge(self) -> int:
        """Delete every key of the fleet; returns how many."""
        ...


# (fleet, Redis password or None) -> its registry. Only called for fleets that have a Redis.
Registries = Callable[[Fleet, str | None], ShardRegistry]


def redis_url(fleet: Fleet, password: str | None) -> str:
    return fleet.redis_url(password)


def shard_name(address: str) -> str:
    """A shard registers under $GAMEFLEET_ADDRESS, `<pod>.<service>...:<port>`: its pod name leads."""
    return address.split(":", 1)[0].split(".", 1)[0]


def shard_state(state: str, games: int) -> ShardState:
    if state == "DRAINING":
        return ShardState.DRAINED if games == 0 else ShardState.DRAINING
    return ShardState.SERVING


class StoreRegistry:
    """ShardRegistry over a gameserver.fleet.registry.FleetRegistry (a FleetStore works too)."""

    def __init__(self, store: FleetRegistry) -> None:
        self.store = store

    def _redis(self, call: Callable[[], object]) -> object:
        try:
            return call()
        except (ConnectionError, redis.RedisError) as e:
            raise RegistryUnavailable(f"shard registry in Redis: {e}") from e

    def loads(self) -> list[ShardLoad]:
        infos = self._redis(lambda: self.store.list_shards(HEARTBEAT_ALIVE_SECONDS))
        return [ShardLoad(shard_name(i.address), i.load, shard_state(i.state, i.load)) for i in infos]

    def request_drain(self, shard: str, at: float) -> None:
        self._redis(lambda: self.store.request_drain(shard, at))

    def cancel_drain(self, shard: str) -> None:
        self._redis(lambda: self.store.cancel_drain(shard))

    def purge(self) -> int:
        return self._redis(self.store.purge)


class StoreRegistries:
    """Registries for the real operator: one FleetRegistry per fleet and Redis URL, reused."""

    def __init__(self) -> None:
        self._cache: dict[tuple[str, str], StoreRegistry] = {}

    def __call__(self, fleet: Fleet, password: str | None) -> ShardRegistry:
        from gameserver.fleet.registry import FleetRegistry  # loads only in the operator process

        url = redis_url(fleet, password)
        key = (fleet.fleet_id, url)
        if key not in self._cache:
            ttl = fleet.spec["durability"]["ttlSeconds"]
            self._cache[key] = StoreRegistry(FleetRegistry(url, fleet.fleet_id, ttl))
        return self._cache[key]
