"""The router (`gamefleet route`) over three real shard processes on 127.0.0.1: placement by the
ring, byte-identical pass-through, split and merge in request order, the shards' refusals
passed on, a router restart, and a stopped shard that delays only the calls touching it."""

from __future__ import annotations

import asyncio
import itertools
import os
import re
import signal
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import grpc
import numpy as np
import pytest
from router_helpers import BackgroundRouter, RouterProcess

from gameserver.agents import random_actions
from gameserver.client import Aborted, FleetClient, GameFleetError, NotFound
from gameserver.engine import GameConfig
from gameserver.local_fleet import LocalFleet
from gameserver.router.fanout import shard_error
from gameserver.router.servicer import RouterServicer
from gameserver.router.topology import StaticSource
from gameserver.sharded_client import ShardedClient
from gameserver.sharding import HashRing, placement_hash
from gameserver.wire.generated import batch_pb2 as pb
from gameserver.wire.messages import write_tensor
from gameserver.wire.services import SERVICE

SHORT = GameConfig(height=10, width=12, max_ticks=12)  # episodes truncate within the tests
STEP_FIELDS = ("rewards", "terminated", "truncated", "status", "reset")
VIEW_FIELDS = ("codes", "armies", "land", "army", "tick", "masks")
Code = grpc.StatusCode
Raw = Callable[[str, str, bytes], bytes]


@pytest.fixture(scope="module")
def fleet() -> Iterator[LocalFleet]:
    """Three `gamefleet serve` processes and a `gamefleet route` process over them."""
    with LocalFleet(3, router=True) as running:
        yield running


@pytest.fixture(scope="module")
def router(fleet) -> Iterator[FleetClient]:
    with FleetClient(fleet.router_address, timeout=30) as client:
        yield client


@pytest.fixture(scope="module")
def ring(fleet) -> HashRing:
    return HashRing(sorted(fleet.addresses))


@pytest.fixture(scope="module")
def raw(fleet) -> Iterator[Raw]:
    """Call a method of any process of the fleet with raw bytes, the reply's raw bytes back."""
    channels = {a: grpc.insecure_channel(a) for a in [*fleet.addresses, fleet.router_address]}

    def call(address: str, method: str, payload: bytes) -> bytes:
        return channels[address].unary_unary(f"/{SERVICE.full_name}/{method}")(payload, timeout=30)

    yield call
    for channel in channels.values():
        channel.close()


def key_on(ring: HashRing, shard: str, prefix: str) -> str:
    """A placement key the ring gives to `shard`."""
    return next(k for i in itertools.count() if ring.shard_of_key(k := f"{prefix}-{i}") == shard)


def tensor(array: object) -> pb.Tensor:
    message = pb.Tensor()
    write_tensor(message, np.asarray(array))
    return message


def step_request(ids: np.ndarray, actions: np.ndarray, **fields: object) -> bytes:
    return pb.SubmitBatchActionsRequest(
        game_ids=tensor(ids), actions=tensor(actions), **fields
    ).SerializeToString()


def moves(view: object, seed: int) -> np.ndarray:
    return random_actions(view.codes, view.armies, view.tick, SHORT.height, SHORT.width, seed)


def status_of(call: Callable[[], object]) -> tuple[Code, str]:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    return caught.value.code(), caught.value.details()


def test_topology_is_the_shards_and_the_ring(router, fleet):
    topology = router.topology()
    assert topology.shards == tuple(sorted(fleet.addresses)) and topology.virtual_nodes == 160
    assert router.healthy() and router.healthy(SERVICE.full_name)


def test_a_batch_lands_on_the_shard_the_ring_names_for_its_key(router, ring):
    for shard in ring.shards:
        key = key_on(ring, shard, "place")
        created = router.create(3, SHORT, placement_key=key)
        assert created.shard == shard
        assert (created.ids >> np.uint64(32)).tolist() == [placement_hash(key)] * 3
        router.close(created.ids)
    keyless = [router.create(1, SHORT) for _ in range(12)]  # the router draws a key per call
    for created in keyless:
        assert created.shard == ring.shards[int(ring.shard_index_of_games(created.ids)[0])]
        router.close(created.ids)
    assert len({c.shard for c in keyless}) > 1


