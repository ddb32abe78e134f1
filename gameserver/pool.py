"""GamePool: a pre-allocated GameBatch with game ids mapped to slots, vectorised.

The engine addresses games by slot (a row of the batch arrays); clients address them by
game id. Ids come from an IdSource whose counter only moves forward, so a stale id is
reported as unknown instead of silently addressing whatever game now holds its slot.
Live ids are kept in one sorted array, which turns id -> slot into one `np.searchsorted`
plus an equality check: no Python loop over games anywhere on the step path.

Validation happens once per call: `select(ids)` checks the ids (well-formed, distinct, live)
and resolves them to slots; every method takes either raw ids or that Selection, and hands the
engine checked slots. A Selection is valid until the pool releases a game (its `version`), so a
trainer sending the same ids call after call is resolved once and then recognised.

Not thread-safe: one caller at a time per pool (the kernels release the GIL, so a server
overlaps different pools, not calls on one pool).
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from .engine import GameBatch, GameConfig, Observation, action_masks, generate, observe, step
from .engine.checks import check_actions
from .engine.maps import GameMap, MapBatch, check_maps, load_maps
from .sharding import make_game_ids
from .wire import codec

if TYPE_CHECKING:  # numba loads only with the kernels
    from .engine.api import StepVariant

FREE = 0  # `_slot_ids` value of a slot that holds no game; no id is 0 (local ids start at 1)

_SALT = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)
_LOCAL_LIMIT = 1 << 32  # local ids fill the low 32 bits (sharding: the key hash is the high half)
_SHOWN_IDS = 8  # offending ids named in an error message


class UnknownGameError(KeyError):
    """Game ids that this pool never created or has released (the service's NOT_FOUND)."""

    status_code = "NOT_FOUND"

    def __init__(self, ids: np.ndarray) -> None:
        self.ids = np.asarray(ids, np.uint64)
        shown = self.ids[:_SHOWN_IDS].tolist()
        more = f" (and {self.ids.size - len(shown)} more)" if self.ids.size > len(shown) else ""
        self.message = f"unknown game ids (never created or released): {shown}{more}"
        super().__init__(self.message)

    def __str__(self) -> str:  # KeyError would print the message quoted, as a repr
        return self.message


class PoolFullError(ValueError):
    """A create or adopt that would take the pool past `max_games` (the service's RESOURCE_EXHAUSTED)."""

    status_code = "RESOURCE_EXHAUSTED"


@dataclass(frozen=True)
class Selection:
    """Game ids of one pool resolved to their slots: well-formed, distinct and live when made.

    Valid while the pool's `version` is unchanged (only releasing games changes what a live id's
    slot holds); the pool re-resolves a stale one. Its `ids` array is never modified.
    """

    ids: np.ndarray  # uint64[B], in the caller's order
    slots: np.ndarray  # int64[B], contiguous
    version: int
    pool: object = field(repr=False, compare=False)  # the pool that made it: no other may trust it

    @property
    def size(self) -> int:
        return self.ids.size


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


def derive_seeds(base: object, ids: object) -> np.ndarray:
    """Map seeds as a pure function of (base, game id): splitmix64 rounds, one-to-one in each.

    A new game's base is the pool seed; a reset game's is its current map seed. So the maps a
    game plays follow from its first seed and its id alone, and replaying the action log after
    a restore (snapshots hold the map seed) regenerates the same maps on any shard.
    """
    with np.errstate(over="ignore"):
        return _splitmix(np.asarray(base, np.uint64) ^ _splitmix(np.asarray(ids, np.uint64) ^ _SALT))


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


class IdSource:
    """Issues game ids in sharding's layout: placement key hash high, a local counter low.

    The counter only moves forward, so no id is handed out twice. A shard shares one source
    among its pools, which keeps ids unique across the shard (a request's ids then name one
    pool each); games adopted from elsewhere push the counter past their local ids.
    """

    def __init__(self, first: int = 1) -> None:
        if isinstance(first, bool) or not isinstance(first, int) or not 1 <= first < _LOCAL_LIMIT:
            raise ValueError(f"first local id must be an int in [1, 2**32), got {first!r}")
        self._next = first

    def peek(self, n: int, key_hash: int = 0) -> np.ndarray:
        """The next n ids for this key, without issuing them (issue with `skip_past`)."""
        _check_key_hash(key_hash)
        if self._next + n > _LOCAL_LIMIT:
            raise ValueError(f"local game ids exhausted: {n} more would pass 2**32")
        return make_game_ids(int(key_hash), np.arange(self._next, self._next + n, dtype=np.uint64))

    def skip_past(self, ids: np.ndarray) -> None:
        """Never issue the local ids of these games (or any below them) again."""
        if ids.size:
            self._next = max(self._next, int((ids & np.uint64(_LOCAL_LIMIT - 1)).max()) + 1)


class UnguessableIds(IdSource):
    """Ids whose local half starts at a random point per create (the OS's randomness), consecutive
    from there (the log stores one create's ids as a run): knowing one game's id, or the placement
    key, names no other game. `taken(ids)` says whether any is live already; a draw that hits one
    is drawn again. A closed game's id may come back (one chance in 2**32 per create)."""

    _DRAWS = 16

    def __init__(self, taken: Callable[[np.ndarray], bool]) -> None:
        super().__init__()
        self._taken = taken

    def peek(self, n: int, key_hash: int = 0) -> np.ndarray:
        _check_key_hash(key_hash)
        if n > _LOCAL_LIMIT // 2:
            raise ValueError(f"{n} games in one create: at most 2**31")
        for _ in range(self._DRAWS):
            first = 1 + secrets.randbelow(_LOCAL_LIMIT - 1 - n)
            ids = make_game_ids(int(key_hash), np.arange(first, first + n, dtype=np.uint64))
            if not self._taken(ids):
                return ids
        raise ValueError(f"no free run of {n} game ids under this placement key: too many games share it")

    def skip_past(self, ids: np.ndarray) -> None:
        """Nothing to skip: every draw is checked against the live games."""


def _check_key_hash(key_hash: object) -> None:
    if (
        isinstance(key_hash, bool)
        or not isinstance(key_hash, int | np.integer)
        or not 0 <= key_hash < 1 << 32
    ):
        raise ValueError(f"key_hash must be a 32-bit unsigned int, got {key_hash!r}")


class GamePool:
    """Games of one GameConfig in pre-allocated slots, addressed by never-reused uint64 ids.

    `capacity` slots are allocated up front; taking in more games doubles the storage (up to
    `max_games`, then PoolFullError). Resets regenerate maps in place, so the arrays are
    reallocated only when the pool grows. With `autoreset`, games that finish during a step
    are regenerated at once with the seed `derive_seeds(map seed, id)`.
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
        id_source: IdSource | None = None,
    ) -> None:
        for name, value in (("capacity", capacity), ("max_games", max_games)):
            if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if capacity > max_games:
            raise ValueError(f"capacity ({capacity}) must not exceed max_games ({max_games})")
        if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or not 0 <= seed < 1 << 64:
            raise ValueError(f"seed must be an int in [0, 2**64), got {seed!r}")
        self.config = config
        self.max_games = int(max_games)
        self.seed = int(seed)
        self.autoreset = bool(autoreset)
        self.id_source = IdSource() if id_source is None else id_source
        self.batch = GameBatch.allocate(config, int(capacity))
        self._slot_ids = np.full(capacity, FREE, np.uint64)  # game id held by each slot
        self._index_ids = np.zeros(0, np.uint64)  # live ids, ascending
        self._index_slots = np.zeros(0, np.int64)  # slot of _index_ids[i]
        self._version = 0  # bumped whenever a game is released (Selections made before go stale)
        self._last: Selection | None = None  # the last selection made: a trainer resends its ids

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
        arrays = (*self.batch.arrays().values(), self._slot_ids, self._index_ids, self._index_slots)
        return sum(a.nbytes for a in arrays)

    def growth_bytes(self, n: int) -> int:
        """Bytes that taking in n more games allocates: the grown storage (held beside the old one
        while the games are copied into it) and the id bookkeeping; 0 when free slots suffice."""
        capacity = self._grown_capacity(n)
        if capacity == self.capacity:
            return 0
        per_slot = sum(a.nbytes for a in self.batch.arrays().values()) // self.capacity + 8  # + slot id
        return capacity * per_slot + (self.active_games + n) * 16  # + the id index (id, slot)

    def _grown_capacity(self, n: int) -> int:
        """The capacity after taking in n more games: doubled until they fit, capped at max_games."""
        capacity = self.capacity
        while capacity < self.active_games + n:
            capacity *= 2
        return min(capacity, self.max_games)

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

    def select(self, ids: object) -> Selection:
        """Check these ids once (well-formed, distinct, live) and resolve them to their slots.

        A Selection of this pool that is still current passes as it is; the same ids as the last
        selection (a trainer's batch, call after call) give back that selection.
        """
        if isinstance(ids, Selection):
            if ids.pool is self and ids.version == self._version:
                return ids
            ids = ids.ids
        last = self._last
        if (
            last is not None
            and last.version == self._version
            and isinstance(ids, np.ndarray)
            and ids.dtype == np.uint64
            and np.array_equal(ids, last.ids)
        ):
            return last
        id_array = _id_array(ids)
        _check_distinct(id_array)
        id_array = id_array.copy() if id_array is ids else id_array  # the caller may reuse its array
        self._last = Selection(id_array, np.ascontiguousarray(self.slots_of(id_array)), self._version, self)
        return self._last

    def create(
        self,
        n: int,
        seeds: object = None,
        key_hash: int = 0,
        maps: Sequence[GameMap] | MapBatch | None = None,
    ) -> np.ndarray:
        """Start `n` new games (seeded maps) in free slots, growing if needed; returns their ids.

        `key_hash` is the placement key's hash (sharding.placement_hash), carried in the ids'
        high half. Without seeds, each map's seed is `derive_seeds(pool seed, id)`.
        `maps` (one `engine.maps.GameMap` per game, or a MapBatch): the games start on these maps
        instead; their seeds then only seed the maps an autoreset draws next.
        """
        if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 0:
            raise ValueError(f"n must be a non-negative int, got {n!r}")
        ids = self.id_source.peek(int(n), key_hash)
        seeds = derive_seeds(self.seed, ids) if seeds is None else np.asarray(seeds)
        if seeds.shape != (n,):  # checked before growing, so bad input leaves the pool as it was
            raise ValueError(f"seeds must have one entry per new game ({n}), got shape {seeds.shape}")
        if maps is not None:
            check_maps(self.config, maps, n)  # before growing, as the seeds
        slots = self._free_slots(n)
        if maps is None:
            generate(self.batch, slots, seeds)  # validates seeds; ids are issued only once it succeeds
        else:
            load_maps(self.batch, slots, maps, seeds)
        self._register(ids, slots)
        return ids

    def adopt(self, ids: object, snapshot: codec.Snapshot) -> None:
        """Take in games from elsewhere (recovery, migration) keeping their ids and exact state."""
        id_array = _id_array(ids)
        _check_distinct(id_array)
        if snapshot.config != self.config:
            raise ValueError(f"snapshot config {snapshot.config} differs from the pool's {self.config}")
        if id_array.size != snapshot.games:
            raise ValueError(f"{id_array.size} ids for a snapshot of {snapshot.games} games")
        live = self.contains(id_array)
        if live.any():
            raise ValueError(f"game ids already live in this pool: {id_array[live][:_SHOWN_IDS].tolist()}")
        slots = self._free_slots(id_array.size)
        codec.restore_snapshot(self.batch, slots, snapshot)
        self._register(id_array, slots)

    def snapshot(self, ids: object) -> bytes:
        """The exact state of these games (codec snapshot format), for `adopt` or the store."""
        return codec.encode_snapshot(self.batch, self.select(ids).slots)

    def reset(
        self, ids: object, seeds: object = None, maps: Sequence[GameMap] | MapBatch | None = None
    ) -> None:
        """Regenerate these games' maps in place (same ids, same arrays, a new episode).

        Without seeds, each map's seed is `derive_seeds(its current map seed, id)`.
        With `maps` (one per game), the new episodes start on these maps.
        """
        chosen = self.select(ids)
        slots = chosen.slots
        if maps is not None:
            load_maps(self.batch, slots, maps, self.batch.seed[slots] if seeds is None else seeds)
            return
        seeds = derive_seeds(self.batch.seed[slots], chosen.ids) if seeds is None else seeds
        generate(self.batch, slots, seeds, checked=True)

    def release(self, ids: object) -> None:
        """End these games and free their slots; their ids are never handed out again."""
        slots = self.select(ids).slots
        self._version += 1
        self._slot_ids[slots] = FREE
        keep = self._slot_ids[self._index_slots] != FREE
        self._index_ids = self._index_ids[keep]
        self._index_slots = self._index_slots[keep]

    def step(
        self,
        ids: object,
        actions: object,
        observe: bool = True,
        out: Observation | None = None,
        *,
        checked: bool = False,
        variant: StepVariant | None = None,
    ) -> PoolStep:
        """Play one tick of these games: actions int[B, players] of flat moves (-1 = pass).

        With `observe`, post-step views are written by the fused step+observe kernel into
        `out` (e.g. views of a wire buffer from `codec.allocate_observation`) or a new buffer.
        `checked`: the actions are already range-checked int32 (a server decoded them).
        `variant`: engine.step's (its per-game work sees the views before any autoreset).
        """
        slots = self.select(ids).slots
        moves = actions if checked else check_actions(self.batch, actions, slots.size)
        if observe and out is None:
            out = Observation.allocate(self.config, slots.size)
        out = out if observe else None
        result = step(self.batch, slots, moves, out, checked=True, variant=variant)
        reset = (result.terminated | result.truncated) if self.autoreset else np.zeros(slots.size, np.bool_)
        final = None
        if reset.any():
            rows = np.flatnonzero(reset)
            final = None if out is None else _take(out, rows)
            self._autoreset(slots[rows], rows, out)
        return PoolStep(result.rewards, result.terminated, result.truncated, reset, out, final)

    def observe(self, ids: object, out: Observation | None = None) -> Observation:
        """Every player's fog-of-war view of these games."""
        return observe(self.batch, self.select(ids).slots, out, checked=True)

    def masks(self, ids: object, out: np.ndarray | None = None) -> np.ndarray:
        """Legal moves, bit-packed uint8[B, players, mask bytes] (see engine.action_masks), in `out`
        when given."""
        return action_masks(self.batch, self.select(ids).slots, out, checked=True)

    def _lookup(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self._index_ids.size == 0:
            return np.zeros(ids.size, np.int64), np.zeros(ids.size, np.bool_)
        pos = np.minimum(np.searchsorted(self._index_ids, ids), self._index_ids.size - 1)
        return self._index_slots[pos], self._index_ids[pos] == ids

    def _free_slots(self, n: int) -> np.ndarray:
        """The n lowest free slots, doubling the storage (capped at max_games) when too few."""
        if self.active_games + n > self.max_games:
            raise PoolFullError(
                f"pool is full: {self.active_games} games + {n} new would exceed max_games={self.max_games}"
            )
        capacity = self._grown_capacity(n)
        if capacity > self.capacity:
            self.batch = self.batch.resized(capacity)  # games keep their slots
            self._slot_ids = np.concatenate(
                [self._slot_ids, np.full(capacity - self._slot_ids.size, FREE, np.uint64)]
            )
        return np.flatnonzero(self._slot_ids == FREE)[:n]

    def _register(self, ids: np.ndarray, slots: np.ndarray) -> None:
        """Map new ids to their slots: a sorted insert into the index, vectorised."""
        order = np.argsort(ids, kind="stable")
        ids, slots = ids[order], slots[order]
        at = np.searchsorted(self._index_ids, ids)
        self._index_ids = np.insert(self._index_ids, at, ids)
        self._index_slots = np.insert(self._index_slots, at, slots)
        self._slot_ids[slots] = ids
        self.id_source.skip_past(ids)

    def _autoreset(self, slots: np.ndarray, rows: np.ndarray, out: Observation | None) -> None:
        """Regenerate finished games; with `out`, overwrite their rows with the new first views."""
        generate(self.batch, slots, derive_seeds(self.batch.seed[slots], self._slot_ids[slots]), checked=True)
        if out is not None:
            fresh = observe(self.batch, slots, checked=True)
            for name in ("codes", "armies", "land", "army", "tick"):
                getattr(out, name)[rows] = getattr(fresh, name)


def _take(obs: Observation, rows: np.ndarray) -> Observation:
    """A copy of some games' rows of an observation (the last views before an autoreset)."""
    return Observation(obs.codes[rows], obs.armies[rows], obs.land[rows], obs.army[rows], obs.tick[rows])
