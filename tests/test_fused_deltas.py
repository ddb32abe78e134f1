"""The delta taken inside the step kernel (DeltaViews.variant) against the two-pass one (encode)."""

from __future__ import annotations

import numpy as np
import pytest

from gameserver.agents import random_actions
from gameserver.engine import GameConfig, Observation
from gameserver.pool import GamePool
from gameserver.shard.deltas import DeltaViews
from gameserver.wire import codec


@pytest.mark.parametrize("size", [(6, 8), (5, 5)])  # rows of whole 8-tile words, and tile by tile
def test_fused_and_two_pass_deltas_agree_and_rebuild_the_planes(size):
    config = GameConfig(height=size[0], width=size[1], max_ticks=12)  # autoresets every few steps
    pools = [GamePool(config, 64, seed=3, autoreset=True) for _ in range(2)]
    views = [DeltaViews(config.players, config.tiles) for _ in range(2)]
    ids = [pool.create(90) for pool in pools]
    np.testing.assert_array_equal(ids[0], ids[1])
    live = ids[0]
    client: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    resets = 0
    rng = np.random.default_rng(0)
    for step in range(60):
        if step % 7 == 3:  # games join and leave
            for pool, view in zip(pools, views, strict=True):
                pool.release(live[:5])
                view.forget(live[:5])
            client = {k: v for k, v in client.items() if k not in set(live[:5].tolist())}
            live = np.concatenate([live[5:], pools[0].create(8)])
            pools[1].create(8)
        chosen = rng.permutation(live)[: rng.integers(1, live.size + 1)]  # serial and parallel sizes
        before = pools[0].observe(chosen)
        moves = random_actions(before.codes, before.armies, before.tick, *size, seed=step)
        outs = [Observation.allocate(config, chosen.size) for _ in range(2)]
        plain = pools[0].step(chosen, moves, out=outs[0])
        two_pass = views[0].encode(chosen, outs[0].codes, outs[0].armies)
        pending = views[1].prepare(chosen, outs[1].codes, outs[1].armies)
        fused_step = pools[1].step(chosen, moves, out=outs[1], variant=views[1].variant(pending))
        fused = views[1].finish(pending, fused_step.terminated | fused_step.truncated)
        np.testing.assert_array_equal(plain.reset, fused_step.reset)
        resets += int(plain.reset.sum())
        for a, b in zip(two_pass, fused, strict=True):
            assert a.dtype == b.dtype
            np.testing.assert_array_equal(a, b)
        for name in ("_ids", "_rows", "_used", "_codes", "_armies"):
            np.testing.assert_array_equal(getattr(views[0], name), getattr(views[1], name))
        codes = np.stack([client.get(int(i), (np.zeros_like(outs[1].codes[0]), None))[0] for i in chosen])
        armies = np.stack([client.get(int(i), (None, np.zeros_like(outs[1].armies[0])))[1] for i in chosen])
        codec.apply_delta(codes, armies, fused)
        np.testing.assert_array_equal(codes, outs[1].codes)
        np.testing.assert_array_equal(armies, outs[1].armies)
        client.update({int(i): (codes[k], armies[k]) for k, i in enumerate(chosen)})
    assert resets > 100  # the late path (games diffed after their autoreset) ran often
