"""ReplayService end to end on 127.0.0.1: two inserting clients, a sampler, priorities, bad input."""

import signal
import subprocess
import sys
import threading

import grpc
import numpy as np
import pytest

from gameserver.agents import random_actions
from gameserver.engine import GameConfig
from gameserver.pool import GamePool
from gameserver.replay.buffer import ReplayBuffer, field_spec
from gameserver.replay.client import ReplayClient, TransitionPusher
from gameserver.replay.rate_limiter import RateLimiter
from gameserver.replay.service import ReplayServer
from gameserver.replay.transitions import capture, make_transitions, transition_spec
from gameserver.rl.selfplay import run_selfplay
from gameserver.wire.errors import GameFleetError, InvalidArgument
from gameserver.wire.generated import replay_pb2 as rpb
from gameserver.wire.messages import write_tensor
from gameserver.wire.services import REPLAY_SERVICE

SPEC = {"obs": field_spec(np.uint16, (4,)), "action": field_spec(np.int32), "actor": field_spec(np.uint8)}


def items(n, actor, start=0):
    values = np.arange(start, start + n)
    return {
        "obs": np.repeat(values[:, None], 4, axis=1).astype(np.uint16),
        "action": values.astype(np.int32),
        "actor": np.full(n, actor, np.uint8),
    }


def buffer_state(buffer):
    arrays = {name: column.copy() for name, column in buffer._columns.items()}
    return arrays, buffer._keys.copy(), buffer.sampler.tree.sums.copy(), buffer.info()


def assert_unchanged(before, after):
    for a, b in zip(before[:3], after[:3], strict=True):
        if isinstance(a, dict):
            for name in a:
                np.testing.assert_array_equal(a[name], b[name])
        else:
            np.testing.assert_array_equal(a, b)
    assert before[3] == after[3]


@pytest.fixture
def served():
    buffer = ReplayBuffer(SPEC, 1000, prioritized=True, alpha=1.0, beta=0.5, seed=1)
    with ReplayServer(buffer, "127.0.0.1", 0, workers=4, max_wait_s=0.3) as server:
        yield buffer, server.address


