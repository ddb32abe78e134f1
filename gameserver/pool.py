"""GamePool: a pre-allocated GameBatch with game ids mapped to slots, vectorised.

The engine addresses games by slot (a row of the batch arrays); clients address them by
game id. Ids are handed out sequentially and never reused within a pool's life, so a stale
id is reported as unknown instead of silently addressing whatever game now holds its slot.
Live ids are kept in one sorted array (new ids are always the largest, so creating appends),
which turns id -> slot into one `np.searchsorted` plus an equality check: no Python loop over
games anywhere on the step path.

Not thread-safe: one caller at a time per pool (the kernels release the GIL, so a server
overlaps different pools, not calls on one pool).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .engine import GameBatch, GameConfig, Observation, action_masks, generate, observe, step

FREE = 0  # `slot ids` value of a slot that holds no game, which is why ids start at 1 or more

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)
_SHOWN_IDS = 8  # offending ids named in an error message


class UnknownGameError(KeyError):
    """Game ids that this pool never created or has released (the service's NOT_FOUND)."""

    def __init__(self, ids: np.ndarray) -> None:
        self.ids = np.asarray(ids, np.uint64)
        shown = self.ids[:_SHOWN_IDS].tolist()
        more = f" (and {self.ids.size - len(shown)} more)" if self.ids.size > len(shown) else ""
        self.message = f"unknown game ids (never created or released): {shown}{more}"
        super().__init__(self.message)

    def __str__(self) -> str:  # KeyError would print the message quoted, as a repr
        return self.message


class PoolFullError(ValueError):
    """A create that would take the pool past `max_games` (the service's RESOURCE_EXHAUSTED)."""


@dataclass
class PoolStep:
    """The outcome of `GamePool.step` for B games, in the order of the ids given.

    rewards, terminated and truncated describe the step just played, also for games that
    autoreset then replaced. `reset[i]` is True when game i finished and was regenerated in
    place (autoreset): its row of `observation` then shows the new episode's first view,
    and the finished episode's last view is in `final_observation` (one row per reset game,
    in the order of `np.flatnonzero(reset)`), as Gymnasium's same-step autoreset does.
    """

    rewards: np.ndarray
    terminated: np.ndarray
    truncated: np.ndarray
    reset: np.ndarray
    observation: Observation | None
    final_observation: Observation | None


def mix_seeds(pool_seed: int, ids: np.ndarray, episodes: np.ndarray) -> np.ndarray:
    """Map seeds as a pure function of (pool seed, game id, episode): splitmix64 rounds.

    Deterministic so a replay (recovery from the action log) regenerates the same maps,
    and distinct per episode so an autoreset game does not replay its previous map.
    """
    with np.errstate(over="ignore"):
        x = np.uint64(pool_seed) + np.asarray(ids, np.uint64) * _GOLDEN
        x = _splitmix(x) + (np.asarray(episodes, np.uint64) + np.uint64(1)) * _GOLDEN
        return _splitmix(x)


def _splitmix(x: np.ndarray) -> np.ndarray:
    x = (x ^ (x >> np.uint64(30))) * _MIX1
    x = (x ^ (x >> np.uint64(27))) * _MIX2
    return x ^ (x >> np.uint64(31))


def _id_array(ids: object) -> np.ndarray:
    """Ids as a 1-D uint64 array; malformed input (floats, negatives, 2-D) is a ValueError."""
    a = np.asarray(ids)
    if a.ndim != 1:
        raise ValueError(f"game ids must be a 1-D array, got shape {a.shape}")
    if a.size == 0:
        return a.astype(np.uint64)
    if not np.issubdtype(a.dtype, np.integer):
        raise ValueError(f"game ids must be integers, got dtype {a.dtype}")
    if a.dtype.kind == "i" and a.min() < 0:
        raise ValueError(f"game ids must be non-negative, got {a[a < 0][:_SHOWN_IDS].tolist()}")
    return a.astype(np.uint64, copy=False)


def _check_distinct(ids: np.ndarray) -> None:
    """Two entries for one game in one call would be ambiguous: reject the whole call."""
    if ids.size > 1 and not np.all(ids[1:] > ids[:-1]):  # ascending input: one pass suffices
        ordered = np.sort(ids)
        repeated = np.unique(ordered[1:][ordered[1:] == ordered[:-1]])
        if repeated.size:
            raise ValueError(
                f"game ids must be distinct in one call; repeated: {repeated[:_SHOWN_IDS].tolist()}"
            )


class GamePool:
    """Games of one GameConfig in pre-allocated slots, addressed by never-reused uint64 ids.

    `capacity` slots are allocated up front; a create that needs more doubles the storage
    (up to `max_games`, then PoolFullError). Resets regenerate maps in place, so the arrays
    are reallocated only when the pool grows. With `autoreset`, games that finish during a
    step are regenerated at once with a seed from `mix_seeds(seed, id, episode)`.
    Every method validates all of its input before changing anything.
    """

    def __init__(
        self,
        config: GameConfig,
        capacity: int = 1024,
        max_games: int = 1 << 20,
        *,
        seed: int = 0,
        autoreset: bool = False,
        first_id: int = 1,
    ) -> None:
        for name, value in (("capacity", capacity), ("max_games", max_games), ("first_id", first_id)):
            if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if capacity > max_games:
            raise ValueError(f"capacity ({capacity}) must not exceed max_games ({max_games})")
        if not 0 <= seed < 1 << 64 or not 1 <= first_id < 1 << 63:
            raise ValueError("seed must fit in uint64 and first_id in [1, 2**63)")
        self.config = config
        self.max_games = int(max_games)
        self.seed = int(seed)
        self.autoreset = bool(autoreset)
        self.batch = GameBatch.allocate(config, int(capacity))
        self._next_id = int(first_id)
        self._slot_ids = np.full(capacity, FREE, np.uint64)  # game id held by each slot
        self._episodes = np.zeros(capacity, np.uint64)  # resets of the game in each slot
        self._index_ids = np.zeros(0, np.uint64)  # live ids, ascending
        self._index_slots = np.zeros(0, np.int64)  # slot of _index_ids[i]

    @property
    def capacity(self) -> int:
        return self.batch.capacity

    @property
    def active_games(self) -> int:
        return self._index_ids.size

    @property
    def ids(self) -> np.ndarray:
        """Live game ids, ascending (a copy: the index is replaced on create and release)."""
        return self._index_ids.copy()

    def memory_bytes(self) -> int:
        """Resident bytes of the game storage plus the id bookkeeping (for the memory metrics)."""
        arrays = (
            *self.batch.arrays().values(),
            self._slot_ids,
            self._episodes,
            self._index_ids,
            self._index_slots,
        )
        return sum(a.nbytes for a in arrays)

    def contains(self, ids: object) -> np.ndarray:
        """bool[B]: which ids are live here (lets a server holding several pools route ids)."""
        _, found = self._lookup(_id_array(ids))
        return found

    def slots_of(self, ids: object) -> np.ndarray:
        """The slots of live games: one binary search over the sorted id index, no Python loop."""
        id_array = _id_array(ids)
        slots, found = self._lookup(id_array)
        if not found.all():
            raise UnknownGameError(id_array[~found])
        return slots

    def create(self, n: int, seeds: object = None) -> np.ndarray:
        """Start `n` new games (seeded maps) in free slots, growing if needed; returns their ids.

        Without seeds each map's seed comes from `mix_seeds(pool seed, id, 0)`.
        """
        if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 0:
            raise ValueError(f"n must be a non-negative int, got {n!r}")
        ids = np.arange(self._next_id, self._next_id + n, dtype=np.uint64)
        seeds = mix_seeds(self.seed, ids, np.zeros(n, np.uint64)) if seeds is None else np.asarray(seeds)
        if seeds.shape != (n,):  # checked before growing, so bad input leaves the pool as it was
            raise ValueError(f"seeds must have one entry per new game ({n}), got shape {seeds.shape}")
        if self.active_games + n > self.max_games:
            raise PoolFullError(
                f"pool is full: {self.active_games} games + {n} new would exceed max_games={self.max_games}"
            )
        free = np.flatnonzero(self._slot_ids == FREE)
        if free.size < n:
            self._grow(self.active_games + n)
            free = np.flatnonzero(self._slot_ids == FREE)
        slots = free[:n]
        generate(self.batch, slots, seeds)  # validates seeds; the id maps change only after it succeeds
        self._next_id += n
        self._slot_ids[slots] = ids
        self._episodes[slots] = 0
        self._index_ids = np.concatenate([self._index_ids, ids])
        self._index_slots = np.concatenate([self._index_slots, slots])
        return ids

    def reset(self, ids: object, seeds: object = None) -> None:
        """Regenerate these games' maps in place (same ids, same arrays, a new episode).

        Without seeds each map's seed comes from `mix_seeds(pool seed, id, episode)`.
        """
        slots = self._slots_checked(ids)
        episodes = self._episodes[slots] + np.uint64(1)
        if seeds is None:
            seeds = mix_seeds(self.seed, self._slot_ids[slots], episodes)
        generate(self.batch, slots, seeds)
        self._episodes[slots] = episodes

    def release(self, ids: object) -> None:
        """End these games and free their slots; their ids are never handed out again."""
        slots = self._slots_checked(ids)
        self._slot_ids[slots] = FREE
        keep = self._slot_ids[self._index_slots] != FREE
        self._index_ids = self._index_ids[keep]
        self._index_slots = self._index_slots[keep]

    def step(
        self, ids: object, actions: object, observe: bool = True, out: Observation | None = None
    ) -> PoolStep:
        """Play one tick of these games: actions int[B, players] of flat moves (-1 = pass).

        With `observe`, post-step views are written by the fused step+observe kernel into
        `out` (e.g. views of a wire buffer from `codec.allocate_observation`) or a new buffer.
        """
        slots = self._slots_checked(ids)
        if observe and out is None:
            out = Observation.allocate(self.config, slots.size)
        out = out if observe else None
        result = step(self.batch, slots, actions, out)
        reset = (result.terminated | result.truncated) if self.autoreset else np.zeros(slots.size, np.bool_)
        final = None
        if reset.any():
            rows = np.flatnonzero(reset)
            final = None if out is None else _take(out, rows)
            self._autoreset(slots[rows], rows, out)
        return PoolStep(result.rewards, result.terminated, result.truncated, reset, out, final)

    def observe(self, ids: object, out: Observation | None = None) -> Observation:
        """Every player's fog-of-war view of these games."""
        return observe(self.batch, self._slots_checked(ids), out)

    def masks(self, ids: object) -> np.ndarray:
        """Legal moves, bit-packed uint8[B, players, mask bytes] (see engine.action_masks)."""
        return action_masks(self.batch, self._slots_checked(ids))

    def _lookup(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self._index_ids.size == 0:
            return np.zeros(ids.size, np.int64), np.zeros(ids.size, np.bool_)
        pos = np.minimum(np.searchsorted(self._index_ids, ids), self._index_ids.size - 1)
        return self._index_slots[pos], self._index_ids[pos] == ids

    def _slots_checked(self, ids: object) -> np.ndarray:
        id_array = _id_array(ids)
        _check_distinct(id_array)
        return self.slots_of(id_array)

    def _grow(self, needed: int) -> None:
        """Double the storage until `needed` games fit (capped at max_games); games keep their slots."""
        capacity = self.capacity
        while capacity < needed:
            capacity *= 2
        capacity = min(capacity, self.max_games)
        extra = capacity - self.capacity
        self.batch = self.batch.resized(capacity)
        self._slot_ids = np.concatenate([self._slot_ids, np.full(extra, FREE, np.uint64)])
        self._episodes = np.concatenate([self._episodes, np.zeros(extra, np.uint64)])

    def _autoreset(self, slots: np.ndarray, rows: np.ndarray, out: Observation | None) -> None:
        """Regenerate finished games; with `out`, overwrite their rows with the new first views."""
        episodes = self._episodes[slots] + np.uint64(1)
        generate(self.batch, slots, mix_seeds(self.seed, self._slot_ids[slots], episodes))
        self._episodes[slots] = episodes
        if out is not None:
            fresh = observe(self.batch, slots)
            for name in ("codes", "armies", "land", "army", "tick"):
                getattr(out, name)[rows] = getattr(fresh, name)


def _take(obs: Observation, rows: np.ndarray) -> Observation:
    """A copy of some games' rows of an observation (the last views before an autoreset)."""
    return Observation(obs.codes[rows], obs.armies[rows], obs.land[rows], obs.army[rows], obs.tick[rows])
