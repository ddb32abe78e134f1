"""A shard's life: `gamefleet serve` as a real process, health states, and a graceful shutdown."""

from __future__ import annotations

import asyncio
import threading
import time

import grpc
import numpy as np
import pytest
from conftest import BackgroundShard
from fleet_play import wait_for
from grpc_health.v1 import health_pb2, health_pb2_grpc

from gameserver.client import FleetClient, Unavailable
from gameserver.engine import GameConfig
from gameserver.shard.games import INLINE_WORK

GAMES = INLINE_WORK // (2 * 8 * 8)  # enough 8x8 games to step on a worker thread, off the event loop
SERVING, NOT_SERVING = health_pb2.HealthCheckResponse.SERVING, health_pb2.HealthCheckResponse.NOT_SERVING


def test_gamefleet_serve_process_plays_and_stops_on_sigterm(serve_process):
    with FleetClient(serve_process.address, timeout=30) as fleet:
        assert fleet.healthy()
        created = fleet.create(8, GameConfig(), seeds=np.arange(8), autoreset=True)
        step = fleet.step(created.ids, np.full((8, 2), -1), masks=True)
        assert step.observations.tick.tolist() == [1] * 8 and step.observations.masks.shape[:2] == (8, 2)
        assert fleet.topology().shards == (serve_process.address,)
        fleet.close(created.ids)  # a SIGTERM'd shard waits for its open games to close
    assert serve_process.terminate() == 0


def _reflected_services(address: str) -> set[str]:
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    with grpc.insecure_channel(address) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        reply = next(stub.ServerReflectionInfo(iter([request]), timeout=10))
    return {service.name for service in reply.list_services_response.service}


def test_reflection_is_off_unless_asked_for(shard):
    """Reflection maps the whole API for anyone who reaches the port: off by default."""
    with pytest.raises(grpc.RpcError) as refused:
        _reflected_services(shard.address)
    assert refused.value.code() == grpc.StatusCode.UNIMPLEMENTED


def test_reflection_lists_the_services_when_asked_for():
    shard = BackgroundShard(reflection=True)
    try:
        assert {"gamefleet.v1.BatchGameService", "grpc.health.v1.Health"} <= _reflected_services(
            shard.address
        )
    finally:
        shard.stop()


def test_health_goes_not_serving_at_shutdown_and_in_flight_steps_finish():
    shard = BackgroundShard()
    try:
        with FleetClient(shard.address, timeout=30) as fleet:
            ids = fleet.create(GAMES, GameConfig(height=8, width=8)).ids
            # Hold the step inside the engine until the shutdown has begun.
            pool = shard.server.games.pools[0]
            entered, release = threading.Event(), threading.Event()
            real_step = pool.step

            def slow_step(*args, **kwargs):
                entered.set()
                release.wait(10)
                return real_step(*args, **kwargs)

            pool.step = slow_step
            channel = grpc.insecure_channel(shard.address)
            watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(), timeout=30)
            statuses = [next(watch).status]
            result = {}
            stepping = threading.Thread(
                target=lambda: result.update(step=fleet.step(ids, np.full((GAMES, 2), -1)))
            )
            stepping.start()
            assert entered.wait(10)
            stopping = threading.Thread(target=shard.stop, kwargs={"grace": 10})
            stopping.start()
            statuses.append(next(watch).status)  # NOT_SERVING while the step is still in flight
            assert stepping.is_alive()
            release.set()
            stepping.join(10)
            channel.close()  # ends the Watch call, which the shutdown would otherwise wait for
            stopping.join(20)
            assert statuses == [SERVING, NOT_SERVING]
            assert result["step"].observations.tick.tolist() == [1] * GAMES  # the in-flight step finished
            with pytest.raises(Unavailable):
                fleet.states(ids)  # and the shard is gone
    finally:
        shard.stop()


def _health(address: str) -> int:
    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        return stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=5).status


def test_leaving_without_redis_takes_no_new_games_and_waits_for_the_open_ones_to_close():
    """Nothing can move without Redis: on SIGTERM the shard closes to new games and waits (bounded)
    for its clients to close theirs before it stops, as Agones never deletes an allocated server."""
    shard = BackgroundShard(seed=1, drain_timeout_s=60)
    try:
        with FleetClient(shard.address, timeout=10) as client:
            created = client.create(2, GameConfig(), placement_key="k")
            leaving = asyncio.run_coroutine_threadsafe(shard.server.leave(), shard.loop)
            wait_for(
                lambda: _health(shard.address) == health_pb2.HealthCheckResponse.NOT_SERVING, "readiness"
            )
            with pytest.raises(Unavailable, match="takes no new games"):
                client.create(1, GameConfig())
            stepped = client.step(created.ids, np.full((2, 2), -1, np.int32))  # open games still play
            assert stepped.observations.tick.tolist() == [1, 1]
            assert not leaving.done()
            client.close(created.ids[:1])
            assert not leaving.done()
            client.close(created.ids[1:])
            leaving.result(10)  # the last game closed: the shard may go
    finally:
        shard.stop()


def test_leaving_without_redis_gives_up_waiting_at_the_drain_timeout():
    shard = BackgroundShard(seed=1, drain_timeout_s=0.5)
    try:
        with FleetClient(shard.address, timeout=10) as client:
            client.create(2, GameConfig())
        started = time.monotonic()
        shard.call(shard.server.leave(), timeout=10)
        assert 0.5 <= time.monotonic() - started < 5
        assert shard.server.games.active_games == 2  # they end with the process
    finally:
        shard.stop()
