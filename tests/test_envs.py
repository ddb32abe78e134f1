"""Gymnasium and PettingZoo adapters: the ecosystems' own checkers, same-step autoreset,
legal masks, seeding, eliminations, and generals-bots agents playing through them."""

import warnings

import gymnasium as gym
import numpy as np
import pytest
from generals.agents import ExpanderAgent, RandomAgent
from generals.core.action import compute_valid_move_mask
from generals.core.observation import Observation as GeneralsObservation
from gymnasium.utils.env_checker import check_env

from gameserver.agents import expander_actions
from gameserver.engine import GameConfig
from gameserver.engine.actions import from_generals_bots
from gameserver.envs import ENV_ID, GeneralsEnv, GeneralsParallelEnv, GeneralsVectorEnv, LocalBackend
from gameserver.envs.planes import CHANNELS
from gameserver.pool import UnknownGameError

with warnings.catch_warnings():  # pettingzoo.test imports PettingZoo's own deprecated env modules
    warnings.simplefilter("ignore", DeprecationWarning)
    from pettingzoo.test import parallel_api_test

DUEL = GameConfig(height=8, width=8, max_ticks=50)
FFA = GameConfig(height=6, width=6, players=4, max_ticks=300)
FORMATS = [("planes", "flat"), ("compact", "generals")]
TICK = CHANNELS.index("timestep")
OWNED_LAND = CHANNELS.index("owned_land_count")


