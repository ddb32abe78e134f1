"""Durability: a shard's GamePools made to outlive the shard, through a FleetStore.

A strategy per mode wraps a pool's calls (`Durability.wrap(pool)`: PoolRecorder for off,
SnapshotRecorder, LogRecorder); the pool itself knows nothing of Redis.

Modes:
  off       nothing leaves the process (no Redis needed).
  snapshot  a writer thread records each pool's changed games every `snapshot_every` steps, at
            most every `snapshot_interval_s` (a round of 1024 20x20 games is 2.5 MB: a fast
            pool would otherwise ship tens of MB/s), and games whose episode ended within a
            tenth of that interval; all off the step path. A kill loses the steps since a
            game's last record.
  log       snapshot, plus one XADD per batch call, in Redis before the call returns (the
            acknowledgement point): every acknowledged call survives a kill -9. The rounds
            then only bound what a recovery replays: about one interval of play. A create's
            games are recorded before it returns (on given maps or generated: no create is
            replayed); a reset onto given maps logs the maps themselves ("maps" entries), as
            no seed regenerates them.

What recovery relies on: a game's record (its exact state at position P of its owner's log)
plus the entries after P that name it reproduce its state bit for bit. To keep that true:
  - every record goes through one FIFO writer thread, so an older capture never lands after
    a newer one (synchronous writes wait for their turn in the same queue);
  - the log is trimmed only below what every pool's records cover;
  - after a gap in the log (Redis unreachable, or a call that failed after it was logged),
    a pool rewrites all its games' records at a fresh position before it logs again.

Fencing (fencing.py): the process holds its shard's slot in Redis and every write checks it.
Each heartbeat checks the slot and the fleet's generation: Redis lost its data (a new
generation, no holder) -> take the slot back and rewrite every record; another shard fenced
this one, or another process took the shard's name -> `fenced` says so, every change is refused
(FencedError) and the member (membership.py) forfeits the games.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, TypeVar

import numpy as np

from ..engine import GameBatch, GameConfig, Observation
from ..engine.checks import check_actions
from ..engine.maps import GameMap, MapBatch, check_maps
from ..pool import GamePool, IdSource, PoolStep, Selection
from ..wire import codec
from .records import EntryId, encode_map_entry, encode_records
from .registry import FencedError, Generation
from .store import ORIGIN, FleetStore, LogAppender, StoreUnavailableError

if TYPE_CHECKING:  # numba loads only with the kernels
    from ..engine.api import StepVariant

Mode = Literal["off", "snapshot", "log"]
OnRedisError = Literal["fail", "degrade"]
T = TypeVar("T")
log = logging.getLogger(__name__)
_COMPACT_DIRTY = 64  # merge the list of dirty id arrays once it holds this many
# Records are written in parts: the writer's Python work between two sends (which release the
# GIL) stays short, so a step thread waiting for the GIL is not held up for a switch interval.
_WRITE_CHUNK = 256
_STOP = object()


@dataclass
class _Capture:
    """Copies of some games' rows, to be recorded at `position` by the writer thread.

    `covering`: the capture holds every game the pool changed since its previous covering
    capture, so once written the pool's records cover its log entries up to `position`.
    """

    pool: SnapshotRecorder
    ids: np.ndarray
    batch: GameBatch
    position: EntryId
    covering: bool
    token: str  # the holder token when captured: a capture from before a fence never lands after it
    done: threading.Event | None = None
    error: Exception | None = None


@dataclass(frozen=True)
class DurabilityLag:
    """snapshot_s: age of the oldest change not yet recorded; log_s: span of log a recovery would
    replay (mode log); queued_writes: captures waiting for the writer; the rest: Durability's counters."""

    snapshot_s: float
    log_s: float
    queued_writes: int
    unlogged_steps: int
    failed_writes: int
    degraded: bool


@dataclass
class _Forget:
    ids: np.ndarray


