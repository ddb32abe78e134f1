"""Shared-memory observation views: what the shard writes, the client reads, with no copy."""

import numpy as np
import pytest

from gameserver.engine import GameConfig
from gameserver.pool import GamePool
from gameserver.shared_views import OPEN_LIMIT, PREFIX, SharedView, SharedViewCache, SharedViewError

CONFIG = GameConfig(8, 8)


def test_a_step_written_through_the_shard_cache_is_what_the_client_sees():
    pool = GamePool(CONFIG, 4, seed=3)
    ids = pool.create(4)
    with SharedView(CONFIG, 4) as view:
        shard_side = SharedViewCache().views(view.name, CONFIG, 4)
        pool.step(ids, np.full((4, 2), -1, np.int32), out=shard_side)
        expected = pool.observe(ids)
        for name in ("codes", "armies", "land", "army", "tick"):
            assert np.array_equal(getattr(view.observation, name), getattr(expected, name)), name
        assert view.observation.tick.tolist() == [1, 1, 1, 1]


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
