"""The last view a shard sent of each game that asked for deltas, and the diff against it.

Semantics (one delta consumer per game): a delta lists the tiles whose code or army differ
from the last observation planes this shard sent for that game, full or delta, through any
call. A game's first delta lists every one of its tiles, so a client can apply it to any
buffer. Only games that once asked for a delta are tracked (3 bytes per tile and seat each);
closing a game forgets it.

The diff is a numba kernel fused with the update of the stored view, in one pass over the
planes in parallel over chunks of games, comparing 8 tiles at a time as uint64 words. Each
chunk writes its changes as one contiguous run into a scratch output with room for every
tile (of which a few percent are touched); the runs are joined in order afterwards. A
4096-game delta costs about one read of its planes and of the stored view (~1 ms on 2 cores).

A served step with a delta does not take that second pass: `prepare` + `variant` give
engine.step a kernel (kernels.step_range with `_diff_after` as its per-game hook) that diffs
each game right after observe_game wrote its planes, while they are in cache (~0.8-1 ms of a
4096-game 20x20 step saved on 2 cores). Games that finished in the step are left to `finish`,
which diffs them after any autoreset replaced their planes and inserts them in order: the
delta and the store come out the same as `encode`'s (tests/test_fused_deltas.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import numba as nb
import numpy as np

from ..engine.api import StepVariant, chunks
from ..engine.kernels import step_range
from ..wire.codec import ObservationDelta

_PARALLEL_FROM = 64  # games; fewer run on the calling thread (waking numba's pool costs more)


def _changed_tiles(
    g, row, lo, hi, fresh, store_codes, store_armies, codes, armies, index, new_codes, new_armies, k
):
    """Record tiles [lo, hi) of game g that differ from its stored view (every one when `fresh`)
    at k, k+1, ... of the outputs and store them; returns the next free k."""
    width = codes.shape[1]
    for t in range(lo, hi):
        code, army = codes[g, t], armies[g, t]
        if fresh or store_codes[row, t] != code or store_armies[row, t] != army:
            index[k] = g * width + t
            new_codes[k] = code
            new_armies[k] = army
            k += 1
            store_codes[row, t] = code
            store_armies[row, t] = army
    return k


_changed_tiles = nb.njit(inline="always", nogil=True, cache=True)(_changed_tiles)


def _diff_game(
    g, row, fresh, store_codes, store_armies, store_code_words, store_army_words, codes, armies,
    code_words, army_words, index, new_codes, new_armies, k,
):  # fmt: skip
    """Record the changed tiles of game g (every one when `fresh`) from k on, store them; returns the
    next free k. The `*_words` are uint64 views of the same planes: a block of 8 tiles (one word
    of codes, two of armies) is looked at tile by tile only when a word differs, as a few percent
    do. Tiles past the last whole block (or all, when the words are empty) go tile by tile."""
    width = codes.shape[1]
    blocks = code_words.shape[1]
    if fresh:
        return _changed_tiles(
            g, row, 0, width, True, store_codes, store_armies, codes, armies, index, new_codes, new_armies, k
        )
    for w in range(blocks):
        if (
            store_code_words[row, w] != code_words[g, w]
            or store_army_words[row, 2 * w] != army_words[g, 2 * w]
            or store_army_words[row, 2 * w + 1] != army_words[g, 2 * w + 1]
        ):
            k = _changed_tiles(
                g, row, 8 * w, 8 * w + 8, False, store_codes, store_armies, codes, armies,
                index, new_codes, new_armies, k,
            )  # fmt: skip
    return _changed_tiles(
        g, row, 8 * blocks, width, False, store_codes, store_armies, codes, armies,
        index, new_codes, new_armies, k,
    )  # fmt: skip


_diff_game = nb.njit(inline="always", nogil=True, cache=True)(_diff_game)


def _diff_games(diff, counts):
    """Record the changed tiles of each chunk of games in turn from the chunk's first game's
    offset lo * width of the outputs (sized for every tile), their number in counts[chunk], and
    update the stored view: one pass, each chunk writing one contiguous run. `diff`: the
    arguments of _diff_after."""
    rows, codes = diff[4], diff[7]
    width = codes.shape[1]
    games, n_chunks = rows.size, counts.size
    for chunk in nb.prange(n_chunks):
        lo, hi = chunk * games // n_chunks, (chunk + 1) * games // n_chunks
        k = lo * width
        for g in range(lo, hi):
            k = _diff_after(g, False, diff, k)
        counts[chunk] = k - lo * width


def _diff_after(g, finished, diff, k):
    """kernels.step_range's `after`: diff game g unless it `finished` (an autoreset may yet replace
    its planes: DeltaViews.finish diffs those)."""
    if finished:
        return k
    store_codes, store_armies, store_code_words, store_army_words, rows, fresh = diff[:6]
    codes, armies, code_words, army_words, index, new_codes, new_armies = diff[6:13]
    return _diff_game(
        g, rows[g], fresh[g], store_codes, store_armies, store_code_words, store_army_words, codes, armies,
        code_words, army_words, index, new_codes, new_armies, k,
    )  # fmt: skip


_diff_after = nb.njit(inline="always", nogil=True, cache=True)(_diff_after)


def _step_diff_parallel(state, slots, actions, dims, rewards, observe, view, n_chunks, diff, counts):
    """engine.step_parallel with each game's delta taken as soon as its views are written."""
    n, width = slots.shape[0], diff[6].shape[1]
    for chunk in nb.prange(n_chunks):
        lo, hi = chunk * n // n_chunks, (chunk + 1) * n // n_chunks
        end = step_range(
            lo, hi, state, slots, actions, dims, rewards, observe, view, _diff_after, diff, lo * width
        )
        counts[chunk] = end - lo * width


