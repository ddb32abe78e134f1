"""render_mode on the envs: frames of what the learner (or any seat) sees, drawn from the game's state;
"human" needs a display and says so."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

from gameserver.engine import GameConfig
from gameserver.envs import ENV_ID, GeneralsEnv, GeneralsParallelEnv, GeneralsVectorEnv
from gameserver.envs.render import draw, fog_view, state_view

DUEL = GameConfig(8, 8, max_ticks=100)


def seat_frame(env_backend, game_id: int, seat: int | None) -> np.ndarray:
    """The renderer's frame of a game's exact state in the in-process pool (None: no fog)."""
    pool = env_backend._pool
    slot = pool.slots_of(np.array([game_id], np.uint64))[0]
    state = pool.batch.terrain[slot], pool.batch.owner[slot], pool.batch.armies[slot]
    view = state_view(*state) if seat is None else fog_view(*state, seat, 8, 8)
    return draw(*view, 8, 8)


def test_a_single_env_renders_what_the_learner_sees():
    env = gym.make(ENV_ID, config=DUEL, render_mode="rgb_array")
    assert "rgb_array" in env.metadata["render_modes"] and env.metadata["render_fps"] > 0
    env.reset(seed=3)
    for _ in range(5):
        env.step(env.action_space.n - 1)  # pass
    frame = env.render()
    inner = env.unwrapped
    assert frame.shape == (160, 160, 3) and frame.dtype == np.uint8
    np.testing.assert_array_equal(frame, seat_frame(inner._vec.backend, inner._vec.game_ids[0], 0))
    env.close()


def test_a_vector_env_renders_every_sub_env():
    envs = GeneralsVectorEnv(3, DUEL, render_mode="rgb_array")
    envs.reset(seed=1)
    envs.step(np.full(3, DUEL.num_actions))
    frames = envs.render()
    assert len(frames) == 3
    for game_id, frame in zip(envs.game_ids, frames, strict=True):
        np.testing.assert_array_equal(frame, seat_frame(envs.backend, game_id, 0))
    assert GeneralsVectorEnv(1, DUEL).render() is None  # no render_mode: nothing drawn
    with pytest.raises(ValueError, match="render_mode"):
        GeneralsVectorEnv(1, DUEL, render_mode="human")


def test_the_parallel_env_renders_what_any_seat_sees():
    env = GeneralsParallelEnv(DUEL, render_mode="rgb_array")
    env.reset(seed=2)
    frame = env.render().reshape(8, 20, 8, 20, 3)
    full = seat_frame(env.backend, env.game_ids[0], None).reshape(8, 20, 8, 20, 3)
    pool = env.backend._pool
    slot = pool.slots_of(env.game_ids)[0]
    state = pool.batch.terrain[slot], pool.batch.owner[slot], pool.batch.armies[slot]
    seen = np.zeros(64, np.bool_)
    for p in range(2):
        seen |= (fog_view(*state, p, 8, 8)[0] >> 4) >= 2
    rows, cols = np.divmod(np.arange(64), 8)
    for tile in range(64):  # a tile some seat sees shows the state, the others fog
        r, c = rows[tile], cols[tile]
        assert np.array_equal(frame[r, :, c], full[r, :, c]) == seen[tile], tile
    assert seen.sum() >= 8  # around each general
    env.close()


def test_human_without_a_display_says_what_is_missing(monkeypatch):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    for make in (
        lambda: GeneralsEnv(DUEL, render_mode="human"),
        lambda: GeneralsParallelEnv(DUEL, render_mode="human"),
    ):
        with pytest.raises(ValueError, match=r"needs a display .*rgb_array"):
            make()
    with pytest.raises(ValueError, match="render_mode must be None or one of"):
        GeneralsEnv(DUEL, render_mode="ansi")
