"""Games nobody touches are closed (shard/idle.py, `gamefleet serve --idle-close-seconds`): no
orphans when a client loses a create's reply; games in use stay."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest
from conftest import BackgroundShard

from gameserver.client import FleetClient, NotFound
from gameserver.engine import GameConfig
from gameserver.shard.idle import IdleGames
from gameserver.sharding import make_game_ids

CONFIG = GameConfig(height=8, width=8)


class Clock:
    now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_sweep_closes_the_games_of_keys_no_call_touched_for_idle_s():
    live = np.concatenate([make_game_ids(k, np.arange(1, 4)) for k in (1, 2, 3)])
    closed: list[np.ndarray] = []

    async def close(ids: np.ndarray) -> int:
        closed.append(ids)
        return int(ids.size)

    clock = Clock()
    idle = IdleGames(10.0, close, lambda: live, clock=clock)
    idle.touch(live[:6])  # keys 1 and 2
    assert asyncio.run(idle.sweep()) == 0  # key 3, never named here, counts from this first sight
    clock.now += 6
    idle.touch(live[3:4])  # key 2 again
    clock.now += 5  # key 1: 11 s; key 2: 5 s; key 3: 11 s since first seen
    assert asyncio.run(idle.sweep()) == 6
    np.testing.assert_array_equal(np.sort(np.concatenate(closed)), np.sort(np.r_[live[:3], live[6:]]))
    assert idle.closed == 6
    with pytest.raises(ValueError, match="idle_s must be > 0"):
        IdleGames(0, close, lambda: live)


def test_a_served_shard_closes_games_nobody_calls_and_keeps_those_in_use():
    shard = BackgroundShard(idle_close_s=0.4)
    try:
        with FleetClient(shard.address, timeout=10) as client:
            used = client.create(2, CONFIG, placement_key="used").ids
            orphaned = client.create(3, CONFIG, placement_key="lost reply", observations=False).ids
            deadline = time.monotonic() + 30
            while np.isin(orphaned, shard.server.games.live_ids).any():  # looked at, not called
                client.states(used)  # the trainer keeps calling its games; nobody calls the orphans
                assert time.monotonic() < deadline, "the orphaned games were never closed"
                time.sleep(0.05)
            with pytest.raises(NotFound):
                client.states(orphaned)
            assert (client.states(used).tick == 0).all()  # still there
    finally:
        shard.stop()
