"""The games of one shard: a GamePool per (config, autoreset), ids routed to pools with numpy.

Every pool draws ids from one UnguessableIds (each create's run starts at random, redrawn where
it meets a live game), so an id names one game on the whole shard and a
request's ids are grouped by pool with one searchsorted over a shard-wide index (a loop
over the few pools, never over games). Engine work runs on a thread pool (the kernels
release the GIL), so calls on different pools step in parallel while an asyncio.Lock per
pool keeps each GamePool to one caller. Every call checks all of its input, under the
locks, before it changes any game: each group's ids are resolved to slots once there
(`GamePool.select`, where no close can make them stale), and everything inside takes that
Selection; actions arrive range-checked from the servicer.

Every change goes through the pool's recorder (fleet/durability.py: off, snapshot or log, the
strategy of the shard's durability mode), which reaches Redis as its mode says; games move in
and out whole (`adopt`, `hand_off`) for failover and drain.

Results are handed to a `finish` callback that runs in the worker, still under the locks:
the observation planes are views of per-pool scratch buffers that the next call reuses,
so the reply is encoded from them in place instead of copying them out first.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import TypeVar

import numpy as np

from ..engine import GameConfig, Observation
from ..engine.config import RUNNING
from ..engine.maps import MapBatch
from ..fleet.durability import Durability, PoolRecorder
from ..pool import GamePool, PoolStep, Selection, UnguessableIds, UnknownGameError
from ..replay.sink import TransitionSink
from ..telemetry import metrics, tracing
from ..wire import codec
from ..wire.codec import ObservationDelta
from ..wire.errors import DataLoss, InvalidArgument, NotFound, ResourceExhausted, Unavailable
from ..wire.generated import batch_pb2 as pb
from .deltas import DeltaViews
from .roles import PLAIN, PoolRole, step_with_role

T = TypeVar("T")
_FIELDS = ("codes", "armies", "land", "army", "tick")
# Calls on fewer tiles (games x players x tiles) run on the event loop: their kernels take
# microseconds, less than the hand-off to a worker thread and back, which would dominate a
# one-game round trip. 40 games of 20x20 for 2 players; one 64x64 game of 8 is over.
INLINE_WORK = 1 << 15


@dataclass
class Views:
    """What one call observed, valid only inside its `finish` callback.

    `observation` always holds the full planes; `delta`, when set, is what to send instead
    of codes/armies (None also when the delta would be larger than the planes).
    """

    observation: Observation
    masks: np.ndarray | None = None
    delta: ObservationDelta | None = None


@dataclass
class ShardStep:
    """One step of a request's games, in request order (see wire.replies.StepReply for the fields)."""

    rewards: np.ndarray
    terminated: np.ndarray
    truncated: np.ndarray
    status: np.ndarray
    reset: np.ndarray
    views: Views | None
    final: Observation | None  # last views of the games that autoreset, in request order


class PoolEntry:
    """A GamePool and what the shard keeps beside it: the recorder its changes go through, its lock,
    delta views, scratch planes and the shard's role in its games (seats it plays, transitions it
    pushes: roles.py)."""

    def __init__(self, index: int, recorder: PoolRecorder, role: PoolRole = PLAIN) -> None:
        self.index = index
        self.recorder = recorder
        self.pool = recorder.pool  # reads
        self.role = role
        self.lock = asyncio.Lock()
        self.deltas = DeltaViews(self.pool.config.players, self.pool.config.tiles)
        self._scratch = Observation.allocate(self.pool.config, 0)

    def out(self, games: int) -> Observation:
        """Views of the first `games` rows of reusable planes (grown by doubling, never shrunk)."""
        if self._scratch.games < games:
            self._scratch = Observation.allocate(self.pool.config, max(games, 2 * self._scratch.games))
        s = self._scratch
        return Observation(s.codes[:games], s.armies[:games], s.land[:games], s.army[:games], s.tick[:games])

    def observe(
        self,
        chosen: Selection,
        masks: bool,
        delta: bool,
        out: Observation | None = None,
        *,
        fresh: bool = True,
        out_masks: np.ndarray | None = None,
        change: ObservationDelta | None = None,
    ) -> Views:
        """Views of these games: planes, masks, delta. The planes are written into `out` (scratch
        when None) unless `fresh` is False: then `out` already holds them (a step wrote them).
        The masks, when asked, go into `out_masks` (a shared view's) or a new array. `change`: the
        delta, already taken (a step fused with the diff: `_step_plain`)."""
        if out is None or fresh:
            out = self.pool.observe(chosen, self.out(chosen.size) if out is None else out)
        if delta:
            change = change if change is not None else self.deltas.encode(chosen.ids, out.codes, out.armies)
        else:
            self.deltas.record(chosen.ids, out.codes, out.armies)
            change = None
        return Views(out, self.pool.masks(chosen, out_masks) if masks else None, change)


