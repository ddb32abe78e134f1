"""generals_planes reproduces generals-bots' Observation.as_tensor() channel for channel."""

import numpy as np
from generals.core.action import Action
from peer_adapter import PEER_AGENTS, peer_game

from gameserver.agents import random_actions
from gameserver.engine import GameBatch, GameConfig, generate, observe, step
from gameserver.envs.planes import CHANNELS, generals_planes


def test_planes_match_generals_bots_as_tensor_while_playing():
    config = GameConfig()
    games = 8
    batch = GameBatch.allocate(config, games)
    slots = np.arange(games)
    generate(batch, slots, np.arange(games) + 77)
    peers = [peer_game(batch.terrain[g], batch.armies[g], batch.generals[g], 20, 20) for g in range(games)]
    view = observe(batch, slots)
    for _ in range(120):
        actions = random_actions(view.codes, view.armies, view.tick, 20, 20, seed=11)
        for g, peer in enumerate(peers):
            moves = {}
            for p, agent in enumerate(PEER_AGENTS):
                a = int(actions[g, p])
                tile, direction, split = a >> 3, (a >> 1) & 3, a & 1
                moves[agent] = Action(a < 0, *divmod(tile, 20), direction, split) if a >= 0 else Action(True)
            observations, _ = peer.step(moves)
            expected = np.stack([observations[agent].as_tensor() for agent in PEER_AGENTS])
            step(batch, slots[g : g + 1], actions[g : g + 1])
            ours = generals_planes(*_one(observe(batch, slots[g : g + 1])), 20, 20)[0]
            for c, name in enumerate(CHANNELS):
                assert np.array_equal(ours[:, c], expected[:, c]), f"game {g} channel {name}"
        view = observe(batch, slots)
    assert view.land.sum(axis=1).max() > 20  # the games really spread beyond the generals


def _one(view):
    return view.codes, view.armies, view.land, view.army, view.tick
