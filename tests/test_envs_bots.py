"""The environments as other people's code reaches for them: generals-bots' agents and reward
functions unmodified (obs_format="generals", pad_to), Gymnasium's module-qualified id in a fresh
interpreter, PettingZoo's usual names, the documented import paths, errors naming action_format."""

import subprocess
import sys
import warnings

import numpy as np
import pytest
from generals.agents import ExpanderAgent, RandomAgent
from generals.core.action import Action
from generals.core.observation import Observation
from generals.core.rewards import FrequentAssetRewardFn, LandRewardFn, WinLoseRewardFn

from gameserver.engine import GameConfig
from gameserver.engine.actions import from_generals_bots
from gameserver.envs import GeneralsEnv, GeneralsParallelEnv, GeneralsVectorEnv, generals_v0
from gameserver.envs.bots import FIELDS
from gameserver.envs.planes import CHANNELS
from tests.peer_adapter import peer_game

with warnings.catch_warnings():  # pettingzoo.test imports PettingZoo's own deprecated env modules
    warnings.simplefilter("ignore", DeprecationWarning)
    from pettingzoo.test import parallel_api_test

DUEL = GameConfig(height=8, width=8, max_ticks=400)
PAD = 24  # generals-bots' own envs pad to 24x24


def _play(env: GeneralsParallelEnv, agents: dict, seed: int) -> tuple[dict, int]:
    """One game of generals-bots agents through the env, unmodified: obs in, Action out.

    Checks every tick that each move is legal by the env's mask and that generals-bots' reward
    functions take the observations; returns the final rewards and the ticks played.
    """
    observations, infos = env.reset(seed=seed)
    cfg = env.config
    ticks = 0
    while env.agents:
        actions = {name: agents[name].act(observations[name]) for name in env.agents}
        for name, action in actions.items():
            assert isinstance(action, Action) and isinstance(observations[name], Observation)
            flat = int(from_generals_bots(action[None], cfg.height, cfg.width)[0])
            assert flat == -1 or infos[name]["action_mask"][flat], (name, action)
        prior = observations
        observations, rewards, _, _, infos = env.step(actions)
        ticks += 1
        for name in observations:
            land = LandRewardFn()(prior[name], actions[name], observations[name])
            assert land == observations[name].owned_land_count - prior[name].owned_land_count
            assert np.isfinite(FrequentAssetRewardFn()(prior[name], actions[name], observations[name]))
            won = WinLoseRewardFn()(prior[name], actions[name], observations[name])
            assert won >= 0 if rewards[name] >= 0 else won <= 0
    return rewards, ticks


def test_generals_bots_expander_and_random_agents_play_whole_games_unmodified():
    np.random.seed(0)  # generals-bots' agents draw from numpy's global generator
    env = GeneralsParallelEnv(DUEL, obs_format="generals", action_format="generals", pad_to=PAD)
    agents = {"player_0": ExpanderAgent(), "player_1": RandomAgent()}
    wins = []
    for seed in range(4):
        rewards, ticks = _play(env, agents, seed)
        assert 0 < ticks <= DUEL.max_ticks
        wins.append(rewards["player_0"])
    assert wins.count(1.0) >= 2 and -1.0 not in wins, wins  # others truncated


def test_generals_format_is_generals_bots_own_observation_in_its_dtypes():
    env = GeneralsParallelEnv(DUEL, obs_format="generals")
    observations, _ = env.reset(seed=3)
    planes, _ = GeneralsParallelEnv(DUEL).reset(seed=3)  # the 15 planes, checked against generals-bots
    pool = env.backend._pool
    s = pool.slots_of(env.game_ids)[0]
    batch = pool.batch
    game = peer_game(batch.terrain[s], batch.armies[s], batch.generals[s], DUEL.height, DUEL.width)
    for seat, (name, obs) in enumerate(observations.items()):
        theirs = game.agent_observation(f"p{seat}")  # generals-bots itself on the same start
        assert list(obs.keys()) == list(FIELDS)
        for field in FIELDS:
            assert np.array_equal(obs[field], theirs[field]), field
            assert np.asarray(obs[field]).dtype == np.asarray(theirs[field]).dtype, field
        assert all(type(obs[field]) is int for field in FIELDS[9:])
        for c, field in enumerate(CHANNELS):
            assert np.array_equal(np.broadcast_to(obs[field], planes[name][c].shape), planes[name][c])
        assert obs in env.observation_space(name)


