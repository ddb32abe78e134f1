"""Gymnasium and PettingZoo adapters over a batch-of-games backend (in-process pool or the fleet).

- `GeneralsVectorEnv`: `num_envs` games stepped in one batch; the learner holds seat 0, scripted
  numba agents hold the other seats. Same-step autoreset, as the pool does it.
- `GeneralsEnv`: one such game as a plain `gymnasium.Env` (what `check_env` and single-env code take).
- `GeneralsParallelEnv`: one game, every seat an agent (self-play, PettingZoo Parallel API).

Observations come in generals-bots' 15-channel layout (`obs_format="planes"`), as the engine's
compact codes/armies (`"compact"`) or as generals-bots' own `Observation` objects, planes in its
dtypes (`"generals"`, see bots.py: its agents' `act()` take them; `pad_to=24` pads as it does);
actions as one flat index (`action_format="flat"`: the
engine's flat moves, plus index `H*W*8` for pass) or generals-bots' `[pass, row, col, dir, split]`
(`"generals"`). `info["action_mask"]` is bool over the flat index space in both action formats:
index `((row*W + col)*4 + dir)*2 + split`, and the last index (pass) is always legal.
`render_mode="rgb_array"`: `render()` returns the board as the learner sees it (a vector env: one
frame per sub-env; the parallel env: what any seat sees) as RGB arrays; `"human"` (GeneralsEnv and
GeneralsParallelEnv, where a display exists) shows it in a window every step (see `render.py`).

Importing this module registers `ENV_ID` with Gymnasium: `gymnasium.make(ENV_ID, config=...)` makes
a `GeneralsEnv`, `gymnasium.make_vec(ENV_ID, num_envs=n)` a `GeneralsVectorEnv`. Gymnasium 1.x loads
no plugins by entry point: `gymnasium.make("gameserver.envs:GameFleet/Generals-v0")` imports and
registers in one call (`MAKE_ID`).
"""

from __future__ import annotations

import collections
from collections.abc import Sequence
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
from ..engine.maps import GameMap, MapBatch
from ..pool import GamePool, PoolStep
from .bots import board_size, generals_fields, generals_space, pad_planes, to_observation
from .planes import CHANNELS, generals_planes
from .render import RENDER_FPS, RENDER_MODES, Window, check_render_mode, observation_frame

ENV_ID = "GameFleet/Generals-v0"
OBS_FORMATS = ("planes", "compact", "generals")
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

    def send(self, ids: np.ndarray, actions: np.ndarray) -> None:
        """Start `step(ids, actions)` without waiting for it (several may be in flight, on
        distinct games); `recv` returns the results in send order."""
        ...

    def recv(self) -> PoolStep:
        """The result of the oldest step `send` started."""
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
        self._sent: collections.deque[tuple[np.ndarray, np.ndarray]] = collections.deque()

    def create(
        self, n: int, seeds: np.ndarray | None = None, maps: Sequence[GameMap] | MapBatch | None = None
    ) -> np.ndarray:
        """As the Backend's create; `maps` (one per game): the first episodes start on them."""
        return self._pool.create(n, seeds, maps=maps)

    def reset(
        self,
        ids: np.ndarray,
        seeds: np.ndarray | None = None,
        maps: Sequence[GameMap] | MapBatch | None = None,
    ) -> None:
        """As the Backend's reset; `maps` (one per game): the new episodes start on them."""
        self._pool.reset(ids, seeds, maps)

    def step(self, ids: np.ndarray, actions: np.ndarray) -> PoolStep:
        return self._pool.step(ids, actions)

    def send(self, ids: np.ndarray, actions: np.ndarray) -> None:
        self._sent.append((ids, np.array(actions)))  # stepped at `recv`: nothing runs beside it here

    def recv(self) -> PoolStep:
        return self.step(*self._sent.popleft())

    def observe(self, ids: np.ndarray) -> Observation:
        return self._pool.observe(ids)

    def masks(self, ids: np.ndarray) -> np.ndarray:
        return self._pool.masks(ids)

    def release(self, ids: np.ndarray) -> None:
        self._pool.release(ids)


