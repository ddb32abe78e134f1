"""End to end through a real shard on 127.0.0.1: the service plays exactly what an in-process pool plays."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from gameserver.agents import expander_actions, random_actions
from gameserver.client import AsyncFleetClient, NotFound, ObservationBuffer, Topology
from gameserver.engine import GameConfig, Observation
from gameserver.pool import GamePool, IdSource
from gameserver.sharding import placement_hash
from gameserver.wire.generated import batch_pb2 as pb

SHORT = GameConfig(height=10, width=12, max_ticks=40)  # episodes end (truncation) within the tests
FIELDS = ("codes", "armies", "land", "army", "tick")


def twin_pool(ids: np.ndarray, config: GameConfig, seeds: np.ndarray, autoreset: bool) -> GamePool:
    """An in-process pool holding the same games under the same ids (autoreset maps follow the ids)."""
    local = int(ids[0]) & 0xFFFFFFFF
    pool = GamePool(config, capacity=ids.size, autoreset=autoreset, id_source=IdSource(local))
    assert np.array_equal(pool.create(ids.size, seeds, key_hash=int(ids[0]) >> 32), ids)
    return pool


def assert_same_view(served: object, local: Observation) -> None:
    for name in FIELDS:
        np.testing.assert_array_equal(getattr(served, name), getattr(local, name), err_msg=name)


def moves(view: object, config: GameConfig, seed: int) -> np.ndarray:
    return random_actions(view.codes, view.armies, view.tick, config.height, config.width, seed)


def test_create_step_reset_close(fleet):
    created = fleet.create(3, SHORT, seeds=[1, 2, 3], masks=True)
    assert created.ids.dtype == np.uint64 and created.ids.shape == (3,)
    assert created.config == SHORT and created.shard == fleet.address
    assert created.observations.codes.shape == (3, 2, SHORT.tiles) and created.observations.masks.shape[
        :2
    ] == (3, 2)
    step = fleet.step(created.ids, np.full((3, 2), -1))
    assert step.observations.tick.tolist() == [1, 1, 1]
    assert step.status.tolist() == [pb.STEPPED] * 3 and not step.reset.any()
    assert fleet.states(created.ids).tick.tolist() == [1, 1, 1]
    assert fleet.reset(created.ids[:1], seeds=[9]).tick.tolist() == [0]
    assert fleet.close(created.ids) == 3
    with pytest.raises(NotFound, match=str(created.ids[0])):
        fleet.states(created.ids)


def test_served_games_match_an_in_process_pool_bit_exact(fleet):
    seeds = np.arange(100, 116, dtype=np.uint64)
    created = fleet.create(16, SHORT, seeds=seeds, autoreset=True, masks=True)
    pool = twin_pool(created.ids, SHORT, seeds, autoreset=True)
    assert_same_view(created.observations, pool.observe(created.ids))
    view = created.observations
    resets = 0
    for tick in range(90):  # past two truncations: autoreset and final views are covered
        actions = moves(view, SHORT, tick)
        served = fleet.step(created.ids, actions, masks=True)
        local = pool.step(created.ids, actions)
        for name in ("rewards", "terminated", "truncated", "reset"):
            np.testing.assert_array_equal(getattr(served, name), getattr(local, name), err_msg=name)
        assert_same_view(served.observations, local.observation)
        np.testing.assert_array_equal(served.observations.masks, pool.masks(created.ids))
        if local.reset.any():
            resets += 1
            assert_same_view(served.final_observations, local.final_observation)
        else:
            assert served.final_observations is None
        view = served.observations
    assert resets >= 2
    fleet.close(created.ids)


def buffer_owner(array: np.ndarray) -> object:
    while isinstance(array, np.ndarray):
        array = array.base
    return array


def test_replies_are_views_of_the_reply_bytes_not_copies(fleet):
    created = fleet.create(32, GameConfig())  # a reply over wire.PARSE_BELOW: walked in place
    step = fleet.step(created.ids, np.full((32, 2), -1))
    arrays = [step.rewards, step.status, *(getattr(step.observations, n) for n in FIELDS)]
    reply = buffer_owner(arrays[0])
    assert isinstance(reply, bytes)  # np.frombuffer over the bytes gRPC handed the client
    for array in arrays:
        assert buffer_owner(array) is reply
        assert np.shares_memory(array, np.frombuffer(reply, np.uint8))
        assert not array.flags.writeable
    fleet.close(created.ids)


def test_stream_steps_answer_each_request_in_order(fleet):
    config = GameConfig(height=8, width=8)
    seeds = np.arange(6, dtype=np.uint64)
    created = fleet.create(6, config, seeds=seeds)
    pool = twin_pool(created.ids, config, seeds, autoreset=False)
    halves = (created.ids[:3], created.ids[3:])
    with fleet.stream() as stream:
        for tick in range(10):
            ids = halves[tick % 2]  # alternate the games: replies must follow the requests
            actions = moves(pool.observe(ids), config, tick)
            assert_same_view(stream.step(ids, actions).observations, pool.step(ids, actions).observation)
    fleet.close(created.ids)


def test_deltas_rebuild_the_full_observations_exactly(fleet):
    seeds = np.arange(30, dtype=np.uint64)
    created = fleet.create(30, SHORT, seeds=seeds, autoreset=True)
    pool = twin_pool(created.ids, SHORT, seeds, autoreset=True)
    planes = ObservationBuffer(SHORT, 30)
    planes.apply(created.observations)
    sent_delta = 0
    for tick in range(120):
        actions = expander_actions(*(getattr(planes.observation, n) for n in ("codes", "armies", "tick")),
                                   SHORT.height, SHORT.width, tick)  # fmt: skip
        served = fleet.step(created.ids, actions, delta=True)
        local = pool.step(created.ids, actions)
        sent_delta += served.observations.delta is not None
        assert_same_view(planes.apply(served.observations), local.observation)
        if tick == 50:  # a full view in between (reset of some games) keeps the delta record in step
            reset = fleet.reset(created.ids[:5], seeds=[1, 2, 3, 4, 5])
            pool.reset(created.ids[:5], [1, 2, 3, 4, 5])
            planes.observation.codes[:5] = reset.codes
            planes.observation.armies[:5] = reset.armies
        if tick == 80:
            assert_same_view(planes.apply(fleet.states(created.ids, delta=True)), pool.observe(created.ids))
    assert sent_delta > 100  # most replies were deltas (the first, listing every tile, is sent full)
    fleet.close(created.ids)


def test_skip_observations_steps_without_views(fleet):
    created = fleet.create(2, GameConfig())
    step = fleet.step(created.ids, np.full((2, 2), -1), observe=False)
    assert step.observations is None and step.rewards.shape == (2, 2)
    assert fleet.states(created.ids).tick.tolist() == [1, 1]
    fleet.close(created.ids)


def test_ids_of_several_pools_step_in_one_call(fleet):
    """Same config, autoreset and not: two pools, one request, replies in request order."""
    config = GameConfig(height=8, width=8, max_ticks=2)
    finite = fleet.create(2, config, seeds=[5, 6])
    endless = fleet.create(2, config, seeds=[7, 8], autoreset=True)
    ids = np.array([endless.ids[0], finite.ids[0], finite.ids[1], endless.ids[1]], np.uint64)
    for _ in range(2):
        step = fleet.step(ids, np.full((4, 2), -1))
    assert step.truncated.tolist() == [True] * 4
    assert step.reset.tolist() == [True, False, False, True]
    assert step.observations.tick.tolist() == [0, 2, 2, 0]
    assert step.final_observations.tick.tolist() == [2, 2]
    step = fleet.step(ids, np.full((4, 2), -1))
    assert step.status.tolist() == [pb.STEPPED, pb.FINISHED, pb.FINISHED, pb.STEPPED]
    fleet.close(ids)


def test_placement_key_is_the_high_half_of_the_ids(fleet):
    created = fleet.create(2, GameConfig(height=8, width=8), placement_key="trainer-7")
    assert (created.ids >> np.uint64(32)).tolist() == [placement_hash("trainer-7")] * 2
    fleet.close(created.ids)


def test_topology_and_health(fleet):
    assert fleet.topology() == Topology((fleet.address,), 160)
    assert fleet.topology().ring().shard_of_key("any") == fleet.address
    assert fleet.healthy() and fleet.healthy("gamefleet.v1.BatchGameService")


def test_async_client(shard):
    async def play() -> list[int]:
        async with AsyncFleetClient(shard.address) as fleet:
            assert await fleet.healthy()
            created = await fleet.create(3, GameConfig(height=8, width=8))
            ticks = [(await fleet.step(created.ids, np.full((3, 2), -1))).observations.tick[0]]
            async with fleet.stream() as stream:
                for _ in range(3):
                    ticks.append((await stream.step(created.ids, np.full((3, 2), -1))).observations.tick[0])
            ticks.append((await fleet.states(created.ids)).tick[0])
            assert (await fleet.topology()).shards == (shard.address,)
            assert await fleet.close(created.ids) == 3
            return ticks

    assert asyncio.run(play()) == [1, 2, 3, 4, 4]
