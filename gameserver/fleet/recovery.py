"""Recovery: rebuild games from their records and their owners' action logs, into any pool.

A record holds a game's exact state at position P of its owner's log. Replaying that log's
entries after P that name the game, through the same engine, reproduces its state bit for
bit: the rules are deterministic, autoreset draws its seeds from the map seed and the game id,
and a reset onto given maps replays from the maps its entry holds. Games are rebuilt in
scratch pools, one per (config, autoreset), and only then adopted by the target with their
ids, so a target never holds a half-replayed game.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from ..engine import GameConfig
from ..pool import GamePool, IdSource
from ..sharding import HashRing
from ..wire import codec
from .records import EntryId, StoredGames, decode_map_entry
from .store import FleetStore, LogEntry


class Adopter(Protocol):
    """Where recovered games go: a GamePool, or a recorder around one (which records them)."""

    autoreset: bool

    def adopt(self, ids: object, snapshot: codec.Snapshot) -> None: ...


Target = Adopter | Callable[[GameConfig, bool], Adopter]  # a pool, or the pool for (config, autoreset)


@dataclass(frozen=True)
class Recovered:
    """What a recovery restored: every game's id, and the inexact ones (their records were not
    `complete`: their owner may have acknowledged calls the log lacks) with their ticks."""

    ids: np.ndarray
    inexact: np.ndarray
    inexact_ticks: np.ndarray


def recover(store: FleetStore, into: Target, **selection: Any) -> np.ndarray:
    """The ids, ascending, of the games `recover_games` restores (same arguments)."""
    return recover_games(store, into, **selection).ids


def recover_games(
    store: FleetStore,
    into: Target,
    *,
    key_hashes: Sequence[int] | None = None,
    game_ids: Sequence[int] | None = None,
    owner: str | None = None,
    writer: str | None = None,
) -> Recovered:
    """Restore the recorded games of these key hashes (or these ids), optionally only those
    `owner` held, at their last logged tick, saying which came back at a tick their clients may
    have passed.

    Adopting through a recorder (Durability.wrap) records the games under its shard before this
    returns. With `writer` (a shard this process holds), records of games the log shows closed
    are deleted: the shard that closed them died before its writer could (their records would
    otherwise name it until they expire).
    """
    stored = store.load_games(key_hashes=key_hashes, game_ids=game_ids)
    replay = _Replay(stored, owner)
    for shard, after in replay.logs():
        for entry in store.read_log(shard, after):
            replay.apply(shard, entry)
    ids = replay.hand_over(into)
    closed = replay.ids[~replay.live]
    if closed.size and writer is not None:
        store.drop_games(writer, closed)
    inexact = replay.ids[replay.live & ~replay.complete]
    return Recovered(ids, inexact, replay.ticks(inexact))


def recover_shard(store: FleetStore, dead: str, ring: HashRing, me: str, into: Target) -> np.ndarray:
    """Take over the games of a dead (or drained) shard whose keys `ring` now gives to `me`.

    Every survivor runs this with the same ring; each takes a disjoint share of the keys.
    """
    mine = keys_assigned(store, dead, ring, me)
    ids = recover(store, into, key_hashes=mine, owner=dead, writer=me)
    store.forget_key_hashes(dead, mine)
    return ids


def keys_assigned(store: FleetStore, dead: str, ring: HashRing, me: str) -> list[int]:
    """The key hashes `dead` recorded games for that `ring` gives to `me`."""
    key_hashes = np.array(store.key_hashes_of(dead), np.uint64)
    if not key_hashes.size:
        return []
    assigned = np.array(ring.shards)[ring.shard_index_of_hashes(key_hashes)]
    return key_hashes[assigned == me].tolist()


class _Replay:
    """Recorded games in scratch pools, with what replay needs per game in sorted-id arrays."""

    def __init__(self, stored: StoredGames, owner: str | None) -> None:
        keep = np.array([owner is None or o == owner for o in stored.owner], np.bool_).reshape(-1)
        order = np.argsort(stored.ids[keep], kind="stable")
        rows = np.flatnonzero(keep)[order]  # stored rows, by ascending id
        self.ids = stored.ids[rows]
        self.position = stored.position[rows]
        logged = stored.logged[rows]
        self.complete = stored.complete[rows]
        self.shards = sorted({stored.owner[r] for r in rows[logged].tolist()})
        owners = np.array([stored.owner[r] for r in rows.tolist()], dtype=object)
        self.shard_of = np.full(rows.size, -1, np.int64)
        for s, shard in enumerate(self.shards):
            self.shard_of[logged & (owners == shard)] = s
        self.live = np.ones(rows.size, np.bool_)
        self.group_of = np.zeros(rows.size, np.int64)
        self.pools: list[GamePool] = []
        where = np.full(stored.ids.size, -1, np.int64)
        where[rows] = np.arange(rows.size)
        for group_rows, snapshot in stored.groups:
            mine = where[group_rows] >= 0
            for autoreset in (False, True):
                pick = mine & (stored.autoreset[group_rows] == autoreset)
                if not pick.any():
                    continue
                at = where[group_rows[pick]]
                self.group_of[at] = len(self.pools)
                pool = GamePool(
                    snapshot.config, int(at.size), int(at.size), autoreset=autoreset, id_source=IdSource()
                )
                arrays = {name: a[pick] for name, a in snapshot.arrays.items()}
                pool.adopt(self.ids[at], codec.Snapshot(snapshot.config, arrays))
                self.pools.append(pool)

    def logs(self) -> list[tuple[str, EntryId]]:
        """(shard, position) per log to read: from the oldest record that shard's log continues."""
        starts = []
        for s, shard in enumerate(self.shards):
            ms, seq = min(map(tuple, self.position[self.shard_of == s].tolist()))
            starts.append((shard, (ms, seq)))
        return starts

    def apply(self, shard: str, entry: LogEntry) -> None:
        """Replay one entry for the games it names whose records predate it."""
        if entry.kind not in ("step", "reset", "maps", "close") or not self.ids.size:
            return  # create/adopt/mark entries only mark positions: records start at or after them
        at = np.minimum(np.searchsorted(self.ids, entry.ids), self.ids.size - 1)
        ms, seq = (np.uint64(v) for v in entry.id)
        before = (self.position[at, 0] < ms) | ((self.position[at, 0] == ms) & (self.position[at, 1] < seq))
        hit = (
            (self.ids[at] == entry.ids)
            & self.live[at]
            & (self.shard_of[at] == self.shards.index(shard))
            & before
        )
        rows = np.flatnonzero(hit)
        for g in np.unique(self.group_of[at[rows]]).tolist():  # one: an entry comes from one pool
            mine = rows[self.group_of[at[rows]] == g]
            pool, ids = self.pools[g], entry.ids[mine]
            if entry.kind == "step":
                pool.step(ids, entry.data.reshape(entry.ids.size, -1)[mine], observe=False)
            elif entry.kind == "reset":
                pool.reset(ids, None if entry.data is None else entry.data[mine])
            elif entry.kind == "maps":  # a reset onto given maps: the entry holds them
                seeds, maps = decode_map_entry(entry.data, pool.config, entry.ids.size)
                pool.reset(ids, seeds[mine], maps.rows(mine))
            else:
                pool.release(ids)
                self.live[at[mine]] = False

    def ticks(self, ids: np.ndarray) -> np.ndarray:
        """The ticks these (live) games stand at after replay."""
        at = np.searchsorted(self.ids, ids)
        ticks = np.zeros(ids.size, np.int64)
        for g, pool in enumerate(self.pools):
            mine = self.group_of[at] == g
            ticks[mine] = pool.batch.tick[pool.slots_of(ids[mine])]
        return ticks

    def hand_over(self, into: Target) -> np.ndarray:
        recovered = []
        for pool in self.pools:
            ids = pool.ids
            if not ids.size:
                continue  # all closed before the shard died
            target = into(pool.config, pool.autoreset) if callable(into) else into
            if target.autoreset != pool.autoreset:
                raise ValueError(
                    f"games recorded with autoreset={pool.autoreset} cannot go to a pool with "
                    f"autoreset={target.autoreset}: their episodes would end differently"
                )
            slots = pool.slots_of(ids)
            target.adopt(
                ids, codec.Snapshot(pool.config, {n: a[slots] for n, a in pool.batch.arrays().items()})
            )
            recovered.append(ids)
        return np.sort(np.concatenate(recovered)) if recovered else np.zeros(0, np.uint64)