def test_one_shard_calls_pass_through_byte_identical_to_direct_calls(router, ring, raw):
    """Twin batches (same seeds) on one shard, one through the router and one direct: the same
    moves give the same reply bytes, so steps through the router are bit-exact."""
    shard = ring.shards[0]
    key = key_on(ring, shard, "twin")
    seeds = np.arange(8, dtype=np.uint64)
    routed = router.create(8, SHORT, seeds=seeds, placement_key=key, autoreset=True)
    with FleetClient(shard) as direct:
        twin = direct.create(8, SHORT, seeds=seeds, placement_key=key, autoreset=True)
    view = routed.observations
    for tick in range(SHORT.max_ticks - 1):  # before autoreset (the new maps follow the ids)
        actions = moves(view, tick)
        fields = {"include_masks": tick % 2 == 0, "delta": tick % 3 == 0}
        through = raw(router.address, "SubmitBatchActions", step_request(routed.ids, actions, **fields))
        assert through == raw(shard, "SubmitBatchActions", step_request(twin.ids, actions, **fields))
        view = router.states(routed.ids)
    states = pb.GetBatchStatesRequest(include_masks=True)
    assert raw(router.address, "GetBatchStates", _with_ids(states, routed.ids)) == raw(
        shard, "GetBatchStates", _with_ids(states, twin.ids)
    )
    router.close(np.concatenate([routed.ids, twin.ids]))  # ids of one key: one shard, one call


def _with_ids(request: object, ids: np.ndarray) -> bytes:
    write_tensor(request.game_ids, ids)
    return request.SerializeToString()


def test_a_call_spanning_shards_is_split_and_merged_in_request_order(router, ring):
    """Batches on every shard, their ids interleaved in one call: every row equals the row of a
    twin batch stepped directly on its shard; finals come in request order; deltas asked of
    several shards come back as full planes."""
    routed, twins, clients = [], [], []
    for i, shard in enumerate(ring.shards):
        key = key_on(ring, shard, "span")
        seeds = np.arange(5, dtype=np.uint64) + 10 * i
        routed.append(router.create(5, SHORT, seeds=seeds, placement_key=key, autoreset=True))
        clients.append(FleetClient(shard, timeout=30))
        twins.append(clients[-1].create(5, SHORT, seeds=seeds, placement_key=key, autoreset=True))
    order = np.random.default_rng(3).permutation(15)
    ids = np.concatenate([c.ids for c in routed])[order]
    owner, row = order // 5, order % 5  # which twin batch, which of its rows, per request row
    view = router.states(ids)
    finals_seen = 0
    for tick in range(SHORT.max_ticks):  # every game truncates (and autoresets) at the last tick
        actions = moves(view, tick)
        merged = router.step(ids, actions, masks=True, delta=tick > 5)
        direct = [
            c.step(t.ids[row[owner == s]], actions[owner == s], masks=True)
            for s, (c, t) in enumerate(zip(clients, twins, strict=True))
        ]
        expected = {name: np.empty_like(getattr(merged, name)) for name in STEP_FIELDS}
        planes = {name: np.empty_like(getattr(merged.observations, name)) for name in VIEW_FIELDS}
        for s, result in enumerate(direct):
            for name in STEP_FIELDS:
                expected[name][owner == s] = getattr(result, name)
            for name in VIEW_FIELDS:
                planes[name][owner == s] = getattr(result.observations, name)
        for name in STEP_FIELDS:
            np.testing.assert_array_equal(getattr(merged, name), expected[name], err_msg=name)
        same_map = ~merged.reset  # autoreset maps follow the ids, which differ between twins
        for name in VIEW_FIELDS:
            np.testing.assert_array_equal(
                getattr(merged.observations, name)[same_map], planes[name][same_map], err_msg=name
            )
        assert merged.observations.delta is None  # asked of several shards: full planes
        if merged.reset.any():
            finals = np.zeros((15, 2, SHORT.tiles), np.uint8)
            for s, result in enumerate(direct):
                finals[np.flatnonzero(owner == s)[result.reset]] = result.final_observations.codes
            np.testing.assert_array_equal(merged.final_observations.codes, finals[merged.reset])
            finals_seen += int(merged.reset.sum())
        view = merged.observations
    assert finals_seen >= 15
    assert router.close(ids) == 15
    for client, twin in zip(clients, twins, strict=True):
        client.close(twin.ids)
        client.close_channel()