@dataclass
class Route:
    """A request's ids and the pools holding them: one group per pool, rows None for all."""

    ids: np.ndarray
    config: GameConfig
    groups: list[tuple[PoolEntry, np.ndarray | None]]
    moved: Callable[[np.ndarray], bool]  # whether any of these ids were handed to another shard

    @property
    def entries(self) -> list[PoolEntry]:
        return [entry for entry, _ in self.groups]

    @property
    def size(self) -> int:
        """Seat-tiles of the request: what its engine work scales with."""
        return self.ids.size * self.config.players * self.config.tiles

    def parts(
        self, rows_of: np.ndarray | None = None
    ) -> list[tuple[PoolEntry, np.ndarray, np.ndarray | None]]:
        """(pool, its ids, their rows) per group; with `rows_of`, that array's rows instead of ids."""
        source = self.ids if rows_of is None else rows_of
        return [(entry, source if rows is None else source[rows], rows) for entry, rows in self.groups]

    def select(self) -> list[tuple[PoolEntry, Selection, np.ndarray | None]]:
        """Under the locks, before any change: every group's ids resolved to slots, once (raises
        NotFound if a close that ran since routing took some of them, Unavailable if a hand-off did:
        the games live on, elsewhere, and a retry through a fresh ring reaches them)."""
        try:
            return [(entry, entry.pool.select(ids), rows) for entry, ids, rows in self.parts()]
        except UnknownGameError as error:
            if self.moved(error.ids):
                shown = error.ids[:8].tolist()
                raise Unavailable(f"games moved to another shard during this call, retry: {shown}") from None
            raise NotFound(error.message) from None


