"""Scripted agents: legal moves only, reproducible, and the expander actually plays better."""

import numpy as np

from gameserver.agents import expander_actions, random_actions
from gameserver.engine import GameBatch, GameConfig, action_masks, generate, observe, step
from gameserver.engine.config import PASS


def _fresh(games: int, config: GameConfig | None = None) -> tuple[GameBatch, np.ndarray]:
    config = config or GameConfig()
    batch = GameBatch.allocate(config, games)
    slots = np.arange(games)
    generate(batch, slots, np.arange(games) + 1000)
    return batch, slots


def _is_legal(masks: np.ndarray, actions: np.ndarray) -> np.ndarray:
    bits = np.unpackbits(masks, axis=-1, bitorder="little")
    move = np.where(actions == PASS, 0, actions >> 1)
    legal = np.take_along_axis(bits, move[..., None], axis=-1)[..., 0] == 1
    return legal | (actions == PASS)


def test_random_agent_only_plays_legal_moves_and_passes_only_without_one():
    batch, slots = _fresh(64)
    for _ in range(60):
        view = observe(batch, slots)
        actions = random_actions(view.codes, view.armies, view.tick, 20, 20, seed=3)
        masks = action_masks(batch, slots)
        assert _is_legal(masks, actions).all()
        has_move = masks.any(axis=-1)
        assert ((actions != PASS) == has_move).all()
        step(batch, slots, actions)


def test_agents_are_reproducible_from_their_seed():
    batch, slots = _fresh(16)
    view = observe(batch, slots)
    for _ in range(30):
        step(batch, slots, random_actions(view.codes, view.armies, view.tick, 20, 20, seed=1), out=view)
    first = random_actions(view.codes, view.armies, view.tick, 20, 20, seed=5)
    again = random_actions(view.codes, view.armies, view.tick, 20, 20, seed=5)
    other = random_actions(view.codes, view.armies, view.tick, 20, 20, seed=6)
    assert np.array_equal(first, again)
    assert not np.array_equal(first, other)


def test_the_serial_kernel_chooses_the_same_moves():
    batch, slots = _fresh(128)  # above the size at which the parallel kernel takes over
    view = observe(batch, slots)
    for tick in range(20):
        parallel = random_actions(view.codes, view.armies, view.tick, 20, 20, seed=tick)
        serial = random_actions(view.codes, view.armies, view.tick, 20, 20, seed=tick, parallel=False)
        assert np.array_equal(parallel, serial)
        step(batch, slots, parallel, out=view)


def test_expander_beats_random_on_small_boards():
    config = GameConfig(height=10, width=10, max_ticks=600)
    batch, slots = _fresh(64, config)
    view = observe(batch, slots)
    for _ in range(config.max_ticks):
        actions = expander_actions(view.codes, view.armies, view.tick, 10, 10, seed=2)
        actions[:, 1] = random_actions(view.codes, view.armies, view.tick, 10, 10, seed=4)[:, 1]
        step(batch, slots, actions, out=view)
    wins = np.bincount(batch.winner[batch.winner >= 0], minlength=2)
    assert wins[0] >= 40, wins  # the expander (seat 0) wins most games outright
    assert wins[0] > 4 * wins[1], wins