class SeatFormat:
    """One seat's spaces, and the batched conversions between them and the engine's arrays."""

    def __init__(
        self,
        config: GameConfig,
        obs_format: str = "planes",
        action_format: str = "flat",
        pad_to: int | None = None,
    ) -> None:
        _check_choice("obs_format", obs_format, OBS_FORMATS)
        _check_choice("action_format", action_format, ACTION_FORMATS)
        rows, cols = board_size(config, pad_to)
        if pad_to is not None and obs_format == "compact":
            raise ValueError('pad_to pads board planes: obs_format "planes" or "generals", not "compact"')
        self.config = config
        self.obs_format = obs_format
        self.action_format = action_format
        self.pad_to = pad_to
        self.n_actions = config.num_actions + 1  # flat moves, then pass
        self.observation_space = _observation_space(config, obs_format, pad_to)
        if action_format == "flat":
            self.action_space: spaces.Space = spaces.Discrete(self.n_actions)
        else:  # padded like the observations: moves from the padding are passes
            self.action_space = spaces.MultiDiscrete([2, rows, cols, 4, 2])

    def observations(self, view: Observation, seats: int) -> Any:
        """The first `seats` seats' observations, [games, seats, ...], in fresh arrays.

        Only those seats' planes are built (a learner needs one seat of P); the opponent land/army
        counts need every seat's totals, so they are rewritten from the whole view.
        """
        if self.obs_format == "compact":
            return {"codes": view.codes[:, :seats].copy(), "armies": view.armies[:, :seats].copy()}
        cfg = self.config
        if self.obs_format == "generals":
            return generals_fields(
                view.codes, view.armies, view.land, view.army, view.tick, cfg, seats, self.pad_to
            )
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
        return pad_planes(planes, self.pad_to, CHANNELS.index("mountains"))

    def agent_observation(self, obs: Any) -> Any:
        """One seat's observation as handed to an agent: a generals-bots `Observation` object for
        obs_format="generals" (what its agents' `act()` take), else as it is."""
        return to_observation(obs) if self.obs_format == "generals" else obs

    def moves(self, actions: object) -> np.ndarray:
        """A batch of actions in this format ([n] flat or [n, 5] generals-bots) -> engine flat int32 [n]."""
        a = np.asarray(actions)
        if self.action_format == "generals":
            if a.ndim != 2 or a.shape[1] != 5:
                raise ValueError(
                    f'action_format="generals" takes generals-bots actions [pass, row, col, dir, split] '
                    f"(one per sub-env/agent), got shape {a.shape}"
                )
            return from_generals_bots(a, self.config.height, self.config.width)
        if a.ndim != 1:
            raise ValueError(
                f'action_format="flat" takes one int per sub-env/agent, got shape {a.shape}; generals-bots '
                "actions [pass, row, col, dir, split] (such as its agents' Action) need "
                'action_format="generals"'
            )
        if not np.issubdtype(a.dtype, np.integer):
            raise ValueError(f'action_format="flat" takes integer actions, got dtype {a.dtype}')
        if a.size and (a.min() < 0 or a.max() >= self.n_actions):
            raise ValueError(
                f'action_format="flat" actions must be in [0, {self.n_actions}): '
                f"((row*W + col)*4 + dir)*2 + split, and {self.n_actions - 1} is pass"
            )
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

    metadata: ClassVar[dict[str, Any]] = {
        "autoreset_mode": AutoresetMode.SAME_STEP,
        "render_modes": ["rgb_array"],
        "render_fps": RENDER_FPS,
    }

    def __init__(
        self,
        num_envs: int,
        config: GameConfig | None = None,
        *,
        opponent: str = "expander",
        obs_format: str = "planes",
        action_format: str = "flat",
        backend: Backend | None = None,
        batch_size: int | None = None,
        pad_to: int | None = None,
        render_mode: str | None = None,
    ) -> None:
        if render_mode not in (None, *self.metadata["render_modes"]):
            raise ValueError(f"render_mode must be None or 'rgb_array' on a vector env, got {render_mode!r}")
        self.render_mode = render_mode
        if isinstance(num_envs, bool) or not isinstance(num_envs, int) or num_envs < 1:
            raise ValueError(f"num_envs must be a positive int, got {num_envs!r}")
        batch_size = num_envs if batch_size is None else batch_size
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or not 1 <= batch_size <= num_envs:
            raise ValueError(f"batch_size must be an int in [1, num_envs={num_envs}], got {batch_size!r}")
        if num_envs % batch_size:
            raise ValueError(f"batch_size must divide num_envs ({num_envs}), got {batch_size}")
        _check_choice("opponent", opponent, tuple(OPPONENTS))
        self.config = _config_of(config, backend)
        self.num_envs = num_envs
        self.batch_size = batch_size
        self.seat_format = SeatFormat(self.config, obs_format, action_format, pad_to)
        self.single_observation_space = self.seat_format.observation_space
        self.single_action_space = self.seat_format.action_space
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        self.action_space = batch_space(self.single_action_space, num_envs)
        self._opponent = OPPONENTS[opponent]
        self.backend = LocalBackend(self.config, capacity=num_envs) if backend is None else backend
        self.game_ids = self.backend.create(num_envs)
        self._groups = np.arange(num_envs).reshape(-1, batch_size)  # what send/recv move at once
        self._views: list[Observation | None] = [None] * len(self._groups)  # every seat's latest view
        self._pending: collections.deque[tuple[str, int]] = collections.deque()  # (kind, group) sent
        self._agent_seed = 0

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[Any, dict[str, Any]]:
        """Start a new episode in every sub-env (`options` is accepted and unused)."""
        super().reset(seed=seed)
        self._pending.clear()
        self.backend.reset(self.game_ids, self._draw_seeds(self.num_envs))
        self._agent_seed = int(self.np_random.integers(_SEED_BOUND))
        view = self.backend.observe(self.game_ids)
        self._views = [_take(view, rows) for rows in self._groups] if len(self._groups) > 1 else [view]
        return self._learner_obs(view), self._infos(self.game_ids)

    def step(self, actions: object) -> tuple[Any, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        """Play one tick in every sub-env: the learner's `actions` for seat 0, scripted moves elsewhere."""
        if len(self._groups) > 1:
            raise RuntimeError(f"batch_size {self.batch_size} < num_envs: use send(actions, env_id), recv()")
        moves = self._moves(0, actions)
        obs, rewards, terminated, truncated, infos = self._finish(0, self.backend.step(self.game_ids, moves))
        infos.pop("env_id")
        return obs, rewards, terminated, truncated, infos

    def step_async(self, actions: object) -> None:
        """Start `step(actions)` and return at once (with a fleet backend the shards step while the
        caller works); `step_wait` returns its result. Needs batch_size == num_envs."""
        if len(self._groups) > 1:
            raise RuntimeError(f"batch_size {self.batch_size} < num_envs: use send(actions, env_id), recv()")
        self.send(actions, self._groups[0])

    def step_wait(self) -> tuple[Any, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        """The result of the step `step_async` started."""
        obs, rewards, terminated, truncated, infos = self.recv()
        infos.pop("env_id")
        return obs, rewards, terminated, truncated, infos

    def async_reset(self, *, seed: int | None = None) -> None:
        """EnvPool's start: reset every sub-env; each batch's first observations come from `recv`."""
        self.reset(seed=seed)
        self._pending.extend(("reset", g) for g in range(len(self._groups)))

    def send(self, actions: object, env_id: object = None) -> None:
        """Start a step of the `batch_size` sub-envs `env_id` (as a `recv` returned them; None: all,
        when batch_size == num_envs) with the learner's `actions`, and return at once."""
        rows = self._groups[0] if env_id is None else np.asarray(env_id)
        whole = rows.shape == (self.batch_size,)
        matches = np.flatnonzero((self._groups == rows).all(axis=1)) if whole else []
        if len(matches) != 1:
            raise ValueError(f"env_id must be one batch of {self.batch_size} sub-envs as recv() returned it")
        group = int(matches[0])
        if any(g == group for _, g in self._pending):
            raise RuntimeError(f"sub-envs {rows[:4].tolist()}...: recv() their last step first")
        self.backend.send(self.game_ids[rows], self._moves(group, actions))
        self._pending.append(("step", group))

    def _moves(self, group: int, actions: object) -> np.ndarray:
        """Every seat's moves for a batch: the learner's `actions` at seat 0, scripted elsewhere."""
        view = self._views[group]
        if view is None:
            raise RuntimeError("call reset() (or async_reset()) before stepping")
        learner = self.seat_format.moves(actions)
        if learner.shape != (self.batch_size,):
            raise ValueError(f"expected one action per sub-env ({self.batch_size}), got {np.shape(actions)}")
        cfg = self.config
        first = group * self.batch_size  # each game draws as in one whole batch
        moves = self._opponent(
            view.codes, view.armies, view.tick, cfg.height, cfg.width, self._agent_seed, first=first
        )
        moves[:, 0] = learner
        return moves

    def recv(self) -> tuple[Any, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        """The oldest sent batch's step (or, after `async_reset`, its first observations):
        obs, rewards, terminated, truncated and infos of its sub-envs, `infos["env_id"]` naming them."""
        if not self._pending:
            raise RuntimeError("recv() with nothing sent: send() (or async_reset()) first")
        kind, group = self._pending.popleft()
        if kind == "step":
            return self._finish(group, self.backend.recv())
        rows = self._groups[group]
        zeros = np.zeros(rows.size, np.bool_)
        infos = self._infos(self.game_ids[rows]) | {"env_id": rows}
        return (
            self._learner_obs(self._views[group]),
            np.zeros(rows.size, np.float32),
            zeros,
            zeros.copy(),
            infos,
        )

    def _finish(
        self, group: int, result: PoolStep
    ) -> tuple[Any, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        """A batch's step result as the learner sees it; restarts the games it lost."""
        rows = self._groups[group]
        ids = self.game_ids[rows]
        view = result.observation
        lost = (result.rewards[:, 0] < 0) & ~result.reset  # eliminated from a game that goes on
        done = result.reset | lost
        infos: dict[str, Any] = {"env_id": rows}
        if done.any():
            final_obs = np.full(rows.size, None, dtype=object)
            self._put_final(final_obs, np.flatnonzero(result.reset), result.final_observation)
            if lost.any():
                lost_rows = np.flatnonzero(lost)
                self._put_final(final_obs, lost_rows, _take(view, lost_rows))
                view = self._restart_rows(view, ids, lost_rows)
            infos |= {"final_obs": final_obs, "_final_obs": done}
            infos |= {"final_info": {}, "_final_info": done.copy()}
        self._views[group] = view
        rewards = result.rewards[:, 0].copy()
        terminated = result.terminated | lost
        return self._learner_obs(view), rewards, terminated, result.truncated.copy(), self._infos(ids) | infos

    def render(self) -> tuple[np.ndarray, ...] | None:
        """Each sub-env's board as the learner (seat 0) sees it now: RGB uint8 [H*20, W*20, 3] frames."""
        if self.render_mode is None:
            return None
        h, w = self.config.height, self.config.width
        views = [view for view in self._views if view is not None]
        return tuple(
            observation_frame(v.codes[g], v.armies[g], 0, h, w) for v in views for g in range(len(v.tick))
        )

    def close_extras(self, **kwargs: Any) -> None:
        if self.game_ids is not None:
            while self._pending:  # let the steps in flight land before their games go
                kind, _ = self._pending.popleft()
                if kind == "step":
                    self.backend.recv()
            self.backend.release(self.game_ids)
            self.game_ids = None

    def _draw_seeds(self, n: int) -> np.ndarray:
        return self.np_random.integers(_SEED_BOUND, size=n, dtype=np.int64).astype(np.uint64)

    def _learner_obs(self, view: Observation) -> Any:
        return _pick(self.seat_format.observations(view, 1), np.s_[:, 0])

    def _infos(self, ids: np.ndarray) -> dict[str, Any]:
        masks = self.seat_format.masks(self.backend.masks(ids)[:, 0])
        return {"action_mask": masks, "_action_mask": np.ones(ids.size, np.bool_)}

    def _put_final(self, final_obs: np.ndarray, rows: np.ndarray, view: Observation | None) -> None:
        """Store some sub-envs' last observations, one object per sub-env as gymnasium's SAME_STEP
        expects (the only per-env Python work, and only for sub-envs that just finished)."""
        if rows.size:
            items = iterate(self._batched_space(rows.size), self._learner_obs(view))
            final_obs[rows] = np.fromiter(items, dtype=object, count=rows.size)

    def _batched_space(self, n: int) -> spaces.Space:
        return self.observation_space if n == self.num_envs else batch_space(self.single_observation_space, n)

    def _restart_rows(self, view: Observation, ids: np.ndarray, rows: np.ndarray) -> Observation:
        """Regenerate these games (the learner lost but others still play); `view` showing their starts.

        The result is a copy: a remote backend's observations may be read-only views of its buffers.
        """
        self.backend.reset(ids[rows], self._draw_seeds(rows.size))
        fresh = self.backend.observe(ids[rows])
        merged = _take(view, np.arange(ids.size))
        for field in fields(Observation):
            getattr(merged, field.name)[rows] = getattr(fresh, field.name)
        return merged


class GeneralsEnv(gym.Env):
    """One game against scripted opponents as a plain `gymnasium.Env` (a one-game vector env inside).

    A finished episode returns its final observation and an empty info; call `reset()` then.
    """

    metadata: ClassVar[dict[str, Any]] = {"render_modes": list(RENDER_MODES), "render_fps": RENDER_FPS}

    def __init__(
        self,
        config: GameConfig | None = None,
        *,
        opponent: str = "expander",
        obs_format: str = "planes",
        action_format: str = "flat",
        backend: Backend | None = None,
        pad_to: int | None = None,
        render_mode: str | None = None,
    ) -> None:
        self.render_mode = check_render_mode(render_mode)
        self._window: Window | None = None
        self._vec = GeneralsVectorEnv(
            1,
            config,
            opponent=opponent,
            obs_format=obs_format,
            action_format=action_format,
            backend=backend,
            pad_to=pad_to,
            render_mode=render_mode and "rgb_array",
        )
        self.config = self._vec.config
        self.observation_space = self._vec.single_observation_space
        self.action_space = self._vec.single_action_space

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[Any, dict[str, Any]]:
        super().reset(seed=seed)
        obs, infos = self._vec.reset(seed=int(self.np_random.integers(_SEED_BOUND)))
        self._show()
        return self._vec.seat_format.agent_observation(_pick(obs, 0)), {
            "action_mask": infos["action_mask"][0]
        }

    def step(self, action: object) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        obs, rewards, terminated, truncated, infos = self._vec.step(np.asarray(action)[None])
        self._show()
        ended = bool(terminated[0] or truncated[0])
        obs = infos["final_obs"][0] if ended else _pick(obs, 0)
        info = {} if ended else {"action_mask": infos["action_mask"][0]}
        return (
            self._vec.seat_format.agent_observation(obs),
            float(rewards[0]),
            bool(terminated[0]),
            bool(truncated[0]),
            info,
        )

    def render(self) -> np.ndarray | None:
        """The board as the learner (seat 0) sees it: an RGB frame ("rgb_array"); "human" shows it."""
        frame = None if self.render_mode is None else self._vec.render()[0]
        if self.render_mode != "human":
            return frame
        self._window = self._window or Window(f"GameFleet {self.config.height}x{self.config.width}")
        self._window.show(frame)
        return None

    def _show(self) -> None:
        if self.render_mode == "human":
            self.render()

    def close(self) -> None:
        if self._window is not None:
            self._window.close()
            self._window = None
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
        "render_modes": list(RENDER_MODES),
        "render_fps": RENDER_FPS,
        "is_parallelizable": True,
    }

    def __init__(
        self,
        config: GameConfig | None = None,
        *,
        obs_format: str = "planes",
        action_format: str = "flat",
        backend: Backend | None = None,
        pad_to: int | None = None,
        render_mode: str | None = None,
    ) -> None:
        self.render_mode = check_render_mode(render_mode)
        self._window: Window | None = None
        self.config = _config_of(config, backend)
        self.seat_format = SeatFormat(self.config, obs_format, action_format, pad_to)
        self.backend = LocalBackend(self.config) if backend is None else backend
        self.game_ids = self.backend.create(1)
        self.possible_agents = [f"player_{p}" for p in range(self.config.players)]
        self.agents: list[str] = []
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
        if self.render_mode == "human":
            self.render()
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
        if self.render_mode == "human":
            self.render()
        return self._observations(view, acting), rewards, terminated, truncated, infos

    def render(self) -> np.ndarray | None:
        """The board as any seat sees it now (a finished game shows the next one's start): an RGB
        frame ("rgb_array"); "human" shows it in a window."""
        if self.render_mode is None:
            return None
        view = self.backend.observe(self.game_ids)
        frame = observation_frame(view.codes[0], view.armies[0], None, self.config.height, self.config.width)
        if self.render_mode == "rgb_array":
            return frame
        self._window = self._window or Window(f"GameFleet {self.config.height}x{self.config.width}")
        self._window.show(frame)
        return None

    def close(self) -> None:
        if self._window is not None:
            self._window.close()
            self._window = None
        if self.game_ids is not None:
            self.backend.release(self.game_ids)
            self.game_ids = None

    def _observations(self, view: Observation, agents: list[str]) -> dict[str, Any]:
        batch = self.seat_format.observations(view, self.config.players)
        pick = self.seat_format.agent_observation
        return {agent: pick(_pick(batch, (0, self._seats[agent]))) for agent in agents}

    def _masks(self) -> np.ndarray:
        return self.seat_format.masks(self.backend.masks(self.game_ids)[0])


gym.register(id=ENV_ID, entry_point=GeneralsEnv, vector_entry_point=GeneralsVectorEnv)


def _observation_space(config: GameConfig, obs_format: str, pad_to: int | None = None) -> spaces.Space:
    """Bounded spaces: the armies plane saturates at 65535 and growth caps every player's total army."""
    tiles = config.tiles
    h, w = board_size(config, pad_to)
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
    if obs_format == "generals":
        return generals_space(config, pad_to, army)
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
