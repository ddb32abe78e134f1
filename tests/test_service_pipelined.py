"""Pipelined steps (EnvPool's send/recv) against a served shard: several steps in flight on one
channel, replies in send order, each equal to the same step taken synchronously in process."""

from __future__ import annotations

import numpy as np
import pytest

from gameserver.agents import random_actions
from gameserver.client import FleetClient, InvalidArgument
from gameserver.engine import GameConfig
from gameserver.pool import GamePool

CONFIG = GameConfig(height=10, width=10)


def moves_for(pool: GamePool, ids: np.ndarray, tick: int) -> np.ndarray:
    obs = pool.observe(ids)
    return random_actions(obs.codes, obs.armies, obs.tick, CONFIG.height, CONFIG.width, tick)


def test_steps_in_flight_come_back_in_send_order_equal_to_synchronous_steps(fleet: FleetClient) -> None:
    seeds = np.arange(12, dtype=np.uint64)
    ids = fleet.create(12, CONFIG, seeds=seeds).ids
    reference = GamePool(CONFIG, 12)
    ref_ids = reference.create(12, seeds)
    batches = [slice(0, 4), slice(4, 8), slice(8, 12)]
    for tick in range(6):
        moves = moves_for(reference, ref_ids, tick)
        for part in batches:
            fleet.send(ids[part], moves[part])
        assert fleet.in_flight == 3
        replies = [fleet.recv() for _ in batches]
        reference.step(ref_ids, moves)
        expected = reference.observe(ref_ids)
        for part, reply in zip(batches, replies, strict=True):
            np.testing.assert_array_equal(reply.observations.codes, expected.codes[part])
            np.testing.assert_array_equal(reply.observations.armies, expected.armies[part])
    assert fleet.in_flight == 0
    fleet.close(ids)


def test_a_refused_step_in_flight_raises_at_its_recv_and_the_others_stand(fleet: FleetClient) -> None:
    ids = fleet.create(4, CONFIG, seeds=np.arange(4, dtype=np.uint64)).ids
    passes = np.full((2, 2), -1, np.int32)
    fleet.send(ids[:2], passes)
    fleet.send(ids[2:], np.full((2, 2), 10**6, np.int32))  # out of range: refused, changes nothing
    fleet.send(ids[2:], passes)
    assert (fleet.recv().observations.tick == 1).all()
    with pytest.raises(InvalidArgument):
        fleet.recv()
    assert (fleet.recv().observations.tick == 1).all()
    with pytest.raises(RuntimeError, match="send"):
        fleet.recv()
    fleet.close(ids)