def _legal_random(masks: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One uniformly random legal flat index per row of bool masks [..., n_actions] (pass included)."""
    return np.argmax(rng.random(masks.shape) * masks, axis=-1)


def _as_generals(flat: np.ndarray, config: GameConfig) -> np.ndarray:
    """Flat indices -> generals-bots [pass, row, col, direction, split] (the last index is pass)."""
    tile, direction, split = flat >> 3, (flat >> 1) & 3, flat & 1
    moves = np.stack([np.zeros_like(flat), tile // config.width, tile % config.width, direction, split], -1)
    return np.where((flat == config.num_actions)[..., None], [1, 0, 0, 0, 0], moves)


def _generals_observation(planes: np.ndarray) -> GeneralsObservation:
    """A generals-bots Observation rebuilt from one seat's 15 planes (their as_tensor layout)."""
    grids = {name: planes[c] for c, name in enumerate(CHANNELS) if c < OWNED_LAND}
    counts = {name: int(planes[c, 0, 0]) for c, name in enumerate(CHANNELS) if c >= OWNED_LAND}
    return GeneralsObservation(**grids, **counts)


@pytest.mark.parametrize(("obs_format", "action_format"), FORMATS)
def test_single_game_env_passes_gymnasium_check_env(obs_format, action_format):
    env = gym.make(ENV_ID, config=DUEL, obs_format=obs_format, action_format=action_format)
    check_env(env.unwrapped)  # made through the registry, so the checker also remakes it from its spec


def test_registry_makes_the_batched_env_for_make_vec():
    envs = gym.make_vec(ENV_ID, num_envs=3, config=DUEL, opponent="random")
    assert isinstance(envs, GeneralsVectorEnv) and envs.num_envs == 3
    assert envs.metadata["autoreset_mode"] == gym.vector.AutoresetMode.SAME_STEP


@pytest.mark.parametrize(("obs_format", "action_format"), FORMATS)
def test_vector_env_spaces_hold_batched_observations_masks_and_results(obs_format, action_format):
    env = GeneralsVectorEnv(6, DUEL, opponent="random", obs_format=obs_format, action_format=action_format)
    rng = np.random.default_rng(0)
    obs, infos = env.reset(seed=1)
    for _ in range(30):
        assert obs in env.observation_space
        assert infos["action_mask"].shape == (6, DUEL.num_actions + 1)
        assert infos["action_mask"].dtype == np.bool_ and infos["action_mask"][:, -1].all()
        flat = _legal_random(infos["action_mask"], rng)
        actions = flat if action_format == "flat" else _as_generals(flat, DUEL)
        assert actions in env.action_space
        obs, rewards, terminated, truncated, infos = env.step(actions)
        assert rewards.dtype == np.float32 and rewards.shape == (6,)
        assert terminated.shape == truncated.shape == (6,) and terminated.dtype == np.bool_
    if obs_format == "planes":
        assert obs.shape == (6, len(CHANNELS), 8, 8)
    else:
        assert obs["codes"].shape == obs["armies"].shape == (6, 64)


@pytest.mark.parametrize(
    ("config", "learner"),
    [(DUEL, "passive"), (GameConfig(height=4, width=4, max_ticks=500), "random")],
    ids=["truncated", "terminated"],  # a passive general holds out 50 ticks; a random one soon falls
)
def test_vector_env_autoresets_in_the_same_step_with_final_observations(config, learner):
    env = GeneralsVectorEnv(8, config)
    obs, infos = env.reset(seed=5)
    rng = np.random.default_rng(5)
    for _ in range(config.max_ticks):
        last = obs
        passive = np.full(8, config.num_actions)
        obs, rewards, terminated, truncated, infos = env.step(
            passive if learner == "passive" else _legal_random(infos["action_mask"], rng)
        )
        done = terminated | truncated
        if done.any():
            break
    ended = truncated if learner == "passive" else terminated & (np.abs(rewards) == 1)
    assert ended[done].all()
    assert np.array_equal(infos["_final_obs"], done) and np.array_equal(infos["_final_info"], done)
    assert infos["final_info"] == {}
    for i in range(env.num_envs):
        final = infos["final_obs"][i]
        if not done[i]:
            assert final is None and obs[i, TICK, 0, 0] == last[i, TICK, 0, 0] + 1
            continue
        assert final in env.single_observation_space
        assert final[TICK, 0, 0] == last[i, TICK, 0, 0] + 1  # the finished episode's last view
        assert obs[i, TICK, 0, 0] == 0 and obs[i, OWNED_LAND, 0, 0] == 1  # a fresh start: the general only
    assert obs in env.observation_space


def test_masks_are_exactly_generals_bots_valid_moves_for_both_split_flags():
    env = GeneralsVectorEnv(8, DUEL, opponent="random")
    obs, infos = env.reset(seed=3)
    rng = np.random.default_rng(3)
    for _ in range(40):
        obs, _, _, _, infos = env.step(_legal_random(infos["action_mask"], rng))
        moves = infos["action_mask"][:, :-1].reshape(8, 8, 8, 4, 2)
        assert infos["action_mask"][:, -1].all()
        for i in range(env.num_envs):
            expected = compute_valid_move_mask(_generals_observation(obs[i]))
            assert np.array_equal(moves[i, ..., 0], expected) and np.array_equal(moves[i, ..., 1], expected)
    assert moves.sum() > 8 * 4  # the learners spread, so the masks were not trivially empty


def _trajectory(env: GeneralsVectorEnv, seed: int, steps: int) -> list[np.ndarray]:
    obs, infos = env.reset(seed=seed)
    rng = np.random.default_rng(seed)
    seen = [obs]
    for _ in range(steps):
        obs, rewards, terminated, truncated, infos = env.step(_legal_random(infos["action_mask"], rng))
        seen += [obs, rewards, terminated, truncated]
    return seen


def test_reset_seed_replays_the_same_games_across_autoresets():
    steps = DUEL.max_ticks + 10  # every game autoresets at least once on the way
    env = GeneralsVectorEnv(4, DUEL)
    first = _trajectory(env, 7, steps)
    again = _trajectory(env, 7, steps)
    other_env = _trajectory(GeneralsVectorEnv(4, DUEL), 7, steps)
    for a, b, c in zip(first, again, other_env, strict=True):
        assert np.array_equal(a, b) and np.array_equal(a, c)
    assert not np.array_equal(first[0], _trajectory(env, 8, 0)[0])


def test_ffa_learner_elimination_ends_its_episode_and_restarts_its_game():
    env = GeneralsVectorEnv(8, FFA)  # a random learner, soon eliminated by three expanders
    _, infos = env.reset(seed=1)
    rng = np.random.default_rng(1)
    for _ in range(FFA.max_ticks):
        obs, rewards, terminated, truncated, infos = env.step(_legal_random(infos["action_mask"], rng))
        if terminated.any():
            break
    lost = np.flatnonzero(terminated)
    assert lost.size and (rewards[lost] == -1).all() and not truncated[lost].any()
    assert infos["_final_obs"][lost].all()
    assert (obs[lost, TICK, 0, 0] == 0).all() and (obs[lost, OWNED_LAND, 0, 0] == 1).all()
    assert (infos["action_mask"][lost, :-1].sum(axis=1) == 0).all()  # a general of army 1 cannot move


def test_envs_share_one_backend_and_release_their_games_on_close():
    backend = LocalBackend(DUEL, capacity=8)
    first, second = GeneralsVectorEnv(3, backend=backend), GeneralsVectorEnv(2, DUEL, backend=backend)
    assert np.intersect1d(first.game_ids, second.game_ids).size == 0
    obs_first, _ = first.reset(seed=1)
    obs_second, _ = second.reset(seed=1)
    assert np.array_equal(obs_first[:2], obs_second)  # the same seed draws the same first maps
    ids = first.game_ids
    first.close()
    with pytest.raises(UnknownGameError):
        backend.observe(ids)
    second.step(np.full(2, DUEL.num_actions))
    with pytest.raises(ValueError, match="differs"):
        GeneralsVectorEnv(2, GameConfig(), backend=backend)


def test_flat_actions_out_of_range_or_misshaped_are_rejected():
    env = GeneralsVectorEnv(2, DUEL)
    env.reset(seed=0)
    for bad in (np.array([0, DUEL.num_actions + 1]), np.array([-1, 0]), np.zeros(3, np.int64), np.zeros(2)):
        with pytest.raises(ValueError):
            env.step(bad)


@pytest.mark.parametrize(
    ("config", "obs_format", "action_format"),
    [
        (GameConfig(height=8, width=8, max_ticks=60), "planes", "flat"),
        (GameConfig(height=6, width=6, players=4, max_ticks=60), "compact", "generals"),
    ],
)
def test_parallel_env_passes_pettingzoo_parallel_api_test(config, obs_format, action_format):
    parallel_api_test(GeneralsParallelEnv(config, obs_format=obs_format, action_format=action_format), 100)


def test_parallel_env_eliminated_agents_leave_and_the_last_side_wins():
    env = GeneralsParallelEnv(FFA)
    _, infos = env.reset(seed=0)
    assert set(infos) == set(env.possible_agents)
    finished = []
    while env.agents:
        view = env.backend.observe(env.game_ids)
        moves = expander_actions(view.codes, view.armies, view.tick, FFA.height, FFA.width, 1)[0]
        actions = {a: int(moves[p]) % (FFA.num_actions + 1) for p, a in enumerate(env.possible_agents)}
        acting = list(env.agents)
        obs, rewards, terminated, truncated, infos = env.step({a: actions[a] for a in acting})
        assert set(obs) == set(rewards) == set(terminated) == set(infos) == set(acting)
        assert not any(truncated.values())
        gone = [a for a in acting if terminated[a]]
        assert env.agents == [a for a in acting if a not in gone]
        assert all(infos[a] == {} for a in gone) and all("action_mask" in infos[a] for a in env.agents)
        finished += [(a, rewards[a]) for a in gone]
    assert sorted(r for _, r in finished) == [-1.0, -1.0, -1.0, 1.0]
    with pytest.raises(RuntimeError):
        env.step({})


@pytest.mark.parametrize("agent", [ExpanderAgent(), RandomAgent(idle_prob=0.0)])
def test_generals_bots_agents_play_through_the_generals_action_format(agent):
    np.random.seed(0)  # generals-bots agents draw from numpy's global generator
    env = GeneralsEnv(DUEL, opponent="random", action_format="generals")
    obs, info = env.reset(seed=6)
    for _ in range(40):
        action = agent.act(_generals_observation(obs))
        flat = from_generals_bots(action, DUEL.height, DUEL.width)
        assert flat == -1 or info["action_mask"][flat]
        obs, _, terminated, truncated, info = env.step(action)
        assert not (terminated or truncated)
    assert obs[OWNED_LAND, 0, 0] > 5  # the agent's moves took land
