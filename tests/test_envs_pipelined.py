"""EnvPool-style stepping of GeneralsVectorEnv: `send(actions, env_id)` / `recv()` over batches of
`batch_size` sub-envs, and `step_async`/`step_wait`, in process and against a served shard: the
same games as whole-batch `step` (the opponents' moves do not depend on how the batch is cut)."""

from __future__ import annotations

import numpy as np
import pytest

from gameserver.client import FleetClient
from gameserver.engine import GameConfig
from gameserver.envs.adapters import GeneralsVectorEnv
from gameserver.envs.remote import RemoteBackend

CONFIG = GameConfig(height=8, width=8, max_ticks=40)
TICKS = 45  # past max_ticks: truncations and same-step autoresets happen in between
# Served, the two envs' games have different (random) ids, and an autoreset's next map follows
# from the game id: compared up to the first autoreset.
SERVED_TICKS = 35


def pass_all(env: GeneralsVectorEnv, n: int) -> np.ndarray:
    return np.full(n, env.single_action_space.n - 1)


def whole_batch(env: GeneralsVectorEnv, ticks: int) -> list[np.ndarray]:
    env.reset(seed=3)
    return [env.step(pass_all(env, env.num_envs))[0].copy() for _ in range(ticks)]


def pipelined(env: GeneralsVectorEnv, ticks: int) -> list[np.ndarray]:
    """Two batches always in flight: recv one, send its next step, as EnvPool's loop does."""
    env.async_reset(seed=3)
    by_tick: list[list[np.ndarray | None]] = []
    seen = [0] * (env.num_envs // env.batch_size)
    while min(seen) <= ticks:
        obs, _, _, _, infos = env.recv()
        rows = infos["env_id"]
        batch = rows[0] // env.batch_size
        if seen[batch]:  # the reset's observations are tick 0
            while len(by_tick) < seen[batch]:
                by_tick.append([None] * len(seen))
            by_tick[seen[batch] - 1][batch] = obs.copy()
        seen[batch] += 1
        env.send(pass_all(env, env.batch_size), rows)
    return [np.concatenate(tick) for tick in by_tick[:ticks]]


@pytest.mark.parametrize(("backend", "ticks"), [("in process", TICKS), ("served", SERVED_TICKS)])
def test_send_recv_over_batches_plays_the_games_whole_batch_steps_play(
    backend: str, ticks: int, shard
) -> None:
    def make(batch_size: int, client: FleetClient | None) -> GeneralsVectorEnv:
        remote = RemoteBackend(client, CONFIG, shared_view=False) if client else None
        return GeneralsVectorEnv(8, CONFIG, backend=remote, batch_size=batch_size)

    with FleetClient(shard.address, timeout=30) as client:
        use = client if backend == "served" else None
        reference, split = make(8, use), make(4, use)
        try:
            expected, got = whole_batch(reference, ticks), pipelined(split, ticks)
        finally:
            reference.close()
            split.close()
    assert len(got) == ticks
    for tick, (want, have) in enumerate(zip(expected, got, strict=True)):
        np.testing.assert_array_equal(have, want, err_msg=f"tick {tick + 1}")


def test_step_async_then_step_wait_is_step_and_misuse_is_refused() -> None:
    env, reference = GeneralsVectorEnv(4, CONFIG), GeneralsVectorEnv(4, CONFIG)
    env.reset(seed=5)
    reference.reset(seed=5)
    for _ in range(3):
        env.step_async(pass_all(env, 4))
        got = env.step_wait()
        want = reference.step(pass_all(reference, 4))
        np.testing.assert_array_equal(got[0], want[0])
        assert "env_id" not in got[4]
    with pytest.raises(RuntimeError, match="nothing sent"):
        env.recv()
    split = GeneralsVectorEnv(4, CONFIG, batch_size=2)
    split.async_reset(seed=1)
    _, _, _, _, infos = split.recv()
    with pytest.raises(RuntimeError, match="send"):
        split.step(pass_all(split, 4))
    with pytest.raises(ValueError, match="one batch of 2"):
        split.send(pass_all(split, 2), np.array([0, 2]))
    split.send(pass_all(split, 2), infos["env_id"])
    with pytest.raises(RuntimeError, match="recv"):
        split.send(pass_all(split, 2), infos["env_id"])
    with pytest.raises(ValueError, match="batch_size must divide"):
        GeneralsVectorEnv(4, CONFIG, batch_size=3)
    for e in (env, reference, split):
        e.close()