_STEP_DIFF = {
    parallel: nb.njit(nogil=True, cache=True, parallel=parallel)(_step_diff_parallel)
    for parallel in (False, True)
}


def _words(*planes: np.ndarray) -> list[np.ndarray]:
    """uint64 views of the rows of these planes (8 tiles a word for codes, 4 for armies); no
    words at all ([rows, 0] each) unless every row is whole 8-tile blocks and contiguous."""
    if any(p.shape[1] % 8 or not p.flags.c_contiguous for p in planes):
        return [np.zeros((p.shape[0], 0), np.uint64) for p in planes]
    return [p.view(np.uint64) for p in planes]


_DIFF = {
    parallel: nb.njit(nogil=True, cache=True, parallel=parallel)(_diff_games) for parallel in (False, True)
}


@dataclass
class PendingDelta:
    """A delta set up by DeltaViews.prepare: the games, _diff_after's arguments, each chunk's count."""

    ids: np.ndarray
    diff: tuple
    counts: np.ndarray


class DeltaViews:
    """Per tracked game id, the codes/armies planes last sent ([players * tiles] each).

    Ids map to rows of the stores through one sorted array (a searchsorted per call), as
    GamePool maps ids to slots. Not thread-safe: the shard calls it under the pool's lock.
    """

    def __init__(self, players: int, tiles: int) -> None:
        self._width = players * tiles
        self._ids = np.zeros(0, np.uint64)  # tracked ids, ascending
        self._rows = np.zeros(0, np.int64)  # store row of _ids[i]
        self._used = np.zeros(0, np.bool_)
        self._codes = np.zeros((0, self._width), np.uint8)
        self._armies = np.zeros((0, self._width), np.uint16)
        self._sparse = ObservationDelta(np.empty(0, np.int32), np.empty(0, np.uint8), np.empty(0, np.uint16))

    @property
    def tracked(self) -> int:
        return self._ids.size

    def encode(self, ids: np.ndarray, codes: np.ndarray, armies: np.ndarray) -> ObservationDelta:
        """The delta from the last sent view to these planes [B, players, tiles]; they become the last view.

        Indices are flat into [B, players, tiles] in the order of `ids`.
        """
        pending = self.prepare(ids, codes, armies)
        _DIFF[ids.size >= _PARALLEL_FROM](pending.diff, pending.counts)
        return self._join(pending)

    def prepare(self, ids: np.ndarray, codes: np.ndarray, armies: np.ndarray) -> PendingDelta:
        """Set up the delta of these games to the planes [B, players, tiles] a step is about to write
        (its `variant`, so each game is diffed while its planes are in cache); `finish` returns it."""
        rows, found = self._lookup(ids)
        fresh = ~found
        if fresh.any():
            rows[fresh] = self._track(ids[fresh])
        flat_codes, flat_armies = codes.reshape(ids.size, -1), armies.reshape(ids.size, -1)
        if self._sparse.index.size < flat_codes.size:  # room for every tile, reused across calls
            self._sparse = ObservationDelta(*(np.empty(flat_codes.size, a.dtype) for a in self._sparse))
        parallel = ids.size >= _PARALLEL_FROM
        counts = np.zeros(chunks(ids.size) if parallel else 1, np.int64)
        store_code_words, store_army_words, code_words, army_words = _words(
            self._codes, self._armies, flat_codes, flat_armies
        )
        diff = (
            self._codes, self._armies, store_code_words, store_army_words, rows, fresh,
            flat_codes, flat_armies, code_words, army_words, *self._sparse,
        )  # fmt: skip
        return PendingDelta(ids, diff, counts)

    def variant(self, pending: PendingDelta) -> StepVariant:
        """engine.step's variant that diffs each game it steps, but those that finish (DeltaViews.finish)."""
        counts = np.zeros(chunks(pending.ids.size), np.int64)  # the step's chunks, serial or not
        pending.counts = counts
        return StepVariant(_STEP_DIFF[True], _STEP_DIFF[False], (pending.diff, counts))

    def finish(self, pending: PendingDelta, finished: np.ndarray) -> ObservationDelta:
        """The delta of a step run with `variant(pending)`: the games that `finished` (bool[B]) were
        left out, as an autoreset may have replaced their planes since; they are diffed now."""
        delta = self._join(pending)
        late = np.flatnonzero(finished)
        if late.size == 0:
            return delta
        rows, fresh, codes, armies = pending.diff[4:8]
        again = self.prepare(pending.ids[late], codes[late], armies[late])  # tracked: found, not fresh
        again.diff = (*again.diff[:4], rows[late], fresh[late], *again.diff[6:])
        _DIFF[False](again.diff, again.counts)
        extra = self._join(again)
        width = codes.shape[1]
        game = extra.index // width  # of the late games, to their rows in the step
        extra = extra._replace(index=(extra.index + (late[game] - game) * width).astype(np.int32))
        at = np.searchsorted(delta.index, extra.index)
        return ObservationDelta(*(np.insert(a, at, b) for a, b in zip(delta, extra, strict=True)))

    def _join(self, pending: PendingDelta) -> ObservationDelta:
        """The chunks' runs of the sparse outputs, in order (copies)."""
        counts, games, width = pending.counts, pending.ids.size, pending.diff[6].shape[1]
        runs = [(chunk * games // counts.size * width, int(n)) for chunk, n in enumerate(counts)]
        return ObservationDelta(
            *(np.concatenate([a[start : start + n] for start, n in runs]) for a in self._sparse)
        )

    def record(self, ids: np.ndarray, codes: np.ndarray, armies: np.ndarray) -> None:
        """Full planes were sent for these games: tracked ones' last view becomes them."""
        if self._ids.size == 0:
            return
        rows, found = self._lookup(ids)
        if found.any():
            self._codes[rows[found]] = codes.reshape(ids.size, -1)[found]
            self._armies[rows[found]] = armies.reshape(ids.size, -1)[found]

    def forget(self, ids: np.ndarray) -> None:
        """Stop tracking these games (closed); unknown ids are ignored."""
        if self._ids.size == 0:
            return
        keep = ~np.isin(self._ids, ids)
        self._used[self._rows[~keep]] = False
        self._ids, self._rows = self._ids[keep], self._rows[keep]

    def _lookup(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self._ids.size == 0:
            return np.zeros(ids.size, np.int64), np.zeros(ids.size, np.bool_)
        pos = np.minimum(np.searchsorted(self._ids, ids), self._ids.size - 1)
        return self._rows[pos], self._ids[pos] == ids

    def _track(self, ids: np.ndarray) -> np.ndarray:
        """Store rows for new ids (grown by doubling); returns them in the order of `ids`."""
        free = np.flatnonzero(~self._used)
        if free.size < ids.size:
            old = self._used.size
            size = max(2 * old, old + ids.size - free.size)
            self._used = np.concatenate([self._used, np.zeros(size - old, np.bool_)])
            self._codes = np.concatenate([self._codes, np.zeros((size - old, self._width), np.uint8)])
            self._armies = np.concatenate([self._armies, np.zeros((size - old, self._width), np.uint16)])
            free = np.flatnonzero(~self._used)
        rows = free[: ids.size]
        self._used[rows] = True
        order = np.argsort(ids, kind="stable")
        at = np.searchsorted(self._ids, ids[order])
        self._ids = np.insert(self._ids, at, ids[order])
        self._rows = np.insert(self._rows, at, rows[order])
        return rows
