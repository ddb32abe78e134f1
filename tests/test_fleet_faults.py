"""Faults of a real fleet: `gamefleet serve` and `gamefleet route` processes over a real redis-server.

Every test plays self-play batches through the fleet (fleet_play.Trainer) against an
in-process reference that steps exactly the acknowledged actions, and ends by killing the
shards with SIGKILL and rebuilding every game from Redis alone: the rebuilt states must
equal the reference bit for bit, so no acknowledged step was lost anywhere.
"""

from __future__ import annotations

import os
import signal
import threading
import time

import grpc
import pytest
from fleet_play import Trainer, keys_on, recovered_equal_reference, wait_for

from gameserver.client import Aborted, FleetClient, GameFleetError, Unavailable
from gameserver.local_fleet import LocalFleet
from gameserver.wire.services import DURABILITY_HEALTH

FAST_SHARD = ("--heartbeat", "0.2", "--dead-after", "1.2")
FAST_ROUTER = ("--alive-within", "1.2", "--refresh", "0.2", "--shard-timeout", "5")


def kill_all(fleet: LocalFleet) -> None:
    for ordinal in range(fleet.shards):
        fleet.kill(ordinal)


def test_kill_9_of_a_shard_mid_selfplay_loses_no_acknowledged_step(redis_server):
    fleet_name = "kill9"
    with LocalFleet(
        3, redis_url=redis_server.url, fleet=fleet_name, durability="log", router=True,
        extra_args=FAST_SHARD, router_args=FAST_ROUTER,
    ) as fleet, FleetClient(fleet.router_address, timeout=10) as client:  # fmt: skip
        trainer = Trainer(client, keys_on(fleet.addresses, "kill"), games=8)
        victim = trainer.batches[1]
        killed = threading.Event()

        def kill_when_busy() -> None:
            while victim.acked < 15:
                time.sleep(0.001)
            fleet.kill(1)  # while the trainer's calls are in flight
            killed.set()

        killer = threading.Thread(target=kill_when_busy)
        killer.start()
        for _ in range(60):
            trainer.round()
        killer.join()
        assert killed.is_set()
        assert victim.failures and all(isinstance(e, Unavailable) for e in victim.failures)
        assert not trainer.batches[0].failures and not trainer.batches[2].failures
        assert all(batch.acked == 60 for batch in trainer.batches)
        kill_all(fleet)
        recovered_equal_reference(redis_server.url, fleet_name, trainer.batches)


def test_redis_down_in_fail_mode_refuses_steps_clearly_and_loses_nothing(redis_server):
    with LocalFleet(
        1, redis_url=redis_server.url, fleet="fail", durability="log",
        extra_args=(*FAST_SHARD, "--on-redis-error", "fail"),
    ) as fleet, FleetClient(fleet.addresses[0], timeout=10) as client:  # fmt: skip
        trainer = Trainer(client, ["fail"], games=4)
        batch = trainer.batches[0]
        for _ in range(5):
            trainer.round()
        redis_server.kill()
        for _ in range(3):  # every step needs its log entry: refused, and nothing changes
            with pytest.raises(Unavailable, match=r"durability store unavailable.*changed nothing"):
                client.step(batch.ids, trainer.actions(batch))
        assert client.states(batch.ids).tick.tolist() == [5] * 4
        with pytest.raises(Unavailable, match="durability store unavailable"):
            client.create(2, batch.reference.config, placement_key="fail")
        assert fleet._processes[0].poll() is None
        redis_server.start()  # back, empty: the shard rewrites every record before it logs again
        for _ in range(5):
            trainer.round()
        assert batch.acked == 10 and fleet._processes[0].poll() is None
        kill_all(fleet)
        recovered_equal_reference(redis_server.url, "fail", trainer.batches)


