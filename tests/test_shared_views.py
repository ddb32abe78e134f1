"""Shared-memory views: the planes and masks the shard writes are what the client reads, no copy."""

import numpy as np
import pytest

from gameserver.engine import GameConfig, action_masks, mask_bytes
from gameserver.engine.config import GENERAL, KIND_OFFSET
from gameserver.pool import GamePool
from gameserver.shared_views import (
    MASKS_MARK,
    OPEN_LIMIT,
    PREFIX,
    NoRoomForMasks,
    SharedView,
    SharedViewCache,
    SharedViewError,
)
from gameserver.wire import codec

CONFIG = GameConfig(8, 8)


def test_a_step_written_through_the_shard_cache_is_what_the_client_sees():
    pool = GamePool(CONFIG, 4, seed=3)
    ids = pool.create(4)
    with SharedView(CONFIG, 4) as view:
        shard_side = SharedViewCache().views(view.name, CONFIG, 4, masks=True)
        pool.step(ids, np.full((4, 2), -1, np.int32), out=shard_side.observation)
        assert pool.masks(ids, shard_side.masks) is shard_side.masks  # the kernel writes in place
        expected = pool.observe(ids)
        for name in ("codes", "armies", "land", "army", "tick"):
            assert np.array_equal(getattr(view.observation, name), getattr(expected, name)), name
        assert view.observation.tick.tolist() == [1, 1, 1, 1]
        np.testing.assert_array_equal(view.masks, pool.masks(ids))


def test_a_call_for_fewer_games_lays_out_planes_then_masks_from_the_first_byte():
    """5 games in an 8-game view: the packed planes of 5 games, their masks at the next 8-byte
    boundary, and the segment's last 8 bytes the mark, on both sides."""
    with SharedView(CONFIG, 8) as view:
        p, t = CONFIG.players, CONFIG.tiles
        segment = memoryview(view._segment)
        assert len(segment) == codec.view_nbytes(8, p, t) + len(MASKS_MARK)
        assert bytes(segment[-len(MASKS_MARK) :]) == MASKS_MARK
        planes, masks = view.layout(5)
        assert masks.shape == (5, p, mask_bytes(t)) and codec.masks_offset(5, p, t) % 8 == 0
        assert np.shares_memory(masks, np.frombuffer(segment, np.uint8)[codec.masks_offset(5, p, t) :])
        assert view.rows(5) is planes and view.mask_rows(5) is masks
        shard_side = SharedViewCache().views(view.name, CONFIG, 5, masks=True)
        shard_side.masks[...] = 0xA5
        shard_side.observation.codes[...] = 0x21
        assert (masks == 0xA5).all() and (planes.codes == 0x21).all()
        assert bytes(segment[-len(MASKS_MARK) :]) == MASKS_MARK  # never written by a call


def test_a_planes_only_segment_gets_no_masks_and_a_tight_one_is_refused():
    """masks=False (an older client's layout: no mark): the shard leaves the masks to the reply.
    A marked segment holding a call's planes but not their masks is refused, nothing written."""
    with SharedView(CONFIG, 8, masks=False) as planes_only:
        assert planes_only.masks is None and planes_only.mask_rows(3) is None
        assert len(planes_only._segment) == codec.observation_nbytes(8, CONFIG.players, CONFIG.tiles)
        rows = SharedViewCache().views(planes_only.name, CONFIG, 8, masks=True)
        assert rows.masks is None and rows.observation.games == 8
    with SharedView(CONFIG, 7) as tight:  # 8 games' planes fit in a 7-game view, their masks do not
        cache = SharedViewCache()
        with pytest.raises(NoRoomForMasks, match="not their masks"):
            cache.views(tight.name, CONFIG, 8, masks=True)
        assert cache.views(tight.name, CONFIG, 8).observation.games == 8  # no masks asked: served
        assert cache.views(tight.name, CONFIG, 7, masks=True).masks.shape[0] == 7


def test_an_old_segments_last_bytes_never_read_as_the_mark():
    """The mark starts with 0xFF, a byte no observation code takes (kind << 4 | owner: at most 0x5F)."""
    assert len(MASKS_MARK) == 8 and MASKS_MARK[0] == 0xFF and (GENERAL + KIND_OFFSET) << 4 | 0xF < 0xFF


@pytest.mark.parametrize(
    ("name", "message"),
    [("not-ours", "not a GameFleet view"), (PREFIX + "../etc", "not a GameFleet view"),
     (PREFIX + "missing0000", "cannot be opened")],
)  # fmt: skip
def test_foreign_or_missing_segments_are_refused(name, message):
    with pytest.raises(SharedViewError, match=message):
        SharedViewCache().views(name, CONFIG, 1)


def test_a_segment_too_small_for_the_games_is_refused():
    with SharedView(CONFIG, 2) as view, pytest.raises(SharedViewError, match="bytes"):
        SharedViewCache().views(view.name, CONFIG, 3)


def test_the_cache_keeps_a_bounded_number_of_segments_mapped():
    cache = SharedViewCache()
    views = [SharedView(CONFIG, 1) for _ in range(OPEN_LIMIT + 6)]
    try:
        for view in views:
            cache.views(view.name, CONFIG, 1)
        assert len(cache._open) == OPEN_LIMIT
    finally:
        for view in views:
            view.close()


def test_action_masks_into_out_overwrite_every_byte_and_refuse_a_wrong_array():
    """A segment's masks block holds the last call's bytes: the kernel must clear what it does not set."""
    pool = GamePool(CONFIG, 3, seed=5)
    ids = pool.create(3)
    for _ in range(4):
        pool.step(ids, np.full((3, 2), -1, np.int32))
    out = np.full((3, CONFIG.players, mask_bytes(CONFIG.tiles)), 0xFF, np.uint8)
    assert action_masks(pool.batch, pool.slots_of(ids), out) is out
    np.testing.assert_array_equal(out, action_masks(pool.batch, pool.slots_of(ids)))
    for wrong in (out[:2], out.astype(np.int16), out[:, :, ::2], out.copy().T):
        with pytest.raises(ValueError, match="out must be"):
            action_masks(pool.batch, pool.slots_of(ids), wrong)
