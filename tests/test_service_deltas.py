"""Server-side delta views: what a delta lists, and that applying every delta rebuilds the planes."""

from __future__ import annotations

import numpy as np
import pytest

from gameserver.shard.deltas import DeltaViews
from gameserver.wire import codec

PLAYERS, TILES = 2, 30


def planes(rng: np.random.Generator, games: int, tiles: int = TILES) -> tuple[np.ndarray, np.ndarray]:
    codes = rng.integers(0, 4, (games, PLAYERS, tiles), dtype=np.uint8)
    armies = rng.integers(0, 3, (games, PLAYERS, tiles), dtype=np.uint16)
    return codes, armies


def changed(rng: np.random.Generator, codes: np.ndarray, armies: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A tenth of the tiles get new values (some of them the same value again)."""
    codes, armies = codes.copy(), armies.copy()
    hit = rng.random(codes.shape) < 0.1
    codes[hit] = rng.integers(0, 4, hit.sum(), dtype=np.uint8)
    armies[rng.random(codes.shape) < 0.1] += 1
    return codes, armies


@pytest.mark.parametrize("games", [3, 100])  # the serial and the parallel kernels
@pytest.mark.parametrize("tiles", [TILES, 32])  # rows of 60 bytes: tile by tile; of 64: 8-tile words
def test_applying_every_delta_rebuilds_the_planes(games, tiles):
    rng = np.random.default_rng(games)
    views = DeltaViews(PLAYERS, tiles)
    ids = rng.permutation(np.arange(1, games + 1, dtype=np.uint64) * 977)
    client_codes = np.zeros((games, PLAYERS, tiles), np.uint8)
    client_armies = np.zeros((games, PLAYERS, tiles), np.uint16)
    codes, armies = planes(rng, games, tiles)
    sizes = []
    for _ in range(20):
        delta = views.encode(ids, codes, armies)
        sizes.append(codec.apply_delta(client_codes, client_armies, delta))
        np.testing.assert_array_equal(client_codes, codes)
        np.testing.assert_array_equal(client_armies, armies)
        codes, armies = changed(rng, codes, armies)
    assert views.tracked == games
    assert sizes[0] == codes.size and 0 < max(sizes[1:]) < codes.size // 3  # then only the changes


def test_first_delta_lists_every_tile_then_only_changes():
    views = DeltaViews(PLAYERS, TILES)
    ids = np.array([5, 9], np.uint64)
    codes, armies = np.zeros((2, PLAYERS, TILES), np.uint8), np.zeros((2, PLAYERS, TILES), np.uint16)
    assert views.encode(ids, codes, armies).index.tolist() == list(range(2 * PLAYERS * TILES))
    assert views.encode(ids, codes, armies).index.size == 0
    armies[1, 1, 3] = 7
    delta = views.encode(ids[::-1], codes, armies[::-1].copy())  # indices follow the order of the ids
    assert delta.index.tolist() == [TILES + 3] and delta.armies.tolist() == [7]


def test_record_and_forget():
    views = DeltaViews(PLAYERS, TILES)
    ids = np.array([1, 2], np.uint64)
    zeros = np.zeros((2, PLAYERS, TILES), np.uint8), np.zeros((2, PLAYERS, TILES), np.uint16)
    views.record(ids, *zeros)  # nothing tracked yet: nothing recorded
    views.encode(ids, *zeros)
    full = np.ones((2, PLAYERS, TILES), np.uint8), np.ones((2, PLAYERS, TILES), np.uint16)
    views.record(np.array([2, 3], np.uint64), full[0], full[1])  # game 2 was sent full planes; 3 is unknown
    delta = views.encode(ids, *full)
    assert np.unique(delta.index // (PLAYERS * TILES)).tolist() == [0]  # only game 1 differs from its record
    views.forget(np.array([1], np.uint64))
    assert views.tracked == 1
    assert views.encode(ids, *full).index.size == PLAYERS * TILES  # game 1 starts over: every tile