class Durability:
    """One shard's link to the store: the writer thread, heartbeats, Redis health, counters.

    `on_redis_error` decides what a synchronous write (the log entry of mode `log`; adopting)
    does when Redis fails: "fail" raises StoreUnavailableError and the call changes nothing
    (one exception: a step's log entry travels while the step runs, so a Redis that fails in
    that window leaves the step applied in memory, unacknowledged: the error says so);
    "degrade" lets the call proceed, counts it in `unlogged_steps` (calls applied without a
    log entry), and the pool rewrites its records once Redis answers again (tried at most
    every `retry_s`). A step's XADD round trip overlaps the step itself in both modes.
    Background writes never block a step: a failed one is counted in `failed_writes` and
    retried in full. `degraded` says whether anything acknowledged is not durable yet.
    """

    def __init__(
        self,
        store: FleetStore | None,
        shard: str,
        mode: Mode = "off",
        *,
        snapshot_every: int = 100,
        snapshot_interval_s: float = 0.5,
        on_redis_error: OnRedisError = "fail",
        retry_s: float = 0.5,
        heartbeat_s: float = 1.0,
        capacity: int = 0,
        sync_timeout_s: float = 30.0,
    ) -> None:
        if mode not in ("off", "snapshot", "log"):
            raise ValueError(f"mode must be off, snapshot or log, got {mode!r}")
        if on_redis_error not in ("fail", "degrade"):
            raise ValueError(f"on_redis_error must be fail or degrade, got {on_redis_error!r}")
        if mode != "off" and store is None:
            raise ValueError(f"mode {mode!r} needs a FleetStore")
        if isinstance(snapshot_every, bool) or not isinstance(snapshot_every, int) or snapshot_every < 1:
            raise ValueError(f"snapshot_every must be a positive int, got {snapshot_every!r}")
        self.store = store
        self.shard = shard
        self.mode: Mode = mode
        self.snapshot_every = snapshot_every
        self.snapshot_interval_s = snapshot_interval_s
        self.on_redis_error: OnRedisError = on_redis_error
        self.retry_s = retry_s
        self.heartbeat_s = heartbeat_s
        self.capacity = capacity
        self.sync_timeout_s = sync_timeout_s
        self.state = "SERVING"  # reported to the registry; DRAINING while games move away
        self.unlogged_steps = 0
        self.failed_writes = 0
        self._recorders: list[PoolRecorder] = []
        self._lock = threading.Lock()  # pools' capture bookkeeping, the log position, counters
        self._last_id: EntryId = ORIGIN
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._unforgotten: list[np.ndarray] = []  # closed games whose records a failed write left
        self._forgets_queued = 0  # closes logged (or being logged) whose records are not deleted yet
        self.fenced: str | None = None  # what Redis said when this process lost its shard's slot
        self.generation: Generation | None = None  # the fleet's, at the last heartbeat
        self.generation_seen = 0.0  # monotonic time of that heartbeat
        self._held = False
        self._killed = False
        self._thread: threading.Thread | None = None
        if store is not None and mode != "off":
            with contextlib.suppress(StoreUnavailableError):  # else the first heartbeat does
                self.hold()
        if store is not None:
            self._thread = threading.Thread(target=self._run, name=f"durability-{shard}", daemon=True)
            self._thread.start()

    def hold(self, *, renew: bool = False) -> None:
        """Take the shard's slot in Redis (fencing an earlier process of it); `renew`: with a new
        token, after this process was fenced and forfeited its games. Held already: nothing to do
        (the heartbeat checks the slot)."""
        if self._held and not renew:
            return
        self.store.hold(self.shard, renew=renew)
        if renew:
            for pool in self._recorders:
                pool._close_log()  # its connection wrote with the old token
        self._held, self.fenced = True, None

    def generation_age(self) -> float | None:
        """Seconds since the fleet's generation began (None: not read yet)."""
        if self.generation is None:
            return None
        return self.generation.age_s + time.monotonic() - self.generation_seen

    def wrap(self, pool: GamePool) -> PoolRecorder:
        """The strategy of this durability's mode around `pool`: change its games through it."""
        return _RECORDERS[self.mode](pool, self)

    @property
    def degraded(self) -> bool:
        """Some acknowledged change is not durable yet (it will be once Redis answers)."""
        if self.mode == "log":
            return any(p._resync for p in self._recorders)
        return self.mode == "snapshot" and any(p._full_next for p in self._recorders)

    def close(self, flush: bool = True) -> None:
        """Stop the writer. With `flush` (clean shutdown), record every changed game first and
        leave the registry; without, drop queued writes as a killed process would."""
        if flush:
            for pool in self._recorders:
                try:
                    pool.flush()
                except StoreUnavailableError as error:
                    log.warning("shard %s: final snapshots not written: %s", self.shard, error)
        self._killed = not flush
        if self._thread is not None:
            self._queue.put(_STOP)
            self._thread.join()
            self._thread = None
        for pool in self._recorders:
            pool._close_log()
        if flush and self.store is not None:
            try:
                if self.mode != "off" and not self.degraded and not self.fenced:
                    self.store.mark_clean(self.shard)
                self.store.remove_shard(self.shard)
            except StoreUnavailableError:
                log.warning("shard %s could not leave the registry (it will expire)", self.shard)

    def lag(self) -> DurabilityLag:
        """How far the records in Redis trail the play (read by the telemetry at scrape time)."""
        now = time.monotonic()
        with self._lock:
            last, pools = self._last_id, list(self._recorders)
        behind = [p for p in pools if p._dirty or p._pending or p._full_next or p._resync]
        logged = [p._covered for p in behind if self.mode == "log" and p._covered != ORIGIN]
        return DurabilityLag(
            snapshot_s=max((now - p._last_round for p in behind), default=0.0) if self.mode != "off" else 0.0,
            log_s=max((last[0] - covered[0] for covered in logged), default=0) / 1000,
            queued_writes=self._queue.qsize(),
            unlogged_steps=self.unlogged_steps,
            failed_writes=self.failed_writes,
            degraded=self.degraded,
        )

    # Called by pools, on their caller's thread --------------------------------------------

    def _advance(self, entry: EntryId) -> None:
        with self._lock:
            self._last_id = max(self._last_id, entry)

    def _position(self) -> EntryId:
        """The log position a capture taken now is consistent with (every entry so far)."""
        with self._lock:
            return self._last_id

    def _lost(self, error: StoreUnavailableError) -> None:
        """A change the store could not take: refuse it ("fail") or count it ("degrade"). A fenced
        shard refuses in both: its games are another shard's now."""
        if isinstance(error, FencedError):
            self.fenced = self.fenced or str(error)
            raise error
        if self.on_redis_error == "fail":
            raise error
        with self._lock:
            self.unlogged_steps += 1
            first = self.unlogged_steps == 1
        if first:
            log.warning("shard %s: durability degraded, going on without Redis: %s", self.shard, error)

    # The writer thread ---------------------------------------------------------------------

    def _run(self) -> None:
        next_tick = time.monotonic()
        while True:
            try:
                job = self._queue.get(timeout=max(0.0, next_tick - time.monotonic()))
            except queue.Empty:
                job = None
            if job is _STOP or self._killed:
                return
            try:
                if isinstance(job, _Capture):
                    self._write(job)
                elif isinstance(job, _Forget):
                    try:
                        self._forget(job.ids)  # a failure keeps them in _unforgotten
                    finally:
                        with self._lock:
                            self._forgets_queued -= 1
                if time.monotonic() >= next_tick:
                    next_tick = time.monotonic() + self.heartbeat_s
                    self._tick()
            except Exception:  # a bug here must not silently end durability
                log.exception("shard %s: durability writer error", self.shard)

    def _write(self, capture: _Capture) -> None:
        pool = capture.pool
        try:
            self._forget_pending()
            for start in range(0, capture.ids.size, _WRITE_CHUNK):
                part = slice(start, start + _WRITE_CHUNK)
                rows = GameBatch(
                    capture.batch.config, **{k: a[part] for k, a in capture.batch.arrays().items()}
                )
                logged = self.mode == "log"
                complete = logged and self.on_redis_error == "fail"
                records = encode_records(rows, self.shard, capture.position, pool.autoreset, logged, complete)
                self.store.put_games(self.shard, capture.ids[part], records, capture.token)
        except Exception as error:  # Redis, or a bug: either way these games are not recorded
            capture.error = error
            if isinstance(error, FencedError):
                self.fenced = self.fenced or str(error)
            with self._lock:
                self.failed_writes += 1
                pool._full_next = pool._full_next or capture.covering
            report = log.warning if isinstance(error, StoreUnavailableError) else log.exception
            report("shard %s: recording %d games failed: %s", self.shard, capture.ids.size, error)
        else:
            with self._lock:  # not past an earlier covering write that failed: its games wait
                if capture.covering and not pool._full_next:
                    pool._covered = max(pool._covered, capture.position)
        finally:
            if capture.covering:
                with self._lock:
                    pool._pending -= 1
            if capture.done is not None:
                capture.done.set()
        if capture.covering and capture.error is None and self.mode == "log":
            self._trim()

    def _forget(self, ids: np.ndarray) -> None:
        self._unforgotten.append(ids)
        try:
            self._forget_pending()
        except StoreUnavailableError as error:
            log.warning("shard %s: deleting closed games' records failed (will retry): %s", self.shard, error)

    def _forget_pending(self) -> None:
        if self._unforgotten:
            self.store.drop_games(self.shard, np.concatenate(self._unforgotten))
            self._unforgotten = []

    def _trim(self) -> None:
        """Drop the log entries every pool's records cover. A pool with nothing changed since
        its last capture and nothing in flight constrains nothing: what it logs later comes
        after the position read first here (its games are marked dirty before they are logged)."""
        with self._lock:
            if self._unforgotten or self._forgets_queued:
                return  # their close entries still stand in for the records not yet deleted
            floor = self._last_id
            for pool in self._recorders:
                if pool._dirty or pool._pending or pool._resync or pool._full_next:
                    floor = min(floor, pool._covered)
        try:
            self.store.trim_log(self.shard, floor)
        except StoreUnavailableError as error:
            log.debug("shard %s: trimming the log failed: %s", self.shard, error)

    def _tick(self) -> None:
        """Heartbeat, TTL refresh, and a check that Redis still holds this shard's data."""
        ids = [p.ids for p in self._recorders]
        live = np.concatenate(ids) if ids else np.zeros(0, np.uint64)
        try:
            if self.mode != "off":
                self._check_data()
                self.store.touch(self.shard, np.unique(live >> np.uint64(32)).tolist())
            self.store.heartbeat(self.shard, live.size, self.capacity, self.state)
        except StoreUnavailableError as error:
            log.debug("shard %s: heartbeat failed: %s", self.shard, error)

    def _check_data(self) -> None:
        """Whether this process still writes as its shard. A Redis that restarted empty (or was
        flushed) lost our records and our slot: take it back and rewrite every record."""
        store, known = self.store, self.generation.id if self.generation else None
        generation = store.generation(known)
        self.generation, self.generation_seen = generation, time.monotonic()
        if not self._held:
            self.hold()
            return
        held = store.holder_token(self.shard)
        if held == store.token(self.shard) or self.fenced:
            return
        if held is None and generation.id != known and store.reclaim(self.shard):
            log.warning("shard %s: Redis lost the fleet's data; rewriting every record", self.shard)
            for pool in self._recorders:
                if self.mode == "log":
                    pool._resync = True
                else:
                    pool._full_next = True
            return
        self.fenced = held or "the slot expired while this process was away"
        log.error("shard %s: no longer holds its games (%s)", self.shard, self.fenced)