class ShardGames:
    """All games of a shard. Coroutines run on the server's event loop; engine work in `executor`."""

    def __init__(
        self,
        executor: Executor,
        *,
        seed: int = 0,
        max_games: int = 1 << 20,
        max_memory: int | None = None,
        durability: Durability | None = None,
        transitions: TransitionSink | None = None,
    ) -> None:
        self.seed = seed
        self.max_games = max_games
        self.max_memory = max_memory  # bytes the games' storage may take, growth included (None: no cap)
        self.durability = durability
        self.transitions = transitions  # where games created with push_transitions send their steps
        self._executor = executor
        self._ids = UnguessableIds(lambda ids: bool(np.isin(ids, self.live_ids).any()))
        self._entries: list[PoolEntry] = []
        self._by_key: dict[tuple[GameConfig, bool, PoolRole], PoolEntry] = {}
        self._create_lock = asyncio.Lock()  # the IdSource is shared: one create at a time
        self._index_lock = threading.Lock()  # writers of _index (worker threads)
        self._index = (np.zeros(0, np.uint64), np.zeros(0, np.int32))  # live ids ascending, their pool
        self._moved_keys = np.zeros(0, np.uint64)  # placement-key hashes handed to other shards
        # Games restored at an earlier tick than their clients may have acknowledged, ascending,
        # with that tick: their calls answer DATA_LOSS until a read acknowledges them.
        self._restored = (np.zeros(0, np.uint64), np.zeros(0, np.int64))
        self.restored_total = 0  # games ever restored so (a metric)

    @property
    def active_games(self) -> int:
        return self._index[0].size

    @property
    def live_ids(self) -> np.ndarray:
        """Every live game id of the shard, ascending (read-only: replaced, never written)."""
        return self._index[0]

    @property
    def pools(self) -> list[GamePool]:
        return [entry.pool for entry in self._entries]

    def memory_bytes(self) -> int:
        """Bytes the games' storage holds (every pool's slots, free ones included)."""
        return sum(pool.memory_bytes() for pool in self.pools)

    def route(self, ids: np.ndarray) -> Route:
        """Group ids by pool: all live, all of one config (one reply shape). Which pool holds an id
        is all this decides: the pools resolve ids to slots (and refuse repeats) under their locks."""
        live, pools = self._index
        pos = np.minimum(np.searchsorted(live, ids), max(live.size - 1, 0))
        found = live[pos] == ids if live.size else np.zeros(ids.size, np.bool_)
        if not found.all():
            raise NotFound(UnknownGameError(ids[~found]).message)
        of_game = pools[pos]
        first = int(of_game[0])
        if np.all(of_game == first):
            entry = self._entries[first]
            return Route(ids, entry.pool.config, [(entry, None)], self.moved)
        entries = [self._entries[i] for i in np.unique(of_game)]
        configs = {entry.pool.config for entry in entries}
        if len(configs) > 1:
            raise InvalidArgument(
                f"game_ids span {len(configs)} game configs; one call takes games of one config "
                "(their observations share one shape)"
            )
        groups = [(e, np.flatnonzero(of_game == e.index)) for e in entries]
        return Route(ids, entries[0].pool.config, groups, self.moved)

    def mark_restored(self, ids: np.ndarray, ticks: np.ndarray) -> None:
        """These games came back from Redis at `ticks`, perhaps behind what their clients saw."""
        if not ids.size:
            return
        old_ids, old_ticks = self._restored
        keep = ~np.isin(old_ids, ids)
        all_ids = np.concatenate([old_ids[keep], ids.astype(np.uint64)])
        order = np.argsort(all_ids)
        self._restored = (all_ids[order], np.concatenate([old_ticks[keep], ticks.astype(np.int64)])[order])
        self.restored_total += int(ids.size)

    def refuse_restored(self, ids: np.ndarray) -> None:
        """DATA_LOSS for a call that would change restored games not yet acknowledged."""
        restored, ticks = self._restored
        if not restored.size:
            return
        hit = np.isin(ids, restored)
        if hit.any():
            shown = np.unique(ids[hit])[:8]
            at = ticks[np.searchsorted(restored, shown)]
            raise DataLoss(
                f"games {shown.tolist()} were restored from Redis at ticks {at.tolist()} after their "
                "shard failed, possibly earlier than calls you saw acknowledged; read them "
                "(GetBatchStates) to acknowledge their state, then go on: nothing changed"
            )

    def acknowledge_restored(self, ids: np.ndarray) -> None:
        """A read showed the client these games' restored state: their calls go on."""
        restored, ticks = self._restored
        if restored.size:
            keep = ~np.isin(restored, ids)
            self._restored = (restored[keep], ticks[keep])

    def moved(self, ids: np.ndarray) -> bool:
        """Whether any of these ids' placement keys were handed to another shard."""
        return bool(np.isin(ids >> np.uint64(32), self._moved_keys).any())

    async def create(
        self,
        n: int,
        config: GameConfig,
        *,
        autoreset: bool,
        seeds: np.ndarray | None,
        key_hash: int,
        masks: bool,
        finish: Callable[[np.ndarray, Views], T],
        role: PoolRole = PLAIN,
        maps: MapBatch | None = None,
    ) -> T:
        """Start n games in the (config, autoreset, role) pool, on `maps` (checked) when given;
        `finish(ids, first views)` runs under its lock."""
        if role.push:
            await asyncio.to_thread(self.transitions.connect, config)  # refuses before any game exists
        entry = self._entry(config, autoreset, role)

        def work() -> T:
            ids = entry.recorder.create(n, seeds, key_hash, maps)
            self._index_add(ids, entry.index)
            return finish(ids, entry.observe(entry.pool.select(ids), masks, delta=False))

        async with self._create_lock:
            if self.active_games + n > self.max_games:
                raise ResourceExhausted(
                    f"shard full: {self.active_games} games + {n} new would pass max_games={self.max_games}"
                )
            self._check_memory(entry.pool, n)
            return await self._locked([entry], n * config.players * config.tiles, work)

    async def observe(
        self,
        route: Route,
        *,
        masks: bool,
        delta: bool,
        finish: Callable[[Views], T],
        out: Observation | None = None,
        out_masks: np.ndarray | None = None,
    ) -> T:
        """The games' current views; `out` (a shared view, request order) receives the planes,
        `out_masks` (its masks block, when the call asks masks) the masks."""

        def work() -> T:
            parts = [
                e.observe(chosen, masks, delta, _direct(out, rows), out_masks=_direct(out_masks, rows))
                for e, chosen, rows in route.select()
            ]
            return finish(_into(out, out_masks, _merge_views(route, parts)))

        return await self._locked(route.entries, route.size, work)

    async def step(
        self,
        route: Route,
        actions: np.ndarray,
        *,
        observe: bool,
        masks: bool,
        delta: bool,
        finish: Callable[[ShardStep], T],
        out: Observation | None = None,
        out_masks: np.ndarray | None = None,
    ) -> T:
        """One tick of every game of the route: actions int32 [games, players], already range-checked.
        `out` (a shared view, request order) receives the planes, `out_masks` the masks: the mask
        kernel writes them there right after the step (no copy of either)."""

        def work() -> T:
            started = time.perf_counter()
            selected = route.select()
            parts = []
            try:
                for (entry, chosen, rows), (_, moves, _) in zip(selected, route.parts(actions), strict=True):
                    finished = entry.pool.batch.status[chosen.slots] != RUNNING
                    planes = (_direct(out, rows) or entry.out(chosen.size)) if observe else None
                    if entry.role.plain:
                        result, change = _step_plain(entry, chosen, moves, observe, delta, planes)
                    else:
                        result = step_with_role(
                            entry.recorder,
                            entry.role,
                            self.transitions,
                            self.seed,
                            chosen,
                            moves,
                            observe,
                            planes,
                        )
                        change = None
                    views = (
                        entry.observe(
                            chosen,
                            masks,
                            delta,
                            result.observation,
                            fresh=False,
                            out_masks=_direct(out_masks, rows),
                            change=change,
                        )
                        if observe
                        else None
                    )
                    parts.append((finished, result, views))
                stepped = _merge_steps(route, parts)
                if stepped.views is not None:
                    stepped.views = _into(out, out_masks, stepped.views)
                reply = finish(stepped)
            finally:  # mode log: the steps' entries confirmed before the reply goes out
                for entry in route.entries:
                    entry.recorder.confirm()
            metrics.record_step(stepped, route.config.players, time.perf_counter() - started)
            return reply

        return await self._locked(route.entries, route.size, work)

    async def reset(
        self,
        route: Route,
        seeds: np.ndarray | None,
        *,
        masks: bool,
        finish: Callable[[Views], T],
        out: Observation | None = None,
        maps: MapBatch | None = None,
        out_masks: np.ndarray | None = None,
    ) -> T:
        """New episodes for the route's games: maps from `seeds` (else derived), or `maps` (checked,
        request order); `out` (a shared view, request order) receives the first views' planes,
        `out_masks` their masks (as in `observe`)."""

        def work() -> T:
            selected = route.select()
            seed_parts = route.parts(seeds) if seeds is not None else [(e, None, r) for e, r in route.groups]
            for (entry, chosen, rows), (_, part_seeds, _) in zip(selected, seed_parts, strict=True):
                part_maps = maps if maps is None or rows is None else maps.rows(rows)
                entry.recorder.reset(chosen, part_seeds, part_maps)
            parts = [
                e.observe(chosen, masks, False, _direct(out, rows), out_masks=_direct(out_masks, rows))
                for e, chosen, rows in selected
            ]
            return finish(_into(out, out_masks, _merge_views(route, parts)))

        return await self._locked(route.entries, route.size, work)

    async def close(self, route: Route) -> int:
        def work() -> int:
            for entry, chosen, _ in route.select():
                entry.recorder.release(chosen)
                entry.deltas.forget(chosen.ids)
            self._index_remove(route.ids)
            return route.ids.size

        return await self._locked(route.entries, route.size, work)

    async def adopt(self, recovered: Sequence[GamePool]) -> np.ndarray:
        """Take in games rebuilt by recovery (scratch pools), each into the pool of its config, with
        their ids and exact state (a recording mode records them here before this returns)."""
        taken = []
        async with self._create_lock:
            for scratch in recovered:
                ids = scratch.ids
                if not ids.size:
                    continue
                slots = scratch.slots_of(ids)
                arrays = {name: a[slots] for name, a in scratch.batch.arrays().items()}
                snapshot = codec.Snapshot(scratch.config, arrays)
                entry = self._entry(scratch.config, scratch.autoreset, PLAIN)  # roles are not recorded

                def work(entry: PoolEntry = entry, ids: np.ndarray = ids, snapshot=snapshot) -> None:
                    entry.recorder.adopt(ids, snapshot)
                    self._index_add(ids, entry.index)
                    self._moved_keys = np.setdiff1d(self._moved_keys, ids >> np.uint64(32))  # back here

                size = ids.size * scratch.config.players * scratch.config.tiles
                await self._locked([entry], size, work, off_loop=True)  # it writes to Redis
                taken.append(ids)
        return np.sort(np.concatenate(taken)) if taken else np.zeros(0, np.uint64)

    async def hand_off(self, key_hashes: np.ndarray) -> np.ndarray:
        """Record every game of these placement keys in Redis and drop it here (another shard then
        recovers it from its record); returns their ids. Needs a durability mode other than off."""
        if self.durability is None or self.durability.mode == "off":
            raise ValueError("games can move only through Redis: durability mode snapshot or log")
        async with self._create_lock:
            entries = list(self._entries)

            def work() -> np.ndarray:
                moved = []
                for entry in entries:
                    ids = entry.pool.ids
                    ids = ids[np.isin(ids >> np.uint64(32), key_hashes)]
                    if ids.size:
                        entry.recorder.flush()  # records at the current log position: exact
                        entry.recorder.hand_off(ids)
                        entry.deltas.forget(ids)
                        moved.append(ids)
                ids = np.concatenate(moved) if moved else np.zeros(0, np.uint64)
                self._moved_keys = np.union1d(self._moved_keys, ids >> np.uint64(32))
                self._index_remove(ids)
                return ids

            size = sum(e.pool.active_games * e.pool.config.players * e.pool.config.tiles for e in entries)
            return await self._locked(entries, size, work, off_loop=True)  # it writes to Redis

    def _check_memory(self, pool: GamePool, n: int) -> None:
        """Refuse a create whose storage would pass max_memory (bytes, not games: a 64x64 board
        with 8 players holds ~100 times the bytes of a 20x20 one with 2)."""
        grown = pool.growth_bytes(n)
        if self.max_memory is None or not grown:
            return
        held = self.memory_bytes()
        if held + grown > self.max_memory:
            config = pool.config
            raise ResourceExhausted(
                f"shard memory full: its games hold {held} bytes and {n} more games of "
                f"{config.height}x{config.width}, {config.players} players need {grown} more, past "
                f"max_memory={self.max_memory} bytes (--max-memory): create them on another shard, "
                "or close games"
            )

    async def forfeit(self) -> np.ndarray:
        """Drop every game, writing nothing to Redis: the shard was fenced, another shard holds
        them now. Returns their ids."""
        async with self._create_lock:
            entries = list(self._entries)

            def work() -> np.ndarray:
                dropped = []
                for entry in entries:
                    ids = entry.recorder.forfeit()
                    entry.deltas.forget(ids)
                    dropped.append(ids)
                ids = np.concatenate(dropped) if dropped else np.zeros(0, np.uint64)
                self._index_remove(ids)
                self.acknowledge_restored(ids)  # not ours to vouch for any more
                return ids

            return await self._locked(entries, 0, work, off_loop=True)

    async def record_all(self) -> None:
        """Record every game whose record Redis may lack (after Redis was away or lost its data),
        without waiting for a call on its pool."""
        entries = [e for e in self._entries if e.recorder.needs_records]
        for entry in entries:
            await self._locked([entry], 0, entry.recorder.flush, off_loop=True)

    def _entry(self, config: GameConfig, autoreset: bool, role: PoolRole) -> PoolEntry:
        key = (config, autoreset, role)
        if key not in self._by_key:
            pool = GamePool(
                config,
                capacity=1,
                max_games=self.max_games,
                seed=self.seed,
                autoreset=autoreset,
                id_source=self._ids,
            )
            recorder = PoolRecorder(pool) if self.durability is None else self.durability.wrap(pool)
            recorder.defer_confirmation = True  # step confirms after the reply is built (above)
            self._by_key[key] = PoolEntry(len(self._entries), recorder, role)
            self._entries.append(self._by_key[key])
        return self._by_key[key]

    async def _locked(
        self, entries: Sequence[PoolEntry], size: int, work: Callable[[], T], *, off_loop: bool = False
    ) -> T:
        """Run `work` holding these pools' locks (taken in index order: no deadlock), on the
        executor unless its `size` (seat-tiles) is below INLINE_WORK and not `off_loop` (work
        that waits on I/O).

        The locks are released when the work is done, not when the caller is cancelled (a
        client that hangs up must not let the next call into a pool a worker still uses).
        """
        if tracing.ACTIVE:
            attributes = {"gamefleet.seat_tiles": size, "gamefleet.pools": len(entries)}
            work = tracing.in_span("game.run", work, attributes)
        held: list[PoolEntry] = []
        try:
            for entry in sorted(entries, key=lambda e: e.index):
                await entry.lock.acquire()
                held.append(entry)
        except BaseException:
            _release(held)
            raise
        if size < INLINE_WORK and not off_loop:
            try:
                return work()
            finally:
                _release(held)
        future = asyncio.get_running_loop().run_in_executor(self._executor, work)
        future.add_done_callback(lambda _: _release(held))
        return await asyncio.shield(future)

    def _index_add(self, ids: np.ndarray, pool: int) -> None:
        with self._index_lock:
            live, pools = self._index
            at = np.searchsorted(live, ids)  # the ids of one create ascend, so this keeps `live` sorted
            self._index = (np.insert(live, at, ids), np.insert(pools, at, np.int32(pool)))

    def _index_remove(self, ids: np.ndarray) -> None:
        with self._index_lock:
            live, pools = self._index
            keep = ~np.isin(live, ids)
            self._index = (live[keep], pools[keep])