def test_two_actors_insert_a_learner_samples_and_updates_priorities(served):
    _, address = served
    barrier = threading.Barrier(2)
    keys = {}

    def actor(number):
        with ReplayClient(address, timeout=10) as client:
            barrier.wait()
            keys[number] = np.concatenate([client.insert(items(25, number, start=25 * i)) for i in range(4)])

    threads = [threading.Thread(target=actor, args=(n,)) for n in (1, 2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(np.concatenate(list(keys.values())).tolist()) == list(range(200))  # every key once
    with ReplayClient(address, timeout=10) as learner:
        info = learner.info()
        assert (info["size"], info["inserted"], info["capacity"]) == (200, 200, 1000)
        assert info["spec"] == SPEC and info["sampler"] == "prioritized"
        batch = learner.sample(64)
        assert batch.keys.dtype == np.uint64 and batch.keys.shape == (64,)
        assert set(batch.fields) == set(SPEC)
        assert batch.fields["obs"].dtype == np.uint16 and batch.fields["obs"].shape == (64, 4)
        # A sampled row is the row inserted under its key, whichever actor sent it.
        for key, actor, action in zip(batch.keys, batch.fields["actor"], batch.fields["action"], strict=True):
            position = np.flatnonzero(keys[int(actor)] == key)
            assert position.size == 1 and action == position[0]
        np.testing.assert_allclose(batch.probabilities, 1 / 200)
        np.testing.assert_allclose(batch.weights, 1.0)
        # Only the items of actor 1 get priority: actor 2's vanish from the draws.
        everything = np.concatenate([keys[1], keys[2]])
        priorities = np.concatenate([np.ones(100), np.zeros(100)])
        assert learner.update_priorities(everything, priorities) == 200
        drawn = learner.sample(500, beta=1.0)
        assert np.mean(drawn.fields["actor"] == 1) > 0.99
        assert learner.info()["sampled"] == 564


def test_stale_keys_are_counted_not_applied(served):
    _, address = served
    with ReplayClient(address, timeout=10) as client:
        first = client.insert(items(600, 1))
        client.insert(items(600, 2))  # overwrites keys 0..199
        assert client.update_priorities(first, np.full(600, 3.0)) == 400


def _insert_with(fields_or_request):
    if isinstance(fields_or_request, rpb.InsertRequest):
        return fields_or_request
    request = rpb.InsertRequest()
    for name, array in fields_or_request.items():
        write_tensor(request.fields.add(name=name).tensor, array)
    return request


def _raw_tensor_request():
    request = _insert_with(items(3, 1))
    request.fields[1].tensor.dtype = "<c16"  # a dtype the wire does not carry
    return request


def _short_bytes_request():
    request = _insert_with(items(3, 1))
    request.fields[0].tensor.data = request.fields[0].tensor.data[:-1]
    return request


def _duplicate_field_request():
    request = _insert_with(items(3, 1))
    request.fields.append(request.fields[0])
    return request


def _changed(**columns):
    """A good insert with some columns replaced (None drops the column)."""
    fields = {**items(3, 1), **columns}
    return _insert_with({name: column for name, column in fields.items() if column is not None})


BAD_CALLS = {
    "insert: missing field": ("Insert", lambda: _changed(actor=None)),
    "insert: wrong dtype": ("Insert", lambda: _changed(action=np.zeros(3, np.float64))),
    "insert: wrong shape": ("Insert", lambda: _changed(obs=np.zeros((3, 5), np.uint16))),
    "insert: row counts differ": ("Insert", lambda: _changed(actor=np.zeros(2, np.uint8))),
    "insert: unknown dtype": ("Insert", _raw_tensor_request),
    "insert: bytes short of the shape": ("Insert", _short_bytes_request),
    "insert: field twice": ("Insert", _duplicate_field_request),
    "insert: negative priorities": ("Insert", lambda: _with_priorities(np.array([1.0, -1.0, 1.0]))),
    "insert: priorities of another length": ("Insert", lambda: _with_priorities(np.ones(2))),
    "insert: over capacity": ("Insert", lambda: _insert_with(items(1001, 1))),
    "sample: zero": ("Sample", lambda: rpb.SampleRequest(batch_size=0)),
    "sample: beta above 1": ("Sample", lambda: rpb.SampleRequest(batch_size=2, beta=2.0)),
    "update: int keys": ("UpdatePriorities", lambda: _update([0], np.int64, [1.0])),
    "update: unissued key": ("UpdatePriorities", lambda: _update([0, 10**6], np.uint64, [1.0, 1.0])),
    "update: NaN priority": ("UpdatePriorities", lambda: _update([0], np.uint64, [np.nan])),
    "update: lengths differ": ("UpdatePriorities", lambda: _update([0, 1], np.uint64, [1.0, 1.0, 1.0])),
    "garbage bytes": ("Insert", lambda: b"\xff\xff\xff"),
}


def _with_priorities(priorities):
    request = _insert_with(items(3, 1))
    write_tensor(request.priorities, priorities)
    return request


def _update(keys, dtype, priorities):
    request = rpb.UpdatePrioritiesRequest()
    write_tensor(request.keys, np.array(keys, dtype))
    write_tensor(request.priorities, np.array(priorities))
    return request


@pytest.mark.parametrize("case", BAD_CALLS)
def test_bad_input_is_invalid_argument_and_changes_nothing(served, case):
    buffer, address = served
    with ReplayClient(address, timeout=10) as client:
        client.insert(items(10, 1))
    before = buffer_state(buffer)
    method, make = BAD_CALLS[case]
    request = make()
    payload = request if isinstance(request, bytes) else request.SerializeToString()
    with grpc.insecure_channel(address) as channel:
        call = channel.unary_unary(f"/{REPLAY_SERVICE.full_name}/{method}")
        with pytest.raises(grpc.RpcError) as refused:
            call(payload, timeout=10)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT, refused.value.details()
    assert refused.value.details()
    assert_unchanged(before, buffer_state(buffer))


def test_client_raises_invalid_argument_as_a_value_error(served):
    _, address = served
    with ReplayClient(address, timeout=10) as client, pytest.raises(InvalidArgument, match="action"):
        client.insert({**items(2, 1), "action": np.zeros(2, np.float32)})


def test_rate_limited_calls_end_with_deadline_exceeded():
    buffer = ReplayBuffer(SPEC, 100, rate_limiter=RateLimiter(min_size_to_sample=5))
    with ReplayServer(buffer, max_wait_s=0.2) as server, ReplayClient(server.address, timeout=10) as client:
        client.insert(items(4, 1))
        with pytest.raises(GameFleetError) as waited:
            client.sample(1)
        assert waited.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
        client.insert(items(1, 1, start=4))
        assert client.sample(3).keys.size == 3


# Self-play transitions ----------------------------------------------------------------------


def play_until_a_reset(pool, ids, config, seed=0):
    """Step with random agents until some game autoresets; returns each step's inputs and outcome."""
    obs = pool.observe(ids)
    for tick in range(2000):
        before = capture(obs)
        actions = random_actions(obs.codes, obs.armies, obs.tick, config.height, config.width, seed + tick)
        step = pool.step(ids, actions)
        obs = step.observation
        if step.reset.any():
            return before, actions, step
    raise AssertionError("no game finished")


def test_transitions_take_the_final_view_of_games_that_reset():
    config = GameConfig(6, 6, max_ticks=30)
    pool = GamePool(config, 4, autoreset=True, seed=2)
    ids = pool.create(4)
    before, actions, step = play_until_a_reset(pool, ids, config)
    out = make_transitions(ids, before, actions, step, step.observation, step.final_observation)
    assert set(out) == set(transition_spec(config))
    assert out["obs_codes"].shape == (8, 36) and out["action"].shape == (8,)
    reset_rows = np.flatnonzero(step.reset)
    for row in range(8):
        game, seat = divmod(row, 2)
        assert out["game_id"][row] == ids[game] and out["player"][row] == seat
        np.testing.assert_array_equal(out["obs_codes"][row], before.codes[game, seat])
        assert out["action"][row] == actions[game, seat] and out["reward"][row] == step.rewards[game, seat]
        if game in reset_rows:
            final = step.final_observation.codes[np.flatnonzero(reset_rows == game)[0], seat]
            np.testing.assert_array_equal(out["next_codes"][row], final)
        else:
            np.testing.assert_array_equal(out["next_codes"][row], step.observation.codes[game, seat])
    np.testing.assert_array_equal(out["done"], np.repeat(step.terminated, 2))
    np.testing.assert_array_equal(out["truncated"], np.repeat(step.truncated & ~step.terminated, 2))


def test_transition_pusher_delivers_every_seat_of_every_step():
    config = GameConfig(6, 6, max_ticks=30)
    buffer = ReplayBuffer(transition_spec(config), 10_000)
    pool = GamePool(config, 4, autoreset=True, seed=3)
    ids = pool.create(4)
    obs = pool.observe(ids)
    with ReplayServer(buffer) as server:
        with TransitionPusher(server.address, config, seats=[1], chunk_bytes=1000) as pusher:
            for tick in range(40):
                before = pusher.capture(obs)
                actions = random_actions(obs.codes, obs.armies, obs.tick, 6, 6, tick)
                step = pool.step(ids, actions)
                obs = step.observation
                pusher.push(ids, before, actions, step, obs, step.final_observation)
        assert pusher.pushed == 40 * 4
    assert buffer.size == 160
    stored = {name: column[:160] for name, column in buffer._columns.items()}
    assert set(np.unique(stored["player"]).tolist()) == {1}
    assert set(np.unique(stored["game_id"]).tolist()) == set(ids.tolist())
    assert (
        stored["done"].sum() + stored["truncated"].sum() >= 4
    )  # 40 ticks past a 30-tick limit  # 40 ticks past a 30-tick limit: episodes ended


def test_transition_pusher_refuses_a_service_of_another_board():
    buffer = ReplayBuffer(transition_spec(GameConfig(8, 8)), 10)
    with ReplayServer(buffer) as server, pytest.raises(ValueError, match="same board size"):
        TransitionPusher(server.address, GameConfig(6, 6))


def test_gamefleet_replay_serve_runs_until_sigterm():
    command = [sys.executable, "-m", "gameserver.cli", "replay", "serve", "--port", "0", "--height", "6",
               "--width", "6", "--capacity", "100", "--prioritized", "--samples-per-insert", "2"]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    try:
        line = process.stdout.readline()
        assert line.startswith("gamefleet replay serving on "), line
        with ReplayClient(line.split()[-1], timeout=10) as client:
            info = client.info()
        assert info["capacity"] == 100 and info["sampler"] == "prioritized"
        assert info["spec"] == transition_spec(GameConfig(6, 6))
        assert info["rate_limiter"]["samples_per_insert"] == 2.0
        process.send_signal(signal.SIGTERM)
        assert process.wait(20) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_selfplay_pushes_every_seat_of_every_step_to_the_replay_service(shard):
    config = GameConfig(6, 6, max_ticks=25)
    buffer = ReplayBuffer(transition_spec(config), 100_000)
    with ReplayServer(buffer) as server:
        report = run_selfplay(
            [shard.address], 8, config, 1.0, replay_address=server.address, min_steps=8 * 25
        )
    assert report.steps >= 8 * 25 and buffer.size == report.steps * 2
    stored = {name: column[: buffer.size] for name, column in buffer._columns.items()}
    assert np.count_nonzero(stored["done"] | stored["truncated"]) == 2 * report.episodes