def test_bad_input_gets_the_shards_status_and_details_and_changes_nothing(router, ring, raw):
    shard = ring.shards[1]
    created = router.create(4, SHORT, seeds=[1, 2, 3, 4], placement_key=key_on(ring, shard, "bad"))
    ids = created.ids
    other = router.create(2, SHORT, placement_key=key_on(ring, ring.shards[2], "bad")).ids
    before = router.states(np.concatenate([ids, other]))
    cases = {
        "actions off the board": step_request(ids, np.full((4, 2), 10**6)),
        "actions of wrong rows": step_request(ids, np.zeros((3, 2), np.int32)),
        "float actions": step_request(ids, np.zeros((4, 2), np.float32)),
        "repeated ids": step_request(ids[[0, 0, 1, 2]], np.zeros((4, 2), np.int32)),
        "int32 ids": step_request(ids.astype(np.int32), np.zeros((4, 2), np.int32)),
        "not a message": b"\xff\xff\xff",
        "no actions": pb.SubmitBatchActionsRequest(game_ids=tensor(ids)).SerializeToString(),
    }
    for name, payload in cases.items():
        code, details = status_of(lambda p=payload: raw(router.address, "SubmitBatchActions", p))
        direct = status_of(lambda p=payload: raw(shard, "SubmitBatchActions", p))
        assert code == direct[0] == Code.INVALID_ARGUMENT, name
        assert details in (direct[1], f"{direct[1]} [shard {shard}]"), name
    spanning = step_request(np.concatenate([ids, other]), np.zeros((5, 2), np.int32))
    code, details = status_of(lambda: raw(router.address, "SubmitBatchActions", spanning))
    assert code == Code.INVALID_ARGUMENT and "actions" in details and "6 game_ids" in details
    too_many = pb.CloseBatchGamesRequest(game_ids=tensor(np.zeros(70000, np.uint64))).SerializeToString()
    assert status_of(lambda: raw(router.address, "CloseBatchGames", too_many))[0] == Code.RESOURCE_EXHAUSTED
    after = router.states(np.concatenate([ids, other]))
    for name in ("codes", "armies", "tick"):
        np.testing.assert_array_equal(getattr(after, name), getattr(before, name), err_msg=name)
    router.close(np.concatenate([ids, other]))


def test_unknown_ids_are_not_found_naming_the_shard(router, ring):
    unknown = (np.uint64(placement_hash("nobody")) << np.uint64(32)) | np.arange(3, dtype=np.uint64)
    with pytest.raises(NotFound, match=re.escape(f"[shard {ring.shard_of_key('nobody')}]")):
        router.states(unknown)
    live = router.create(2, SHORT, placement_key=key_on(ring, ring.shards[0], "known"))
    stranger = (np.uint64(placement_hash(key_on(ring, ring.shards[1], "x"))) << np.uint64(32)) + np.uint64(9)
    with pytest.raises(NotFound, match="succeeded"):  # the known games' shard answered its part
        router.states(np.append(live.ids, stranger))
    router.close(live.ids)


def test_stream_steps_route_each_request_in_order(router, ring):
    batches = [router.create(2, SHORT, placement_key=key_on(ring, s, "stream")) for s in ring.shards]
    ids = np.concatenate([b.ids for b in batches])
    ticks = np.zeros(ids.size, np.int32)
    with router.stream() as stream:
        for i in range(6):
            rows = np.arange(ids.size) if i % 2 else np.arange(2)  # every shard, then one shard's games
            result = stream.step(ids[rows], np.full((rows.size, 2), -1))
            ticks[rows] += 1
            assert result.observations.tick.tolist() == ticks[rows].tolist()
    router.close(ids)


