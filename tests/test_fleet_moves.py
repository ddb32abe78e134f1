"""Games moving between live shards through Redis: the operator's drain, SIGTERM, and lazy moves
after a shard joins. Real shards (in process, real gRPC on 127.0.0.1) over a real redis-server."""

from __future__ import annotations

import contextlib
import signal
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import grpc
import numpy as np
import pytest
from conftest import BackgroundShard
from fleet_play import CONFIG, Trainer, recovered_equal_reference, views_equal, wait_for
from gamefleet_operator.registry import StoreRegistry, shard_state
from redis_fixture import RedisServer

from gameserver.client import FleetClient, NotFound, Unavailable
from gameserver.fleet.durability import Durability
from gameserver.fleet.store import FleetStore
from gameserver.local_fleet import LocalFleet
from gameserver.shard.games import ShardGames
from gameserver.shard.server import FleetOptions
from gameserver.sharding import HashRing
from gameserver.wire.generated import moves_pb2 as mpb
from gameserver.wire.services import LIVENESS_SERVICE, MOVES_SERVICE


def shard(redis_server: RedisServer, fleet: str, name: str, **options: object) -> BackgroundShard:
    fleet_options = FleetOptions(
        redis_server.url, fleet, "log", shard_name=name, dead_after_s=1.0, heartbeat_s=0.1, **options
    )
    return BackgroundShard(seed=1, fleet=fleet_options)


def in_ring(member: BackgroundShard, *shards: BackgroundShard) -> bool:
    ring = member.server.member.ring
    return ring is not None and sorted(ring.shards) == sorted(s.address for s in shards)


def test_the_operators_drain_request_moves_every_game_and_reports_drained(redis_server):
    a, b = shard(redis_server, "drain", "pod-a"), shard(redis_server, "drain", "pod-b")
    try:
        wait_for(lambda: in_ring(a, a, b) and in_ring(b, a, b), "both shards in both rings")
        with FleetClient(a.address, timeout=10) as client:
            trainer = Trainer(client, ["d1", "d2"], games=4)
            for _ in range(3):
                trainer.round()
        store = FleetStore(redis_server.url, "drain", ttl_s=60)
        registry = StoreRegistry(store)
        registry.request_drain("pod-a", time.time())

        wait_for(lambda: any(shard_state(i.state, i.load).name == "DRAINED" for i in store.list_shards(5)),
                 "shard a to report DRAINING with load 0")  # fmt: skip
        assert a.server.games.active_games == 0
        assert not client_healthy(a)  # readiness NOT_SERVING while drained
        assert client_healthy(a, LIVENESS_SERVICE)  # liveness: a draining shard is not restarted
        with FleetClient(b.address, timeout=10) as client:
            trainer.client = client
            for batch in trainer.batches:
                assert views_equal(client.states(batch.ids), batch.reference, batch.ref_ids)
            for _ in range(3):
                trainer.round()
        with FleetClient(a.address, timeout=10) as client, pytest.raises(Unavailable, match="draining"):
            client.create(1, CONFIG)
        registry.cancel_drain("pod-a")
        wait_for(lambda: client_healthy(a), "shard a to serve again once the request is gone")
    finally:
        a.stop()
        b.stop()


def client_healthy(server: BackgroundShard, service: str = "") -> bool:
    with FleetClient(server.address, timeout=5) as client:
        return client.healthy(service)


def test_a_joining_shard_takes_a_game_on_its_first_call_only(redis_server):
    a = shard(redis_server, "lazy", "pod-a")
    b = None
    try:
        with FleetClient(a.address, timeout=10) as client:
            trainer = Trainer(client, [f"k{i}" for i in range(12)], games=2)
            trainer.round()
        b = shard(redis_server, "lazy", "pod-b")
        wait_for(lambda: in_ring(a, a, b) and in_ring(b, a, b), "both shards in both rings")
        ring = HashRing(sorted([a.address, b.address]))
        moving = [x for x in trainer.batches if ring.shard_of_key(x.key) == b.address]
        staying = [x for x in trainer.batches if ring.shard_of_key(x.key) == a.address]
        assert moving and staying
        assert b.server.games.active_games == 0  # nothing moves at the join
        first, rest = moving[0], moving[1:]
        with FleetClient(b.address, timeout=10) as client:
            trainer.client = client
            trainer.step(first)  # b pulls the game from a, then steps it
            assert views_equal(client.states(first.ids), first.reference, first.ref_ids)
            with pytest.raises(Unavailable, match="not this shard's"):
                client.states(staying[0].ids)  # the ring gives it to a: b does not take it
        assert np.isin(first.ids, b.server.games.live_ids).all()
        assert not np.isin(first.ids, a.server.games.live_ids).any()
        for batch in rest:  # not called: still on a
            assert np.isin(batch.ids, a.server.games.live_ids).all()
        with FleetClient(a.address, timeout=10) as client, pytest.raises(Unavailable, match=b.address):
            client.states(first.ids)  # a points the caller at the new owner
        with FleetClient(b.address, timeout=10) as client, pytest.raises(NotFound):
            client.states(np.array([first.ids[0] + np.uint64(1000)]))  # no record anywhere
    finally:
        a.stop()
        if b is not None:
            b.stop()