class PoolRecorder:
    """Mode off, and the base of the other strategies: a GamePool's calls passed straight through.

    A recorder wraps one pool (composition: the pool knows nothing of Redis) and offers the
    pool's interface, so it stands in for the pool wherever games change: writes go through the
    strategy, reads straight to the pool. Same contract as GamePool (one caller at a time; bad
    input changes nothing and logs nothing), plus StoreUnavailableError from the writes under
    on_redis_error="fail" in the modes that record.
    """

    mode: Mode = "off"
    defer_confirmation = False  # LogRecorder: a server confirms a step's entry after its reply is built

    def __init__(self, pool: GamePool, durability: Durability | None = None) -> None:
        self.pool = pool
        self.durability = durability
        # What Durability reads of every recorder (lag, trimming, degraded): nothing pending here.
        self._dirty: list[np.ndarray] = []  # ids changed since the last covering capture
        self._pending = 0  # covering captures queued, not yet written
        self._covered: EntryId = ORIGIN  # its log entries up to here are covered by records
        self._full_next = False  # a covering write failed: the next round takes every game
        self._resync = False  # its log has a gap: rewrite every record before logging again
        self._last_round = time.monotonic()
        if durability is not None:  # without one (no Redis at all), nothing reads this recorder
            with durability._lock:
                durability._recorders.append(self)

    @property
    def needs_records(self) -> bool:
        """Redis may lack some of its games' records (it was away, or lost its data): `flush`."""
        return self._resync or self._full_next

    # Reads: the pool's own -------------------------------------------------------------------

    @property
    def config(self) -> GameConfig:
        return self.pool.config

    @property
    def batch(self) -> GameBatch:
        return self.pool.batch

    @property
    def ids(self) -> np.ndarray:
        return self.pool.ids

    @property
    def autoreset(self) -> bool:
        return self.pool.autoreset

    @property
    def id_source(self) -> IdSource:
        return self.pool.id_source

    @property
    def active_games(self) -> int:
        return self.pool.active_games

    def select(self, ids: object) -> Selection:
        return self.pool.select(ids)

    def slots_of(self, ids: object) -> np.ndarray:
        return self.pool.slots_of(ids)

    def contains(self, ids: object) -> np.ndarray:
        return self.pool.contains(ids)

    def observe(self, ids: object, out: Observation | None = None) -> Observation:
        return self.pool.observe(ids, out)

    def masks(self, ids: object) -> np.ndarray:
        return self.pool.masks(ids)

    # Writes ------------------------------------------------------------------------------------

    def create(
        self,
        n: int,
        seeds: object = None,
        key_hash: int = 0,
        maps: Sequence[GameMap] | MapBatch | None = None,
    ) -> np.ndarray:
        return self.pool.create(n, seeds, key_hash, maps)

    def adopt(self, ids: object, snapshot: codec.Snapshot) -> None:
        self.pool.adopt(ids, snapshot)

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
        return self.pool.step(ids, actions, observe, out, checked=checked, variant=variant)

    def reset(
        self, ids: object, seeds: object = None, maps: Sequence[GameMap] | MapBatch | None = None
    ) -> None:
        self.pool.reset(ids, seeds, maps)

    def release(self, ids: object) -> None:
        self.pool.release(ids)

    def hand_off(self, ids: object) -> None:
        raise ValueError("games can move only through Redis: durability mode snapshot or log")

    def forfeit(self) -> np.ndarray:
        """Drop every game here, writing nothing (the shard was fenced: they are another shard's
        now); returns their ids."""
        ids = self.pool.ids.copy()
        self.pool.release(ids)
        self._dirty, self._resync, self._full_next = [], False, False
        return ids

    def flush(self) -> None:
        """Record every changed game now and wait (before a drain or a clean shutdown)."""

    def confirm(self) -> None:
        """Wait for the log entry of a step whose confirmation was deferred (mode log only)."""

    def _close_log(self) -> None:
        """Drop this pool's log connection (mode log only)."""


