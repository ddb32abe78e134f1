"""The Gymnasium and PettingZoo adapters run against a real shard through RemoteBackend."""

from __future__ import annotations

import numpy as np
import pytest

from gameserver.client import NotFound, RemoteBackend
from gameserver.engine import GameConfig
from gameserver.envs import GeneralsParallelEnv, GeneralsVectorEnv, LocalBackend

CONFIG = GameConfig(height=10, width=10, max_ticks=25)


def first_legal(masks: np.ndarray) -> np.ndarray:
    """A deterministic policy: the first legal flat move of each sub-env (pass is always legal)."""
    return masks.argmax(axis=1)


def test_vector_env_steps_through_the_fleet_like_in_process(fleet):
    remote = GeneralsVectorEnv(4, CONFIG, backend=RemoteBackend(fleet, CONFIG))
    local = GeneralsVectorEnv(4, CONFIG, backend=LocalBackend(CONFIG))
    obs, info = remote.reset(seed=11)
    local_obs, local_info = local.reset(seed=11)
    np.testing.assert_array_equal(obs, local_obs)
    np.testing.assert_array_equal(info["action_mask"], local_info["action_mask"])
    for _ in range(CONFIG.max_ticks):  # up to the truncation: the same maps, moves and views
        actions = first_legal(info["action_mask"])
        obs, rewards, terminated, truncated, info = remote.step(actions)
        local_obs, local_rewards, local_terminated, local_truncated, local_info = local.step(actions)
        np.testing.assert_array_equal(rewards, local_rewards)
        np.testing.assert_array_equal(terminated, local_terminated)
        np.testing.assert_array_equal(truncated, local_truncated)
        if truncated.all():  # autoreset maps follow the game ids, which differ between backends
            for served, expected in zip(info["final_obs"], local_info["final_obs"], strict=True):
                np.testing.assert_array_equal(served, expected)
            break
        np.testing.assert_array_equal(obs, local_obs)
        np.testing.assert_array_equal(info["action_mask"], local_info["action_mask"])
    assert truncated.all()
    obs, *_ = remote.step(first_legal(info["action_mask"]))  # the new episodes go on
    assert obs.shape == (4, *remote.single_observation_space.shape)
    ids = remote.game_ids
    remote.close()
    with pytest.raises(NotFound):  # closing the env released its games on the shard
        fleet.states(ids)


def test_parallel_env_plays_a_game_on_the_fleet(fleet):
    env = GeneralsParallelEnv(CONFIG, backend=RemoteBackend(fleet, CONFIG))
    observations, infos = env.reset(seed=3)
    assert set(observations) == {"player_0", "player_1"}
    for _ in range(CONFIG.max_ticks):
        actions = {agent: int(first_legal(infos[agent]["action_mask"][None])[0]) for agent in env.agents}
        observations, _, _, _, infos = env.step(actions)
        if not env.agents:
            break
    assert not env.agents  # the game ended (at the latest by truncation at max_ticks)
    env.close()