def _release(entries: list[PoolEntry]) -> None:
    for entry in entries:
        entry.lock.release()


def _scatter(games: int, parts: Sequence[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """Rows of several groups into one array of `games` rows (request order)."""
    first = parts[0][1]
    out = np.empty((games, *first.shape[1:]), first.dtype)
    for rows, array in parts:
        out[rows] = array
    return out


def _merge_observations(games: int, rows: Sequence[np.ndarray], parts: Sequence[Observation]) -> Observation:
    return Observation(
        *(
            _scatter(games, [(r, getattr(p, name)) for r, p in zip(rows, parts, strict=True)])
            for name in _FIELDS
        )
    )


def _merge_views(route: Route, parts: Sequence[Views]) -> Views:
    """One Views in request order from one per group (the single-pool case is passed through)."""
    if len(parts) == 1:
        return _full_if_smaller(parts[0])
    rows = [r for _, r in route.groups]
    games = route.ids.size
    merged = Views(_merge_observations(games, rows, [p.observation for p in parts]))
    if parts[0].masks is not None:
        merged.masks = _scatter(games, [(r, p.masks) for r, p in zip(rows, parts, strict=True)])
    if parts[0].delta is not None:
        width = merged.observation.codes[0].size
        index = [
            r[d.index // width] * width + d.index % width
            for r, d in zip(rows, (p.delta for p in parts), strict=True)
        ]
        merged.delta = ObservationDelta(
            np.concatenate(index).astype(np.int32),
            np.concatenate([p.delta.codes for p in parts]),
            np.concatenate([p.delta.armies for p in parts]),
        )
    return _full_if_smaller(merged)


def _direct(out: T | None, rows: np.ndarray | None) -> T | None:
    """Where a group writes its planes (or masks): straight into `out` when it holds the whole
    request, else its scratch (None), copied into `out` after the merge by `_into`."""
    return out if rows is None else None


def _into(out: Observation | None, out_masks: np.ndarray | None, views: Views) -> Views:
    """The merged views with their planes in `out` and their masks in `out_masks` (already there
    when one group wrote them)."""
    if out is not None and views.observation.codes is not out.codes:
        for name in _FIELDS:
            getattr(out, name)[...] = getattr(views.observation, name)
        views.observation = out
    if out_masks is not None and views.masks is not None and views.masks is not out_masks:
        out_masks[...] = views.masks
        views.masks = out_masks
    return views


def _full_if_smaller(views: Views) -> Views:
    """A delta costs 7 bytes per changed tile, the planes 3 per tile: send whichever is smaller.
    The delta store already holds these planes either way, so both keep the client in step."""
    if views.delta is not None and views.delta.index.size * 7 >= views.observation.codes.size * 3:
        views.delta = None
    return views


def _step_plain(
    entry: PoolEntry,
    chosen: Selection,
    moves: np.ndarray,
    observe: bool,
    delta: bool,
    planes: Observation | None,
) -> tuple[PoolStep, ObservationDelta | None]:
    """A plain pool's step; with a delta asked, taken inside the step kernel (each game's planes
    diffed while still in cache, not in a second pass: about a tenth of a 4096-game step)."""
    if not (observe and delta):
        return entry.recorder.step(chosen, moves, observe, planes, checked=True), None
    pending = entry.deltas.prepare(chosen.ids, planes.codes, planes.armies)
    try:
        result = entry.recorder.step(
            chosen, moves, True, planes, checked=True, variant=entry.deltas.variant(pending)
        )
    except BaseException:  # the store may hold views never sent: these games start over (full)
        entry.deltas.forget(chosen.ids)
        raise
    return result, entry.deltas.finish(pending, result.terminated | result.truncated)


def _merge_steps(route: Route, parts: Sequence[tuple[np.ndarray, object, Views | None]]) -> ShardStep:
    status = [np.where(finished, pb.FINISHED, pb.STEPPED).astype(np.uint8) for finished, _, _ in parts]
    results = [result for _, result, _ in parts]
    views = None if parts[0][2] is None else _merge_views(route, [v for _, _, v in parts])
    if len(parts) == 1:
        r = results[0]
        return ShardStep(r.rewards, r.terminated, r.truncated, status[0], r.reset, views, r.final_observation)
    rows = [r for _, r in route.groups]
    games = route.ids.size
    merged = {
        name: _scatter(games, [(r, getattr(result, name)) for r, result in zip(rows, results, strict=True)])
        for name in ("rewards", "terminated", "truncated", "reset")
    }
    final = None
    if views is not None and merged["reset"].any():
        # Each group's final views are in its own reset order; place them in the request's.
        order = np.flatnonzero(merged["reset"])
        finals = [
            (r[res.reset], res.final_observation)
            for r, res in zip(rows, results, strict=True)
            if res.reset.any()
        ]
        final = _merge_observations(
            order.size, [np.searchsorted(order, g) for g, _ in finals], [f for _, f in finals]
        )
    return ShardStep(
        **merged, status=_scatter(games, list(zip(rows, status, strict=True))), views=views, final=final
    )
