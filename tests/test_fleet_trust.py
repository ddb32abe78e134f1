"""One holder per game, provably: the drill's scenarios against `gamefleet serve` processes, a
router and a real redis-server (fencing.py, membership.py).

Each test plays self-play batches through the router (fleet_play.Trainer) against an in-process
reference that steps exactly the acknowledged actions. "Held once" is read from the registry:
the shards' reported loads add up to the games that exist, checked after the failover window
(`--dead-after` past the fleet's generation) has passed. Each ends by killing every shard and
rebuilding every game from Redis alone, bit for bit against the reference.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Callable, Iterator

import pytest
from fleet_play import Trainer, keys_on, recovered_equal_reference, wait_for
from redis_fixture import RedisServer

from gameserver.client import FleetClient
from gameserver.fleet.store import FleetStore
from gameserver.local_fleet import LocalFleet

DEAD_AFTER = 1.2
FAST_SHARD = ("--heartbeat", "0.2", "--dead-after", str(DEAD_AFTER))
FAST_ROUTER = ("--alive-within", str(DEAD_AFTER), "--refresh", "0.2", "--shard-timeout", "3")

pytestmark = pytest.mark.slow


def held(store: FleetStore) -> dict[str, int]:
    """Games each live shard reports holding."""
    return {s.address: s.load for s in store.list_shards(DEAD_AFTER)}


def settled(store: FleetStore, games: int, shards: int) -> bool:
    """The failover window has passed and `shards` live shards hold `games` games between them."""
    generation = store.generation(None)
    loads = held(store)
    return generation.age_s > 2 * DEAD_AFTER and len(loads) == shards and sum(loads.values()) == games


@contextlib.contextmanager
def training(
    redis_server: RedisServer, fleet: LocalFleet, prefix: str, rounds: int
) -> Iterator[tuple[FleetStore, Trainer, int]]:
    """A trainer with a batch on each shard, through the router, `rounds` rounds in; the fleet's
    store and how many games there are."""
    store = FleetStore(redis_server.url, fleet.fleet, ttl_s=600)
    with FleetClient(fleet.router_address, timeout=10) as client:
        trainer = Trainer(client, keys_on(fleet.addresses, prefix), games=6)
        for _ in range(rounds):
            trainer.round()
        yield store, trainer, sum(batch.ids.size for batch in trainer.batches)


def play_on(trainer: Trainer, rounds: int, every_game_held_once: Callable[[], bool]) -> None:
    """Rounds that may wait out a failover, then the registry shows every game held once."""
    for _ in range(rounds):
        trainer.round(timeout_s=60)
    wait_for(every_game_held_once, "every game held once", 30)


def kill_all(fleet: LocalFleet) -> None:
    for ordinal in range(fleet.shards):
        fleet.kill(ordinal)


@pytest.fixture
def fleet(redis_server):
    with LocalFleet(
        3, redis_url=redis_server.url, fleet="trust", durability="log",
        router=True, extra_args=FAST_SHARD, router_args=FAST_ROUTER,
    ) as fleet:  # fmt: skip
        yield fleet


def test_redis_restarted_empty_holds_no_game_twice_and_a_kill_after_loses_nothing_acknowledged(
    redis_server, fleet
):
    """Redis restarts with no data while three shards serve: the live shards take their slots
    back and record their games again before anyone may fail over, so no shard takes a live
    shard's games; a SIGKILL after that loses no acknowledged step."""
    with training(redis_server, fleet, "empty", rounds=10) as (store, trainer, games):
        lost = store.generation(None)
        redis_server.kill()
        redis_server.start()  # empty
        for _ in range(10):
            trainer.round(timeout_s=60)
        wait_for(lambda: store.generation(None).id != lost.id, "a new generation")
        assert store.generation(None).lost  # a shard remembered the one Redis lost
        wait_for(lambda: settled(store, games, 3), "the failover window to pass", 30)
        for _ in range(5):
            trainer.round()
        assert sum(held(store).values()) == games  # nothing taken twice
        fleet.kill(1)
        play_on(trainer, 10, lambda: settled(store, games, 2))
        assert all(batch.acked == 35 for batch in trainer.batches)
    kill_all(fleet)
    recovered_equal_reference(redis_server.url, fleet.fleet, trainer.batches)


def test_a_frozen_shard_is_fenced_when_failed_over_and_forfeits_its_games_when_it_wakes(redis_server, fleet):
    """SIGSTOP a shard past --dead-after: the survivors fence it and take its games over. Woken,
    it writes nothing more (its writes are refused in Redis), drops the games, and serves on with
    none of them: every game is held once, and nothing acknowledged is lost."""
    with training(redis_server, fleet, "frozen", rounds=5) as (store, trainer, games):
        victim = fleet.addresses[1]
        wait_for(lambda: settled(store, games, 3), "the failover window to pass", 30)
        os.kill(fleet.pids[1], signal.SIGSTOP)
        try:
            wait_for(lambda: (store.holder_token(victim) or "").startswith("FENCED"), "the fence", 30)
            for _ in range(5):
                trainer.round(timeout_s=60)
        finally:
            os.kill(fleet.pids[1], signal.SIGCONT)
        wait_for(lambda: victim in held(store) and held(store)[victim] == 0, "the woken shard to forfeit", 30)
        assert not store.holder_token(victim).startswith("FENCED")  # it holds its slot anew, with no games
        play_on(trainer, 5, lambda: settled(store, games, 3))
        assert all(batch.acked == 15 for batch in trainer.batches)
    kill_all(fleet)
    recovered_equal_reference(redis_server.url, fleet.fleet, trainer.batches)
