"""The Gymnasium and PettingZoo adapters run against a real shard through RemoteBackend."""

from __future__ import annotations

import _posixshmem

import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env
from pettingzoo.test import parallel_api_test

from gameserver.client import NotFound
from gameserver.engine import GameConfig
from gameserver.envs import GeneralsEnv, GeneralsParallelEnv, GeneralsVectorEnv, LocalBackend, RemoteBackend

CONFIG = GameConfig(height=10, width=10, max_ticks=25)


def first_legal(masks: np.ndarray) -> np.ndarray:
    """A deterministic policy: the first legal flat move of each sub-env (pass is always legal)."""
    return masks.argmax(axis=1)


@pytest.mark.parametrize("shared_view", [False, True], ids=["planes on the wire", "shared view"])
def test_vector_env_steps_through_the_fleet_like_in_process(fleet, shared_view):
    backend = RemoteBackend(fleet, CONFIG, shared_view=shared_view)
    remote = GeneralsVectorEnv(4, CONFIG, backend=backend)
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
    assert (backend.view is not None) == shared_view
    if shared_view:  # the masks the adapter reads, like its planes, are the segment's bytes
        assert backend.masks(remote.game_ids) is backend.view.masks
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


@pytest.mark.parametrize("shared_view", [False, True], ids=["planes on the wire", "shared view"])
def test_remote_single_game_env_passes_gymnasium_check_env(fleet, shared_view):
    check_env(GeneralsEnv(CONFIG, backend=RemoteBackend(fleet, CONFIG, shared_view=shared_view)))


def test_remote_parallel_env_passes_pettingzoo_parallel_api_test(fleet):
    config = GameConfig(height=6, width=6, players=3, max_ticks=40)
    parallel_api_test(GeneralsParallelEnv(config, backend=RemoteBackend(fleet, config)), 60)


def test_a_loopback_fleet_gets_a_shared_view_once_the_planes_are_large_enough(fleet):
    """64 KB of planes: 14 games of 20x20 for 2 players do not reach it, 28 do."""
    config = GameConfig(max_ticks=50)
    for games, shared in ((14, False), (28, True)):
        backend = RemoteBackend(fleet, config)
        env = GeneralsVectorEnv(games, config, backend=backend)
        env.reset(seed=1)
        env.step(np.zeros(games, np.int64))
        assert (backend.view is not None) == shared, games
        env.close()
        assert backend.view is None  # released with the games


def test_a_shard_that_cannot_open_the_view_is_asked_again_on_the_wire(fleet):
    backend = RemoteBackend(fleet, CONFIG, shared_view=True)
    env = GeneralsVectorEnv(3, CONFIG, backend=backend)
    _, info = env.reset(seed=5)
    _posixshmem.shm_unlink("/" + backend.view.name)  # as if the shard were on another host
    obs, *_ = env.step(first_legal(info["action_mask"]))
    assert backend.view is None and obs.shape[0] == 3
    local = GeneralsVectorEnv(3, CONFIG, backend=LocalBackend(CONFIG))
    local.reset(seed=5)
    np.testing.assert_array_equal(obs, local.step(first_legal(info["action_mask"]))[0])
    env.close()
