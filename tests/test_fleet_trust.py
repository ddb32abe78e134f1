"""One holder per game, provably: the drill's scenarios against `gamefleet serve` processes, a
router and a real redis-server (fencing.py, membership.py).

Each test plays self-play batches through the router (fleet_play.Trainer) against an in-process
reference that steps exactly the acknowledged actions. "Held once" is read from the registry:
the shards' reported loads add up to the games that exist, checked after the failover window
(`--dead-after` past the fleet's generation) has passed. Each ends by killing every shard and
rebuilding every game from Redis alone, bit for bit against the reference. The last two show
what cannot be kept is said: games restored behind their clients, and games Redis lost.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator

import numpy as np
import pytest
from fleet_play import Trainer, keys_on, recovered_equal_reference, wait_for
from redis_fixture import RedisServer

from gameserver.client import DataLoss, FleetClient, GameFleetError, Unavailable
from gameserver.engine import GameConfig
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


def step_until_served(client: FleetClient, ids: np.ndarray, moves: np.ndarray) -> GameFleetError:
    """Step until the fleet answers something other than UNAVAILABLE (a failover in progress)."""
    deadline = time.monotonic() + 60
    while True:
        try:
            client.step(ids, moves)
        except Unavailable:
            assert time.monotonic() < deadline, "the fleet kept answering UNAVAILABLE"
            continue
        except GameFleetError as error:
            return error
        raise AssertionError("the step was served with a plain OK")


def test_a_shard_killed_while_degraded_comes_back_behind_and_says_so_until_read(redis_server):
    """on-redis-error degrade, Redis frozen: the shard acknowledges steps it cannot log; killed,
    its games come back on the survivor at the last tick Redis logged (a step sent into the frozen
    Redis's socket lands when it goes on). Their next step answers
    DATA_LOSS naming that tick and changes nothing; a read acknowledges it, then play goes on."""
    with LocalFleet(
        2, redis_url=redis_server.url, fleet="degraded", durability="log", router=True,
        extra_args=(*FAST_SHARD, "--on-redis-error", "degrade", "--redis-timeout", "0.3"),
        router_args=FAST_ROUTER,
    ) as fleet, FleetClient(fleet.router_address, timeout=10) as client:  # fmt: skip
        store = FleetStore(redis_server.url, fleet.fleet, ttl_s=600)
        created = client.create(
            4, GameConfig(height=8, width=8), placement_key=keys_on(fleet.addresses, "d")[1]
        )
        moves = np.full((4, 2), -1)
        for _ in range(5):
            client.step(created.ids, moves)
        redis_server.freeze()
        try:
            for _ in range(5):  # acknowledged, not logged
                client.step(created.ids, moves)
            assert client.states(created.ids).tick.tolist() == [10] * 4
            fleet.kill(1)
        finally:
            redis_server.thaw()
        refused = step_until_served(client, created.ids, moves)
        assert isinstance(refused, DataLoss), refused
        restored = client.states(created.ids).tick.tolist()  # this read acknowledges them
        assert 5 <= restored[0] < 10 and restored == [restored[0]] * 4  # the last tick Redis logged
        assert f"restored from Redis at ticks {restored}" in refused.details  # and the step changed nothing
        client.step(created.ids, moves)
        assert client.states(created.ids).tick.tolist() == [restored[0] + 1] * 4
        wait_for(lambda: sum(held(store).values()) == 4, "the survivor to report the games")


def test_games_whose_records_redis_lost_answer_data_loss_not_not_found(redis_server):
    """Redis goes away, a shard is killed, Redis comes back empty: that shard's games are gone.
    Their calls answer DATA_LOSS (Redis lost the fleet's data), not NOT_FOUND "never created"."""
    with LocalFleet(
        2, redis_url=redis_server.url, fleet="gone", durability="log", router=True,
        extra_args=FAST_SHARD, router_args=FAST_ROUTER,
    ) as fleet, FleetClient(fleet.router_address, timeout=10) as client:  # fmt: skip
        created = client.create(
            4, GameConfig(height=8, width=8), placement_key=keys_on(fleet.addresses, "g")[1]
        )
        client.step(created.ids, np.full((4, 2), -1))
        redis_server.kill()
        fleet.kill(1)
        redis_server.start()  # empty
        refused = step_until_served(client, created.ids, np.full((4, 2), -1))
        assert isinstance(refused, DataLoss) and "Redis lost the fleet's data" in refused.details


def test_shards_started_with_one_seed_issue_different_game_ids(redis_server):
    """Creates without a placement key draw their key hash from the OS: two shards of one seed
    (the operator gives every shard the fleet's) once issued the same ids, two games per record."""
    with LocalFleet(
        2, redis_url=redis_server.url, fleet="seeds", durability="log", extra_args=("--seed", "7")
    ) as fleet:  # fmt: skip
        issued = []
        for address in fleet.addresses:
            with FleetClient(address, timeout=10) as client:
                issued.append(set(client.create(8, GameConfig(height=8, width=8)).ids.tolist()))
        assert not issued[0] & issued[1]


def test_a_drain_during_calls_answers_unavailable_never_not_found_and_loses_nothing(redis_server, fleet):
    """SIGTERM a shard while a trainer steps every batch through the router: its games move to the
    others mid-play; a call caught in the move answers UNAVAILABLE (retry), never NOT_FOUND."""
    with training(redis_server, fleet, "drain", rounds=3) as (store, trainer, games):
        stop = threading.Event()

        def keep_stepping() -> None:
            while not stop.is_set():
                trainer.round(timeout_s=60)

        stepping = threading.Thread(target=keep_stepping)
        stepping.start()
        try:
            wait_for(lambda: min(b.acked for b in trainer.batches) >= 6, "play under way", 30)
            os.kill(fleet.pids[1], signal.SIGTERM)
            fleet._processes[1].wait(timeout=60)  # drained, then gone
            played = min(b.acked for b in trainer.batches)
            wait_for(lambda: min(b.acked for b in trainer.batches) >= played + 5, "play on the others", 60)
        finally:
            stop.set()
            stepping.join()
        wait_for(lambda: settled(store, games, 2), "the two left to hold every game once", 30)
        failures = [error for batch in trainer.batches for error in batch.failures]
        assert all(isinstance(error, Unavailable) for error in failures), failures
        assert len({batch.acked for batch in trainer.batches}) == 1  # every round stepped every batch
    kill_all(fleet)
    recovered_equal_reference(redis_server.url, fleet.fleet, trainer.batches)