def test_pad_to_pads_with_mountains_like_generals_bots_and_moves_stay_on_the_board():
    env = GeneralsEnv(DUEL, obs_format="generals", action_format="generals", pad_to=PAD)
    obs, _ = env.reset(seed=1)
    assert obs.armies.shape == (PAD, PAD) and env.action_space.nvec.tolist() == [2, PAD, PAD, 4, 2]
    assert obs.mountains[DUEL.height :].all() and obs.mountains[:, DUEL.width :].all()
    for field in ("armies", "generals", "cities", "neutral_cells", "owned_cells", "fog_cells"):
        assert not obs[field][DUEL.height :].any() and not obs[field][:, DUEL.width :].any()
    assert obs in env.observation_space
    counts = dict.fromkeys(FIELDS[9:14], 0)
    theirs = Observation(**{f: obs[f][: DUEL.height, : DUEL.width] for f in FIELDS[:9]}, **counts)
    theirs.pad_observation(PAD)
    assert all(np.array_equal(theirs[f], obs[f]) for f in FIELDS[:9])  # padded as generals-bots pads
    planes = GeneralsEnv(DUEL, pad_to=PAD).reset(seed=1)[0]
    assert planes.shape == (len(CHANNELS), PAD, PAD) and planes[3, DUEL.height :].all()
    obs, *_ = env.step(Action(False, PAD - 1, PAD - 1, 0, False))  # from the padding: a pass
    assert obs.timestep == 1
    with pytest.raises(ValueError, match="pad_to"):
        GeneralsEnv(DUEL, pad_to=7)
    with pytest.raises(ValueError, match="pad_to"):
        GeneralsEnv(DUEL, obs_format="compact", pad_to=PAD)


def test_vector_env_generals_format_is_batched_fields_in_its_space():
    env = GeneralsVectorEnv(3, DUEL, obs_format="generals", pad_to=PAD)
    obs, _ = env.reset(seed=0)
    assert set(obs) == set(FIELDS) and obs["armies"].shape == (3, PAD, PAD) and obs["timestep"].shape == (3,)
    assert obs in env.observation_space
    obs, *_ = env.step(np.full(3, DUEL.num_actions))
    assert obs in env.observation_space and (obs["timestep"] == 1).all()


def test_generals_bots_actions_with_the_flat_format_are_refused_naming_action_format():
    action = Action(False, 0, 0, 1, False)
    with pytest.raises(ValueError, match='action_format="generals"'):
        _step(GeneralsEnv(DUEL), action)
    parallel = GeneralsParallelEnv(DUEL)
    parallel.reset(seed=0)
    with pytest.raises(ValueError, match='action_format="generals"'):
        parallel.step({"player_0": action, "player_1": action})
    with pytest.raises(ValueError, match='action_format="flat"'):
        _step(GeneralsEnv(DUEL), DUEL.num_actions + 1)


def _step(env: GeneralsEnv, action: object) -> None:
    env.reset(seed=0)
    env.step(action)


def test_pettingzoo_usual_names_parallel_env_env_and_raw_env():
    parallel_api_test(generals_v0.parallel_env(config=DUEL, obs_format="generals"), 100)
    aec = generals_v0.env(config=DUEL)
    aec.reset(seed=0)
    assert aec.possible_agents == ["player_0", "player_1"] and generals_v0.raw_env(config=DUEL).metadata
    turns = 0
    for _agent in aec.agent_iter(60):
        _, _, terminated, truncated, info = aec.last()
        aec.step(None if terminated or truncated else int(np.flatnonzero(info["action_mask"])[-1]))
        turns += 1
    assert turns == 60


def test_gymnasium_make_by_module_id_after_importing_only_gymnasium():
    code = (
        "import sys, gymnasium\n"
        "assert 'gameserver.envs' not in sys.modules\n"
        "kw = dict(config=__import__('gameserver.engine', fromlist=['GameConfig']).GameConfig(8, 8))\n"
        "env = gymnasium.make('gameserver.envs:GameFleet/Generals-v0', **kw)\n"
        "vec = gymnasium.make_vec('gameserver.envs:GameFleet/Generals-v0', num_envs=2, **kw)\n"
        "print(type(env.unwrapped).__name__, type(vec).__name__, vec.num_envs)\n"
        "from gameserver.envs import MAKE_ID; assert MAKE_ID == 'gameserver.envs:GameFleet/Generals-v0'\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)

    assert out.stdout.split() == ["GeneralsEnv", "GeneralsVectorEnv", "2"]


def test_documented_import_paths_work():
    from gameserver.envs import RemoteBackend
    from gameserver.envs.remote import RemoteBackend as Defined
    from gameserver.replay.client import ReplayClient
    from gameserver.rl.replay_files import import_replay

    assert RemoteBackend is Defined and callable(ReplayClient) and callable(import_replay)