class SnapshotRecorder(PoolRecorder):
    """Mode snapshot: changed games are recorded in rounds by the writer thread, off the step path."""

    mode: Mode = "snapshot"

    def __init__(self, pool: GamePool, durability: Durability) -> None:
        super().__init__(pool, durability)
        self._ticks = 0  # steps since the last round
        self._ended: list[np.ndarray] = []  # games whose episode ended, not yet captured
        self._last_ended = self._last_round  # when they were last captured
        self._awaiting = False  # mode log: the last step's entry is sent, not yet confirmed

    def create(
        self,
        n: int,
        seeds: object = None,
        key_hash: int = 0,
        maps: Sequence[GameMap] | MapBatch | None = None,
    ) -> np.ndarray:
        self._begin()
        ids = self.pool.create(n, seeds, key_hash, maps)
        self._created(ids)
        return ids

    def _created(self, ids: np.ndarray) -> None:
        ids = ids.copy()  # the caller owns `ids`
        self._mark(ids)
        # Recorded now (off the call's path): a game is found by its record, so until one names
        # this shard, the owner a scale-up gives its key answers NOT_FOUND for it. A failed write
        # leaves it dirty: the next round records it.
        self._capture(ids, covering=False)

    def adopt(self, ids: object, snapshot: codec.Snapshot) -> None:
        """Take in games (recovery, migration) and record them here before returning, so their
        records name this shard from then on."""
        self._begin()
        self.pool.adopt(ids, snapshot)
        self._admit("adopt", np.array(ids, np.uint64))

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
        self._begin()
        chosen = self.pool.select(ids)
        moves = actions if checked else check_actions(self.pool.batch, actions, chosen.size)
        self._mark(chosen.ids)  # before logging it: see Durability._trim
        result = self._logged(
            "step",
            chosen.ids,
            moves,
            lambda: self.pool.step(chosen, moves, observe, out, checked=True, variant=variant),
        )
        if self._awaiting:  # mode log: confirmed later, by `confirm`
            self._unconfirmed = (chosen.ids, result)
        else:
            self._stepped(chosen.ids, result)
        return result

    def _stepped(self, ids: np.ndarray, result: PoolStep) -> None:
        """After a step (its entry confirmed): episode ends and snapshot rounds."""
        ended = result.terminated | result.truncated
        if ended.any():
            self._ended.append(ids[ended])
        self._ticks += 1
        if not self._resync:  # until then, a position might miss an entry whose reply was lost
            self._record_due()

    def reset(
        self, ids: object, seeds: object = None, maps: Sequence[GameMap] | MapBatch | None = None
    ) -> None:
        self._begin()
        chosen = self.pool.select(ids)
        seed_array = None if seeds is None else _checked_seeds(seeds, chosen.size)
        if maps is None:
            self._mark(chosen.ids)
            self._logged("reset", chosen.ids, seed_array, lambda: self.pool.reset(chosen, seed_array))
            return
        # No seed regenerates given maps: the entry carries them, and the seeds the games keep.
        check_maps(self.config, maps, chosen.size)  # bad maps log nothing
        given = MapBatch.of(maps)
        if seed_array is None:
            seed_array = self.pool.batch.seed[chosen.slots]
        self._mark(chosen.ids)
        entry = encode_map_entry(seed_array, given)
        self._logged("maps", chosen.ids, entry, lambda: self.pool.reset(chosen, seed_array, given))

    def release(self, ids: object) -> None:
        self._begin()
        chosen = self.pool.select(ids)
        d = self.durability
        with d._lock:  # before the close is logged: no trim may drop its entry until the records go
            d._forgets_queued += 1
        try:
            self._logged("close", chosen.ids, None, lambda: self.pool.release(chosen))
        except BaseException:
            with d._lock:
                d._forgets_queued -= 1
            raise
        d._queue.put(_Forget(chosen.ids))

    def hand_off(self, ids: object) -> None:
        """Drop games another shard has taken over (a drain): here only. Their records and log are
        the new owner's now, so nothing is logged or deleted. Flush before the new owner
        recovers them, and call this right after, so no capture of them is left to write."""
        self._begin()
        self.pool.release(ids)

    def flush(self) -> None:
        self._begin()
        self._round(wait=True)

    def forfeit(self) -> np.ndarray:
        self._awaiting, self._ended = False, []
        self._unconfirmed = None
        return super().forfeit()

    def _begin(self) -> None:
        """Before a change: confirm the last step; refuse every change once the shard is fenced."""
        if self.durability.fenced:
            raise FencedError(self.durability.fenced)
        self.confirm()

    def _logged(self, kind: str, ids: np.ndarray, data: np.ndarray | None, apply: Callable[[], T]) -> T:
        """Apply a call (mode log: with its entry in the log; see LogRecorder)."""
        return apply()

    def _position(self) -> EntryId:
        """The log position a capture taken now is consistent with."""
        return ORIGIN

    def _admit(self, kind: str, ids: np.ndarray, seeds: np.ndarray | None = None) -> None:
        """Record new games before the call returns; under "fail", undo the call if Redis fails."""
        try:
            if self._resync:
                self._resynchronise()  # records every game, these included
                return
            self._capture(ids, covering=False, position=self._entry(kind, ids, seeds), wait=True)
        except StoreUnavailableError as error:
            if self.durability.on_redis_error == "fail":
                self.pool.release(ids)
                raise
            self._gap()
            self.durability._lost(error)

    def _entry(self, kind: str, ids: np.ndarray, data: np.ndarray | None) -> EntryId:
        """The log position new games are recorded at (mode log: their entry's)."""
        return ORIGIN

    def _gap(self) -> None:
        """Redis missed a change: the next round records every game."""
        self._full_next = True

    def _resynchronise(self) -> None:
        """Mode log only: rewrite every record after a gap in the log."""

    # Records ----------------------------------------------------------------------------------

    def _mark(self, ids: np.ndarray) -> None:
        """Remember changed games (before logging them: see Durability._trim). A trainer steps
        the same ids call after call, so a repeat of the last array is not stored again. The
        arrays kept are never modified (a Selection's ids, or a copy)."""
        if self._dirty and (self._dirty[-1] is ids or np.array_equal(self._dirty[-1], ids)):
            return
        self._dirty.append(ids)
        if len(self._dirty) >= _COMPACT_DIRTY:
            self._dirty = [np.unique(np.concatenate(self._dirty))]

    def _record_due(self) -> None:
        """After a step: a round when due, else the games whose episode ended when due."""
        d, now = self.durability, time.monotonic()
        if self._ticks >= d.snapshot_every and now - self._last_round >= d.snapshot_interval_s:
            self._round()
        elif self._ended and now - self._last_ended >= d.snapshot_interval_s / 10:
            ended = np.concatenate(self._ended)
            self._ended, self._last_ended = [], now
            self._capture(ended[self.pool.contains(ended)], covering=False)

    def _round(self, wait: bool = False) -> None:
        """A covering capture of the games changed since the last one (all of them after a failed
        write). Skipped while the previous one is still being written: the changes keep. With
        `wait`, it also waits for the captures queued before it."""
        with self.durability._lock:
            busy = self._pending > 0
        if busy and not wait:
            return
        self._ticks, self._last_round = 0, time.monotonic()
        self._ended = []  # dirty too: this round takes them
        if self._full_next:
            ids = self.pool.ids
        else:
            ids = np.unique(np.concatenate(self._dirty)) if self._dirty else np.zeros(0, np.uint64)
            ids = ids[self.pool.contains(ids)]
        if ids.size or wait:
            self._capture(ids, covering=True, wait=wait)

    def _capture(
        self, ids: np.ndarray, *, covering: bool, position: EntryId | None = None, wait: bool = False
    ) -> None:
        """Copy these games' rows (a memcpy on the caller's thread) and queue them for the writer."""
        d = self.durability
        slots = self.pool.slots_of(ids)
        rows = GameBatch(self.config, **{name: a[slots] for name, a in self.pool.batch.arrays().items()})
        position = self._position() if position is None else position
        job = _Capture(self, ids, rows, position, covering, d.store.token(d.shard))
        job.done = threading.Event() if wait else None
        if covering:
            with d._lock:
                self._dirty = []
                self._full_next = False
                self._pending += 1
        d._queue.put(job)
        if wait:
            if not job.done.wait(d.sync_timeout_s):
                raise StoreUnavailableError(f"recording games timed out after {d.sync_timeout_s} s")
            if job.error is not None:
                raise job.error