def test_sharded_client_routes_to_the_shards_with_the_routers_ring(router, ring):
    with ShardedClient(router.address, timeout=30) as direct:
        assert direct.ring.shards == ring.shards
        keys = [key_on(ring, s, "direct") for s in ring.shards]
        mine = [direct.create(3, SHORT, seeds=[7, 8, 9], placement_key=k) for k in keys]
        theirs = [router.create(3, SHORT, seeds=[7, 8, 9], placement_key=k) for k in keys]
        assert [c.shard for c in mine] == list(ring.shards)
        order = np.random.default_rng(1).permutation(9)
        mine_ids = np.concatenate([c.ids for c in mine])[order]
        theirs_ids = np.concatenate([c.ids for c in theirs])[order]
        for tick in range(4):
            actions = moves(router.states(theirs_ids), tick)
            a, b = direct.step(mine_ids, actions, masks=True), router.step(theirs_ids, actions, masks=True)
            for name in VIEW_FIELDS:
                np.testing.assert_array_equal(getattr(a.observations, name), getattr(b.observations, name))
        assert direct.close(mine_ids) == 9
        with pytest.raises(NotFound, match="shard"):
            direct.states(mine_ids[:1])
    router.close(theirs_ids)


def test_a_restarted_router_finds_the_games_where_they_were(fleet):
    shards = ",".join(fleet.addresses)
    first = RouterProcess("--shards", shards)
    try:
        with FleetClient(first.address, timeout=30) as client:
            created = client.create(6, SHORT)
            client.step(created.ids, np.full((6, 2), -1))
        with ShardedClient(first.address, timeout=30) as direct:
            first.kill()  # kill -9: nothing flushed, nothing said
            assert direct.step(created.ids, np.full((6, 2), -1)).observations.tick.tolist() == [2] * 6
    finally:
        first.kill()
    second = RouterProcess("--shards", ",".join(reversed(fleet.addresses)))  # order does not matter
    try:
        with FleetClient(second.address, timeout=30) as client:
            assert client.step(created.ids, np.full((6, 2), -1)).observations.tick.tolist() == [3] * 6
            assert client.close(created.ids) == 6
    finally:
        second.kill()


def test_a_stopped_shard_delays_only_the_calls_that_touch_it(fleet, ring):
    """SIGSTOP one shard: calls for games on the others complete promptly; calls that touch it end
    DEADLINE_EXCEEDED after the router's shard timeout, naming it."""
    slow = BackgroundRouter(StaticSource(fleet.addresses), shard_timeout_s=1.5)
    stopped = ring.shards[0]
    process = fleet._processes[fleet.addresses.index(stopped)]
    try:
        with FleetClient(slow.address, timeout=30) as client:
            stuck = client.create(2, SHORT, placement_key=key_on(ring, stopped, "slow")).ids
            free = client.create(2, SHORT, placement_key=key_on(ring, ring.shards[1], "slow")).ids
            outcome: dict[str, object] = {}

            def wait_on_stopped(name: str, ids: np.ndarray) -> None:
                started = time.perf_counter()
                try:
                    client.states(ids)
                except GameFleetError as error:
                    outcome[name] = (error, time.perf_counter() - started)

            os.kill(process.pid, signal.SIGSTOP)
            try:
                waiting = [
                    threading.Thread(target=wait_on_stopped, args=(name, ids))
                    for name, ids in (("stuck", stuck), ("both", np.concatenate([free, stuck])))
                ]
                for thread in waiting:
                    thread.start()
                time.sleep(0.2)  # both calls now wait on the stopped shard
                for _ in range(5):
                    started = time.perf_counter()
                    client.step(free, np.full((2, 2), -1))
                    assert time.perf_counter() - started < 0.5
                for thread in waiting:
                    thread.join(10)
            finally:
                os.kill(process.pid, signal.SIGCONT)
            for name in ("stuck", "both"):
                error, took = outcome[name]
                assert error.code == Code.DEADLINE_EXCEEDED and 1.4 < took < 5, (name, took)
                assert f"shard {stopped} did not answer within 1.5 s" in error.details
            assert f"the parts on {ring.shards[1]} succeeded" in outcome["both"][0].details
            assert client.states(free).tick.tolist() == [5, 5]
            client.close(np.concatenate([stuck, free]))
    finally:
        slow.stop()


