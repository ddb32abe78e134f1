"""generate() is all-or-nothing: an impossible map request raises and leaves every slot as it was."""

import numpy as np
import pytest

from gameserver.engine import GameBatch, GameConfig, generate


def test_impossible_maps_raise_and_change_no_slot():
    possible = GameConfig(height=6, width=6, players=8)
    batch = GameBatch.allocate(possible, 4)
    generate(batch, np.arange(4), np.arange(4))
    before = {name: array.copy() for name, array in batch.arrays().items()}
    impossible = GameBatch(
        GameConfig(height=6, width=6, players=8, min_general_distance=12), *batch.arrays().values()
    )
    with pytest.raises(ValueError, match="12 apart"):
        generate(impossible, np.arange(4), np.arange(4) + 9)
    for name, array in batch.arrays().items():
        assert np.array_equal(array, before[name]), name


def test_generate_touches_only_the_given_slots():
    batch = GameBatch.allocate(GameConfig(), 6)
    generate(batch, np.arange(6), np.arange(6))
    before = {name: array.copy() for name, array in batch.arrays().items()}
    generate(batch, np.array([4, 1]), np.array([100, 200]))
    untouched = [0, 2, 3, 5]
    for name, array in batch.arrays().items():
        assert np.array_equal(array[untouched], before[name][untouched]), name
    assert batch.seed[[4, 1]].tolist() == [100, 200]
    again = GameBatch.allocate(GameConfig(), 1)
    generate(again, [0], [200])
    assert np.array_equal(again.terrain[0], batch.terrain[1])
