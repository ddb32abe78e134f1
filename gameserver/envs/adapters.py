"""Gymnasium and PettingZoo adapters over a batch-of-games backend (in-process pool or the fleet).

- `GeneralsVectorEnv`: `num_envs` games stepped in one batch; the learner holds seat 0, scripted
  numba agents hold the other seats. Same-step autoreset, as the pool does it.
- `GeneralsEnv`: one such game as a plain `gymnasium.Env` (what `check_env` and single-env code take).
- `GeneralsParallelEnv`: one game, every seat an agent (self-play, PettingZoo Parallel API).

Observations come in generals-bots' 15-channel layout (`obs_format="planes"`) or as the engine's
compact codes/armies (`"compact"`); actions as one flat index (`action_format="flat"`: the
engine's flat moves, plus index `H*W*8` for pass) or generals-bots' `[pass, row, col, dir, split]`
(`"generals"`). `info["action_mask"]` is bool over the flat index space in both action formats:
index `((row*W + col)*4 + dir)*2 + split`, and the last index (pass) is always legal.
Rendering is not offered: `render_mode` is None.

Importing this module registers `ENV_ID` with Gymnasium: `gymnasium.make(ENV_ID, config=...)` makes
a `GeneralsEnv`, `gymnasium.make_vec(ENV_ID, num_envs=n)` a `GeneralsVectorEnv`.
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any, ClassVar, Protocol

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space, iterate
from pettingzoo import ParallelEnv

from ..agents import expander_actions, random_actions
from ..engine import GameConfig, Observation
from ..engine.actions import from_generals_bots
from ..engine.config import GENERAL, KIND_OFFSET, LAND_GROWTH_INTERVAL, PASS, STRUCTURE_GROWTH_INTERVAL
from ..pool import GamePool, PoolStep
from .planes import CHANNELS, generals_planes

ENV_ID = "GameFleet/Generals-v0"
OBS_FORMATS = ("planes", "compact")
ACTION_FORMATS = ("flat", "generals")
OPPONENTS = {"expander": expander_actions, "random": random_actions}
_SEED_BOUND = 1 << 63  # seeds an env draws from its np_random, for maps and scripted agents


class Backend(Protocol):
    """The games an adapter drives: `GamePool`'s calls, with autoreset on.

    Ids are uint64 arrays; every call takes the ids of games this backend created and answers
    in their order. `LocalBackend` is the in-process one; a remote one speaks the same calls
    over the fleet's BatchGameService (one RPC per call, or fewer: see `masks`).
    """

    config: GameConfig  # shared by every game of the backend

    def create(self, n: int, seeds: np.ndarray | None = None) -> np.ndarray:
        """Start n games (maps from uint64 seeds, else the backend's own) and return their ids."""
        ...

    def reset(self, ids: np.ndarray, seeds: np.ndarray | None = None) -> None:
        """Regenerate these games' maps in place: same ids, a new episode."""
        ...

    def step(self, ids: np.ndarray, actions: np.ndarray) -> PoolStep:
        """One tick with int32 [B, players] flat moves (-1 = pass), observing every seat afterwards.

        Games that finish restart at once (same-step autoreset): `reset[i]` marks them, their
        rows of `observation` show the new episode's start and `final_observation` holds the
        finished episodes' last views, one row per reset game in `np.flatnonzero(reset)` order.
        The next map's seed follows from the finished map's seed and the game id (as GamePool
        does), so seeding `create`/`reset` fixes every later episode of those games too.
        """
        ...

    def observe(self, ids: np.ndarray) -> Observation:
        """Every seat's current fog-of-war view."""
        ...

    def masks(self, ids: np.ndarray) -> np.ndarray:
        """Bit-packed legal moves uint8 [B, players, mask bytes] (engine.action_masks' layout).

        Adapters call it right after `step`, `reset` or `create` with the same ids, so a remote
        backend can answer from the masks its previous response carried instead of a new RPC.
        """
        ...

    def release(self, ids: np.ndarray) -> None:
        """End these games for good (a fleet would otherwise keep them until they expire)."""
        ...


class LocalBackend:
    """In-process backend: one autoresetting `GamePool`, for training on a single machine."""

    def __init__(self, config: GameConfig, *, capacity: int = 1) -> None:
        self.config = config
        self._pool = GamePool(config, capacity=capacity, autoreset=True)

    def create(self, n: int, seeds: np.ndarray | None = None) -> np.ndarray:
        return self._pool.create(n, seeds)

    def reset(self, ids: np.ndarray, seeds: np.ndarray | None = None) -> None:
        self._pool.reset(ids, seeds)

    def step(self, ids: np.ndarray, actions: np.ndarray) -> PoolStep:
        return self._pool.step(ids, actions)

    def observe(self, ids: np.ndarray) -> Observation:
        return self._pool.observe(ids)

    def masks(self, ids: np.ndarray) -> np.ndarray:
        return self._pool.masks(ids)

    def release(self, ids: np.ndarray) -> None:
        self._pool.release(ids)


class SeatFormat:
    """One seat's spaces, and the batched conversions between them and the engine's arrays."""

    def __init__(self, config: GameConfig, obs_format: str = "planes", action_format: str = "flat") -> None:
        _check_choice("obs_format", obs_format, OBS_FORMATS)
        _check_choice("action_format", action_format, ACTION_FORMATS)
        self.config = config
        self.obs_format = obs_format
        self.action_format = action_format
        self.n_actions = config.num_actions + 1  # flat moves, then pass
        self.observation_space = _observation_space(config, obs_format)
        if action_format == "flat":
            self.action_space: spaces.Space = spaces.Discrete(self.n_actions)
        else:
            self.action_space = spaces.MultiDiscrete([2, config.height, config.width, 4, 2])

    def observations(self, view: Observation, seats: int) -> Any:
        """The first `seats` seats' observations, [games, seats, ...], in fresh arrays.

        Only those seats' planes are built (a learner needs one seat of P); the opponent land/army
        counts need every seat's totals, so they are rewritten from the whole view.
        """
        if self.obs_format == "compact":
            return {"codes": view.codes[:, :seats].copy(), "armies": view.armies[:, :seats].copy()}
        cfg = self.config
        planes = generals_planes(
            view.codes[:, :seats],
            view.armies[:, :seats],
            view.land[:, :seats],
            view.army[:, :seats],
            view.tick,
            cfg.height,
            cfg.width,
        )
        others_land = view.land.sum(axis=1, keepdims=True) - view.land[:, :seats]
        others_army = view.army.sum(axis=1, keepdims=True) - view.army[:, :seats]
        planes[:, :, CHANNELS.index("opponent_land_count")] = others_land[..., None, None]
        planes[:, :, CHANNELS.index("opponent_army_count")] = others_army[..., None, None]
        return planes

    def moves(self, actions: object) -> np.ndarray:
        """Actions in this format ([...] flat or [..., 5] generals-bots) -> engine flat int32."""
        a = np.asarray(actions)
        if self.action_format == "generals":
            return from_generals_bots(a, self.config.height, self.config.width)
        if not np.issubdtype(a.dtype, np.integer):
            raise ValueError(f"flat actions must be integers, got dtype {a.dtype}")
        if a.size and (a.min() < 0 or a.max() >= self.n_actions):
            raise ValueError(f"flat actions must be in [0, {self.n_actions}); {self.n_actions - 1} is pass")
        return np.where(a == self.n_actions - 1, PASS, a).astype(np.int32)

    def masks(self, packed: np.ndarray) -> np.ndarray:
        """Engine bit-packed masks uint8 [..., bytes] -> bool [..., n_actions] (both split flags, pass)."""
        bits = np.unpackbits(packed, axis=-1, count=self.config.tiles * 4, bitorder="little").view(np.bool_)
        out = np.empty((*packed.shape[:-1], self.n_actions), np.bool_)
        out[..., 0:-1:2] = bits  # two strided copies: several times faster than np.repeat
        out[..., 1:-1:2] = bits
        out[..., -1] = True
        return out


class GeneralsVectorEnv(VectorEnv):
    """`num_envs` games in one batch: the learner plays seat 0, a scripted agent every other seat.

    Steps are whole-batch numpy and numba: one backend step per call, no loop over games.
    Autoreset is same-step (`metadata["autoreset_mode"]`): a finished sub-env's returned
    observation already starts its next episode; `infos["final_obs"]` (object array, with mask
    `infos["_final_obs"]`) holds the last observation and `infos["final_info"]` (with
    `infos["_final_info"]`) that step's info, which is empty: no action follows a final view.
    With more than two players the learner's episode ends when it is eliminated, and its game
    restarts then. `infos["action_mask"]` (with `_action_mask`) is the learner's mask.

    Seeding: after `reset(seed=s)` the maps of every later episode and the opponents' play are
    a function of s and the game ids (fixed per env, so one env replays; fresh envs on fresh
    `LocalBackend`s get the same ids and replay too).
    """

    metadata: ClassVar[dict[str, Any]] = {"autoreset_mode": AutoresetMode.SAME_STEP, "render_modes": []}

    def __init__(
        self,
        num_envs: int,
        config: GameConfig | None = None,
        *,
        opponent: str = "expander",
        obs_format: str = "planes",
        action_format: str = "flat",
        backend: Backend | None = None,
    ) -> None:
        if isinstance(num_envs, bool) or not isinstance(num_envs, int) or num_envs < 1:
            raise ValueError(f"num_envs must be a positive int, got {num_envs!r}")
        _check_choice("opponent", opponent, tuple(OPPONENTS))
        self.config = _config_of(config, backend)
        self.num_envs = num_envs
        self.seat_format = SeatFormat(self.config, obs_format, action_format)
        self.single_observation_space = self.seat_format.observation_space
        self.single_action_space = self.seat_format.action_space
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        self.action_space = batch_space(self.single_action_space, num_envs)
        self._opponent = OPPONENTS[opponent]
        self.backend = LocalBackend(self.config, capacity=num_envs) if backend is None else backend
        self.game_ids = self.backend.create(num_envs)
        self._view: Observation | None = None  # every seat's latest view: what the opponents act on
        self._agent_seed = 0

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[Any, dict[str, Any]]:
        """Start a new episode in every sub-env (`options` is accepted and unused)."""
        super().reset(seed=seed)
        self.backend.reset(self.game_ids, self._draw_seeds(self.num_envs))
        self._agent_seed = int(self.np_random.integers(_SEED_BOUND))
        self._view = self.backend.observe(self.game_ids)
        return self._learner_obs(self._view), self._infos()

    def step(self, actions: object) -> tuple[Any, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        """Play one tick in every sub-env: the learner's `actions` for seat 0, scripted moves elsewhere."""
        if self._view is None:
            raise RuntimeError("call reset() before step()")
        learner = self.seat_format.moves(actions)
        if learner.shape != (self.num_envs,):
            raise ValueError(f"expected one action per sub-env ({self.num_envs}), got {np.shape(actions)}")
        cfg = self.config
        view = self._view
        moves = self._opponent(view.codes, view.armies, view.tick, cfg.height, cfg.width, self._agent_seed)
        moves[:, 0] = learner
        result = self.backend.step(self.game_ids, moves)
        view = result.observation
        lost = (result.rewards[:, 0] < 0) & ~result.reset  # eliminated from a game that goes on
        done = result.reset | lost
        infos: dict[str, Any] = {}
        if done.any():
            final_obs = np.full(self.num_envs, None, dtype=object)
            self._put_final(final_obs, np.flatnonzero(result.reset), result.final_observation)
            if lost.any():
                rows = np.flatnonzero(lost)
                self._put_final(final_obs, rows, _take(view, rows))
                view = self._restart_rows(view, rows)
            infos = {"final_obs": final_obs, "_final_obs": done, "final_info": {}, "_final_info": done.copy()}
        self._view = view
        rewards = result.rewards[:, 0].copy()
        terminated = result.terminated | lost
        return self._learner_obs(view), rewards, terminated, result.truncated.copy(), self._infos() | infos

    def close_extras(self, **kwargs: Any) -> None:
        if self.game_ids is not None:
            self.backend.release(self.game_ids)
            self.game_ids = None

    def _draw_seeds(self, n: int) -> np.ndarray:
        return self.np_random.integers(_SEED_BOUND, size=n, dtype=np.int64).astype(np.uint64)

    def _learner_obs(self, view: Observation) -> Any:
        return _pick(self.seat_format.observations(view, 1), np.s_[:, 0])

    def _infos(self) -> dict[str, Any]:
        masks = self.seat_format.masks(self.backend.masks(self.game_ids)[:, 0])
        return {"action_mask": masks, "_action_mask": np.ones(self.num_envs, np.bool_)}

    def _put_final(self, final_obs: np.ndarray, rows: np.ndarray, view: Observation | None) -> None:
        """Store some sub-envs' last observations, one object per sub-env as gymnasium's SAME_STEP
        expects (the only per-env Python work, and only for sub-envs that just finished)."""
        if rows.size:
            items = iterate(self.observation_space, self._learner_obs(view))
            final_obs[rows] = np.fromiter(items, dtype=object, count=rows.size)

    def _restart_rows(self, view: Observation, rows: np.ndarray) -> Observation:
        """Regenerate these games (the learner lost but others still play); `view` showing their starts.

        The result is a copy: a remote backend's observations may be read-only views of its buffers.
        """
        ids = self.game_ids[rows]
        self.backend.reset(ids, self._draw_seeds(rows.size))
        fresh = self.backend.observe(ids)
        merged = _take(view, np.arange(self.num_envs))
        for field in fields(Observation):
            getattr(merged, field.name)[rows] = getattr(fresh, field.name)
        return merged


class GeneralsEnv(gym.Env):
    """One game against scripted opponents as a plain `gymnasium.Env` (a one-game vector env inside).

    A finished episode returns its final observation and an empty info; call `reset()` then.
    """

    metadata: ClassVar[dict[str, Any]] = {"render_modes": []}

    def __init__(
        self,
        config: GameConfig | None = None,
        *,
        opponent: str = "expander",
        obs_format: str = "planes",
        action_format: str = "flat",
        backend: Backend | None = None,
    ) -> None:
        self._vec = GeneralsVectorEnv(
            1, config, opponent=opponent, obs_format=obs_format, action_format=action_format, backend=backend
        )
        self.config = self._vec.config
        self.observation_space = self._vec.single_observation_space
        self.action_space = self._vec.single_action_space

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[Any, dict[str, Any]]:
        super().reset(seed=seed)
        obs, infos = self._vec.reset(seed=int(self.np_random.integers(_SEED_BOUND)))
        return _pick(obs, 0), {"action_mask": infos["action_mask"][0]}

    def step(self, action: object) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        obs, rewards, terminated, truncated, infos = self._vec.step(np.asarray(action)[None])
        ended = bool(terminated[0] or truncated[0])
        obs = infos["final_obs"][0] if ended else _pick(obs, 0)
        info = {} if ended else {"action_mask": infos["action_mask"][0]}
        return obs, float(rewards[0]), bool(terminated[0]), bool(truncated[0]), info

    def close(self) -> None:
        self._vec.close()


class GeneralsParallelEnv(ParallelEnv):
    """One game, every seat an agent ("player_0".."player_{P-1}"), all acting every tick.

    An eliminated agent is terminated (reward -1) at the tick it loses its general and leaves
    `agents`; when one side is left every remaining agent terminates (the winner with +1); at
    `max_ticks` every remaining agent is truncated. A live agent missing from the actions passes.
    `infos[agent]["action_mask"]` is given to agents that act next, `{}` to those just finished.
    """

    metadata: ClassVar[dict[str, Any]] = {
        "name": "generals_v0",
        "render_modes": [],
        "is_parallelizable": True,
    }

    def __init__(
        self,
        config: GameConfig | None = None,
        *,
        obs_format: str = "planes",
        action_format: str = "flat",
        backend: Backend | None = None,
    ) -> None:
        self.config = _config_of(config, backend)
        self.seat_format = SeatFormat(self.config, obs_format, action_format)
        self.backend = LocalBackend(self.config) if backend is None else backend
        self.game_ids = self.backend.create(1)
        self.possible_agents = [f"player_{p}" for p in range(self.config.players)]
        self.agents: list[str] = []
        self.render_mode = None
        self._seats = {agent: p for p, agent in enumerate(self.possible_agents)}
        self._rng = np.random.default_rng()

    def observation_space(self, agent: str) -> spaces.Space:
        return self.seat_format.observation_space

    def action_space(self, agent: str) -> spaces.Space:
        return self.seat_format.action_space

    def reset(
        self, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """A new map (from `seed`, else the env's generator); `options` is accepted and unused."""
        if seed is not None:
            self._rng = np.random.default_rng(seed)
        self.backend.reset(self.game_ids, self._rng.integers(_SEED_BOUND, size=1, dtype=np.int64))
        self.agents = list(self.possible_agents)
        observations = self._observations(self.backend.observe(self.game_ids), self.agents)
        masks = self._masks()
        return observations, {agent: {"action_mask": masks[self._seats[agent]]} for agent in self.agents}

    def step(self, actions: dict[str, Any]) -> tuple[dict, dict, dict, dict, dict]:
        if not self.agents:
            raise RuntimeError("the game is over: call reset()")
        moves = np.full((1, self.config.players), PASS, np.int32)
        if actions:
            seats = [self._seats[agent] for agent in actions]
            moves[0, seats] = self.seat_format.moves(np.stack([np.asarray(a) for a in actions.values()]))
        result = self.backend.step(self.game_ids, moves)
        over = bool(result.reset[0])
        view = result.final_observation if over else result.observation
        acting = self.agents
        rewards = {agent: float(result.rewards[0, self._seats[agent]]) for agent in acting}
        terminated = {agent: bool(result.terminated[0]) or rewards[agent] < 0 for agent in acting}
        truncated = {agent: bool(result.truncated[0]) for agent in acting}
        self.agents = [agent for agent in acting if not (terminated[agent] or truncated[agent])]
        infos: dict[str, dict] = {agent: {} for agent in acting}
        if not over:
            masks = self._masks()
            infos |= {agent: {"action_mask": masks[self._seats[agent]]} for agent in self.agents}
        return self._observations(view, acting), rewards, terminated, truncated, infos

    def close(self) -> None:
        if self.game_ids is not None:
            self.backend.release(self.game_ids)
            self.game_ids = None

    def _observations(self, view: Observation, agents: list[str]) -> dict[str, Any]:
        batch = self.seat_format.observations(view, self.config.players)
        return {agent: _pick(batch, (0, self._seats[agent])) for agent in agents}

    def _masks(self) -> np.ndarray:
        return self.seat_format.masks(self.backend.masks(self.game_ids)[0])


gym.register(id=ENV_ID, entry_point=GeneralsEnv, vector_entry_point=GeneralsVectorEnv)


def _observation_space(config: GameConfig, obs_format: str) -> spaces.Space:
    """Bounded spaces: the armies plane saturates at 65535 and growth caps every player's total army."""
    h, w, tiles = config.height, config.width, config.tiles
    if obs_format == "compact":
        top_code = (GENERAL + KIND_OFFSET) << 4 | config.players
        return spaces.Dict(
            {
                "codes": spaces.Box(0, top_code, (tiles,), np.uint8),
                "armies": spaces.Box(0, np.iinfo(np.uint16).max, (tiles,), np.uint16),
            }
        )
    # No move creates army (a capture costs what it defeats), so growth bounds all players' total.
    army = (
        config.players
        + (config.max_ticks // STRUCTURE_GROWTH_INTERVAL + 1) * config.structures
        + (config.max_ticks // LAND_GROWTH_INTERVAL + 1) * tiles
    )
    bounds = {
        "armies": np.iinfo(np.uint16).max,
        "owned_land_count": tiles,
        "opponent_land_count": tiles,
        "owned_army_count": army,
        "opponent_army_count": army,
        "timestep": config.max_ticks,
    }
    high = np.array([bounds.get(name, 1) for name in CHANNELS], np.float32)
    return spaces.Box(0.0, np.broadcast_to(high[:, None, None], (len(CHANNELS), h, w)), dtype=np.float32)


def _config_of(config: GameConfig | None, backend: Backend | None) -> GameConfig:
    if backend is None:
        return GameConfig() if config is None else config
    if config is not None and config != backend.config:
        raise ValueError(f"config {config} differs from the backend's {backend.config}")
    return backend.config


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")


def _pick(obs: Any, index: Any) -> Any:
    """Index a batch of observations: the array, or each array of a compact dict."""
    if isinstance(obs, dict):
        return {key: value[index] for key, value in obs.items()}
    return obs[index]


def _take(view: Observation, rows: np.ndarray) -> Observation:
    """A copy of some games' rows of every seat's view."""
    return Observation(*(getattr(view, field.name)[rows] for field in fields(Observation)))