def test_move_calls_refuse_bad_input_and_change_nothing(redis_server):
    a = shard(redis_server, "bad", "pod-a")
    try:
        before = a.state()
        for method, request in [
            ("HandOver", b"\xff\xff"),  # not a protobuf message
            ("HandOver", b"\x08\xff"),  # a truncated key hash
            ("Adopt", mpb.AdoptRequest(key_hashes=[1]).SerializeToString()),  # no owner
            ("Adopt", b"\x12\x05\x01"),  # key hashes cut short
        ]:
            with grpc.insecure_channel(a.address) as channel:
                call = channel.unary_unary(f"/{MOVES_SERVICE.full_name}/{method}")
                with pytest.raises(grpc.RpcError) as error:
                    call(request, timeout=5)
            assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT, (method, request)
        after = a.state()
        assert before.keys() == after.keys() and all(np.array_equal(before[k], after[k]) for k in before)
    finally:
        a.stop()


@contextlib.contextmanager
def two_shards_playing(
    redis_server: RedisServer, name: str, *flags: str
) -> Iterator[tuple[LocalFleet, Trainer]]:
    """Two log-mode shards and a router over the registry; a trainer has played three rounds on a
    key of each shard."""
    fast = ("--heartbeat", "0.2", "--dead-after", "5", *flags)
    with (
        LocalFleet(2, redis_url=redis_server.url, fleet=name, durability="log", router=True,
                   extra_args=fast, router_args=("--alive-within", "5", "--refresh", "0.2")) as fleet,
        FleetClient(fleet.router_address, timeout=10) as client,
    ):  # fmt: skip
        ring = HashRing(sorted(fleet.addresses))
        keys = [
            next(f"{name}{i}" for i in range(1000) if ring.shard_of_key(f"{name}{i}") == s)
            for s in fleet.addresses
        ]
        trainer = Trainer(client, keys, games=4)
        for _ in range(3):
            trainer.round()
        yield fleet, trainer


def sigterm_the_first_shard(fleet: LocalFleet) -> str:
    """SIGTERM shard 0 and wait for a clean exit; its log."""
    leaving = fleet._processes[0]
    leaving.send_signal(signal.SIGTERM)
    assert leaving.wait(20) == 0
    return fleet.logs[0].read_text()


def test_sigterm_hands_the_games_to_the_other_shard_then_exits(redis_server):
    with two_shards_playing(redis_server, "term") as (fleet, trainer):
        assert "handed 4 games to" in sigterm_the_first_shard(fleet)
        for _ in range(3):
            trainer.round()  # through the router, whose ring lost the leaving shard
        assert all(batch.acked == 6 for batch in trainer.batches)
        fleet.kill(1)
        recovered_equal_reference(redis_server.url, "term", trainer.batches)


def test_sigterm_with_a_drain_timeout_of_0_leaves_at_once_and_a_survivor_takes_the_games(redis_server):
    """drainTimeoutSeconds: 0 (valid in the CRD): the shard starts, and on SIGTERM exits without
    handing anything over; its games, recorded in Redis, go on on the other shard."""
    with two_shards_playing(redis_server, "leave0", "--drain-timeout", "0") as (fleet, trainer):
        log = sigterm_the_first_shard(fleet)
        assert "drain <= 0 s" in log and "handed" not in log
        for _ in range(3):
            trainer.round()  # the survivor recovers the leaving shard's games from Redis
        assert all(batch.acked == 6 for batch in trainer.batches)
        fleet.kill(1)
        recovered_equal_reference(redis_server.url, "leave0", trainer.batches)


@pytest.mark.parametrize(("mode", "drain"), [("off", 0.0), ("log", 0.0)])
def test_a_drain_timeout_of_0_leaves_at_once(redis_server, mode, drain):
    """SIGTERM with a drain timeout of 0: leave() returns at once, NOT_SERVING, the games left
    where they are (in Redis for the survivors when recorded)."""
    options = FleetOptions(redis_server.url, f"now-{mode}", mode, shard_name="pod-a", dead_after_s=1.0,
                           heartbeat_s=0.1)  # fmt: skip
    a = BackgroundShard(seed=1, fleet=options, drain_timeout_s=drain)
    b = shard(redis_server, f"now-{mode}", "pod-b")
    try:
        with FleetClient(a.address, timeout=10) as client:
            client.create(3, CONFIG, placement_key="k")
        started = time.monotonic()
        a.call(a.server.leave(), timeout=10)
        assert time.monotonic() - started < 1.0
        assert a.server.games.active_games == 3  # nothing handed over
        assert not client_healthy(a) and client_healthy(a, LIVENESS_SERVICE)
    finally:
        a.stop()
        b.stop()


@pytest.mark.asyncio
async def test_a_call_that_races_a_hand_off_answers_unavailable_and_changes_nothing(redis_server):
    """Routed before the hand-off, run after it: the games live on elsewhere, so the caller is told
    to retry (UNAVAILABLE), never that they were "never created or released" (NOT_FOUND)."""
    store = FleetStore(redis_server.url, "race", ttl_s=60)
    durability = Durability(store, "pod-a", "log", heartbeat_s=0.05, snapshot_interval_s=0)
    with ThreadPoolExecutor(1) as executor:
        games = ShardGames(executor, durability=durability)
        ids, kept = [
            await games.create(n, CONFIG, autoreset=False, seeds=None, key_hash=key, masks=False,
                               finish=lambda ids, _: ids)
            for n, key in ((4, 7), (2, 8))
        ]  # fmt: skip
        racing = games.route(ids)
        assert (await games.hand_off(np.array([7], np.uint64))).tolist() == ids.tolist()
        passes = np.full((4, CONFIG.players), -1, np.int32)
        with pytest.raises(Unavailable, match="moved to another shard"):
            await games.step(racing, passes, observe=False, masks=False, delta=False, finish=lambda s: s)
        with pytest.raises(NotFound):  # closed, not moved: gone for good
            route = games.route(kept)
            assert await games.close(route) == 2
            await games.step(route, passes[:2], observe=False, masks=False, delta=False, finish=lambda s: s)
    durability.close(flush=False)