def test_a_frozen_redis_costs_a_call_one_timeout_then_calls_fail_at_once_and_nothing_is_lost(redis_server):
    """SIGSTOP Redis: its port accepts, nothing answers. A step waits one --redis-timeout, then the
    breaker refuses the next ones at once (no wait) until Redis is tried again; once it goes on,
    the trainer's retries land and nothing acknowledged is lost."""
    timing = ("--redis-timeout", "0.5", "--redis-breaker", "1")
    with LocalFleet(
        1, redis_url=redis_server.url, fleet="frozen", durability="log",
        extra_args=(*FAST_SHARD, "--on-redis-error", "fail", *timing),
    ) as fleet, FleetClient(fleet.addresses[0], timeout=10) as client:  # fmt: skip
        trainer = Trainer(client, ["frozen"], games=4)
        batch = trainer.batches[0]
        for _ in range(3):
            trainer.round()
        thawed = threading.Event()

        def keep_stepping() -> None:
            while not thawed.is_set():
                trainer.round(timeout_s=120)

        redis_server.freeze()
        frozen_at = time.monotonic()
        stepping = threading.Thread(target=keep_stepping)
        try:
            stepping.start()
            wait_for(lambda: any("circuit open" in e.details for e in batch.failures), "the breaker", 60)
        finally:
            redis_server.thaw()
            thawed.set()
            frozen_s = time.monotonic() - frozen_at
        stepping.join()
        # the call whose entry was out when Redis froze ran: ABORTED ("applied"), which the trainer
        # read before retrying; every other one changed nothing: UNAVAILABLE
        applied = [e for e in batch.failures if isinstance(e, Aborted)]
        assert all("the step was applied" in e.details for e in applied) and len(applied) <= 1
        assert all(isinstance(e, Unavailable) for e in batch.failures if e not in applied)
        details = [e.details for e in batch.failures]
        # the first waited out --redis-timeout; after it one call a second (the probe) tries Redis,
        # the rest fail at once
        assert "TimeoutError" in details[0]
        waited = [d for d in details if "TimeoutError" in d and "circuit open" not in d]
        assert len(waited) <= 1 + frozen_s / 1.0, (len(waited), frozen_s)
        assert all(d in waited or "retrying shortly" in d or "circuit open" in d for d in details)
        acked = batch.acked
        for _ in range(3):
            trainer.round()
        assert batch.acked == acked + 3 and fleet._processes[0].poll() is None
        kill_all(fleet)
        recovered_equal_reference(redis_server.url, "frozen", trainer.batches)


def test_redis_down_in_degrade_mode_keeps_serving_reports_it_and_catches_up(redis_server):
    with LocalFleet(
        1, redis_url=redis_server.url, fleet="degrade", durability="log",
        extra_args=(*FAST_SHARD, "--on-redis-error", "degrade"),
    ) as fleet, FleetClient(fleet.addresses[0], timeout=10) as client:  # fmt: skip
        trainer = Trainer(client, ["degrade"], games=4)
        for _ in range(3):
            trainer.round()
        assert client.healthy(DURABILITY_HEALTH)
        redis_server.kill()
        for _ in range(5):
            trainer.round()
        assert not trainer.batches[0].failures  # served all along
        wait_for(lambda: not client.healthy(DURABILITY_HEALTH), "the shard to report degraded")
        assert client.healthy()  # still serving
        assert "DEGRADED" in fleet.logs[0].read_text()
        redis_server.start()  # the next step rewrites every record, then logs again

        def durable_again() -> bool:
            trainer.round()
            return client.healthy(DURABILITY_HEALTH)

        wait_for(durable_again, "the shard to report durable again")
        for _ in range(3):
            trainer.round()
        kill_all(fleet)
        recovered_equal_reference(redis_server.url, "degrade", trainer.batches)


def test_router_restart_clients_reconnect_and_games_are_intact(redis_server):
    with LocalFleet(
        2, redis_url=redis_server.url, fleet="router", durability="log", router=True,
        extra_args=FAST_SHARD, router_args=FAST_ROUTER,
    ) as fleet, FleetClient(fleet.router_address, timeout=10) as client:  # fmt: skip
        trainer = Trainer(client, keys_on(fleet.addresses, "router"), games=4)
        for _ in range(5):
            trainer.round()
        fleet.restart_router()
        for _ in range(5):
            trainer.round()  # the same client: its channel reconnects to the new router
        assert all(batch.acked == 10 for batch in trainer.batches)
        kill_all(fleet)
        recovered_equal_reference(redis_server.url, "router", trainer.batches)


def test_a_stopped_shard_times_out_alone_through_a_router_process():
    """SIGSTOP one shard: calls for it end DEADLINE_EXCEEDED naming it after the router's shard
    deadline, and calls for the other shard are served meanwhile, not queued behind them."""
    with (
        LocalFleet(2, router=True, router_args=("--shard-timeout", "1")) as fleet,
        FleetClient(fleet.router_address, timeout=10) as client,
    ):
        trainer = Trainer(client, keys_on(fleet.addresses, "slow"), games=2)
        trainer.round()
        stuck, free = trainer.batches
        os.kill(fleet._processes[0].pid, signal.SIGSTOP)
        try:
            errors = []
            moves = trainer.actions(stuck)
            waiter = threading.Thread(target=lambda: errors.append(failure(client, stuck.ids, moves)))
            waiter.start()
            time.sleep(0.1)  # the stuck call is in flight
            start = time.monotonic()
            for _ in range(5):
                client.step(free.ids, trainer.actions(free))
            free_s = time.monotonic() - start
            waiter.join()
        finally:
            os.kill(fleet._processes[0].pid, signal.SIGCONT)
        assert free_s < 0.8, f"calls to the healthy shard took {free_s:.2f} s behind the stopped one"
        (error,) = errors
        assert error.code == grpc.StatusCode.DEADLINE_EXCEEDED and fleet.addresses[0] in error.details


def failure(client: FleetClient, ids: object, moves: object) -> GameFleetError | None:
    try:
        client.step(ids, moves)
    except GameFleetError as error:
        return error
    return None