def test_a_router_without_shards_is_not_serving_and_says_why():
    empty = BackgroundRouter(StaticSource([]))
    try:
        with FleetClient(empty.address, timeout=10) as client:
            assert not client.healthy()
            with pytest.raises(GameFleetError, match="knows no shards") as caught:
                client.create(1, SHORT)
            assert caught.value.code == Code.UNAVAILABLE
    finally:
        empty.stop()


def test_seat_play_through_the_router_joins_on_the_games_shard_and_steps_across_shards(fleet, router, ring):
    games = [
        router.create(2, SHORT, open_seats=True, placement_key=key_on(ring, s, "seat")) for s in ring.shards
    ]
    ids = np.concatenate([g.ids for g in games])[[0, 2, 4, 1, 3, 5]]  # interleaved across the shards
    with FleetClient(fleet.router_address, timeout=30) as other, ThreadPoolExecutor(2) as players:
        seats = {}
        for seat, client in enumerate((router, other)):
            joined = [client.join(game, seat) for game in ids]
            seats[seat] = (client, np.array([token for _, token in joined], np.uint64))
            assert [s for s, _ in joined] == [seat] * ids.size
        moves_ = np.full(ids.size, -1, np.int32)
        steps = [
            players.submit(client.step_seats, ids, moves_, np.full(ids.size, seat, np.int32), tokens)
            for seat, (client, tokens) in seats.items()
        ]
        for step in steps:
            result = step.result(30)
            assert (result.status == pb.STEPPED).all() and result.observations.tick.tolist() == [1] * ids.size
            assert result.observations.codes.shape == (ids.size, 1, SHORT.tiles)
    with pytest.raises(GameFleetError, match=re.escape(f"[shard {ring.shards[0]}]")):
        router.join(games[0].ids[0], 0)  # the seat is taken: the game's shard says so
    router.close(ids)


def test_a_call_a_stopping_shard_cancelled_is_aborted_for_the_caller_to_read_first():
    """A call still running on a shard when its stop grace ends is cancelled by the shard's gRPC
    server: it may have run, so the caller gets ABORTED (read, then retry), never UNAVAILABLE, which
    promises that nothing changed."""
    error = shard_error("s:1", grpc.StatusCode.CANCELLED, "CANCELLED", 5.0)
    assert isinstance(error, Aborted) and "shard s:1 stopped during the call" in error.details
    assert "it may have run: read the games" in error.details


@pytest.mark.asyncio
async def test_a_call_retried_through_a_fresh_ring_gets_only_what_is_left_of_its_budget():
    """The first shard answers UNAVAILABLE after a while (games on the move); the retry on the
    shard the fresh ring names gets the call's remaining time, not a second whole timeout: a call
    ends within --shard-timeout, which the router's stop grace covers (operator render.py)."""
    budget, first_answer_s = 2.0, 0.5
    timeouts: dict[str, float] = {}

    class Shards:  # the two shards' channels: "old:1" refuses after a while, "new:1" answers
        async def call(self, shard: str, method: str, request: bytes, timeout: float, **_: object) -> bytes:
            timeouts[shard] = timeout
            if shard == "old:1":
                await asyncio.sleep(first_answer_s)
                raise grpc.aio.AioRpcError(Code.UNAVAILABLE, None, None, details="games on the move")
            return pb.CloseBatchGamesResponse(closed=1).SerializeToString()

    servicer = RouterServicer(Shards(), shard_timeout_s=budget, max_games_per_call=8)
    servicer.ring = HashRing(["old:1"])

    async def refresh() -> None:
        servicer.ring = HashRing(["new:1"])

    servicer.refresh = refresh
    request = pb.CloseBatchGamesRequest()
    write_tensor(request.game_ids, np.array([7], np.uint64))
    reply = await servicer.route("CloseBatchGames", request.SerializeToString())
    assert pb.CloseBatchGamesResponse.FromString(reply).closed == 1
    assert timeouts["old:1"] == budget
    assert timeouts["new:1"] <= budget - first_answer_s