class LogRecorder(SnapshotRecorder):
    """Mode log: snapshot, plus one XADD per batch call, in Redis before the call is acknowledged."""

    mode: Mode = "log"

    def __init__(self, pool: GamePool, durability: Durability) -> None:
        super().__init__(pool, durability)
        self._appender: LogAppender | None = None  # this pool's connection for its log entries
        self._next_try = 0.0  # monotonic time of the next attempt to resynchronise
        # A server sets this: a step returns before its log entry is confirmed, and the server
        # calls `confirm` once its reply is built (the round trip hidden behind that work too).
        self.defer_confirmation = False
        self._unconfirmed: tuple[np.ndarray, PoolStep] | None = None  # a step awaiting `confirm`

    def _created(self, ids: np.ndarray) -> None:
        self._admit("create", ids, self.pool.batch.seed[self.pool.slots_of(ids)])

    def confirm(self) -> None:
        """Wait for the log entry of a step whose confirmation was deferred (`defer_confirmation`):
        only then is the step acknowledged. Raises StoreUnavailableError (`applied` set) when
        Redis failed under on_redis_error="fail"."""
        if self._unconfirmed is None:
            return
        ids, result = self._unconfirmed
        self._unconfirmed = None
        self._awaiting = False
        if self._receive(applied=True):
            self._stepped(ids, result)

    def flush(self) -> None:
        self._begin()
        if self._resync:
            self._resynchronise()
        else:
            self._round(wait=True)

    def _logged(self, kind: str, ids: np.ndarray, data: np.ndarray | None, apply: Callable[[], T]) -> T:
        """Apply a call whose log entry is in Redis before this returns.

        A step's entry is sent, the step applied while it travels, and the entry confirmed before
        this returns (the round trip hidden behind the kernel). Under "fail" other calls wait for
        their entry first, so a refused entry leaves the pool as it was; a step whose entry fails
        after it ran raises StoreUnavailableError with `applied` set (in memory, not acknowledged).
        Under "degrade" every call overlaps: a failure only counts, the call stands.
        """
        overlap = kind == "step" or self.durability.on_redis_error == "degrade"
        sent = self._send(kind, ids, data)
        if sent and not overlap:
            sent = self._receive()
        try:
            result = apply()
        except Exception:
            if sent:  # the entry names a call that did not happen: make the records skip it
                if overlap:
                    with contextlib.suppress(StoreUnavailableError):
                        self._receive()
                self._resync = True
                with contextlib.suppress(StoreUnavailableError):  # if so, the next call retries
                    self._resynchronise()
            raise
        if sent and overlap:
            if kind == "step" and self.defer_confirmation:
                self._awaiting = True  # `step` hands the confirmation to `confirm`
            else:
                self._receive(applied=True)
        return result

    def _send(self, kind: str, ids: np.ndarray, data: np.ndarray | None) -> bool:
        """Send the entry (resynchronising first if the log has a gap); False when unlogged."""
        if self._resync and time.monotonic() < self._next_try:
            self.durability._lost(StoreUnavailableError("redis unavailable (retrying shortly)"))
            return False
        try:
            if self._resync:
                self._resynchronise()
            self._log().send(kind, ids, data)
            return True
        except StoreUnavailableError as error:
            self._unavailable(error)
            return False

    def _receive(self, applied: bool = False) -> bool:
        """Confirm the entry sent last; `applied`: its call has already taken effect here."""
        try:
            self.durability._advance(self._log().receive())
            return True
        except StoreUnavailableError as error:
            error.applied = applied
            self._unavailable(error)
            return False

    def _unavailable(self, error: StoreUnavailableError) -> None:
        """The log now has a gap (or, under "fail", maybe an entry for a refused call)."""
        self._gap()
        self.durability._lost(error)

    def _gap(self) -> None:
        self._resync = True
        self._next_try = time.monotonic() + self.durability.retry_s

    def _position(self) -> EntryId:
        return self.durability._position()

    def _entry(self, kind: str, ids: np.ndarray, data: np.ndarray | None) -> EntryId:
        entry = self._log().append(kind, ids, data)
        self.durability._advance(entry)
        return entry

    def _log(self) -> LogAppender:
        if self._appender is None:
            self._appender = self.durability.store.appender(self.durability.shard)
        return self._appender

    def _close_log(self) -> None:
        if self._appender is not None:
            self._appender.close()
            self._appender = None

    def _resynchronise(self) -> None:
        """Rewrite every game's record at a new log position; the gap before it stops mattering."""
        position = self._entry("mark", np.zeros(0, np.uint64), None)
        self._capture(self.pool.ids, covering=True, position=position, wait=True)
        self._resync = False


_RECORDERS: dict[str, type[PoolRecorder]] = {
    "off": PoolRecorder,
    "snapshot": SnapshotRecorder,
    "log": LogRecorder,
}


def _checked_seeds(seeds: object, games: int) -> np.ndarray:
    array = np.asarray(seeds)
    if array.shape != (games,) or (array.size and not np.issubdtype(array.dtype, np.integer)):
        raise ValueError(f"seeds must be {games} integers, got {array.dtype} {array.shape}")
    if array.size and array.min() < 0:
        raise ValueError("seeds must be non-negative")
    return array.astype(np.uint64)
